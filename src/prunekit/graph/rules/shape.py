"""Shape ops: view/reshape/flatten/unflatten, permute/transpose/movedim, (un)squeeze, expand, repeat."""

from __future__ import annotations

import numpy as np
import torch
import torch.fx

from prunekit.graph.builder import Builder
from prunekit.graph.rules.reductions import _reduce_dims
from prunekit.graph.rules.registry import (SIZE_AWARE, Call, Labels, SizeRef, broadcast, function_rule, method_rule,
                                           norm_dim, reshape_labels, shift_labels, size_constraint, unknown_rule)


def _is_dynamic(raw) -> bool:
    return isinstance(raw, torch.fx.Node) or raw == -1


def shape_spec(raw, lab, ndim: int) -> list:
    """Where each size of a shape argument comes from: ``"lit"``, ``"free"`` (-1) or a ``SizeRef``.

    ``raw`` is the fx argument (a tuple of literals and Nodes, or one Node holding a whole size tuple) and ``lab``
    its labels (SizeRefs for sizes computed from tensors). A Node of unknown provenance counts as a literal."""
    if isinstance(raw, torch.fx.Node):
        if isinstance(lab, (tuple, list)) and len(lab) == ndim:
            return [x if isinstance(x, SizeRef) else "lit" for x in lab]
        return ["lit"] * ndim
    if raw is None:
        return ["lit"] * ndim
    lab = lab if isinstance(lab, (tuple, list)) else [None] * len(raw)
    spec = []
    for r, lb in zip(raw, lab):
        if isinstance(r, torch.fx.Node):
            spec.append(lb if isinstance(lb, SizeRef) else "lit")
        else:
            spec.append("free" if r == -1 else "lit")
    return spec


def _varargs(call: Call, key: str):
    """Shape-like varargs of a Tensor method (``x.view(a, b)`` or ``x.view((a, b))``): (raw, labels)."""
    raw, lab = call.node.args[1:], call.largs[1:]
    if len(raw) == 1 and isinstance(raw[0], (tuple, list, torch.fx.Node)):
        raw, lab = raw[0], lab[0]
    if not raw and key in call.node.kwargs:
        raw, lab = call.node.kwargs[key], call.lkwargs.get(key)
    return raw, lab


@method_rule("view", "reshape")
def view(b: Builder, call: Call):
    """``x.view(shape)``; a literal shape that is a tuple attribute of the calling module (a layer scale's
    ``param.view(self.shape)``) lets a channel dim move through it: surgery rewrites that attribute. The three
    views of a channel shuffle are one permutation (``_shuffle_start``)."""
    x, lab = call.args[0], call.largs[0]
    if len(call.args) == 2 and isinstance(call.args[1], torch.dtype):  # x.view(dtype)
        return unknown_rule(b, call)
    raw, rlab = _varargs(call, "size" if call.node.target == "view" else "shape")
    spec = shape_spec(raw, rlab, call.out.ndim)
    if call.node in b.pending:
        return _shuffle_end(b, call, spec)
    if _shuffle_start(b, call, x, lab, spec):
        return None
    owner = _shape_owner(b, call, raw) if lab and "lit" in spec else None
    if owner is not None:
        spec = ["attr" if sp == "lit" else sp for sp in spec]
    out = reshape_labels(b, call, x, lab, tuple(call.out.shape), spec)
    if owner is not None:
        for j, sp in enumerate(spec):
            if sp == "attr" and out and j in out:
                b.add_shape_member(out[j], j, module=owner[1], name=owner[0], attr=owner[2])
    return out


def _shape_owner(b: Builder, call: Call, raw):
    """``(qualified name, module, attribute)`` of the one tuple/list attribute of the calling module equal to the
    all-literal shape ``raw``, or None."""
    if not isinstance(raw, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        return None
    name = "" if call.where == "(root)" else call.where
    try:
        module = b.module(name) if name else b.model
    except KeyError:
        return None
    found = [k for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, (tuple, list))
             and len(v) == len(raw) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
             and list(v) == list(raw)]
    return (name, module, found[0]) if len(found) == 1 else None


