"""Network Slimming (Liu et al., ICCV 2017): L1 sparsity on BatchNorm γ, a global threshold, physical removal,
fine-tuning; optionally several passes.

- **Sparsity training** adds ``s·sign(γ)`` to every BN scale's gradient (the Trainer's ``L1Subgradient``
  callback; s = 1e-4 for VGG, 1e-5 for ResNet/DenseNet in the paper).
- **Scores**: a channel's score is the **mean** |γ| over the BatchNorms that normalise it (``reduction="mean"``,
  default) or their sum (``BNScaleImportance``). Channels tied across residual adds or concatenations form one
  channel of a ChannelGroup and get one score, so ResNets, DenseNets and MobileNetV2 are pruned everywhere,
  shortcuts included — not only inside blocks as in the original code. Each group channel counts once.
- **Global threshold**: the ``ratio`` quantile of all prunable channels' scores (``ratio`` = fraction of the
  prunable channels removed), or, with ``target_macs`` (fraction of MACs kept), the smallest ratio whose pruned
  network meets the budget (the planner's bisection on the analytic MACs).
- **No layer is ever emptied**: every group keeps at least ``max(min_channels, ceil(min_keep · size))``
  channels; groups where this floor stopped the threshold are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from prunekit.cost import MacsCost
from prunekit.errors import ConfigError, check_range
from prunekit.graph import DependencyGraph
from prunekit.importance import BNScaleImportance
from prunekit.methods.base import Method, MethodRun, register_method
from prunekit.planning import GlobalRanking, RankedPlan, apply_widths, channel_floors
from prunekit.train import L1Subgradient, TrainConfig, bn_weights


def bn_gamma_scores(graph: DependencyGraph, reduction: Literal["mean", "sum"] = "mean") -> dict[str, torch.Tensor]:
    """|γ| score per channel of every prunable group that has BatchNorms ({group name: Tensor[size]})."""
    imp = BNScaleImportance(reduction, fallback=None)
    return {g.name: imp(graph, g) for g in graph.prunable_groups if imp.has_bn(g)}


def slim(model: nn.Module, example_inputs: torch.Tensor, *, ratio: float | None = None,
         target_macs: float | None = None, min_channels: int = 1, min_keep: float = 0.05,
         round_to: int = 1, reduction: Literal["mean", "sum"] = "mean",
         optimizer: torch.optim.Optimizer | None = None, graph: DependencyGraph | None = None) -> RankedPlan:
    """Prune ``model`` in place by a global |γ| threshold (one Network Slimming pruning step).

    Exactly one of ``ratio`` (fraction of prunable channels removed) or ``target_macs`` (fraction of MACs kept).
    Returns the plan (widths, threshold, ratio removed, floor hits); channels kept are those above the threshold.
    ``graph``: the model's graph, if already built (else it is traced with the default options).
    """
    if (ratio is None) == (target_macs is None):
        raise ConfigError("give exactly one of ratio= (fraction of channels removed) or target_macs= "
                          "(fraction of MACs kept)")
    if ratio is not None:
        check_range("ratio", ratio, 0, 1, low_open=True, high_open=True)
    graph = graph or DependencyGraph(model, example_inputs)
    scores = bn_gamma_scores(graph, reduction)
    if not scores:
        raise ConfigError("no prunable group has a BatchNorm: Network Slimming scores channels by BN γ. "
                          "Use magnitude pruning (`prunekit prune l1`) or Gate Decorator's gated convolution.")
    floors = channel_floors(graph, min_keep=min_keep, min_channels=min_channels, names=list(scores))
    ranking = GlobalRanking(graph, scores, floors, mode="threshold", min_channels=min_channels, round_to=round_to)
    if ratio is not None:
        k = ranking.count(ratio)
    else:
        check_range("target_macs", target_macs, 0, 1, low_open=True, high_open=True)
        macs = MacsCost(graph)
        k = ranking.smallest(lambda w: macs(w) <= target_macs * macs.full)
        if k is None:
            raise ConfigError(f"target_macs={target_macs} cannot be met: even at the per-layer floors the "
                              f"network keeps {macs(ranking.widths(ranking.num_ranked)) / macs.full:.1%} of its "
                              "MACs; lower min_channels / min_keep, or ask for less")
    plan = ranking.at(k)
    apply_widths(graph, plan.widths, scores=scores, min_channels=min_channels, round_to=round_to,
                 optimizer=optimizer)
    return plan


@dataclass
class SlimmingConfig:
    """Network Slimming hyper-parameters.

    ``sparsity``: s of the L1 subgradient on γ. ``ratio``: fraction of prunable channels removed per pass, or
    ``target_macs``: fraction of the original MACs kept at the end (reached geometrically over the passes).
    ``passes``: sparsity → prune → fine-tune repeated (the paper's multi-pass scheme). ``min_keep`` /
    ``min_channels``: the per-group floor (fraction of the group kept, channel count). ``round_to``: pruned
    widths are multiples of it. ``reduction``: mean or sum of |γ| over a channel's BNs. ``sparsity_train``: the
    sparsity-training schedule (None: the model is already sparse, skip it). ``finetune``: the fine-tuning
    schedule (None: no fine-tuning).
    """

    sparsity: float = 1e-4
    ratio: float | None = None
    target_macs: float | None = None
    passes: int = 1
    min_channels: int = 1
    min_keep: float = 0.05
    round_to: int = 1
    reduction: Literal["mean", "sum"] = "mean"
    sparsity_train: TrainConfig | None = field(default_factory=lambda: TrainConfig(epochs=160))
    finetune: TrainConfig | None = field(default_factory=lambda: TrainConfig(epochs=160))

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.target_macs is None):
            raise ConfigError("Network Slimming needs exactly one of ratio= (fraction of channels removed) or "
                              "target_macs= (fraction of MACs kept)")
        if self.ratio is not None:
            check_range("ratio", self.ratio, 0, 1, low_open=True, high_open=True)
        if self.target_macs is not None:
            check_range("target_macs", self.target_macs, 0, 1, low_open=True, high_open=True)
        check_range("sparsity", self.sparsity, 0)
        check_range("min_keep", self.min_keep, 0, 1, high_open=True)
        if self.reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction={self.reduction!r} must be 'mean' or 'sum'")
        if not isinstance(self.passes, int) or self.passes < 1:
            raise ConfigError(f"passes={self.passes!r} must be an integer >= 1")
        if not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise ConfigError(f"min_channels={self.min_channels!r} must be an integer >= 1 (a layer is never "
                              "emptied)")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise ConfigError(f"round_to={self.round_to!r} must be an integer >= 1")

    def pass_target(self, p: int) -> dict[str, float]:
        """Pruning argument of pass ``p`` (1-based): the same ratio each pass, or MACs kept target^(1/passes)."""
        if self.ratio is not None:
            return {"ratio": self.ratio}
        return {"target_macs": self.target_macs ** (1 / self.passes)}


def _gammas(model: nn.Module) -> torch.Tensor:
    return torch.cat([g.detach().abs().cpu() for g in bn_weights(model)])


@register_method("slimming", config=SlimmingConfig, title="Network Slimming")
class NetworkSlimming(Method):
    """``NetworkSlimming(config).run(model, data, output_dir)`` → PruneResult (see the module docstring). The
    baseline of the report is the unpruned network right before the first pruning step (after sparsity
    training when there is one)."""

    def check(self, run: MethodRun, model: nn.Module) -> None:
        if not bn_gamma_scores(run.graph0, self.config.reduction):
            raise ConfigError("no prunable group has a BatchNorm: Network Slimming scores channels by BN γ. "
                              "Use magnitude pruning (`prunekit prune l1`) or Gate Decorator's gated convolution.")
        run.to_device(model)

    def execute(self, run: MethodRun, model: nn.Module) -> nn.Module:
        c = self.config
        gammas = {"before sparsity": _gammas(model)}
        run.details["passes"] = []
        for p in range(1, c.passes + 1):
            if c.sparsity_train is not None and c.sparsity > 0:
                model = run.train(f"pass{p}-sparsity", model, c.sparsity_train, [L1Subgradient(c.sparsity)],
                                  settings={"sparsity": c.sparsity})
                if "after sparsity" not in gammas:
                    gammas["after sparsity"] = _gammas(model)
            if p == 1:
                run.set_baseline(model)
            model = run.transform(f"pass{p}-prune", model, lambda m, p=p: self.prune_step(run, m, p),
                                  settings={k: getattr(c, k) for k in ("min_channels", "min_keep", "round_to",
                                                                       "reduction")} | c.pass_target(p))
            run.details["passes"].append(run.last_metrics())
            run.floor_hit += run.last_metrics().get("floor_hit", [])
            if c.finetune is not None:
                model = run.train(f"pass{p}-finetune", model, c.finetune)
        if "after sparsity" in gammas:
            run.plot_histograms("gamma_hist.png", {k: v.numpy() for k, v in gammas.items()},
                                title="BN |γ| before / after sparsity training", xlabel="|γ|")
        return model

    def prune_step(self, run: MethodRun, model: nn.Module, p: int) -> dict:
        """Pass ``p``'s global threshold, in place; returns the stage metrics."""
        c = self.config
        plan = slim(model.cpu(), run.x, graph=run.graph(model), min_channels=c.min_channels, min_keep=c.min_keep,
                    round_to=c.round_to, reduction=c.reduction, **c.pass_target(p))
        run.to_device(model)
        metrics = {"threshold": plan.threshold, "ratio_removed": plan.ratio, "floor_hit": plan.floor_hit,
                   "widths": plan.widths}
        top1 = run.evaluate(model, "val")
        if top1 is not None:
            metrics["val_top1_before_finetune"] = top1
        return metrics
