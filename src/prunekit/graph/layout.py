"""Channel *layout regions*: channel shuffles and the chunks and concatenations around them (ShuffleNet-v2).

Union-find ties say "these positions hold the same channel"; they cannot say what a channel shuffle needs. In

    x1, x2 = x.chunk(2, 1);  y = cat(x1, branch(x2));  z = y.view(n, 2, c/2, h, w).transpose(1, 2).reshape(n, c, h, w)

the pruned model runs the same ops on smaller tensors: ``chunk`` cuts the *pruned* stream in halves, the shuffle
interleaves the *pruned* halves. Tying position ``k`` of one half to ``k`` of the other (the only thing a tie can
say) is sound but compounds through the pass-through half block after block until one class is left. The exact
condition is weaker and is about *counts*, not positions:

- the ops only move channels (``cat``, ``chunk``, the shuffle permutation): a region is the set of such ops
  connected through the tensors they exchange; its *leaves* are the tensors entering it (conv outputs), its
  *values* every tensor inside; every other use of its channels is a *member* (a layer dim) sitting on a value;
- pruning leaf ``i`` to ``n_i`` channels and running the ops at the pruned sizes (``replay``) says which leaf
  slot ``(i, r)`` lands at each position of each value of the pruned model;
- the *fate* of a channel is the set of values-with-members it reaches (which layers read it). The pruned model
  computes the masked original iff every pruned slot of leaf ``i`` holds a kept channel of leaf ``i`` with the
  same fate: so per leaf and fate, the pruned model needs exactly as many kept channels as it has slots; within a
  (leaf, fate) *segment* the channels are interchangeable and are chosen by importance.

All leaves scale together: one variable ``t`` (``n_i = round(t * size_i / max size)``); a region's channels form
one ``ChannelGroup`` whose allowed widths are ``width(t)`` for the ``t`` whose replay is valid (divisibility) and
whose per-segment demand fits the original segments. Surgery then slices every member of the region in the
order the pruned ops produce (a permutation of the kept positions, not sorted): ``member_positions``.

A region is used only when it contains a shuffle and passes every check (each value's channels distinct,
leaves disjoint, no pinned channel, every member sits exactly on a value, the full-size replay reproduces every
value); otherwise the rules' position ties (``fallback``) are applied instead, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Ids = np.ndarray


@dataclass(eq=False)
class LayoutOp:
    """One op of a region, recorded by a rule on id arrays: ``kind`` "cat" (outputs[0] = concat of inputs),
    "chunk" (``param`` equal pieces; the pruned width must stay divisible) or "shuffle" (``param`` groups: the
    output is ``input.reshape(param, -1).T.flatten()``). ``fallback``: the id pairs to tie if the region is not
    used."""

    kind: str
    inputs: list[Ids]
    outputs: list[Ids]
    param: int = 0
    fallback: list[tuple[Ids, Ids]] = field(default_factory=list)


def _key(cls: np.ndarray) -> bytes:
    return np.ascontiguousarray(cls, dtype=np.int64).tobytes()


class Region:
    """A checked layout region in class terms (see the module docstring).

    ``leaves[i]``: classes of leaf ``i`` in its (current) channel order; ``values[v]``: classes of value ``v``;
    ``ops``: ``(kind, input value indices, output value indices, param)``; ``member_value``: member key -> the
    value the member sits on; ``codes[v]``: the fate code value ``v`` contributes (0 without members)."""

    def __init__(self, leaves: list[np.ndarray], values: list[np.ndarray], ops: list[tuple],
                 member_value: dict[tuple, int], codes: np.ndarray, leaf_values: list[int]):
        self.leaves, self.values, self.ops = leaves, values, ops
        self.member_value, self.codes, self.leaf_values = member_value, codes, leaf_values
        self.sizes = np.array([len(c) for c in leaves], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.classes = np.concatenate(leaves)           # slot s at full size holds class classes[s]
        self.group: int = -1
        self._cache: tuple | None = None
        self.t_max = int(self.sizes.max())
        full = self.replay(self.t_max)
        self.fate_full = self._fates(full) if full is not None else None
        self.full_ok = full is not None and all(np.array_equal(self.classes[c], v) for c, v in zip(full, values))
        self._have: dict[tuple[int, int], list[int]] = {}
        if self.full_ok:
            for i in range(len(self.leaves)):
                for s in range(int(self.offsets[i]), int(self.offsets[i + 1])):
                    self._have.setdefault((i, int(self.fate_full[s])), []).append(s)
        self.allowed: dict[int, int] = {}               # group width -> t
        if self.full_ok:
            for t in range(1, self.t_max + 1):
                if self._demand(t) is not None:
                    self.allowed[int(self.counts(t).sum())] = t

    # ---- replay ---------------------------------------------------------------------------------------------
    def counts(self, t: int) -> np.ndarray:
        """Channels of each leaf at scale ``t``."""
        return np.clip(np.rint(t * self.sizes / self.t_max).astype(np.int64), 1, self.sizes)

    def replay(self, t: int) -> list[np.ndarray] | None:
        """Slot ids (``offsets[i] + r``: rank ``r`` of leaf ``i``) at every position of every value when the
        leaves keep ``counts(t)`` channels and the ops run at the pruned sizes; None if an op becomes invalid."""
        n = self.counts(t)
        vals: list[np.ndarray | None] = [None] * len(self.values)
        for i, v in enumerate(self.leaf_values):
            vals[v] = self.offsets[i] + np.arange(n[i])
        for kind, ins, outs, param in self.ops:
            xs = [vals[i] for i in ins]
            if any(x is None for x in xs):
                return None
            if kind == "cat":
                vals[outs[0]] = np.concatenate(xs)
            elif kind == "chunk":
                if len(xs[0]) % param:
                    return None
                for o, piece in zip(outs, np.split(xs[0], param)):
                    vals[o] = piece
            else:  # shuffle
                if len(xs[0]) % param:
                    return None
                vals[outs[0]] = xs[0].reshape(param, -1).T.reshape(-1)
        return vals if all(v is not None for v in vals) else None

    def _fates(self, vals: list[np.ndarray]) -> np.ndarray:
        fate = np.zeros(int(self.offsets[-1]), dtype=np.uint64)
        for v, slots in enumerate(vals):
            if self.codes[v]:
                np.add.at(fate, slots, self.codes[v])
        return fate

    def _demand(self, t: int):
        """``(slot fates at t, {(leaf, fate): slots})`` if the pruned model at ``t`` can be filled, else None."""
        vals = self.replay(t)
        if vals is None:
            return None
        fate = self._fates(vals)
        n = self.counts(t)
        want: dict[tuple[int, int], list[int]] = {}
        for i in range(len(self.leaves)):
            for r in range(int(n[i])):
                s = int(self.offsets[i]) + r
                want.setdefault((i, int(fate[s])), []).append(s)
        have = self._supply()
        if any(len(s) > len(have.get(k, ())) for k, s in want.items()):
            return None
        return vals, want

    def _supply(self) -> dict[tuple[int, int], list[int]]:
        """Original slots (= leaf positions) per (leaf, fate)."""
        return self._have

    # ---- selection and surgery ---------------------------------------------------------------------------------
    @property
    def proportional(self) -> bool:
        """All leaves have one size, so at every allowed width each value keeps the same fraction of its
        channels: the analytic cost (linear in the group width) is exact there."""
        return bool((self.sizes == self.sizes[0]).all())

    @property
    def widths(self) -> list[int]:
        """Allowed group widths, ascending (the full width included)."""
        return sorted(self.allowed)

    def snap(self, width: int) -> int:
        """The largest allowed width not above ``width`` (the smallest allowed one if none is)."""
        ok = [w for w in self.widths if w <= width]
        return ok[-1] if ok else self.widths[0]

    def select(self, scores: np.ndarray, width: int) -> np.ndarray:
        """Kept slots (sorted) at the allowed width nearest below ``width``: per (leaf, fate) segment, the
        highest ``scores`` (per slot = per group channel in leaf order; ties: lower index)."""
        _, want = self._demand(self.allowed[self.snap(width)])
        have = self._supply()
        kept = []
        for key, slots in want.items():
            cand = np.array(have[key])
            order = np.lexsort((cand, -scores[cand]))
            kept.extend(cand[order[:len(slots)]].tolist())
        return np.sort(np.array(kept, dtype=np.int64))

    def project(self, kept_slots: np.ndarray) -> np.ndarray:
        """An allowed kept set close to ``kept_slots``: the requested channels first in every segment."""
        score = np.zeros(int(self.offsets[-1]))
        score[kept_slots] = 1.0
        return self.select(score - np.arange(len(score)) * 1e-9, len(kept_slots))

    def assignment(self, kept_slots: np.ndarray):
        """``(replayed values, slot -> original slot)`` for an allowed kept set (None if it is not one): within
        a segment, kept channels fill the pruned slots in their original order."""
        key = np.asarray(kept_slots, dtype=np.int64).tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        result = self._assign(kept_slots)
        self._cache = (key, result)
        return result

    def _assign(self, kept_slots: np.ndarray):
        t = self.allowed.get(int(len(kept_slots)))
        if t is None:
            return None
        vals, want = self._demand(t)
        kept = set(kept_slots.tolist())
        fill = np.full(int(self.offsets[-1]), -1, dtype=np.int64)
        have = self._supply()
        for key, slots in want.items():
            chosen = [s for s in have[key] if s in kept]
            if len(chosen) != len(slots):
                return None
            fill[np.array(slots)] = chosen
        if sum(len(s) for s in want.values()) != len(kept):
            return None
        return vals, fill

    def member_positions(self, key: tuple, kept_slots: np.ndarray) -> np.ndarray:
        """Positions of the member ``key`` in the pruned model's order (indices into the member's dim)."""
        vals, fill = self.assignment(kept_slots)
        v = self.member_value[key]
        pos_of_class = {int(c): p for p, c in enumerate(self.values[v])}
        return np.array([pos_of_class[int(self.classes[fill[s]])] for s in vals[v]], dtype=np.int64)

    def filtered(self, kept_slots: np.ndarray, new_id: np.ndarray) -> "Region":
        """This region in the pruned model (``new_id``: old class -> new class id)."""
        vals, fill = self.assignment(kept_slots)
        leaves = []
        for i in range(len(self.leaves)):
            slots = vals[self.leaf_values[i]]
            leaves.append(new_id[self.classes[fill[slots]]])
        values = [new_id[self.classes[fill[s]]] for s in vals]
        r = Region(leaves, values, self.ops, self.member_value, self.codes, self.leaf_values)
        r.group = self.group
        return r

    def renumbered(self, new_id: np.ndarray) -> "Region":
        r = Region([new_id[c] for c in self.leaves], [new_id[v] for v in self.values], self.ops,
                   self.member_value, self.codes, self.leaf_values)
        r.group = self.group
        return r


def build_regions(ops: list[LayoutOp], cls_of_id: np.ndarray, pinned: np.ndarray, members: dict[tuple, np.ndarray],
                  same: list[np.ndarray], produced: list[np.ndarray]) -> tuple[list[Region], list[LayoutOp]]:
    """Checked regions of the recorded ops (only those containing a shuffle), and the ops whose fallback ties
    must be applied. ``members``: member key -> class array; ``same``: class arrays of deferred size checks;
    ``produced``: the classes of each producer's output (a region's group must hold only the region's classes)."""
    # connect ops through the values they share (by class array)
    n_ops = len(ops)
    parent = list(range(n_ops))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[bytes, int] = {}
    for k, op in enumerate(ops):
        for a in op.inputs + op.outputs:
            key = _key(cls_of_id[a])
            j = seen.setdefault(key, k)
            parent[find(k)] = find(j)
    comps: dict[int, list[int]] = {}
    for k in range(n_ops):
        comps.setdefault(find(k), []).append(k)
    regions, failed = [], []
    for idx in comps.values():
        comp = [ops[k] for k in idx]
        if not any(op.kind == "shuffle" for op in comp):
            failed.extend(comp)
            continue
        region = _region(comp, cls_of_id, pinned, members, same, produced)
        if region is None:
            failed.extend(comp)
        else:
            regions.append(region)
    return regions, failed


