"""The planner: one global ranking of channels over groups, per-group floors, and budgets.

Every score-based method plans the same way: score each channel of each prunable group (``importance``), rank
all of them together, remove the lowest ones subject to a per-group *floor* (a fraction of the group *kept*,
plus ``min_channels``), and stop at a budget: a number of channels, a ratio, or a target of any cost model
(MACs, params, latency), solved by bisection on the number of channels removed. NetAdapt-style methods
instead solve one group at a time: the largest width of group g whose network meets a cost target.

Two ways to count, the two papers' own:

- ``threshold`` (Network Slimming): ``k`` is a quantile over *all* scored channels; the k lowest are cut, then
  every group is raised back to its floor (floor channels count toward ``k`` but survive);
- ``candidates`` (Gate Decorator's ticks): only channels above the floors (and not pinned) are ranked, and
  exactly ``k`` of them are removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

import torch

from prunekit.errors import ConfigError, check_range
from prunekit.graph import ChannelGroup, DependencyGraph, resolve_width

Mode = Literal["threshold", "candidates"]


def channel_floors(graph: DependencyGraph, original: Mapping[str, int] | None = None, *, min_keep: float = 0.0,
                   min_channels: int = 1, names: list[str] | None = None) -> dict[str, int]:
    """Per prunable group (or the named ones): the fewest channels it may keep,
    ``min(size, max(min_channels, group.min_width, ceil(min_keep · original width)))``; ``original`` defaults
    to the current widths (``min_keep`` is a fraction *kept*)."""
    check_range("min_keep", min_keep, 0, 1, high_open=True)
    groups = [graph.group(n) for n in names] if names is not None else graph.prunable_groups
    out = {}
    for g in groups:
        size0 = (original or {}).get(g.name, g.size)
        out[g.name] = min(g.size, max(min_channels, g.min_width, math.ceil(min_keep * size0 - 1e-9)))
    return out


@dataclass
class RankedPlan:
    """Widths after removing the ``removed`` lowest-ranked channels (of ``ranked`` in the ranking):
    ``widths`` per scored group, ``keep`` (kept indices per changed group, ``candidates`` mode), the
    ``threshold`` (score of the highest removed channel) and the groups stopped by their floor."""

    widths: dict[str, int]
    removed: int
    ranked: int
    threshold: float
    floor_hit: list[str] = field(default_factory=list)
    keep: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Fraction of the ranked channels removed."""
        return self.removed / max(self.ranked, 1)


