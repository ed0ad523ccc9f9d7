"""Concatenation, stacking and splitting: cat/stack, chunk/split/unbind."""

from __future__ import annotations

import numpy as np
import torch

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import Call, Labels, function_rule, is_tensor, method_rule, norm_dim, shift_labels


def _tie_aligned(b: Builder, call: Call, items: list[tuple], dims_of: list[list[int]], out_dims: list[int]) -> Labels:
    """Tie the equal-size dims ``dims_of[t][k]`` of every tensor ``t`` (output dim ``out_dims[k]``)."""
    out: Labels = {}
    for k, od in enumerate(out_dims):
        labelled, fixed = [], False
        for (v, lab), dims in zip(items, dims_of):
            d = dims[k]
            ids = lab.get(d) if lab else None
            if ids is None:
                fixed = fixed or v.shape[d] > 1
            else:
                labelled.append(ids)
        if not labelled:
            continue
        if fixed:
            for ids in labelled:
                b.pin(ids, f"joined with a fixed-size tensor by {call.op_name()} in '{call.where}'")
            continue
        for other in labelled[1:]:
            b.tie(labelled[0], other)
        out[od] = labelled[0]
    return out


@function_rule(torch.cat, getattr(torch, "concat", None), getattr(torch, "concatenate", None))
def cat(b: Builder, call: Call):
    """Concatenation along a channel dim: the output's channels are the inputs' channels at their offsets (a
    consumer's input positions map back into several groups). Fixed-size inputs contribute pinned slots."""
    tensors = list(call.arg(0, "tensors"))
    labs = list(call.lab(0, "tensors") or [None] * len(tensors))
    if not any(labs):
        return None
    dim = call.arg(1, "dim", call.kwargs.get("axis", 0)) or 0
    nd = call.out.ndim
    cd = norm_dim(dim, nd)
    items = [(t, lb) for t, lb in zip(tensors, labs) if is_tensor(t) and t.ndim == nd]
    other = [d for d in range(nd) if d != cd]
    out = _tie_aligned(b, call, items, [other] * len(items), other)
    parts = [lb.get(cd) if lb else None for _, lb in items]
    if any(p is not None for p in parts):
        reason = f"concatenated with a fixed-size tensor in '{call.where}'"
        for i, (t, _) in enumerate(items):
            if parts[i] is None:
                parts[i] = b.new_ids(t.shape[cd], call.where)
                b.pin(parts[i], reason)
        out[cd] = np.concatenate(parts)
        if len(parts) > 1:
            b.layout("cat", parts, [out[cd]])
    return out or None


@function_rule(torch.stack)
def stack(b: Builder, call: Call):
    tensors = list(call.arg(0, "tensors"))
    labs = list(call.lab(0, "tensors") or [None] * len(tensors))
    if not any(labs):
        return None
    sd = norm_dim(call.arg(1, "dim", 0) or 0, call.out.ndim)
    nd = tensors[0].ndim
    dims = list(range(nd))
    return _tie_aligned(b, call, list(zip(tensors, labs)), [dims] * len(tensors),
                        [d if d < sd else d + 1 for d in dims]) or None


@function_rule(torch.chunk)
@method_rule("chunk")
def chunk(b: Builder, call: Call):
    """``chunk(n, dim)`` on a channel dim: position ``k`` of every chunk forms one channel, so each chunk keeps the
    same width and ``chunk`` still splits evenly after pruning. Inside a layout region (a chunk feeding a channel
    shuffle, ShuffleNet-v2; ``graph.layout``) the pieces only keep equal *counts* instead."""
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    outs = call.out
    if not lab:
        return None
    d = norm_dim(call.arg(2, "dim", 0) or 0, x.ndim)
    rest = {k: v for k, v in lab.items() if k != d}
    if d not in lab:
        return tuple(dict(rest) or None for _ in outs)
    sizes = [o.shape[d] for o in outs]
    ids = lab[d]
    if len(set(sizes)) > 1:
        b.pin(ids, f"uneven chunk of a channel dim in '{call.where}'")
        return tuple(dict(rest) or None for _ in outs)
    arr = ids.reshape(len(outs), -1)
    pieces = [np.ascontiguousarray(arr[i]) for i in range(len(outs))]
    if len(outs) > 1:
        b.layout("chunk", [ids], pieces, len(outs), fallback=[(np.tile(arr[0], len(outs) - 1), arr[1:].reshape(-1))])
    return tuple({**rest, d: p} for p in pieces)


