"""The public objects of a dependency graph: ``Member`` (one prunable dimension of one layer or parameter),
``GroupMember`` (the part of a member that belongs to one group) and ``ChannelGroup``.

A *channel* of a group is one equivalence class of tensor channels that must be removed together (a conv's
output channel, the BN and activation channels that follow it, the channels of every other tensor added to it,
the matching input channels of every consumer...). Channel ``i`` of a group may occupy several positions of one
member (after ``flatten`` a conv channel occupies ``H*W`` input features of the next ``Linear``; in a grouped
conv one group channel is a whole conv group).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn


@dataclass(eq=False)
class Member:
    """One dimension of one layer (``kind="module"``) or of one parameter/buffer (``kind="param"``).

    ``role``: for layers ``"out"`` (the channels a layer produces or normalises: conv/linear output, BN/GN/PReLU
    channels), ``"in"`` (conv/linear input channels) or ``"d<i>"`` (dimension ``i`` of a LayerNorm's
    ``normalized_shape``); for parameters ``"dim<d>"``. ``module`` is the layer, or the parameter's owner module
    (``attr`` then names the parameter). ``producer``: True for the output channels of a conv/linear layer.
    ``size``: the number of positions along the dimension (the member's current width).
    ``kind="sizes"``: a list of split sizes stored on ``module`` as attribute ``attr`` (``torch.split(x,
    self.splits)``); ``pieces[k]`` is the piece position ``k`` falls in, and surgery sets the attribute to the
    kept count of each piece. ``kind="index"``: an index tensor ``module.attr`` (``index_select`` of channels,
    CondenseNet's converted layers): position ``k`` gathers a channel of the indexed dim, whose classes are
    ``source``; surgery keeps the positions of kept channels and renumbers their values. ``kind="shape"``:
    entry ``dim`` of a shape tuple ``module.attr`` that a ``view`` reads (set to the kept count).
    """

    key: tuple
    name: str
    kind: str
    role: str
    module: nn.Module
    attr: str | None
    dim: int
    producer: bool
    cls: np.ndarray = field(repr=False)  # channel class (internal id) of each position
    pieces: np.ndarray | None = field(default=None, repr=False)  # kind "sizes": piece index of each position
    source: np.ndarray | None = field(default=None, repr=False)  # kind "index": classes of the indexed dim

    @property
    def size(self) -> int:
        return int(self.cls.shape[0])

    @property
    def layer_type(self) -> str:
        return type(self.module).__name__

    def describe(self) -> str:
        if self.kind == "param":
            return f"{self.name}[dim {self.dim}]"
        if self.kind == "sizes":
            return f"{self.name}.{self.attr} (split sizes)"
        if self.kind == "index":
            return f"{self.name}.{self.attr} (channel index)"
        if self.kind == "shape":
            return f"{self.name}.{self.attr}[{self.dim}] (shape entry)"
        return f"{self.name} ({self.layer_type}, {self.role})"


@dataclass(eq=False)
class GroupMember:
    """The positions of ``member`` that belong to one group: ``positions[k]`` (an index along the member's
    dimension) holds group channel ``channels[k]``. ``offset`` is set when the positions are one contiguous run
    holding channels ``0..size-1`` in order (the member holds the whole group at ``offset``); it is None for
    partial or permuted placements (concatenations, shuffles, flatten)."""

    member: Member
    positions: torch.Tensor
    channels: torch.Tensor
    offset: int | None

    @property
    def module(self) -> nn.Module:
        return self.member.module

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def role(self) -> str:
        return self.member.role

    def reduce(self, values: torch.Tensor, group_size: int) -> torch.Tensor:
        """Sum per-position ``values`` (shape ``[member.size]``) into per-channel totals (shape ``[group_size]``)."""
        out = torch.zeros(group_size, dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.channels.to(values.device), values[self.positions.to(values.device)])

    def __repr__(self) -> str:
        where = f"offset {self.offset}" if self.offset is not None else f"{len(self.positions)} positions"
        return f"GroupMember({self.member.describe()}, {where})"


@dataclass(eq=False)
class ChannelGroup:
    """A set of coupled channel dimensions, pruned together.

    ``name``: stable across deepcopy, re-tracing and processes: the qualified name of the group's first producer
    (conv/linear) in execution order. ``size``: number of channels. ``prunable``: at least one channel may be
    removed (False for the classifier's output, channels that reach an op prunekit does not understand, etc.;
    ``reason`` says why). ``pinned``: channel indices that are never removed (e.g. the slots an option-A
    zero-padding shortcut adds); every width must keep them. ``exact``: False when a normalisation computes
    statistics across these channels (LayerNorm over channels), so removing even a zero channel changes outputs.
    ``unit``: layer channels per group channel in the first producer (1, or e.g. the width of a conv group).
    ``uniform``: every member holds each prunable channel equally often (or not at all), so ``macs(widths)`` and
    ``params(widths)`` are exact for any choice of kept channels; otherwise they are the expected value under a
    uniform choice (e.g. a residual add over a concatenation of two producers, each holding half the channels).
    ``region``: set for the group of a layout region (a channel shuffle with its chunks and concatenations,
    ShuffleNet-v2; ``prunekit.graph.layout``): only the widths in ``allowed_widths`` exist, and the kept channels
    are chosen per *segment* (the channels of one producer that reach the same layers), each keeping the count the
    pruned shuffles need (``select``); plans snap other widths down to an allowed one, and surgery slices these
    channels in the order the pruned shuffles produce. ``macs(widths)`` is exact at allowed widths.
    """

    name: str
    size: int
    prunable: bool
    members: list[GroupMember]
    pinned: torch.Tensor
    reason: str | None = None
    exact: bool = True
    cover: list[torch.Tensor] = field(default_factory=list, repr=False)
    uniform: bool = True
    unit: int = 1
    region: Any = field(default=None, repr=False)

    @property
    def allowed_widths(self) -> list[int] | None:
        """The widths this group can take (ascending), or None when every width in ``[min_width, size]`` can."""
        return self.region.widths if self.region is not None else None

    def select(self, scores: torch.Tensor, width: int) -> torch.Tensor:
        """Kept channel indices (sorted) for ``width`` by ``scores`` (higher = keep): the top channels with the
        pinned and cover channels first (``select_top``), or, for a layout region, the best channels of every
        segment at the largest allowed width not above ``width``."""
        if self.region is None:
            from prunekit.graph.api import select_top

            return select_top(scores, width, self.pinned, self.cover)
        s = torch.nan_to_num(torch.as_tensor(scores, dtype=torch.float64).detach().cpu().reshape(-1),
                             nan=-float("inf")).numpy()
        return torch.from_numpy(self.region.select(s, int(width)))

    def round_to(self, multiple: int) -> int:
        """The multiple that group *widths* must have so that the producing layers' channel counts are
        multiples of ``multiple``: a group channel may span ``unit`` layer channels (a whole conv group of a
        grouped conv), so ``round_to=8`` on a group of 8-channel conv groups needs no rounding at all."""
        return multiple // math.gcd(multiple, self.unit)

    @property
    def min_width(self) -> int:
        """The smallest width this group can take: its pinned channels, at least one channel, and one channel of
        every layer that holds only some of the group's channels (e.g. the stage-1 convs of an option-A ResNet,
        whose stream group also holds the pinned zero-pad slots of later stages): no layer is ever emptied."""
        if self.region is not None:  # every allowed width leaves every layer of the region at least one channel
            return self.region.widths[0]
        return max(1, int(self.pinned.numel()) + len(_hitting_set(self.cover, self.pinned)))

    @property
    def producers(self) -> list[GroupMember]:
        """Members that create the channels: conv / linear / conv-transpose outputs."""
        return [m for m in self.members if m.member.producer]

    @property
    def consumers(self) -> list[GroupMember]:
        """Members that read the channels as inputs: conv / linear input channels."""
        return [m for m in self.members if m.member.role == "in"]

    @property
    def bn_layers(self) -> list[GroupMember]:
        """The BatchNorm layers normalising these channels (their ``|gamma|`` is Network Slimming's score)."""
        return [m for m in self.members
                if m.member.kind == "module" and isinstance(m.member.module, nn.modules.batchnorm._BatchNorm)]

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"unprunable: {self.reason}"
        pinned = f", {self.pinned.numel()} pinned" if self.pinned.numel() and self.prunable else ""
        return f"ChannelGroup({self.name!r}, size={self.size}, {len(self.members)} members, {state}{pinned})"


def _hitting_set(cover: list[torch.Tensor], already: torch.Tensor, scores: torch.Tensor | None = None) -> list[int]:
    """Channels to add so that every set in ``cover`` holds at least one kept channel (greedy: the channel hitting
    most unhit sets, ties by score then index)."""
    kept = set(already.tolist())
    todo = [set(c.tolist()) for c in cover if not kept.intersection(c.tolist())]
    chosen: list[int] = []
    while todo:
        counts: dict[int, int] = {}
        for s in todo:
            for ch in s:
                counts[ch] = counts.get(ch, 0) + 1
        best = max(counts, key=lambda ch: (counts[ch], float(scores[ch]) if scores is not None else 0.0, -ch))
        chosen.append(best)
        todo = [s for s in todo if best not in s]
    return chosen
