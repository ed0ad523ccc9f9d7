"""Uniform magnitude pruning (``l1`` / ``l2``): the same fraction of every prunable group, lowest-norm filters
removed, optionally fine-tuned — the baseline every comparison needs (Li et al., "Pruning Filters for Efficient
ConvNets", ICLR 2017, applied uniformly).

``ratio`` removes that fraction of each group; ``target_macs`` (fraction of MACs kept) finds the smallest
uniform ratio whose network meets it (bisection on the analytic MACs). A channel tied across residual adds is
scored by the norm of all its producing filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from prunekit.cost import MacsCost
from prunekit.errors import ConfigError, check_range
from prunekit.graph import DependencyGraph, resolve_width
from prunekit.methods.base import Method, MethodRun, register_method
from prunekit.planning import apply_widths, uniform_widths
from prunekit.train import TrainConfig


@dataclass
class MagnitudeConfig:
    """``ratio`` (fraction of every prunable group removed) or ``target_macs`` (fraction of MACs kept);
    ``round_to``/``min_channels``: width rounding and floor; ``protected``: group names left whole;
    ``finetune``: the fine-tuning schedule after pruning (None: none)."""

    ratio: float | None = None
    target_macs: float | None = None
    round_to: int = 1
    min_channels: int = 1
    protected: tuple[str, ...] = ()
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.target_macs is None):
            raise ConfigError("uniform magnitude pruning needs exactly one of ratio= (fraction of channels removed "
                              "per group) or target_macs= (fraction of MACs kept)")
        if self.ratio is not None:
            check_range("ratio", self.ratio, 0, 1, high_open=True)
        if self.target_macs is not None:
            check_range("target_macs", self.target_macs, 0, 1, low_open=True, high_open=True)
        for name in ("round_to", "min_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r} must be an integer >= 1")
        self.protected = tuple(self.protected or ())


def resolved_uniform(graph: DependencyGraph, ratio: float, c: MagnitudeConfig) -> dict[str, int]:
    """The widths ``ratio`` gives every group after rounding and floors (what pruning will produce)."""
    return {n: resolve_width(graph.group(n).size, w, min_channels=c.min_channels,
                             round_to=graph.group(n).round_to(c.round_to), min_width=graph.group(n).min_width)
            for n, w in uniform_widths(graph, ratio, c.protected).items()}


def uniform_ratio_for(graph: DependencyGraph, target_macs: float, c: MagnitudeConfig) -> float:
    """The smallest uniform ratio (to 1e-6) whose network keeps at most ``target_macs`` of the MACs."""
    macs = MacsCost(graph)
    budget = target_macs * macs.full
    lo, hi = 0.0, 1.0 - 1e-9
    if macs(resolved_uniform(graph, hi, c)) > budget:
        raise ConfigError(f"target_macs={target_macs} cannot be met by uniform pruning: at the floors the network "
                          f"keeps {macs(resolved_uniform(graph, hi, c)) / macs.full:.1%} of its MACs (lower "
                          "min_channels / round_to, protect fewer groups, or ask for less)")
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        if macs(resolved_uniform(graph, mid, c)) <= budget:
            hi = mid
        else:
            lo = mid
    return hi


class _Uniform(Method):
    importance = "l1"

    def execute(self, run: MethodRun, model: nn.Module) -> nn.Module:
        c = self.config
        run.set_baseline(model)

        def prune_step(m: nn.Module) -> dict:
            graph = run.graph(m)
            ratio = c.ratio if c.ratio is not None else uniform_ratio_for(graph, c.target_macs, c)
            apply_widths(graph, uniform_widths(graph, ratio, c.protected), importance=self.importance,
                         min_channels=c.min_channels, round_to=c.round_to, protected=c.protected)
            run.to_device(m)
            metrics = {"ratio": ratio, "widths": graph.widths(), "val_top1_before_finetune": run.evaluate(m, "val")}
            unchanged = [n for n, w in run.widths0.items() if metrics["widths"].get(n) == w]
            if len(unchanged) == len(run.widths0) and ratio > 0:
                raise ConfigError(f"ratio={ratio:.3g} removes no channel: round_to={c.round_to} / min_channels="
                                  f"{c.min_channels} keep every group whole (its widths are too small for them)")
            return metrics

        model = run.transform("prune", model, prune_step, settings={"importance": self.importance,
                                                                    **{k: getattr(c, k) for k in
                                                                       ("ratio", "target_macs", "round_to",
                                                                        "min_channels", "protected")}})
        run.details.update(run.last_metrics())
        if c.finetune is not None:
            model = run.train("finetune", model, c.finetune)
        return model


@register_method("l1", config=MagnitudeConfig, title="Uniform L1",
                 summary="Uniform magnitude pruning: the same fraction of every group, lowest-L1 filters removed.")
class UniformL1(_Uniform):
    """Uniform pruning keeping the filters of largest L1 norm."""

    importance = "l1"


@register_method("l2", config=MagnitudeConfig, title="Uniform L2",
                 summary="Uniform magnitude pruning: the same fraction of every group, lowest-L2 filters removed.")
class UniformL2(_Uniform):
    """Uniform pruning keeping the filters of largest L2 norm."""

    importance = "l2"
