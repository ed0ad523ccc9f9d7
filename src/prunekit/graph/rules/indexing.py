"""Indexing: ``x[...]`` on tensors and ``getitem`` on tuples of labels."""

from __future__ import annotations

import operator

import torch
import torch.fx

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import (Call, Labels, function_rule, is_tensor, method_rule, norm_dim,
                                           unknown_rule)


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


@function_rule(torch.index_select)
@method_rule("index_select")
def index_select(b: Builder, call: Call):
    """``index_select(x, dim, index)`` with ``index`` a buffer or parameter of a module (a constant gather, as
    in CondenseNet's converted layers): output position ``k`` carries the channel ``index[k]``; pruning keeps
    the positions of kept channels and renumbers the index. A computed index pins the channels."""
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    d = norm_dim(call.arg(1, "dim"), x.ndim)
    out = {k: v for k, v in lab.items() if k != d}
    if d not in lab:
        return out or None
    raw = call.raw(2, "index")
    name = raw.target if isinstance(raw, torch.fx.Node) and raw.op == "get_attr" else None
    owner = b.param_owners.get(name) if name is not None else None
    value = getattr(b.module(owner[0]) if owner[0] else b.model, owner[1], None) if owner else None
    if not (isinstance(value, torch.Tensor) and value.ndim == 1 and not value.is_floating_point()
            and not value.is_meta):
        b.pin(lab[d], f"index_select with a computed index in '{call.where}'")
        return out or None
    ids = lab[d][value.detach().cpu().numpy()]
    if not b.add_index_member(ids, lab[d], module=b.module(owner[0]) if owner[0] else b.model, name=owner[0],
                              attr=owner[1]):
        b.pin(lab[d], f"index tensor '{name}' used by several index_select calls in '{call.where}'")
        return out or None
    out[d] = ids
    return out