def _region(comp: list[LayoutOp], cls_of_id, pinned, members, same, produced) -> Region | None:
    values: list[np.ndarray] = []
    index: dict[bytes, int] = {}

    def value(ids) -> int:
        c = cls_of_id[ids]
        k = _key(c)
        if k not in index:
            index[k] = len(values)
            values.append(c)
        return index[k]

    ops, produced = [], set()
    leaf_values: list[int] = []
    for op in comp:
        ins = [value(a) for a in op.inputs]
        for v in ins:
            if v not in produced and v not in leaf_values:
                leaf_values.append(v)
        outs = [value(a) for a in op.outputs]
        if any(o in produced or o in leaf_values for o in outs):
            return None  # a value made twice (or fed back): not a plain forward layout
        produced.update(outs)
        ops.append((op.kind, ins, outs, op.param))
    leaves = [values[v] for v in leaf_values]
    allc = np.concatenate(leaves)
    if len(np.unique(allc)) != len(allc) or pinned[allc].any():
        return None
    if any(len(np.unique(v)) != len(v) or not np.isin(v, allc).all() for v in values):
        return None
    inside = np.zeros(len(pinned), dtype=bool)
    inside[allc] = True
    member_value: dict[tuple, int] = {}
    for key, cls in members.items():
        if not inside[cls].any():
            continue
        v = index.get(_key(cls))
        if v is None or key[0] != "module" and key[0] != "param":
            return None
        member_value[key] = v
    if any(inside[c].any() for c in same):
        return None
    if any(inside[c].any() and not inside[c].all() for c in produced):
        return None  # a producer whose output is only partly in the region
    rng = np.random.default_rng(len(values))
    codes = np.zeros(len(values), dtype=np.uint64)
    for v in set(member_value.values()):
        codes[v] = rng.integers(1, 2**63, dtype=np.uint64)
    region = Region(leaves, values, ops, member_value, codes, leaf_values)
    return region if region.full_ok and len(region.allowed) > 1 else None
