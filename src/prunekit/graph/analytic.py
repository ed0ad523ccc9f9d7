"""Analytic MACs and parameter counts as functions of group widths (no forward pass).

Each member's width is a linear function of the group widths: a member holds, in group ``g``, ``pp`` positions
of pinned channels (always kept) and ``up`` positions of prunable ones; at width ``w_g`` it keeps
``pp + up * (w_g - pinned_g) / (size_g - pinned_g)`` of them. This is exact whenever every prunable channel of
a group occupies the same number of positions in the member (true for convs, BN, concatenations, flatten,
grouped convs in all models we know); otherwise it is the expected width under a uniform choice of channels.

A layer's MACs per image are ``coef * width(a) * width(b)`` (see ``builder.LayerCost``); a parameter's size is
``numel`` scaled by the widths of its member dims. Everything is precomputed into dense matrices, so
``macs(widths)`` is two small mat-vecs and a dot product (MetaPruning's search calls it thousands of times).
The convention is ``prunekit.cost.count``'s: conv/conv-transpose/linear multiply-accumulates for one image, in
eval mode; a layer called twice counts twice.
"""

from __future__ import annotations

import numpy as np
import torch.nn as nn

from prunekit.graph.builder import Core
from prunekit.graph.surgery import surgery_for


class AnalyticCost:
    def __init__(self, core: Core, model: nn.Module):
        g_count = len(core.group_names)
        self.sizes = np.array([len(c) for c in core.group_classes], dtype=np.float64)
        pinned = np.array([core.class_pinned[c].sum() for c in core.group_classes], dtype=np.float64)
        free = self.sizes - pinned
        rows_a: list[np.ndarray] = []
        consts: list[float] = []
        index: dict[tuple, int] = {}

        def row_of(key) -> int:
            return index[key]

        def row(cls: np.ndarray) -> tuple[np.ndarray, float]:
            """Channel count of positions with classes ``cls`` as ``a · widths + c``."""
            a = np.zeros(g_count)
            c = 0.0
            grp = core.class_group[cls]
            pin = core.class_pinned[cls]
            inside = grp >= 0
            c += float((~inside).sum())
            if inside.any():
                gs = grp[inside]
                pp = np.bincount(gs[pin[inside]], minlength=g_count).astype(np.float64)
                up = np.bincount(gs[~pin[inside]], minlength=g_count).astype(np.float64)
                ok = free > 0
                a[ok] = up[ok] / free[ok]
                c += float(pp.sum() - (a * pinned).sum() + up[~ok].sum())
            return a, c

        for m in core.members:
            a, c = row(m.cls)
            index[m.key] = len(rows_a)
            rows_a.append(a)
            consts.append(c)
        self.record_rows: list[tuple[int | None, int | None]] = []
        for r in core.records:
            pair = []
            for cls in (r.in_cls, r.out_cls):
                if cls is None:
                    pair.append(None)
                    continue
                a, c = row(cls)
                pair.append(len(rows_a))
                rows_a.append(a)
                consts.append(c)
            self.record_rows.append((pair[0], pair[1]))
        one = len(rows_a)
        rows_a.append(np.zeros(g_count))
        consts.append(1.0)
        self.A = np.stack(rows_a) if rows_a else np.zeros((1, g_count))
        self.c = np.array(consts)

        coef, ia, ib = [], [], []
        for layer in core.layers:
            fa = row_of(layer.factors[0]) if layer.factors[0] is not None else one
            fb = row_of(layer.factors[1]) if layer.factors[1] is not None else one
            coef.append(layer.coef)
            ia.append(fa)
            ib.append(fb)
        self.coef = np.array(coef, dtype=np.float64)
        self.ia = np.array(ia, dtype=np.int64)
        self.ib = np.array(ib, dtype=np.int64)

        # parameters: numel scaled by the widths of the member dims that slice them
        dims_of: dict[int, tuple[nn.Parameter, dict[int, int]]] = {}
        for m in core.members:
            if m.kind == "module":
                h = surgery_for(m.module)
                slices = h.params(m.module, m.role) if h is not None else []
                targets = [(getattr(m.module, attr, None), d) for attr, d in slices]
            else:
                targets = [(getattr(m.module, m.attr, None), m.dim)]
            for t, d in targets:
                if isinstance(t, nn.Parameter):
                    dims_of.setdefault(id(t), (t, {}))[1].setdefault(d, index[m.key])
        self.param_const = 0.0
        terms: list[tuple[float, list[int]]] = []
        seen = set()
        for p in model.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            entry = dims_of.get(id(p))
            if entry is None:
                self.param_const += p.numel()
                continue
            scale = float(p.numel())
            rows = []
            for d, r in entry[1].items():
                scale /= p.shape[d]
                rows.append(r)
            terms.append((scale, rows))
        self.p1 = [(s, r[0]) for s, r in terms if len(r) == 1]
        self.p2 = [(s, r[0], r[1]) for s, r in terms if len(r) == 2]
        self.pn = [(s, r) for s, r in terms if len(r) > 2]
        self.p1_scale = np.array([s for s, _ in self.p1])
        self.p1_row = np.array([r for _, r in self.p1], dtype=np.int64)
        self.p2_scale = np.array([s for s, _, _ in self.p2])
        self.p2_ra = np.array([r for _, r, _ in self.p2], dtype=np.int64)
        self.p2_rb = np.array([r for _, _, r in self.p2], dtype=np.int64)

    def widths_of(self, w: np.ndarray) -> np.ndarray:
        """Channel count of every member / layer-record row at group widths ``w``."""
        return self.A @ w + self.c

    def macs(self, w: np.ndarray) -> float:
        cnt = self.A @ w + self.c
        return float(np.dot(self.coef, cnt[self.ia] * cnt[self.ib]))

    def params(self, w: np.ndarray) -> float:
        cnt = self.A @ w + self.c
        total = self.param_const
        if len(self.p1_row):
            total += float(np.dot(self.p1_scale, cnt[self.p1_row]))
        if len(self.p2_ra):
            total += float(np.dot(self.p2_scale, cnt[self.p2_ra] * cnt[self.p2_rb]))
        for s, rows in self.pn:
            total += s * float(np.prod(cnt[rows]))
        return total
