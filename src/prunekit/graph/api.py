"""Width resolution and channel selection: ``resolve_width``, ``select_top`` and ``keep_indices`` (what
``DependencyGraph.plan`` keeps). The one-call entry points ``prune``/``apply_widths`` live in ``prunekit.planning``
(they resolve importance names, which sit above the graph)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Mapping

import torch

from prunekit.errors import ConfigError
from prunekit.graph.group import _hitting_set

if TYPE_CHECKING:  # pragma: no cover
    from prunekit.graph.dependency import DependencyGraph, KeepRule


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


def keep_indices(graph: DependencyGraph, widths: Mapping[str, int], keep: "KeepRule" = "prefix", *,
                 min_channels: int = 1, round_to: int = 1,
                 protected: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Kept channel indices (sorted, group numbering) of every group whose width changes; see
    ``DependencyGraph.plan`` for ``widths``, ``keep`` and the options."""
    _check_options(min_channels, round_to)
    prot = _protected_names(graph, protected)
    if isinstance(keep, str) and keep != "prefix":
        raise ConfigError(f"keep={keep!r}: give 'prefix', a mapping of scores, or a scorer; importance names "
                          "such as 'l1' are resolved by prunekit.planning.plan / apply_widths")
    out: dict[str, torch.Tensor] = {}
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
        if isinstance(keep, str):
            s = -torch.arange(g.size, dtype=torch.float32)  # prefix: lower index = better
        elif isinstance(keep, Mapping):
            if name not in keep:
                raise ConfigError(f"no scores for group {name!r} (keep= mapping)")
            s = torch.as_tensor(keep[name], dtype=torch.float32).detach().cpu().reshape(-1)
        else:
            s = torch.as_tensor(keep(graph, g), dtype=torch.float32).detach().cpu().reshape(-1)
        if s.numel() != g.size:
            raise ConfigError(f"scores[{name!r}] has {s.numel()} entries; the group has {g.size} channels")
        out[name] = select_top(s, w, g.pinned, g.cover)
    return out


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
