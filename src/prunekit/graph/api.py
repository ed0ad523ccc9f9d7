"""The pruning entry points: ``prune`` (one call on a user's model), ``apply_widths`` and ``resolve_width``."""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, check_range
from prunekit.graph.dependency import DependencyGraph, Inputs
from prunekit.graph.group import _hitting_set
from prunekit.importance import Importance, get_importance


def resolve_width(size: int, width: float, *, min_channels: int = 1, round_to: int = 1, min_width: int = 1) -> int:
    """The width a group of ``size`` channels is actually given when ``width`` is asked for.

    ``width >= size`` keeps the group whole. Otherwise the width is rounded to the nearest multiple of
    ``round_to`` (halves up; at least ``round_to``), raised to ``max(min_channels, min_width)`` (rounded up to a
    multiple of ``round_to``) and capped at ``size``. ``min_width`` is the group's own floor (its pinned
    channels, at least 1). Never returns less than 1.
    """
    if width >= size:
        return size
    w = float(width)
    if round_to > 1:
        w = max(round_to, math.floor(w / round_to + 0.5) * round_to)
    w = int(math.floor(w + 1e-9))
    low = max(1, min_channels, min_width)
    if w < low:
        w = math.ceil(low / round_to) * round_to
    return min(w, size)


def _check_options(min_channels: int, round_to: int) -> None:
    if not isinstance(min_channels, int) or min_channels < 1:
        raise ConfigError(f"min_channels={min_channels!r} must be an integer >= 1 (a group is never emptied)")
    if not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(f"round_to={round_to!r} must be an integer >= 1")


def _protected_names(graph: DependencyGraph, protected: Iterable[str] | None) -> set[str]:
    names = set(protected or ())
    for n in names:
        graph.group(n)  # unknown names raise with close matches
    return names


def apply_widths(graph: DependencyGraph | nn.Module, widths: Mapping[str, int], *,
                 scores: Mapping[str, torch.Tensor] | None = None, importance: str | Importance = "l1",
                 min_channels: int = 1, round_to: int = 1, protected: Iterable[str] | None = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 example_inputs: Inputs | None = None) -> dict[str, torch.Tensor]:
    """Set each named group to the given width, keeping its highest-scoring channels; returns the kept
    channel indices per changed group (sorted, in the group's original numbering).

    ``graph``: a DependencyGraph (it then describes the pruned model), or a model together with
    ``example_inputs`` (a graph is built for it).

    ``widths``: {group name: width}, partial allowed. A width equal to the group's size leaves it untouched (also
    for unprunable groups); any other width on an unprunable or protected group raises ConfigError naming it.
    Widths pass through ``resolve_width`` (``min_channels``, ``round_to``, pinned channels); ``round_to`` counts
    layer channels (``ChannelGroup.round_to``: a group channel that is a whole 8-channel conv group already
    is a multiple of 8). ``scores``:
    {group name: Tensor[size]} (higher = keep); groups without scores are scored by ``importance``. Pinned
    channels are always kept. The model is modified in place; ``optimizer`` state follows the kept channels.
    """
    if isinstance(graph, nn.Module):
        if example_inputs is None:
            raise ConfigError("apply_widths(model, ...) needs example_inputs= (or pass a DependencyGraph)")
        graph = DependencyGraph(graph, example_inputs)
    _check_options(min_channels, round_to)
    prot = _protected_names(graph, protected)
    imp = get_importance(importance)
    keep: dict[str, torch.Tensor] = {}
    for name, width in widths.items():
        g = graph.group(name)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width != int(width):
            raise ConfigError(f"width of group {name!r} must be an integer, got {width!r}")
        width = int(width)
        if width == g.size:
            continue
        if width > g.size or width < 1:
            raise ConfigError(f"width {width} for group {name!r} is outside [1, {g.size}]")
        if not g.prunable:
            raise ConfigError(f"group {name!r} is not prunable ({g.reason}); only width {g.size} is allowed")
        if name in prot:
            raise ConfigError(f"group {name!r} is protected; only width {g.size} is allowed")
        w = resolve_width(g.size, width, min_channels=min_channels, round_to=g.round_to(round_to),
                          min_width=g.min_width)
        if w == g.size:
            continue
        s = scores.get(name) if scores is not None else None
        s = imp(graph, g) if s is None else torch.as_tensor(s, dtype=torch.float32).detach().cpu().reshape(-1)
        if s.numel() != g.size:
            raise ConfigError(f"scores[{name!r}] has {s.numel()} entries; the group has {g.size} channels")
        keep[name] = select_top(s, w, g.pinned, g.cover)
    graph.prune_groups(keep, optimizer=optimizer)
    return keep


def select_top(scores: torch.Tensor, width: int, pinned: torch.Tensor | None = None,
               cover: list[torch.Tensor] = ()) -> torch.Tensor:
    """Indices (sorted) of the ``width`` best channels by ``scores``: pinned channels first, then the best
    channel of every ``cover`` set not yet hit (so no layer is emptied), then the rest by score (ties: lower
    index). Returns more than ``width`` indices only if the pinned and cover channels need more."""
    s = scores.detach().float().cpu().clone()
    s = torch.nan_to_num(s, nan=-float("inf"))
    forced = pinned if pinned is not None else torch.zeros(0, dtype=torch.long)
    if len(cover):
        extra = _hitting_set(list(cover), forced, s)
        forced = torch.cat([forced, torch.tensor(extra, dtype=torch.long)])
    if forced.numel():
        s[forced] = float("inf")
    order = torch.sort(-s, stable=True).indices
    return order[:max(width, int(forced.numel()))].sort().values


def prune(model: nn.Module, example_inputs: Inputs, *, ratio: float | None = None,
          widths: Mapping[str, int] | None = None, importance: str | Importance = "l1", min_channels: int = 1,
          round_to: int = 1, protected: Iterable[str] | None = None,
          optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
    """Prune ``model`` physically, in place, and return it.

    Exactly one of
    - ``ratio``: the fraction of channels removed from *every* prunable group (uniform, ``0 <= ratio < 1``): a
      group of ``size`` channels keeps ``size - floor(ratio * size)`` before ``min_channels``/``round_to``;
    - ``widths``: {group name: width} (see ``apply_widths``; partial allowed).
    ``importance``: a registered name (``l1``, ``l2``, ``bn_scale``, ``random``) or an ``Importance``.
    ``protected``: group names left untouched. ``optimizer``: its state is sliced with the parameters.
    Group names come from ``DependencyGraph(model, example_inputs).groups``.
    """
    if (ratio is None) == (widths is None):
        raise ConfigError("give exactly one of ratio= (uniform fraction removed per group) or widths= "
                          "({group name: width})")
    _check_options(min_channels, round_to)
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise ConfigError(f"ratio={ratio!r} must be a number in [0, 1)")
        check_range("ratio", float(ratio), 0.0, 1.0, high_open=True)
    graph = DependencyGraph(model, example_inputs)
    prot = _protected_names(graph, protected)
    if ratio is not None:
        widths = {g.name: g.size - math.floor(ratio * g.size + 1e-9)
                  for g in graph.prunable_groups if g.name not in prot}
    apply_widths(graph, widths, importance=importance, min_channels=min_channels, round_to=round_to,
                 protected=prot, optimizer=optimizer)
    return model