@function_rule(torch.reshape)
def reshape_fn(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    spec = shape_spec(call.raw(1, "shape"), call.lab(1, "shape"), call.out.ndim)
    if call.node in b.pending:
        return _shuffle_end(b, call, spec)
    if _shuffle_start(b, call, x, lab, spec):
        return None
    return reshape_labels(b, call, x, lab, tuple(call.out.shape), spec)


# ---- channel shuffle: view(n, g, c/g, ...) -> transpose(1, 2) [-> contiguous] -> view(n, c, ...) ---------------
_KEEP = {"contiguous", "clone"}
_SWAP = {"transpose", "swapaxes", "swapdims"}


def _swaps(node: torch.fx.Node, d: int, ndim: int) -> bool:
    """``node`` exchanges dims ``d`` and ``d + 1`` of a tensor of ``ndim`` dims (and nothing else)."""
    if node.op == "call_method" and node.target in _SWAP or node.op == "call_function" and node.target in (
            torch.transpose, torch.swapaxes, torch.swapdims):
        dims = [a for a in list(node.args[1:3]) if isinstance(a, int)]
        return len(dims) == 2 and {norm_dim(a, ndim) for a in dims} == {d, d + 1}
    if node.op == "call_method" and node.target == "permute":
        perm = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        want = list(range(ndim))
        want[d], want[d + 1] = d + 1, d
        return all(isinstance(p, int) for p in perm) and [norm_dim(p, ndim) for p in perm] == want
    return False


def _merges(node: torch.fx.Node) -> bool:
    return (node.op == "call_method" and node.target in ("view", "reshape")
            or node.op == "call_function" and node.target is torch.reshape)


def _shuffle_start(b: Builder, call: Call, x, lab, spec) -> bool:
    """A channel shuffle (ShuffleNet): this view splits channel dim ``d`` into ``g`` (a literal) by ``c/g`` (sized
    by the channel count), and its only use is a transpose of those two dims whose only use (through
    ``contiguous``) is a view back to ``x``'s shape. The three ops are one permutation of the channels; the last
    view gets the permuted ids (``_shuffle_end``) and the two tensors in between carry none."""
    if not lab or len(lab) != 1 or not hasattr(call.out, "shape"):
        return False
    ((d, ids),) = lab.items()
    out = tuple(call.out.shape)
    shape = tuple(x.shape)
    if len(out) != len(shape) + 1 or out[:d] != shape[:d] or out[d + 2:] != shape[d + 1:]:
        return False
    g, dyn = out[d], spec[d + 1]
    if g < 2 or spec[d] != "lit" or not (dyn == "free" or isinstance(dyn, SizeRef) and dyn.ids is not None
                                         and np.array_equal(dyn.ids, ids)):
        return False
    users = list(call.node.users)
    if len(users) != 1 or not _swaps(users[0], d, len(out)):
        return False
    node = users[0]
    while True:
        users = list(node.users)
        if len(users) != 1:
            return False
        node = users[0]
        if not (node.op == "call_method" and node.target in _KEEP):
            break
    if not _merges(node):
        return False
    b.pending[node] = (ids, (g, d, shape))
    return True


def _shuffle_end(b: Builder, call: Call, spec) -> Labels | None:
    ids, (g, d, shape) = b.pending.pop(call.node)
    sp = spec[d] if d < len(spec) else "lit"
    if tuple(call.out.shape) != shape or not (sp == "free" or isinstance(sp, SizeRef) and sp.ids is not None
                                              and np.array_equal(sp.ids, ids)):
        b.pin(ids, f"channel shuffle back to a literal or other shape in '{call.where}'")
        return None
    rows = ids.reshape(g, -1)
    out = np.ascontiguousarray(rows.T).reshape(-1)
    # on its own (outside a layout region) the shuffle stays a valid permutation if channel k of every one of
    # the g row blocks is one channel
    b.layout("shuffle", [ids], [out], g, fallback=[(np.tile(rows[0], g - 1), rows[1:].reshape(-1))])
    return {d: out}


@method_rule("view_as", "reshape_as")
def view_as(b: Builder, call: Call):
    x, other = call.args[0], call.args[1]
    if tuple(x.shape) == tuple(other.shape):
        return broadcast(b, call)
    return unknown_rule(b, call)


@function_rule(torch.flatten)
@method_rule("flatten")
def flatten(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    return reshape_labels(b, call, x, lab, tuple(call.out.shape), ["free"] * call.out.ndim)


@function_rule(torch.unflatten)
@method_rule("unflatten")
def unflatten(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    d = norm_dim(call.arg(1, "dim"), x.ndim)
    k = call.out.ndim - x.ndim + 1
    spec = ["free"] * call.out.ndim
    spec[d:d + k] = shape_spec(call.raw(2, "sizes"), call.lab(2, "sizes"), k)
    return reshape_labels(b, call, x, lab, tuple(call.out.shape), spec)


SIZE_AWARE.update({view, reshape_fn, unflatten})


def _perm_arg(call: Call) -> list[int]:
    if call.node.op == "call_method":
        dims = call.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        if not dims:
            dims = call.kwargs.get("dims")
        return list(dims)
    return list(call.arg(1, "dims"))


@function_rule(torch.permute)
@method_rule("permute")
def permute(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    perm = [norm_dim(d, x.ndim) for d in _perm_arg(call)]
    return shift_labels(lab, {old: new for new, old in enumerate(perm)})


@function_rule(torch.transpose, torch.swapaxes, torch.swapdims)
@method_rule("transpose", "swapaxes", "swapdims", "transpose_")
def transpose(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    d0 = norm_dim(call.arg(1, "dim0"), x.ndim)
    d1 = norm_dim(call.arg(2, "dim1"), x.ndim)
    mapping = {d: d for d in range(x.ndim)}
    mapping[d0], mapping[d1] = d1, d0
    return shift_labels(lab, mapping)


@function_rule(torch.t)
@method_rule("t")
def t(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab or x.ndim < 2:
        return lab
    return shift_labels(lab, {0: 1, 1: 0})


@function_rule(torch.movedim, torch.moveaxis)
@method_rule("movedim", "moveaxis")
def movedim(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    src, dst = call.arg(1, "source"), call.arg(2, "destination")
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    src = [norm_dim(d, x.ndim) for d in src]
    dst = [norm_dim(d, x.ndim) for d in dst]
    order = [d for d in range(x.ndim) if d not in src]
    perm: list[int | None] = [None] * x.ndim
    for s, d in zip(src, dst):
        perm[d] = s
    it = iter(order)
    perm = [p if p is not None else next(it) for p in perm]
    return shift_labels(lab, {old: new for new, old in enumerate(perm)})


@function_rule(torch.unsqueeze)
@method_rule("unsqueeze", "unsqueeze_")
def unsqueeze(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    d = norm_dim(call.arg(1, "dim"), x.ndim + 1)
    return shift_labels(lab, {i: (i if i < d else i + 1) for i in range(x.ndim)})


@function_rule(torch.squeeze)
@method_rule("squeeze", "squeeze_")
def squeeze(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    dim = call.arg(1, "dim")
    dims = [d for d in range(x.ndim) if x.shape[d] == 1] if dim is None else \
        [d for d in _reduce_dims(dim, x.ndim) if x.shape[d] == 1]
    for d in dims:
        if d in lab:
            b.pin(lab[d], f"squeezed in '{call.where}'")
    keep = [d for d in range(x.ndim) if d not in dims]
    return shift_labels(lab, {d: i for i, d in enumerate(keep)})


@method_rule("expand")
def expand(b: Builder, call: Call):
    x, lab = call.args[0], call.largs[0] or {}
    raw, rlab = _varargs(call, "size")
    off = call.out.ndim - x.ndim
    spec = shape_spec(raw, rlab, call.out.ndim)
    out = {}
    for j, sp in enumerate(spec):
        d = j - off
        ids = lab.get(d) if d >= 0 else None
        if isinstance(sp, SizeRef):
            size_constraint(b, call, ids, sp, "an expanded channel dim")
            if ids is not None and sp.ids is not None:
                out[j] = ids
        elif ids is not None:
            if sp == "lit":
                b.pin(ids, f"expand to a literal size in '{call.where}'")
            else:
                out[j] = ids
    return out or None


SIZE_AWARE.add(expand)


@method_rule("repeat")
def repeat(b: Builder, call: Call):
    x, lab = call.args[0], call.largs[0]
    if not lab:
        return None
    reps = call.args[1:]
    if len(reps) == 1 and isinstance(reps[0], (tuple, list)):
        reps = reps[0]
    off = len(reps) - x.ndim
    return {d + off: np.tile(ids, int(reps[d + off])) for d, ids in lab.items()}
