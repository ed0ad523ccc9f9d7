"""Indexing: ``x[...]`` on tensors and ``getitem`` on tuples of labels."""

from __future__ import annotations

import operator

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import Call, Labels, function_rule, is_tensor, unknown_rule


@function_rule(operator.getitem)
def getitem(b: Builder, call: Call):
    obj, idx = call.args[0], call.args[1]
    lab = call.largs[0]
    if not is_tensor(obj):
        if isinstance(lab, (tuple, list)) and isinstance(idx, (int, slice)):
            return lab[idx]
        return None
    if not lab:
        return None
    return index_labels(b, call, obj, lab, idx)


def index_labels(b: Builder, call: Call, x, lab: Labels, idx):
    """Basic indexing ``x[...]``: slices and ``None``/``...`` move labels; an integer index, a partial slice or a
    tensor index on a channel dim pins it (the kept positions are literals in the code)."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(is_tensor(i) or isinstance(i, (list, bool)) for i in idx):
        return unknown_rule(b, call)
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (x.ndim - n_real))
        else:
            expanded.append(i)
    out: Labels = {}
    d_in = d_out = 0
    for i in expanded:
        if i is None:
            d_out += 1
            continue
        ids = lab.get(d_in)
        if isinstance(i, int):
            if ids is not None:
                b.pin(ids, f"integer index on a channel dim in '{call.where}'")
            d_in += 1
            continue
        if ids is not None:
            start, stop, step = i.indices(x.shape[d_in])
            if (start, stop, step) == (0, x.shape[d_in], 1):
                out[d_out] = ids
            else:
                b.pin(ids, f"slice of a channel dim in '{call.where}'")
        d_in += 1
        d_out += 1
    for d in range(d_in, x.ndim):
        if d in lab:
            out[d_out + d - d_in] = lab[d]
    return out or None