class GlobalRanking:
    """All channels of the scored groups sorted once by score (ascending: first removed); ``at(k)`` is
    O(groups) after an O(N log N) sort. ``scores``: {group name: Tensor[size]} (higher = keep; groups not
    given are never pruned); ``floors``: {group: fewest channels kept}; ``round_to``/``min_channels`` are
    applied to the resulting widths (``threshold`` mode, as ``resolve_width``)."""

    def __init__(self, graph: DependencyGraph, scores: Mapping[str, torch.Tensor], floors: Mapping[str, int], *,
                 mode: Mode = "candidates", min_channels: int = 1, round_to: int = 1):
        if mode not in ("threshold", "candidates"):
            raise ConfigError(f"mode={mode!r} must be 'threshold' or 'candidates'")
        if not scores:
            raise ConfigError("nothing to rank: no group has scores")
        self.graph, self.mode = graph, mode
        self.names = list(scores)
        self.groups: list[ChannelGroup] = [graph.group(n) for n in self.names]
        self.floors = [max(int(floors.get(n, 1)), g.min_width) if mode == "candidates" else int(floors[n])
                       for n, g in zip(self.names, self.groups)]
        self.min_channels, self.round_to = min_channels, round_to
        flat, owner, chans = [], [], []
        for i, (n, g, floor) in enumerate(zip(self.names, self.groups, self.floors)):
            if mode == "threshold":
                s = scores[n]
                order = torch.arange(s.numel())
            else:
                s = torch.as_tensor(scores[n], dtype=torch.float64).detach().cpu().reshape(-1)
                if s.numel() != g.size:
                    raise ConfigError(f"scores[{n!r}] has {s.numel()} entries; the group has {g.size} channels")
                s = torch.nan_to_num(s.clone(), nan=float("inf"))
                if g.pinned.numel():
                    s[g.pinned] = float("inf")
                order = torch.sort(s, stable=True).indices[:max(0, g.size - floor)]
                order = order[torch.isfinite(s[order])]
                s = s[order]
            flat.append(s)
            owner.append(torch.full((s.numel(),), i, dtype=torch.long))
            chans.append(order)
        flat_t = torch.cat(flat)
        order = torch.sort(flat_t, stable=True).indices  # ties: group order, then the group's own ranking
        self.sorted_scores = flat_t[order]
        self.sorted_owner = torch.cat(owner)[order]
        self.sorted_channel = torch.cat(chans)[order]

    @property
    def num_ranked(self) -> int:
        return int(self.sorted_scores.numel())

    def count(self, ratio: float) -> int:
        """Channels a ``ratio`` of the ranking removes: ``floor(ratio · N)``."""
        return min(int(math.floor(ratio * self.num_ranked + 1e-9)), self.num_ranked)

    def removed_per_group(self, k: int) -> list[int]:
        return torch.bincount(self.sorted_owner[:k], minlength=len(self.names)).tolist()

    def widths(self, k: int) -> dict[str, int]:
        """Widths of the scored groups after removing the ``k`` lowest channels (floors and rounding applied)."""
        return self.at(k, indices=False).widths

    def at(self, k: int, *, indices: bool = True) -> RankedPlan:
        """The plan removing the ``k`` lowest-ranked channels."""
        k = max(0, min(int(k), self.num_ranked))
        removed = self.removed_per_group(k)
        widths, floor_hit = {}, []
        for g, floor, r in zip(self.groups, self.floors, removed):
            want = g.size - r
            if self.mode == "threshold":
                if want < floor:
                    floor_hit.append(g.name)
                    want = floor
                want = resolve_width(g.size, want, min_channels=self.min_channels, round_to=self.round_to,
                                     min_width=g.min_width)
            elif want <= floor and r:
                floor_hit.append(g.name)
            widths[g.name] = want
        keep: dict[str, torch.Tensor] = {}
        if indices and self.mode == "candidates":
            for i, (n, g) in enumerate(zip(self.names, self.groups)):
                drop = self.sorted_channel[:k][self.sorted_owner[:k] == i]
                if drop.numel():
                    mask = torch.ones(g.size, dtype=torch.bool)
                    mask[drop] = False
                    keep[n] = torch.nonzero(mask).reshape(-1)
        thr = float(self.sorted_scores[k - 1]) if k > 0 else float("-inf")
        return RankedPlan(widths, k, self.num_ranked, thr, floor_hit, keep)

    def smallest(self, fits: Callable[[dict[str, int]], bool], high: int | None = None) -> int | None:
        """The fewest channels to remove (``0..high``, default all) whose widths satisfy ``fits``; None when even
        ``high`` does not. Bisection: assumes ``fits`` is monotone in the number removed (true of MACs, params
        and latency: removing channels never adds cost)."""
        hi = self.num_ranked if high is None else max(0, min(int(high), self.num_ranked))
        if not fits(self.widths(hi)):
            return None
        if fits(self.widths(0)):
            return 0
        lo = 0  # fits(lo) is False, fits(hi) is True
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(self.widths(mid)):
                hi = mid
            else:
                lo = mid
        return hi


def largest_width(cost: Callable[[Mapping[str, int]], float], widths: Mapping[str, int], group: str, budget: float,
                  *, low: int = 1, step: int = 1) -> int | None:
    """NetAdapt's per-group solve: the largest width ``w`` of ``group`` (a multiple of ``step`` counted down from
    its current width, at least ``low``) such that ``cost(widths | {group: w}) <= budget``; None if even ``low``
    is over budget. Bisection (cost is monotone in one group's width)."""
    current = int(widths[group])
    cands = sorted({current, *range(low, current, step)}) if step > 0 else [current]
    cands = [w for w in cands if w >= low]
    if not cands:
        return None

    def ok(w: int) -> bool:
        return cost({**widths, group: w}) <= budget

    if not ok(cands[0]):
        return None
    lo, hi = 0, len(cands) - 1  # ok(cands[lo]) holds
    if ok(cands[hi]):
        return cands[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(cands[mid]):
            lo = mid
        else:
            hi = mid
    return cands[lo]
