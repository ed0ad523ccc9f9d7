"""Network Slimming (Liu et al., ICCV 2017): L1 sparsity on BatchNorm γ, a global threshold, physical removal,
fine-tuning; optionally several passes.

- **Sparsity training** adds ``s·sign(γ)`` to every BN scale's gradient (the Trainer's ``L1Subgradient``
  callback; s = 1e-4 for VGG, 1e-5 for ResNet/DenseNet in the paper).
- **Scores**: a channel's score is the **mean** |γ| over the BatchNorms that normalise it (``reduction="mean"``,
  default) or their sum. Channels tied across residual adds or concatenations form one channel of a
  ChannelGroup and get one score, so ResNets, DenseNets and MobileNetV2 are pruned everywhere, shortcuts
  included — not only inside blocks as in the original code. Each group channel counts once in the threshold.
- **Global threshold**: the ``ratio`` quantile of all prunable channels' scores (``ratio`` = fraction of the
  prunable channels removed), or, with ``target_macs`` (fraction of MACs kept), the smallest ratio whose pruned
  network meets the budget (bisection on the analytic MACs of the graph).
- **No layer is ever emptied**: every group keeps at least ``max(min_channels, ceil((1 - max_layer_ratio) ·
  size))`` channels; groups where this floor stopped the threshold are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, check_range
from prunekit.graph import ChannelGroup, DependencyGraph, apply_widths, resolve_width
from prunekit.train import Callback, L1Subgradient, TrainConfig, bn_weights


# ----------------------------------------------------------------------------- scores and threshold
def bn_gamma_scores(graph: DependencyGraph, reduction: Literal["mean", "sum"] = "mean") -> dict[str, torch.Tensor]:
    """|γ| score per channel of every prunable group that has BatchNorms ({group name: Tensor[size]})."""
    if reduction not in ("mean", "sum"):
        raise ConfigError(f"reduction={reduction!r} must be 'mean' or 'sum'")
    scores: dict[str, torch.Tensor] = {}
    for g in graph.prunable_groups:
        bns = [gm for gm in g.bn_layers
               if isinstance(gm.module, nn.modules.batchnorm._BatchNorm) and gm.module.weight is not None]
        if not bns:
            continue
        total = torch.zeros(g.size)
        n = torch.zeros(g.size)
        for gm in bns:
            gamma = gm.module.weight.detach().abs().float().cpu()
            total += gm.reduce(gamma, g.size)
            n += gm.reduce(torch.ones_like(gamma), g.size)
        scores[g.name] = total / n.clamp(min=1) if reduction == "mean" else total
    return scores


def require_bn(scores: dict[str, torch.Tensor]) -> None:
    """Raise a ConfigError pointing to the alternatives when no prunable group has a BatchNorm."""
    if not scores:
        raise ConfigError("no prunable group has a BatchNorm: Network Slimming scores channels by BN γ. "
                          "Use magnitude pruning (`prunekit prune l1`) or Gate Decorator's gated convolution.")


@dataclass
class ThresholdPlan:
    """Widths chosen by a global threshold: ``widths`` per scored group, the ``threshold`` score, the ``ratio``
    of scored channels it removes, and the groups where the per-layer floor stopped it (``floor_hit``)."""

    widths: dict[str, int]
    threshold: float
    ratio: float
    floor_hit: list[str] = field(default_factory=list)


class GlobalThreshold:
    """Precomputed global ranking of channel scores; ``plan(ratio)`` is O(groups) after an O(N log N) sort."""

    def __init__(self, graph: DependencyGraph, scores: dict[str, torch.Tensor], *, min_channels: int = 1,
                 max_layer_ratio: float = 0.95, round_to: int = 1):
        check_range("max_layer_ratio", max_layer_ratio, 0, 1, high_open=True)
        require_bn(scores)
        self.graph = graph
        self.names = list(scores)
        self.groups: list[ChannelGroup] = [graph.group(n) for n in self.names]
        flat = torch.cat([scores[n] for n in self.names])
        owner = torch.cat([torch.full((scores[n].numel(),), i) for i, n in enumerate(self.names)])
        order = torch.sort(flat, stable=True).indices
        self.sorted_scores = flat[order]
        self.sorted_owner = owner[order]
        self.min_channels, self.round_to = min_channels, round_to
        self.floors = [max(min_channels, g.min_width, math.ceil((1 - max_layer_ratio) * g.size))
                       for g in self.groups]

    @property
    def num_channels(self) -> int:
        return self.sorted_scores.numel()

    def plan(self, ratio: float) -> ThresholdPlan:
        """Remove the ``floor(ratio · N)`` lowest-scoring channels, subject to each group's floor."""
        k = min(int(math.floor(ratio * self.num_channels + 1e-9)), self.num_channels)
        removed = torch.bincount(self.sorted_owner[:k], minlength=len(self.names)).tolist()
        widths, floor_hit = {}, []
        for g, floor, r in zip(self.groups, self.floors, removed):
            want = g.size - r
            if want < floor:
                floor_hit.append(g.name)
                want = floor
            widths[g.name] = resolve_width(g.size, want, min_channels=self.min_channels, round_to=self.round_to,
                                           min_width=g.min_width)
        thr = float(self.sorted_scores[k - 1]) if k > 0 else float("-inf")
        return ThresholdPlan(widths, thr, k / max(self.num_channels, 1), floor_hit)

    def plan_for_macs(self, target_macs: float) -> ThresholdPlan:
        """The smallest ratio whose network keeps at most ``target_macs`` (fraction) of the current MACs."""
        check_range("target_macs", target_macs, 0, 1, low_open=True, high_open=True)
        full = self.graph.macs()
        budget = target_macs * full
        lo, hi = 0.0, 1.0
        best = self.plan(hi)
        if self.graph.macs(best.widths) > budget:
            raise ConfigError(f"target_macs={target_macs} cannot be met: even at the per-layer floors the "
                              f"network keeps {self.graph.macs(best.widths) / full:.1%} of its MACs; lower "
                              "min_channels / raise max_layer_ratio, or ask for less")
        for _ in range(40):
            mid = (lo + hi) / 2
            p = self.plan(mid)
            if self.graph.macs(p.widths) <= budget:
                hi, best = mid, p
            else:
                lo = mid
        return best


