"""The one-call entry points on a user's model: ``plan`` (a PruningPlan), ``apply_widths`` and ``prune``.

They sit above the graph because they resolve importance names (``"l1"``, ``"bn_scale"``, ...) into scorers.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, check_range
from prunekit.graph import DependencyGraph, PruningPlan
from prunekit.graph.api import _check_options, _protected_names
from prunekit.graph.dependency import Inputs
from prunekit.importance import Importance, get_importance

KeepSpec = str | Importance | Mapping[str, torch.Tensor]


def _scorer(keep: KeepSpec, scores: Mapping[str, torch.Tensor] | None = None):
    """``keep`` as what ``DependencyGraph.plan`` takes: "prefix", or a scorer (explicit ``scores`` first)."""
    if isinstance(keep, str) and keep == "prefix":
        if scores:
            raise ConfigError("keep='prefix' does not take scores")
        return "prefix"
    if isinstance(keep, Mapping):
        scores, keep = {**keep, **(scores or {})}, None
    imp = get_importance(keep) if keep is not None else None

    def score(graph: DependencyGraph, group) -> torch.Tensor:
        s = (scores or {}).get(group.name)
        if s is not None:
            return torch.as_tensor(s, dtype=torch.float32)
        if imp is None:
            raise ConfigError(f"no scores for group {group.name!r}")
        return imp(graph, group)
    return score


def plan(graph: DependencyGraph, widths: Mapping[str, int], *, keep: KeepSpec = "l1",
         scores: Mapping[str, torch.Tensor] | None = None, min_channels: int = 1, round_to: int = 1,
         protected: Iterable[str] | None = None) -> PruningPlan:
    """``graph.plan`` with ``keep`` also an importance name or instance (``"l1"``, ``"l2"``, ``"bn_scale"``,
    ``"random"``, ...) or ``"prefix"``; ``scores`` ({group: Tensor[size]}) override the importance per group."""
    return graph.plan(widths, keep=_scorer(keep, scores), min_channels=min_channels, round_to=round_to,
                      protected=protected)


def apply_widths(graph: DependencyGraph | nn.Module, widths: Mapping[str, int], *,
                 scores: Mapping[str, torch.Tensor] | None = None, importance: KeepSpec = "l1",
                 min_channels: int = 1, round_to: int = 1, protected: Iterable[str] | None = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 example_inputs: Inputs | None = None, leaf_modules: Iterable[type | str] = (),
                 tracer: str = "auto", pin_outputs: bool = True, approximate_statistics: bool = False
                 ) -> dict[str, torch.Tensor]:
    """Set each named group to the given width, keeping its highest-scoring channels; returns the kept
    channel indices per changed group (sorted, in the group's original numbering).

    ``graph``: a DependencyGraph (it then describes the pruned model), or a model together with
    ``example_inputs`` (a graph is built for it, with ``leaf_modules``, ``tracer``, ``pin_outputs`` and
    ``approximate_statistics`` as in ``DependencyGraph``). ``widths``:
    {group name: width}, partial allowed (see ``DependencyGraph.plan``). ``scores``: {group name: Tensor[size]}
    (higher = keep); groups without scores are scored by ``importance`` (a registered name, an ``Importance``,
    or ``"prefix"``). Pinned channels are always kept. The model is modified in place; ``optimizer`` state
    follows the kept channels.
    """
    if isinstance(graph, nn.Module):
        if example_inputs is None:
            raise ConfigError("apply_widths(model, ...) needs example_inputs= (or pass a DependencyGraph)")
        graph = DependencyGraph(graph, example_inputs, leaf_modules=leaf_modules, tracer=tracer,
                                pin_outputs=pin_outputs, approximate_statistics=approximate_statistics)
    p = plan(graph, widths, keep=importance, scores=scores, min_channels=min_channels, round_to=round_to,
             protected=protected)
    graph.apply_plan(p, optimizer)
    return dict(p.keep)


def uniform_widths(graph: DependencyGraph, ratio: float, protected: Iterable[str] = ()) -> dict[str, int]:
    """Widths removing the fraction ``ratio`` of every prunable group: ``size - floor(ratio * size)``."""
    prot = set(protected)
    return {g.name: g.size - math.floor(ratio * g.size + 1e-9) for g in graph.prunable_groups if g.name not in prot}


def prune(model: nn.Module, example_inputs: Inputs, *, ratio: float | None = None,
          widths: Mapping[str, int] | None = None, importance: str | Importance = "l1", min_channels: int = 1,
          round_to: int = 1, protected: Iterable[str] | None = None,
          optimizer: torch.optim.Optimizer | None = None, leaf_modules: Iterable[type | str] = (),
          tracer: str = "auto", pin_outputs: bool = True, approximate_statistics: bool = False) -> nn.Module:
    """Prune ``model`` physically, in place, and return it.

    Exactly one of
    - ``ratio``: the fraction of channels removed from *every* prunable group (uniform, ``0 <= ratio < 1``): a
      group of ``size`` channels keeps ``size - floor(ratio * size)`` before ``min_channels``/``round_to``;
    - ``widths``: {group name: width} (see ``apply_widths``; partial allowed).
    ``importance``: a registered name (``l1``, ``l2``, ``bn_scale``, ``random``) or an ``Importance``.
    ``protected``: group names left untouched. ``optimizer``: its state is sliced with the parameters.
    Tracing options, as in ``DependencyGraph``: ``leaf_modules`` (layers kept opaque, as types or qualified
    names), ``tracer`` (``"auto"``, ``"fx"``, ``"concrete"``), ``pin_outputs`` (False: the model's output
    channels may shrink too), ``approximate_statistics`` (True: channels a mean/var over the channel dim reads
    are prunable, inexactly). Group names come from ``DependencyGraph(model, example_inputs, ...).groups``.
    """
    if (ratio is None) == (widths is None):
        raise ConfigError("give exactly one of ratio= (uniform fraction removed per group) or widths= "
                          "({group name: width})")
    _check_options(min_channels, round_to)
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise ConfigError(f"ratio={ratio!r} must be a number in [0, 1)")
        check_range("ratio", float(ratio), 0.0, 1.0, high_open=True)
    graph = DependencyGraph(model, example_inputs, leaf_modules=leaf_modules, tracer=tracer, pin_outputs=pin_outputs,
                            approximate_statistics=approximate_statistics)
    prot = _protected_names(graph, protected)
    if ratio is not None:
        widths = uniform_widths(graph, ratio, prot)
    kept = apply_widths(graph, widths, importance=importance, min_channels=min_channels, round_to=round_to,
                        protected=prot, optimizer=optimizer)
    if not kept and any(w < graph.group(n).size for n, w in widths.items()):
        import warnings

        warnings.warn(f"prunekit.prune: nothing was pruned: round_to={round_to} / min_channels={min_channels} keep "
                      "every requested group whole (its widths are too small for them); lower them", stacklevel=2)
    return model