@function_rule(torch.split, getattr(torch, "tensor_split", None))
@method_rule("split", "split_with_sizes", "tensor_split")
def split(b: Builder, call: Call):
    """``split`` of a channel dim into sizes read from a list attribute of the calling module
    (``torch.split(x, self.splits, 1)``, MixNet's mixed kernels): each piece is pruned on its own and surgery
    rewrites the attribute with the kept counts. ``split(x, k)`` with a literal int ``k`` (timm's CSP stages:
    ``x.split(self.expand_chs // 2, 1)`` is an int in the traced code): the pruned tensor is still cut every ``k``
    channels, so every piece but the last is pinned and the last one, which takes the remainder, is free (it keeps
    at least one channel: a consumer of it is a "cover" member of the group, so the piece count never changes).
    A literal list of sizes must sum to the pruned width: it pins the split channel dim (unless it is not split
    at all)."""
    x, lab = call.arg(0, "input", call.kwargs.get("tensor")), call.lab(0, "input") or call.lkwargs.get("tensor")
    outs = call.out
    if not lab:
        return None
    d = norm_dim(call.arg(2, "dim", 0) or 0, x.ndim)
    rest = {k: v for k, v in lab.items() if k != d}
    if d in lab:
        if len(outs) == 1:
            return (lab,)
        sizes = [int(o.shape[d]) for o in outs]
        owner = _sizes_owner(b, call, sizes) if call.node.target != "tensor_split" \
            and call.node.target is not getattr(torch, "tensor_split", None) else None
        if owner is not None and owner[3]:  # equal pieces of an int size: position k of every piece is one channel
            name, module, attr, _ = owner
            arr = lab[d].reshape(len(sizes), -1)
            b.tie(np.tile(arr[0], len(sizes) - 1), arr[1:].reshape(-1))
            b.add_sizes_member(lab[d], np.repeat(np.arange(len(sizes)), sizes), module=module, name=name,
                               attr=attr)
            return tuple({**rest, d: np.ascontiguousarray(arr[i])} for i in range(len(sizes)))
        bounds = np.cumsum([0, *sizes])
        if owner is not None:
            name, module, attr, _ = owner
            pieces = np.repeat(np.arange(len(sizes)), sizes)
            b.add_sizes_member(lab[d], pieces, module=module, name=name, attr=attr)
            return tuple({**rest, d: lab[d][bounds[i]:bounds[i + 1]]} for i in range(len(sizes)))
        if _literal_int_size(call) is not None:
            # split(x, k) with a literal k: every piece but the last keeps exactly k channels after pruning, the
            # last takes the remainder; so the last piece may shrink (to one channel: the piece count stays)
            b.pin(lab[d][:bounds[-2]], f"split of a channel dim into literal pieces of {sizes[0]} in "
                  f"'{call.where}' (all but the last piece keep their size)")
            return tuple({**rest, d: lab[d][bounds[i]:bounds[i + 1]]} for i in range(len(sizes)))
        b.pin(lab[d], f"split of a channel dim into literal sizes in '{call.where}'")
    return tuple(dict(rest) or None for _ in outs)


def _literal_int_size(call: Call) -> int | None:
    """The split size of ``split(x, k)`` when ``k`` is an int literal of the traced code (not computed from a
    tensor's size, not a list); None otherwise (``tensor_split``'s int is a number of sections: not this)."""
    if call.node.target == "tensor_split" or call.node.target is getattr(torch, "tensor_split", None):
        return None
    raw = call.raw(1, "split_size_or_sections", call.node.kwargs.get("split_size"))
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else None


def _sizes_owner(b: Builder, call: Call, sizes: list[int]):
    """``(qualified name, module, attribute, equal)`` of the attribute of the calling module that holds the split
    sizes passed as a literal: a list equal to ``sizes``, or an int equal to the size of every (equal) piece
    (``equal`` True: Res2Net's ``split(x, self.width, 1)``); None if there is no single such attribute, if the
    tracer finds that changing the attribute does not change the traced sizes (an unrelated attribute that
    happens to hold the same value: rewriting it would change the model), or the sizes are computed in the code."""
    raw = call.raw(1, "split_size_or_sections", call.node.kwargs.get("split_size", call.node.kwargs.get(
        "split_sizes")))
    if isinstance(raw, int) and not isinstance(raw, bool):
        if any(s != raw for s in sizes):
            return None

        def match(v):
            return isinstance(v, int) and not isinstance(v, bool) and v == raw
    elif isinstance(raw, (list, tuple)) and all(isinstance(v, int) for v in raw) and list(raw) == sizes:
        def match(v):
            return isinstance(v, (list, tuple)) and len(v) == len(sizes) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in v) and list(v) == sizes
    else:
        return None
    name = call.where
    if name == "(root)":
        name = ""
    try:
        module = b.module(name) if name else b.model
    except KeyError:
        return None
    found = [k for k, v in vars(module).items() if not k.startswith("_") and match(v)]
    if len(found) != 1 or not b.attribute_feeds(module, found[0], call.node.name, raw):
        return None
    return name, module, found[0], isinstance(raw, int)


@function_rule(torch.unbind)
@method_rule("unbind")
def unbind(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    d = norm_dim(call.arg(1, "dim", 0) or 0, x.ndim)
    if d in lab:
        b.pin(lab[d], f"unbind of a channel dim in '{call.where}'")
    keep = [k for k in range(x.ndim) if k != d]
    out = shift_labels(lab, {k: i for i, k in enumerate(keep)})
    return tuple(out for _ in call.out)
