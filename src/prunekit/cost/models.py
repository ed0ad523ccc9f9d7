"""Cost models as values: one interface, ``cost(widths) -> float``, for every budget a planner solves.

``MacsCost(graph)`` and ``ParamsCost(graph)`` are analytic (the graph's per-layer signatures and its linear
width model: thousands of evaluations per second, for evolutionary search and bisection); a measured
``LatencyTable`` (NetAdapt) implements the same interface. ``full`` is the cost of the unpruned graph, so a
budget "keep 40% of the MACs" reads ``cost(widths) <= 0.4 * cost.full``.
"""

from __future__ import annotations

from typing import Callable, Mapping

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph

Widths = Mapping[str, int]


class CostModel:
    """``cost(widths)``: the cost of the network at ``widths`` ({group name: width}, partial allowed: missing
    groups keep their current width; None: the current network), in ``unit``; ``full``: at the current widths;
    ``fraction(widths)``: cost relative to ``full``."""

    name = "cost"
    unit = ""

    def __call__(self, widths: Widths | None = None) -> float:
        raise NotImplementedError

    @property
    def full(self) -> float:
        return self(None)

    def fraction(self, widths: Widths | None = None) -> float:
        return self(widths) / max(self.full, 1e-12)


class MacsCost(CostModel):
    """Multiply-accumulates per image (conv + linear, prunekit's convention), analytic."""

    name, unit = "macs", "MACs"

    def __init__(self, graph: DependencyGraph):
        self.graph = graph
        self._full = float(graph.macs())

    def __call__(self, widths: Widths | None = None) -> float:
        return float(self.graph.macs(widths)) if widths is not None else self._full


class ParamsCost(CostModel):
    """Number of parameters, analytic; ``exclude(graph, widths) -> int`` subtracts parameters that are not part of
    the deployed network (e.g. Gate Decorator's gates, folded away at the end)."""

    name, unit = "params", "parameters"

    def __init__(self, graph: DependencyGraph, exclude: Callable[[DependencyGraph, Widths | None], int] | None = None):
        self.graph, self.exclude = graph, exclude
        self._full = self._eval(None)

    def _eval(self, widths: Widths | None) -> float:
        n = float(self.graph.params(widths))
        return n - self.exclude(self.graph, widths) if self.exclude is not None else n

    def __call__(self, widths: Widths | None = None) -> float:
        return self._eval(widths) if widths is not None else self._full


def cost_model(name: str, graph: DependencyGraph) -> CostModel:
    """The analytic cost model ``name`` (``macs`` or ``params``) of ``graph``."""
    models = {"macs": MacsCost, "params": ParamsCost}
    if name not in models:
        raise ConfigError(f"unknown cost model {name!r}; valid: {', '.join(models)} (measured latency: "
                          "prunekit.cost.LatencyTable)")
    return models[name](graph)