def slim(model: nn.Module, example_inputs: torch.Tensor, *, ratio: float | None = None,
         target_macs: float | None = None, min_channels: int = 1, max_layer_ratio: float = 0.95,
         round_to: int = 1, reduction: Literal["mean", "sum"] = "mean",
         optimizer: torch.optim.Optimizer | None = None) -> ThresholdPlan:
    """Prune ``model`` in place by a global |γ| threshold (one Network Slimming pruning step).

    Exactly one of ``ratio`` (fraction of prunable channels removed) or ``target_macs`` (fraction of MACs kept).
    Returns the plan (widths, threshold, floor hits); channels kept are those above the threshold.
    """
    if (ratio is None) == (target_macs is None):
        raise ConfigError("give exactly one of ratio= (fraction of channels removed) or target_macs= "
                          "(fraction of MACs kept)")
    if ratio is not None:
        check_range("ratio", ratio, 0, 1, low_open=True, high_open=True)
    graph = DependencyGraph(model, example_inputs)
    scores = bn_gamma_scores(graph, reduction)
    thr = GlobalThreshold(graph, scores, min_channels=min_channels, max_layer_ratio=max_layer_ratio,
                          round_to=round_to)
    plan = thr.plan(ratio) if ratio is not None else thr.plan_for_macs(target_macs)
    apply_widths(graph, plan.widths, scores=scores, min_channels=min_channels, round_to=round_to,
                 optimizer=optimizer)
    return plan


# ----------------------------------------------------------------------------- the method
@dataclass
class SlimmingConfig:
    """Network Slimming hyper-parameters.

    ``sparsity``: s of the L1 subgradient on γ. ``ratio``: fraction of prunable channels removed per pass, or
    ``target_macs``: fraction of the original MACs kept at the end (reached geometrically over the passes).
    ``sparsity_train``: the sparsity-training schedule (None: the model is already sparse, skip it).
    ``finetune``: the fine-tuning schedule (None: no fine-tuning). ``passes``: sparsity → prune → fine-tune
    repeated (the paper's multi-pass scheme).
    """

    sparsity: float = 1e-4
    ratio: float | None = None
    target_macs: float | None = None
    passes: int = 1
    min_channels: int = 1
    max_layer_ratio: float = 0.95
    round_to: int = 1
    reduction: Literal["mean", "sum"] = "mean"
    sparsity_train: TrainConfig | None = None
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.target_macs is None):
            raise ConfigError("SlimmingConfig needs exactly one of ratio= or target_macs=")
        if self.ratio is not None:
            check_range("ratio", self.ratio, 0, 1, low_open=True, high_open=True)
        if self.target_macs is not None:
            check_range("target_macs", self.target_macs, 0, 1, low_open=True, high_open=True)
        check_range("sparsity", self.sparsity, 0)
        check_range("max_layer_ratio", self.max_layer_ratio, 0, 1, high_open=True)
        if self.passes < 1:
            raise ConfigError(f"passes={self.passes} must be >= 1")
        if self.min_channels < 1:
            raise ConfigError(f"min_channels={self.min_channels} must be >= 1 (a layer is never emptied)")

    def pass_target(self, p: int) -> dict[str, float]:
        """Pruning argument of pass ``p`` (1-based): the same ratio each pass, or MACs kept target^(p/passes)."""
        if self.ratio is not None:
            return {"ratio": self.ratio}
        return {"target_macs": self.target_macs ** (1 / self.passes)}


