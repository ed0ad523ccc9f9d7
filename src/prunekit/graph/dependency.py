"""``DependencyGraph``: the channel groups of a model, their analytic cost, and in-place surgery."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.graph.analytic import AnalyticCost
from prunekit.graph.builder import Core
from prunekit.graph.group import ChannelGroup, GroupMember
from prunekit.graph.plan import LayerResize, PruningPlan, SetAttr, TensorSlice
from prunekit.graph.surgery import surgery_for
from prunekit.graph.trace import TRACERS, analyse

Inputs = torch.Tensor | tuple[torch.Tensor, ...]
KeepRule = str | Mapping[str, torch.Tensor] | Callable[["DependencyGraph", ChannelGroup], torch.Tensor]


def _as_tuple(example_inputs: Inputs) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].dim() == 0:
        raise ConfigError("example_inputs must be a batched tensor (N, ...) or a tuple whose first item is one")
    return inputs


@dataclass
class Coverage:
    """Share of conv output channels that can be pruned (in a prunable group, not pinned). Channels that are
    the model's output (a conv classifier) are left out of the count.

    ``ratio = prunable / total``; ``per_layer[name] = (prunable, total)``; ``unprunable[group] = reason`` for
    groups (with conv producers) that cannot be pruned at all."""

    ratio: float
    prunable: int
    total: int
    per_layer: dict[str, tuple[int, int]] = field(default_factory=dict)
    unprunable: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"coverage: {self.prunable}/{self.total} conv output channels prunable ({100 * self.ratio:.1f}%)"]
        for name, reason in self.unprunable.items():
            lines.append(f"  unprunable group {name}: {reason}")
        return "\n".join(lines)


@dataclass(frozen=True)
class LayerSignature:
    """What one layer call costs depends on: ``name`` (qualified module name), ``type`` (class name), ``attrs``
    (sorted (name, value) pairs: kernel_size, stride, padding, dilation, groups...), per-sample ``in_shape`` /
    ``out_shape`` (channels first for conv-like layers, last for Linear/LayerNorm) and ``dtype``. Hashable:
    identical signatures (other than ``name``) cost the same — ``key`` drops the name."""

    name: str
    type: str
    attrs: tuple[tuple[str, object], ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dtype: str

    @property
    def key(self) -> tuple:
        return (self.type, self.attrs, self.in_shape, self.out_shape, self.dtype)


class DependencyGraph:
    """Channel groups of ``model`` traced with ``example_inputs`` (a tensor or a tuple of tensors, batch first).

    ``groups``: every ChannelGroup (those created by a conv/linear/conv-transpose layer), in execution order.
    ``leaf_modules``: layers to keep opaque, as types or qualified names (their channels become unprunable;
    a Conv/Linear subclass kept whole is analysed as its base layer). Conv/Linear subclasses whose forward fx
    cannot trace are kept whole automatically (with a warning); any other trace failure raises GraphError
    naming the module and the source line. ``tracer``: ``"auto"`` (default: torch.fx symbolic tracing, and
    where it fails — Python control flow on shapes, ``list(x.chunk(2, 1))``, shape checks in a detection head —
    fx tracing that also runs each op on ``example_inputs`` and follows their path: ``"concrete"``), or either
    forced; ``graph.tracer`` names the one used. A concrete graph is specialised on the example's shapes
    (build it with the input size you deploy). ``pin_outputs=False`` lets the channels of the model's outputs
    shrink too (outputs that carry intermediate feature maps, e.g. a detection head that also returns its
    input maps: the caller must accept their new channel counts). ``approximate_statistics=True`` makes channels
    that a mean/variance over the channel dim reads (ConvNeXt-V2's global response norm) prunable, marked
    inexact: removing channels shifts that statistic, so the pruned model only approximates the masked one (as
    with LayerNorm over channels); by default they are pinned. Building never modifies the model
    (parameters, buffers, flags, attributes).
    After ``prune_groups``/``apply_widths`` the graph describes the pruned model (group names stay; sizes
    shrink).
    """

    def __init__(self, model: nn.Module, example_inputs: Inputs, *, leaf_modules: Iterable[type | str] = (),
                 tracer: str = "auto", pin_outputs: bool = True, approximate_statistics: bool = False):
        self.model = model
        self.example_inputs = _as_tuple(example_inputs)
        leaf_modules = list(leaf_modules)
        bad = [x for x in leaf_modules if not (isinstance(x, str) or (isinstance(x, type)
                                                                     and issubclass(x, nn.Module)))]
        if bad:
            raise ConfigError(f"leaf_modules takes nn.Module types or qualified module names, got {bad[:3]!r}")
        if tracer not in TRACERS:
            raise ConfigError(f"tracer must be one of {', '.join(TRACERS)}, got {tracer!r}")
        self._core: Core
        self._core, self.tracer = analyse(model, self.example_inputs,
                                          tuple(x for x in leaf_modules if isinstance(x, type)),
                                          [x for x in leaf_modules if isinstance(x, str)], tracer, pin_outputs,
                                          approximate_statistics)
        self._derive()

    # ---- structure ---------------------------------------------------------------------------------------------
    def _derive(self) -> None:
        """(Re)build the public objects (groups, members, cost model) from the class-level core."""
        core = self._core
        per_group = self._group_members(core)
        self.groups: list[ChannelGroup] = [self._make_group(core, g, per_group[g])
                                           for g in range(len(core.group_names))]
        self._by_name = {g.name: g for g in self.groups}
        self._idx = {g.name: i for i, g in enumerate(self.groups)}
        self._cost = AnalyticCost(core, self.model)
        self._min_widths = np.array([g.min_width for g in self.groups], dtype=np.float64)

    @staticmethod
    def _group_members(core: Core) -> list[list[GroupMember]]:
        """For each group, the members holding some of its channels, with positions and channel indices."""
        index_in_group = np.zeros(core.num_classes, dtype=np.int64)
        for classes in core.group_classes:
            index_in_group[classes] = np.arange(len(classes))
        per_group: list[list[GroupMember]] = [[] for _ in core.group_names]
        for m in core.members:
            gid = core.class_group[m.cls]
            present = np.unique(gid[gid >= 0])
            for g in present.tolist():
                pos = np.flatnonzero(gid == g) if len(present) > 1 or (gid < 0).any() else np.arange(len(gid))
                ch = index_in_group[m.cls[pos]]
                size = len(core.group_classes[g])
                offset = None
                if len(pos) == size and pos[-1] - pos[0] == size - 1 and np.array_equal(ch, np.arange(size)):
                    offset = int(pos[0])
                per_group[g].append(GroupMember(m, torch.from_numpy(pos), torch.from_numpy(ch), offset))
        return per_group

    @staticmethod
    def _make_group(core: Core, g: int, members: list[GroupMember]) -> ChannelGroup:
        classes = core.group_classes[g]
        pinned_mask = core.class_pinned[classes]
        pinned = torch.from_numpy(np.flatnonzero(pinned_mask))
        size = len(classes)
        free = size - int(pinned_mask.sum())
        first_reason = (core.class_reason.get(int(classes[np.flatnonzero(pinned_mask)[0]]), "pinned")
                        if pinned.numel() else None)
        if free == 0:
            reason = first_reason
        elif size < 2:
            reason = "a single channel"
        elif pinned.numel():
            reason = f"{pinned.numel()} channels pinned: {first_reason}"
        else:
            reason = None
        # members holding only some of the group's channels (none pinned) must keep one: "cover" sets;
        # members holding the free channels unevenly make the analytic cost an estimate ("uniform")
        cover, uniform = [], True
        pinned_set = set(pinned.tolist())
        free_mask = ~torch.from_numpy(pinned_mask)
        for gm in members:
            mult = torch.bincount(gm.channels, minlength=size)[free_mask]
            if mult.numel() and int(mult.min()) != int(mult.max()):
                uniform = False
            if len(gm.positions) == gm.member.size and len(gm.positions) and gm.offset is None:
                ch = gm.channels.unique()
                if ch.numel() < size and not pinned_set.intersection(ch.tolist()):
                    cover.append(ch)
        region = core.region_of(g)
        if region is not None:  # members hold parts of the group, in proportion at every allowed width
            uniform = region.proportional
        producers = [gm for gm in members if gm.member.producer]
        unit = 1
        if producers:
            ch = producers[0].channels
            unit = max(1, len(ch) // max(1, int(ch.unique().numel())))
        return ChannelGroup(name=core.group_names[g], size=size, prunable=free >= 1 and size >= 2, members=members,
                            pinned=pinned, reason=reason, exact=not bool(core.class_inexact[classes].any()),
                            cover=cover, uniform=uniform, unit=unit, region=region)

    def __repr__(self) -> str:
        return (f"DependencyGraph({type(self.model).__name__}: {len(self.groups)} groups, "
                f"{len(self.prunable_groups)} prunable, {self.macs() / 1e6:.1f}M MACs)")

    def summary(self) -> str:
        """One line per group: name, size, state (prunable / pinned channels / why not), layers."""
        lines = [f"{'group':40s} {'size':>5s}  {'state':30s} members"]
        for g in self.groups:
            state = ("prunable" + (f", {g.pinned.numel()} pinned" if g.pinned.numel() else "")
                     if g.prunable else f"fixed: {g.reason}")
            names = sorted({gm.name for gm in g.members})
            shown = ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")
            lines.append(f"{g.name:40s} {g.size:5d}  {state[:30]:30s} {shown}")
        lines.append(str(self.coverage()).splitlines()[0])
        return "\n".join(lines)

    @property
    def warnings(self) -> list[str]:
        """Messages about ops without a channel rule (also issued with ``warnings.warn`` at build time)."""
        return list(self._core.warnings)

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group(self, name: str) -> ChannelGroup:
        """The group called ``name``; an unknown name raises ConfigError listing close names."""
        g = self._by_name.get(name)
        if g is None:
            raise ConfigError(f"unknown channel group {name!r}.{self._hint(name)}")
        return g

    __getitem__ = group

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def _hint(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._by_name), n=5, cutoff=0.5)
        if close:
            return f" Close names: {', '.join(close)}."
        return f" Groups: {', '.join(list(self._by_name)[:20])}{' ...' if len(self._by_name) > 20 else ''}."

    def widths(self) -> dict[str, int]:
        """Current width of every group."""
        return {g.name: g.size for g in self.groups}

    # ---- analytic cost -----------------------------------------------------------------------------------------
    def width_vector(self, widths: Mapping[str, int] | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Widths as a vector in ``groups`` order; a mapping may be partial (missing groups keep their size).
        Each width is clamped to ``[group.min_width, group.size]`` (what ``apply_widths`` would give it with
        ``min_channels=1, round_to=1``)."""
        if widths is None:
            return self._cost.sizes.copy()
        return np.clip(self._raw_vector(widths), self._min_widths, self._cost.sizes)

    def _raw_vector(self, widths) -> np.ndarray:
        if isinstance(widths, Mapping):
            w = self._cost.sizes.copy()
            for name, v in widths.items():
                g = self._by_name.get(name)
                if g is None:
                    raise ConfigError(f"unknown channel group {name!r}.{self._hint(name)}")
                w[self._index(g)] = v
            return w
        w = np.asarray(widths, dtype=np.float64)
        if w.shape != self._cost.sizes.shape:
            raise ConfigError(f"widths vector has {w.shape[0] if w.ndim else 0} entries; the graph has "
                              f"{len(self.groups)} groups")
        return w

    def _index(self, g: ChannelGroup) -> int:
        return self._idx[g.name]

    @property
    def exact_cost(self) -> bool:
        """True when ``macs(widths)``/``params(widths)`` are exact whichever channels are kept (all groups
        ``uniform``), as for every zoo and torchvision model; else they are expected values."""
        return all(g.uniform for g in self.groups)

    def macs(self, widths: Mapping[str, int] | Sequence[int] | np.ndarray | None = None) -> int:
        """Multiply-accumulates per image at the given group widths (default: current), without a forward
        pass; the convention of ``prunekit.cost.count`` (conv + linear, eval mode). Exact when ``exact_cost``
        (see ``ChannelGroup.uniform``)."""
        return int(round(self._cost.macs(self.width_vector(widths))))

    def params(self, widths: Mapping[str, int] | Sequence[int] | np.ndarray | None = None) -> int:
        """Number of parameters at the given group widths (default: current)."""
        return int(round(self._cost.params(self.width_vector(widths))))

    def layer_signatures(self, widths: Mapping[str, int] | Sequence[int] | np.ndarray | None = None
                         ) -> list[LayerSignature]:
        """One :class:`LayerSignature` per leaf-layer call (every layer, in execution order: conv, BN,
        activations, pooling, linear...), with its input/output channel counts at ``widths`` (default: current);
        the keys of a latency look-up table. Channel counts are exact when ``exact_cost``."""
        counts = self._cost.widths_of(self.width_vector(widths))
        out = []
        for rec, (ri, ro) in zip(self._core.records, self._cost.record_rows):
            cin = int(round(counts[ri])) if ri is not None else None
            cout = int(round(counts[ro])) if ro is not None else None
            in_shape, out_shape = list(rec.in_shape), list(rec.out_shape)
            if cin is not None:
                in_shape[rec.in_dim - 1] = cin
            if cout is not None:
                out_shape[rec.out_dim - 1] = cout
            attrs = dict(rec.attrs)
            if "groups" in attrs and attrs["groups"] > 1 and rec.type.startswith("Conv") and cin is not None \
                    and rec.in_shape[rec.in_dim - 1] == attrs["groups"]:
                attrs["groups"] = cin  # depthwise stays depthwise
            out.append(LayerSignature(rec.name, rec.type, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                                                       for k, v in attrs.items())),
                                      tuple(in_shape), tuple(out_shape), rec.dtype))
        return out

    def coverage(self) -> Coverage:
        """Share of conv output channels that sit in prunable groups and are not pinned."""
        core = self._core
        pruneable_group = np.array([g.prunable for g in self.groups] + [False])
        output = np.zeros(core.num_classes, dtype=bool)
        for c, r in core.class_reason.items():
            output[c] = r == "model output"
        per_layer, total, ok = {}, 0, 0
        unprunable = {}
        for m in core.members:
            owner = m.module
            if not (m.producer and isinstance(owner, nn.modules.conv._ConvNd)):
                continue
            gid = core.class_group[m.cls]
            good = (gid >= 0) & pruneable_group[gid] & ~core.class_pinned[m.cls]
            n_ok = int(good.sum())
            n = m.size - int(output[m.cls].sum())
            if n == 0:
                continue
            per_layer[m.name] = (n_ok, n)
            total += n
            ok += n_ok
        for g in self.groups:
            if not g.prunable and any(isinstance(p.module, nn.modules.conv._ConvNd) for p in g.producers):
                unprunable[g.name] = g.reason or ""
        return Coverage(ok / total if total else 1.0, ok, total, per_layer, unprunable)

    # ---- plans and surgery ---------------------------------------------------------------------------------
    def plan(self, widths: Mapping[str, int], *, keep: KeepRule = "prefix", min_channels: int = 1,
             round_to: int = 1, protected: Iterable[str] | None = None) -> PruningPlan:
        """A :class:`PruningPlan` setting each named group to the given width (partial mapping allowed).

        ``keep`` chooses the channels kept: ``"prefix"`` (the first ones: weight-sharing supernets),
        ``{group name: Tensor[size]}`` scores (higher = keep), or a scorer ``fn(graph, group) -> Tensor[size]``
        (an ``Importance``; ``prunekit.planning.plan`` also accepts registry names such as ``"l1"``). Widths pass
        through ``resolve_width`` (``min_channels``, ``round_to`` in layer channels, pinned channels); a width
        equal to the group size leaves the group untouched (also for unprunable groups); any other width on an
        unprunable or ``protected`` group raises ConfigError naming it. Nothing is modified.
        """
        from prunekit.graph.api import keep_indices

        scores: dict[str, torch.Tensor] = {}
        if any(g.region is not None for g in self.groups):  # layout regions choose per segment (with the scores)
            base = keep

            def keep(graph: DependencyGraph, g: ChannelGroup) -> torch.Tensor:
                if isinstance(base, str):
                    s = -torch.arange(g.size, dtype=torch.float32)  # prefix: lower index = better
                elif isinstance(base, Mapping):
                    if g.name not in base:
                        raise ConfigError(f"no scores for group {g.name!r} (keep= mapping)")
                    s = torch.as_tensor(base[g.name])
                else:
                    s = base(graph, g)
                scores[g.name] = s
                return s
            if isinstance(base, str) and base != "prefix":
                keep = base  # keep_indices explains the error
        out = keep_indices(self, widths, keep, min_channels=min_channels, round_to=round_to, protected=protected)
        for name, idx in out.items():
            g = self.group(name)
            if g.region is not None:
                out[name] = g.select(scores[name], int(idx.numel()))
        return self.plan_keep(out)

    def plan_keep(self, keep: Mapping[str, torch.Tensor | Sequence[int]]) -> PruningPlan:
        """The plan keeping channels ``keep[name]`` (group channel indices) of each named group; groups not
        named keep everything. Indices must include the group's pinned channels and not be empty. On a layout
        region's group (``ChannelGroup.region``) a set the pruned shuffles do not allow becomes the nearest allowed
        one (the given channels first in every segment; ``plan`` chooses by score instead)."""
        core = self._core
        kept = np.ones(core.num_classes, dtype=bool)
        changed: dict[str, torch.Tensor] = {}
        for name, idx in keep.items():
            g = self.group(name)
            idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
            if idx.numel() == g.size and torch.equal(idx.sort().values, torch.arange(g.size)):
                continue
            if not g.prunable:
                raise ConfigError(f"group {name!r} cannot be pruned: {g.reason}")
            if idx.numel() == 0:
                raise ConfigError(f"keep[{name!r}] is empty: a group must keep at least one channel")
            if idx.min() < 0 or idx.max() >= g.size:
                raise ConfigError(f"keep[{name!r}] has indices outside [0, {g.size})")
            if idx.unique().numel() != idx.numel():
                raise ConfigError(f"keep[{name!r}] has repeated indices")
            if g.pinned.numel() and not bool(torch.isin(g.pinned, idx).all()):
                raise ConfigError(f"keep[{name!r}] drops pinned channels ({g.reason}); keep indices "
                                  f"{g.pinned.tolist()[:10]}{'...' if g.pinned.numel() > 10 else ''}")
            if g.region is not None and g.region.assignment(idx.numpy()) is None:
                # not a kept set the pruned shuffles allow: the nearest one, the given channels first
                idx = torch.from_numpy(g.region.project(idx.numpy()))
            classes = core.group_classes[self._index(g)]
            mask = np.zeros(g.size, dtype=bool)
            mask[idx.numpy()] = True
            kept[classes[~mask]] = False
            changed[name] = idx.sort().values
        widths = self.widths()
        widths.update({n: int(i.numel()) for n, i in changed.items()})
        plan = PruningPlan(widths, changed, kept_classes=kept)
        if kept.all():
            return plan
        touched: dict[str, nn.Module] = {}
        for m in core.members:
            mask = kept[m.cls]
            if mask.all():
                continue
            idx = torch.from_numpy(core.member_positions(m, kept))
            if m.kind == "shape":
                old = getattr(m.module, m.attr)
                value = list(old)
                value[m.dim] = int(mask.sum())
                plan.ops.append(SetAttr(m.name, m.attr, type(old)(value)))
            elif m.kind == "index":
                old = getattr(m.module, m.attr)
                renumber = torch.from_numpy(np.cumsum(kept[m.source]) - 1).to(old.device)
                plan.ops.append(SetAttr(m.name, m.attr, renumber[old[idx.to(old.device)]].to(old.dtype)))
            elif m.kind == "sizes":
                old = getattr(m.module, m.attr)
                n_pieces = len(old) if isinstance(old, (list, tuple)) else int(m.pieces.max()) + 1
                counts = np.bincount(m.pieces[mask], minlength=n_pieces).tolist()
                if isinstance(old, int):  # equal pieces of size ``old``: all keep the same count
                    value = counts[0]
                else:
                    value = type(old)(counts) if isinstance(old, (list, tuple)) else counts
                plan.ops.append(SetAttr(m.name, m.attr, value))
            elif m.kind == "module":
                h = surgery_for(m.module)
                if h is None:  # pragma: no cover - rules only create members for handled types
                    raise AssertionError(f"no surgery for {type(m.module).__name__}")
                for attr, dim in h.params(m.module, m.role):
                    plan.ops.append(TensorSlice(m.name, attr, dim, idx))
                plan.ops.append(LayerResize(m.name, m.role, int(idx.numel())))
                touched.setdefault(m.name, m.module)
            else:
                owner = m.name.rpartition(".")[0]
                plan.ops.append(TensorSlice(owner, m.attr, m.dim, idx))
                plan.ops.append(owner)
        plan.finish = list(touched)  # every touched layer has a handler (checked above)
        return plan

    def apply_plan(self, plan: PruningPlan, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Prune this graph's model in place by ``plan`` (made by this graph, before any other pruning); the
        graph then describes the pruned model (group names stay; sizes shrink)."""
        if plan.kept_classes is None or plan.kept_classes.shape != (self._core.num_classes,):
            raise ConfigError("this plan was not made by this graph in its current state (make it with "
                              "graph.plan(...) right before applying it)")
        if plan.is_identity:
            return
        plan.apply(self.model, optimizer)
        self._core = self._core.filtered(plan.kept_classes)
        self._derive()

    def prune_groups(self, keep: Mapping[str, torch.Tensor | Sequence[int]],
                     optimizer: torch.optim.Optimizer | None = None) -> None:
        """Physically keep only channels ``keep[name]`` (group channel indices) of each named group; groups not
        named keep everything. Modifies the model in place (and slices ``optimizer``'s state); the graph then
        describes the pruned model. ``plan_keep(keep)`` gives the same pruning as data."""
        self.apply_plan(self.plan_keep(keep), optimizer)
