"""The analysis state that the per-op rules write into, and its reduction to channel classes and groups.

Every channel of every tensor that flows through the traced graph carries an integer *id*. A rule may

- allocate fresh ids (``new_ids``: a conv's output channels, a parameter's dimension, zero-padded slots),
- *tie* two equal-length id arrays (``tie``: the two operands of an add, a depthwise conv's input and output),
- *pin* ids (``pin``: those channels are never removed; the reason is kept for the report),
- register a *member*: a layer or parameter dimension whose positions carry the given ids; surgery later
  slices it;
- record a *layout op* (``layout``: cat / chunk / channel shuffle on a channel dim) with the ties to make if it
  does not end up in a checked layout region (``graph.layout``: count constraints instead of position ties).

``finalize`` computes the connected components of the ties (the channel *classes*, via union-find) and the
groups (classes linked by being produced by the same layer), and returns a ``Core``: the class-level picture
that the rest of the package works on (and that surgery shrinks in place).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch.nn as nn

from prunekit.graph.group import Member
from prunekit.graph.layout import LayoutOp, Region, build_regions
from prunekit.graph.unionfind import components

Ids = np.ndarray


@dataclass
class LayerCost:
    """MACs of one layer call, per image: ``coef * count(factors[0]) * count(factors[1])`` where a factor is a
    member key (its current width) or None (the constant 1)."""

    name: str
    coef: int
    factors: tuple[Any, Any]


@dataclass(eq=False)
class LayerRecord:
    """One call of a leaf layer as traced: type, constructor attributes that set its cost (kernel, stride,
    groups...), per-sample input/output shapes, dtype, and the channel classes of its input and output channel
    dims (None where the tensor has no channel dim or the channels are not tracked)."""

    name: str
    type: str
    attrs: dict[str, Any]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dtype: str
    in_dim: int | None
    out_dim: int | None
    in_cls: np.ndarray | None = field(default=None, repr=False)
    out_cls: np.ndarray | None = field(default=None, repr=False)


_SIGNATURE_ATTRS = ("kernel_size", "stride", "padding", "dilation", "groups", "output_size", "scale_factor",
                    "mode", "p", "eps")


@dataclass
class Core:
    """Class-level state of a graph. Classes are numbered ``0..K-1``."""

    num_classes: int
    class_group: np.ndarray          # (K,) group index, -1 for classes no producer creates (never removed)
    class_pinned: np.ndarray         # (K,) bool
    class_inexact: np.ndarray        # (K,) bool
    class_reason: dict[int, str]     # first pin reason of pinned classes
    group_names: list[str]
    group_classes: list[np.ndarray]  # per group: its classes in channel order
    members: list[Member]
    layers: list[LayerCost]
    warnings: list[str] = field(default_factory=list)
    records: list[LayerRecord] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)   # layout regions (graph.layout), one group each

    def region_of(self, group: int) -> Region | None:
        for r in self.regions:
            if r.group == group:
                return r
        return None

    def _region_slots(self, r: Region, kept: np.ndarray) -> np.ndarray:
        return np.flatnonzero(kept[r.classes])

    def member_positions(self, m: Member, kept: np.ndarray) -> np.ndarray:
        """Positions of member ``m`` that a pruning keeping classes ``kept`` keeps, in the pruned layer's order:
        ascending, except on a layout region, whose pruned ops reorder channels (``Region.member_positions``)."""
        for r in self.regions:
            if m.key in r.member_value and not kept[r.classes].all():
                return r.member_positions(m.key, self._region_slots(r, kept))
        return np.flatnonzero(kept[m.cls])

    def filtered(self, kept: np.ndarray) -> "Core":
        """The core after removing every class where ``kept`` (shape ``(K,)``) is False."""
        new_id = np.cumsum(kept) - 1
        for m in self.members:
            if m.pieces is not None:
                m.pieces = m.pieces[kept[m.cls]]
            if m.source is not None:
                m.source = new_id[m.source[kept[m.source]]]
            m.cls = new_id[m.cls[self.member_positions(m, kept)]]
        regions = [r.renumbered(new_id) if kept[r.classes].all() else r.filtered(self._region_slots(r, kept), new_id)
                   for r in self.regions]
        for r in self.records:
            r.in_cls = new_id[r.in_cls[kept[r.in_cls]]] if r.in_cls is not None else None
            r.out_cls = new_id[r.out_cls[kept[r.out_cls]]] if r.out_cls is not None else None
        reasons = {int(new_id[c]): r for c, r in self.class_reason.items() if kept[c]}
        group_classes = [new_id[c[kept[c]]] for c in self.group_classes]
        for r in regions:  # a region's group numbers its channels leaf by leaf, in the pruned order
            group_classes[r.group] = r.classes
        return Core(int(kept.sum()), self.class_group[kept], self.class_pinned[kept], self.class_inexact[kept],
                    reasons, self.group_names, group_classes, self.members,
                    self.layers, self.warnings, self.records, regions)


def _source_unknown(module: nn.Module, attr: str, node_name: str, value: Any) -> bool:
    return False


class Builder:
    """Collects ids, ties, pins, members and layer costs while the rules walk the graph."""

    def __init__(self, model: nn.Module, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self.n = 0
        self.batches: list[list] = []           # [start, stop, owner name, producer?]
        self._ta: list[Ids] = []
        self._tb: list[Ids] = []
        self._pins: list[tuple[Ids, str]] = []
        self._inexact: list[Ids] = []
        self._same: list[tuple[Ids, Ids, str]] = []
        self._layout: list[LayoutOp] = []
        self.pending: dict = {}                  # rules' state across nodes (a channel shuffle's three ops)
        self.members: dict[tuple, dict] = {}     # key -> record (ids, module, attr, dim, ...)
        self.fixed_members: dict[tuple, str] = {}
        self.module_out: dict[str, Ids] = {}
        self.param_ids: dict[tuple[str, int], tuple[Ids, int]] = {}
        self.layers: list[LayerCost] = []
        self.records: list[tuple[LayerRecord, Any, Any]] = []
        self.record_layers = True
        self.called_leaves: set[str] = set()
        self.param_owners: dict[str, tuple[str, str]] = {}   # param qualname -> (owner qualname, attr)
        self.warnings: dict[str, None] = {}
        # comparisons of channel counts that decide a branch (node names): those whose other branch was traced
        # too (``analysed_branches``) constrain nothing themselves; the others pin and are listed in ``branches``
        self.approximate_statistics = False  # a mean/var over channels: prunable (inexact) instead of pinned
        self.branches: list[str] = []
        self.analysed_branches: frozenset[str] = frozenset()
        # whether attribute ``attr`` of ``module`` is where the literal ``value`` of node ``node_name`` comes
        # from (set by the tracer: it traces again with the attribute changed); unknown: assume not
        self.attribute_feeds: Callable[[nn.Module, str, str, Any], bool] = _source_unknown
        self._modules: dict[str, nn.Module] | None = None

    # ---- ids ---------------------------------------------------------------------------------------------
    def new_ids(self, n: int, owner: str, producer: bool = False) -> Ids:
        ids = np.arange(self.n, self.n + n, dtype=np.int64)
        self.batches.append([self.n, self.n + n, owner, producer])
        self.n += n
        return ids

    def module_out_ids(self, name: str, n: int) -> Ids:
        """The output-channel ids of layer ``name`` (the same ids on every call: shared layers form one group)."""
        ids = self.module_out.get(name)
        if ids is None:
            ids = self.module_out[name] = self.new_ids(n, name, producer=True)
        return ids

    def param_dim_ids(self, name: str, dim: int, size: int) -> Ids:
        """Ids of dimension ``dim`` of parameter/buffer ``name`` (cached; the dimension becomes a member)."""
        rec = self.param_ids.get((name, dim))
        if rec is None:
            ids = self.new_ids(size, name)
            self.param_ids[(name, dim)] = (ids, len(self.batches) - 1)
            owner, attr = self.param_owners[name]
            self.add_member(("param", name, dim), ids, module=self.module(owner), attr=attr, dim=dim,
                            name=name, role=f"dim{dim}")
            return ids
        return rec[0]

    def mark_producer(self, param: str, dim: int, owner: str) -> None:
        """Declare dimension ``dim`` of parameter ``param`` the output channels of layer ``owner`` (F.conv2d...)."""
        _, batch = self.param_ids[(param, dim)]
        self.batches[batch][2] = owner
        self.batches[batch][3] = True
        self.members[("param", param, dim)]["producer"] = True

    # ---- constraints --------------------------------------------------------------------------------------
    def tie(self, a: Ids, b: Ids) -> None:
        if a is b:
            return
        if a.shape != b.shape:
            raise AssertionError(f"internal error: tying id arrays of shapes {a.shape} and {b.shape}")
        self._ta.append(a.reshape(-1))
        self._tb.append(b.reshape(-1))

    def pin(self, ids: Ids | None, reason: str) -> None:
        if ids is not None and ids.size:
            self._pins.append((ids.reshape(-1), reason))

    def pin_labels(self, labels: Any, reason: str) -> None:
        """Pin every id inside a labels structure (dict dim -> ids, or nested tuples/lists/dicts of them)."""
        if labels is None:
            return
        ids = getattr(labels, "ids", None)
        if ids is not None and not isinstance(labels, (dict, tuple, list)):
            self.pin(ids, reason)
            return
        if isinstance(labels, dict) and all(isinstance(k, int) for k in labels):
            for ids in labels.values():
                self.pin(ids, reason)
        elif isinstance(labels, dict):
            for v in labels.values():
                self.pin_labels(v, reason)
        elif isinstance(labels, (tuple, list)):
            for v in labels:
                self.pin_labels(v, reason)

    def same_classes(self, a: Ids, b: Ids, reason: str) -> None:
        """Require ``a`` and ``b`` to cover the same channel classes (checked after all ties); else pin both."""
        self._same.append((a.reshape(-1), b.reshape(-1), reason))

    def layout(self, kind: str, inputs: list[Ids], outputs: list[Ids], param: int = 0,
               fallback: list[tuple[Ids, Ids]] = ()) -> None:
        """Record a layout op on channel ids (see ``graph.layout.LayoutOp``); ``fallback``: the ties that make it
        sound on its own, applied unless it ends up in a checked layout region."""
        self._layout.append(LayoutOp(kind, [np.asarray(a) for a in inputs], [np.asarray(a) for a in outputs],
                                     param, list(fallback)))

    def mark_inexact(self, ids: Ids) -> None:
        self._inexact.append(ids.reshape(-1))

    def warn(self, message: str) -> None:
        self.warnings.setdefault(message, None)

    # ---- members and layers ---------------------------------------------------------------------------------
    def module(self, name: str) -> nn.Module:
        if self._modules is None:
            self._modules = dict(self.model.named_modules(remove_duplicate=False))
        return self._modules[name]

    def add_member(self, key: tuple, ids: Ids, *, module: nn.Module, dim: int, name: str, role: str,
                   attr: str | None = None, producer: bool = False) -> None:
        """Register that the positions of member ``key`` carry ``ids`` (a second call ties the two arrays)."""
        rec = self.members.get(key)
        if rec is None:
            self.members[key] = dict(ids=ids, module=module, attr=attr, dim=dim, name=name, role=role,
                                     producer=producer, kind=key[0])
        else:
            self.tie(rec["ids"], ids)
            rec["producer"] |= producer

    def add_sizes_member(self, ids: Ids, pieces: np.ndarray, *, module: nn.Module, name: str, attr: str) -> None:
        """Register the split-sizes attribute ``name.attr`` whose pieces hold ``ids`` (``pieces``: the piece of
        each position); a second split by the same attribute ties the two."""
        key = ("sizes", name, attr)
        rec = self.members.get(key)
        if rec is not None:
            if rec["ids"].shape == ids.shape and np.array_equal(rec["pieces"], pieces):
                self.tie(rec["ids"], ids)
            else:
                self.pin(ids, f"split sizes '{name}.{attr}' used on tensors of other sizes")
                self.pin(rec["ids"], f"split sizes '{name}.{attr}' used on tensors of other sizes")
            return
        self.members[key] = dict(ids=ids, module=module, attr=attr, dim=0, name=name, role="sizes",
                                 producer=False, kind="sizes", pieces=np.asarray(pieces, dtype=np.int64))

    def add_shape_member(self, ids: Ids, index: int, *, module: nn.Module, name: str, attr: str) -> None:
        """Register entry ``index`` of the shape attribute ``name.attr`` as carrying ``ids`` (its value is
        rewritten with the kept count); a second use ties the two."""
        key = ("shape", name, attr, index)
        rec = self.members.get(key)
        if rec is not None:
            self.tie(rec["ids"], ids)
            return
        self.members[key] = dict(ids=ids, module=module, attr=attr, dim=index, name=name, role="shape",
                                 producer=False, kind="shape")

    def add_index_member(self, ids: Ids, source: Ids, *, module: nn.Module, name: str, attr: str) -> bool:
        """Register the channel-index tensor ``name.attr`` (positions carry ``ids``; its values index a dim
        carrying ``source``). False if it is already used elsewhere (the caller then pins)."""
        key = ("index", name, attr)
        if key in self.members:
            return False
        self.members[key] = dict(ids=ids, module=module, attr=attr, dim=0, name=name, role="index",
                                 producer=False, kind="index", source=source)
        return True

    def fixed_member(self, key: tuple, reason: str) -> None:
        """A layer dimension that one call site cannot change (e.g. a shared layer also applied to a fixed
        tensor): its ids are pinned at the end."""
        self.fixed_members.setdefault(key, reason)

    def add_layer(self, name: str, coef: int, a: Any, b: Any) -> None:
        if self.record_layers:
            self.layers.append(LayerCost(name, int(coef), (a, b)))

    def add_record(self, name: str, module: nn.Module, x: Any, out: Any, in_labels: Any, out_labels: Any) -> None:
        """Record one leaf-layer call (its signature; see ``LayerRecord``)."""
        if not self.record_layers or not hasattr(out, "shape") or not hasattr(x, "shape"):
            return
        last = isinstance(module, (nn.Linear, nn.LayerNorm))

        def channel_dim(t: Any) -> int | None:
            if t.ndim < 2:
                return None
            return t.ndim - 1 if last else 1

        di, do = channel_dim(x), channel_dim(out)
        ids_in = in_labels.get(di) if isinstance(in_labels, dict) and di is not None else None
        ids_out = out_labels.get(do) if isinstance(out_labels, dict) and do is not None else None
        attrs = {}
        for a in _SIGNATURE_ATTRS:
            v = getattr(module, a, None)
            if isinstance(v, (int, float, str, tuple)) and not isinstance(v, bool):
                attrs[a] = list(v) if isinstance(v, tuple) else v
        rec = LayerRecord(name, type(module).__name__, attrs, tuple(int(s) for s in x.shape[1:]),
                          tuple(int(s) for s in out.shape[1:]), str(out.dtype).replace("torch.", ""), di, do)
        self.records.append((rec, ids_in, ids_out))

    # ---- reduction ----------------------------------------------------------------------------------------
    def finalize(self) -> Core:
        for ids, _ in self.pending.values():  # a channel shuffle whose ops did not all follow (see rules.shape)
            self.pin(ids, "channel shuffle whose view/transpose/view sequence is interrupted")
        for key, reason in self.fixed_members.items():
            if key in self.members:
                self.pin(self.members[key]["ids"], reason)
        # a parameter read by get_attr that belongs to a layer also called as a whole: keep both as they are
        for key, rec in self.members.items():
            if key[0] == "param":
                owner = self.param_owners[key[1]][0]
                if owner in self.called_leaves:
                    reason = f"parameter {key[1]} is read directly although its layer is also called"
                    self.pin(rec["ids"], reason)
                    for k2, r2 in self.members.items():
                        if k2[0] == "module" and k2[1] == owner:
                            self.pin(r2["ids"], reason)
        ta, tb = list(self._ta), list(self._tb)
        if not any(op.kind == "shuffle" for op in self._layout):  # no region possible: the ties at once
            ta += [a.reshape(-1) for op in self._layout for a, _ in op.fallback]
            tb += [b.reshape(-1) for op in self._layout for _, b in op.fallback]
            self._layout = []
        while True:
            cls_of_id, k, pinned, reasons, inexact = self._classes(ta, tb)
            members = {key: cls_of_id[rec["ids"]] for key, rec in self.members.items()}
            regions, failed = build_regions(self._layout, cls_of_id, pinned, members,
                                            [cls_of_id[a] for a, _, _ in self._same],
                                            [cls_of_id[bt[0]:bt[1]] for bt in self.batches if bt[3]])
            extra = [(a.reshape(-1), b.reshape(-1)) for op in failed for a, b in op.fallback]
            if not extra or all(np.array_equal(cls_of_id[a], cls_of_id[b]) for a, b in extra):
                break
            ta += [a for a, _ in extra]   # a region that fails its checks: the rules' position ties instead
            tb += [b for _, b in extra]
            self._layout = [op for op in self._layout if op not in failed]

        # groups: classes linked by a common producer, and the leaves of a layout region
        prod_batches = [bt for bt in self.batches if bt[3]]
        ea, eb = [], []
        for start, stop, _, _ in prod_batches:
            c = cls_of_id[start:stop]
            ea.append(np.full(len(c), c[0]))
            eb.append(c)
        for r in regions:
            ea.append(np.full(len(r.classes), r.classes[0]))
            eb.append(r.classes)
        groot = components(k, np.concatenate(ea), np.concatenate(eb)) if ea else np.arange(k)
        class_group = np.full(k, -1, dtype=np.int64)
        group_of_root: dict[int, int] = {}
        names: list[str] = []
        order: list[list[np.ndarray]] = []
        for start, stop, owner, _ in prod_batches:
            c = cls_of_id[start:stop]
            r = int(groot[c[0]])
            g = group_of_root.get(r)
            if g is None:
                g = group_of_root[r] = len(names)
                name = owner if owner else "(root)"
                suffix = 2
                while name in names:  # a layer that produces two groups (e.g. also used functionally)
                    name = f"{owner or '(root)'}#{suffix}"
                    suffix += 1
                names.append(name)
                order.append([])
            order[g].append(c)
        group_classes = []
        for g, chunks in enumerate(order):
            cat = np.concatenate(chunks)
            _, first = np.unique(cat, return_index=True)
            classes = cat[np.sort(first)]
            class_group[classes] = g
            group_classes.append(classes)
        for r in regions:  # the region's group numbers its channels leaf by leaf (= the region's slots)
            r.group = int(class_group[r.classes[0]])
            if len(group_classes[r.group]) != len(r.classes):
                raise AssertionError("internal error: a layout region's group holds other channels")
            group_classes[r.group] = r.classes

        members = []
        for key, rec in self.members.items():
            members.append(Member(key=key, name=rec["name"], kind=rec["kind"], role=rec["role"],
                                  module=rec["module"], attr=rec["attr"], dim=rec["dim"], producer=rec["producer"],
                                  cls=cls_of_id[rec["ids"]], pieces=rec.get("pieces"),
                                  source=cls_of_id[rec["source"]] if "source" in rec else None))
        for msg in self.warnings:
            warnings.warn(msg, stacklevel=3)
        records = []
        for rec, ids_in, ids_out in self.records:
            rec.in_cls = cls_of_id[ids_in] if ids_in is not None else None
            rec.out_cls = cls_of_id[ids_out] if ids_out is not None else None
            records.append(rec)
        return Core(k, class_group, pinned, inexact, reasons, names, group_classes, members, self.layers,
                    list(self.warnings), records, regions)

    def _classes(self, ta: list[Ids], tb: list[Ids]):
        """Channel classes of the ties ``ta[k] -- tb[k]``: ``(class of each id, count, pinned, pin reasons,
        inexact)``; deferred same-classes checks that fail pin both sides."""
        n = self.n
        root = components(n, np.concatenate(ta), np.concatenate(tb)) if ta else np.arange(n, dtype=np.int64)
        pins = list(self._pins)
        for a, b, reason in self._same:
            if not np.array_equal(np.unique(root[a]), np.unique(root[b])):
                pins += [(a, reason), (b, reason)]
        uniq, cls_of_id = np.unique(root, return_inverse=True)
        k = len(uniq)
        pinned = np.zeros(k, dtype=bool)
        reasons: dict[int, str] = {}
        for ids, reason in pins:
            c = np.unique(cls_of_id[ids])
            new = c[~pinned[c]]
            pinned[c] = True
            for ci in new.tolist():
                reasons.setdefault(ci, reason)
        inexact = np.zeros(k, dtype=bool)
        for ids in self._inexact:
            inexact[cls_of_id[ids]] = True
        return cls_of_id, k, pinned, reasons, inexact