class NetworkSlimming:
    """``NetworkSlimming(config).run(model, data, output_dir)`` → PruneResult (see module docstring)."""

    name = "slimming"

    def __init__(self, config: SlimmingConfig):
        self.config = config

    def run(self, model: nn.Module, data, output_dir: str | Path, *, device: str = "cpu",
            log: Callable[[str], None] | None = None, latency: bool = True, callbacks: Iterable[Callback] = ()):
        """Sparsity-train, prune, fine-tune (× passes) under ``output_dir`` (resumable), and report.

        ``data``: prunekit DataLoaders (train / val / test); the validation split is what the report shows
        between stages, the test set only the reported numbers. The baseline of the report is the unpruned
        network right before the first pruning step (after sparsity training when there is one). ``callbacks``
        are added to every training stage (logging, custom regularisers). Writes ``widths.png``, ``gamma_hist.png`` and
        ``model.safetensors`` (the final pruned model) into ``output_dir``.
        """
        from prunekit.io import save
        from prunekit.methods.pipeline import Pipeline
        from prunekit.methods.result import PruneResult
        from prunekit.report import plot_histograms, plot_widths, summarize
        from prunekit.train import evaluate

        c = self.config
        out = Path(output_dir)
        log = log or (lambda m: None)
        x = next(iter(data.test))[0][:2].detach().cpu()
        graph0 = DependencyGraph(model.cpu(), x)
        require_bn(bn_gamma_scores(graph0, c.reduction))  # fail before any training
        widths0 = {g.name: g.size for g in graph0.prunable_groups}
        model.to(device)
        gammas = {"before sparsity": torch.cat([g.detach().abs().cpu() for g in bn_weights(model)])}
        pipe = Pipeline(out, x, device=device, log=log)
        details: dict[str, Any] = {"passes": []}
        for p in range(1, c.passes + 1):
            if c.sparsity_train is not None and c.sparsity > 0:
                model = pipe.train(f"pass{p}-sparsity", model, data.train, data.val, c.sparsity_train,
                                   [L1Subgradient(c.sparsity), *callbacks])
                if p == 1:
                    gammas["after sparsity"] = torch.cat([g.detach().abs().cpu() for g in bn_weights(model)])
            if p == 1:  # the unpruned network (after sparsity training, if any) is the baseline
                baseline = summarize(model, x, latency=latency)
                baseline.top1["test"] = evaluate(model, data.test).top1

            def prune_step(m: nn.Module, p=p) -> dict[str, Any]:
                m.cpu()
                plan = slim(m, x, min_channels=c.min_channels, max_layer_ratio=c.max_layer_ratio,
                            round_to=c.round_to, reduction=c.reduction, **c.pass_target(p))
                m.to(device)
                metrics = {"threshold": plan.threshold, "ratio_removed": plan.ratio, "floor_hit": plan.floor_hit,
                           "widths": plan.widths}
                if data.val is not None:
                    metrics["val_top1_before_finetune"] = evaluate(m, data.val).top1
                return metrics

            model = pipe.transform(f"pass{p}-prune", model, prune_step)
            details["passes"].append(pipe.records[-1].metrics)
            if c.finetune is not None:
                model = pipe.train(f"pass{p}-finetune", model, data.train, data.val, c.finetune, callbacks)
        model.eval()
        widths1 = DependencyGraph(model.cpu(), x).widths()
        model.to(device)
        pruned = summarize(model, x, latency=latency)
        pruned.top1["test"] = evaluate(model, data.test).top1
        floor_hit = sorted({n for d in details["passes"] for n in d.get("floor_hit", [])})
        details["floor_hit"] = floor_hit
        result = PruneResult(self.name, model, widths0, {k: widths1.get(k, v) for k, v in widths0.items()},
                             baseline, pruned, list(pipe.records), details)
        result.artifacts["widths_png"] = str(plot_widths(widths0, result.widths_after, out / "widths.png",
                                                         title="Network Slimming: channels per group"))
        if "after sparsity" in gammas:
            result.artifacts["gamma_png"] = str(plot_histograms(
                {k: v.numpy() for k, v in gammas.items()}, out / "gamma_hist.png",
                title="BN |γ| before / after sparsity training", xlabel="|γ|"))
        save(model.cpu().eval(), out / "model.safetensors", example_inputs=x)
        model.to(device)
        result.artifacts["model"] = str(out / "model.safetensors")
        return result
