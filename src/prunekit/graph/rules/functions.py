"""Channel rules for functions (``call_function``) and Tensor methods (``call_method``), keyed by the function
object or the method name."""

from __future__ import annotations

import builtins
import math
import operator

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import (FUNCTION_RULES, METHOD_RULES, NAMED_FUNCTION_RULES, SIZE_AWARE, Call,
                                          Labels, SizeRef, broadcast, function_rule, is_tensor, method_rule,
                                          norm_dim, passthrough, reshape_labels, shift_labels, size_constraint,
                                          unknown_rule, where_of)

# ---------------------------------------------------------------------------------------------------------------
# elementwise


def _register_names(names: list[str], rule, namespaces=(torch, F, torch.Tensor)) -> None:
    for name in names:
        for ns in namespaces:
            fn = getattr(ns, name, None)
            if callable(fn) and ns is not torch.Tensor:  # (torch.float etc. are dtypes, not functions)
                FUNCTION_RULES[fn] = rule
        METHOD_RULES[name] = rule


_UNARY = """relu relu_ relu6 sigmoid sigmoid_ tanh tanh_ gelu silu mish hardswish hardsigmoid hardtanh hardtanh_
leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ softplus softsign logsigmoid tanhshrink softshrink hardshrink
threshold threshold_ rrelu rrelu_ dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
abs abs_ neg neg_ negative exp exp_ expm1 log log_ log1p sqrt sqrt_ rsqrt square reciprocal sign floor ceil round
trunc frac clamp clamp_ clip clip_ clamp_min clamp_max sin cos erf contiguous clone detach detach_ float half
double bfloat16 to type type_as requires_grad_ nan_to_num zeros_like ones_like empty_like full_like rand_like
randn_like sigmoid_ exp2 logit""".split()
_register_names(_UNARY, passthrough)
FUNCTION_RULES[operator.neg] = passthrough
FUNCTION_RULES[operator.pos] = passthrough

_BINARY = """add add_ sub sub_ subtract mul mul_ multiply div div_ divide true_divide floor_divide maximum minimum
fmax fmin pow pow_ remainder fmod where eq ne lt le gt ge logical_and logical_or logical_xor addcmul addcdiv lerp
atan2 hypot rsub masked_fill masked_fill_ copysign bitwise_and bitwise_or""".split()
_register_names(_BINARY, broadcast)
for _op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow,
            operator.mod, operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.and_,
            operator.or_, operator.xor, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
            operator.ge):
    FUNCTION_RULES[_op] = broadcast


@method_rule("expand_as")
def expand_as(b: Builder, call: Call):
    return broadcast(b, call)


@method_rule("new_zeros", "new_ones", "new_empty", "new_full", "new_tensor")
def new_constant(b: Builder, call: Call):
    """``x.new_zeros(sizes)``: a fixed tensor; ``x`` itself is only a dtype/device template."""
    return None


# torchvision's StochasticDepth (an fx-wrapped function): drops whole samples, channels pass through. Keyed by
# the function's qualified name so that importing prunekit does not import torchvision.
NAMED_FUNCTION_RULES[("torchvision.ops.stochastic_depth", "stochastic_depth")] = passthrough

# ---------------------------------------------------------------------------------------------------------------
# reductions and normalisations along a dim

_SUMLIKE = {"sum", "nansum", "norm"}


def _reduce_dims(arg, ndim: int) -> list[int]:
    if arg is None:
        return list(range(ndim))
    if isinstance(arg, int):
        return [norm_dim(arg, ndim)]
    return [norm_dim(int(d), ndim) for d in arg]


def _reduction(kind: str):
    def rule(b: Builder, call: Call):
        x, lab = call.arg(0, "input"), call.lab(0, "input")
        if kind in ("max", "min") and is_tensor(call.arg(1, "other")):
            return broadcast(b, call)
        if not lab or not is_tensor(x):
            return None
        dim = call.arg(2, "dim") if kind == "norm" else call.arg(1, "dim", call.kwargs.get("axis"))
        if isinstance(dim, bool):
            dim = None
        first = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
        keepdim = is_tensor(first) and first.ndim == x.ndim
        dims = _reduce_dims(dim, x.ndim)
        for d in dims:
            if d in lab and kind not in _SUMLIKE:
                b.pin(lab[d], f"{kind} over a channel dim in '{call.where}'")
        if keepdim:
            out = {d: ids for d, ids in lab.items() if d not in dims}
        else:
            keep = [d for d in range(x.ndim) if d not in dims]
            out = shift_labels(lab, {d: i for i, d in enumerate(keep)}) or {}
        out = out or None
        if isinstance(call.out, (tuple, list)):
            return tuple(out for _ in call.out)
        return out
    return rule


for _name in ("sum", "nansum", "mean", "nanmean", "amax", "amin", "max", "min", "std", "var", "prod", "logsumexp",
              "all", "any", "argmax", "argmin", "median", "norm", "count_nonzero"):
    _register_names([_name], _reduction(_name), namespaces=(torch, torch.Tensor))


def softmax_labels(b: Builder, call: Call, x, lab: Labels | None, dim: int):
    if not lab:
        return None
    d = norm_dim(dim, x.ndim)
    if d in lab:
        b.pin(lab[d], f"softmax over a channel dim in '{call.where}'")
    return lab


@function_rule(F.softmax, F.log_softmax, F.softmin, torch.softmax, torch.log_softmax)
@method_rule("softmax", "log_softmax")
def softmax(b: Builder, call: Call):
    x = call.arg(0, "input")
    dim = call.arg(1, "dim")
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    return softmax_labels(b, call, x, call.lab(0, "input"), dim)


@function_rule(F.normalize)
def normalize(b: Builder, call: Call):
    """``x / ||x||_p`` along a dim: zero channels do not change the norm, so removing them is exact."""
    return call.lab(0, "input")


# ---------------------------------------------------------------------------------------------------------------
# spatial ops


def spatial_labels(b: Builder, call: Call, x, lab: Labels | None, k: int):
    """Ops over the last ``k`` dims (pooling, interpolation): channels pass, channel ids on those dims pin."""
    if not lab:
        return None
    out = {}
    for d, ids in lab.items():
        if d >= x.ndim - k:
            b.pin(ids, f"spatial op {call.op_name()} over a channel dim in '{call.where}'")
        else:
            out[d] = ids
    out = out or None
    if isinstance(call.out, (tuple, list)):
        return tuple(out for _ in call.out)
    return out


def _spatial_fn(k: int | None):
    def rule(b: Builder, call: Call):
        x = call.arg(0, "input")
        return spatial_labels(b, call, x, call.lab(0, "input"), k if k is not None else x.ndim - 2)
    return rule


for _name in dir(F):
    if _name.startswith(("avg_pool", "max_pool", "adaptive_avg_pool", "adaptive_max_pool", "lp_pool",
                         "fractional_max_pool")):
        _digits = [c for c in _name if c.isdigit()]
        if _digits and callable(getattr(F, _name)):
            FUNCTION_RULES[getattr(F, _name)] = _spatial_fn(int(_digits[0]))
for _name in ("avg_pool1d", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool1d"):
    if hasattr(torch, _name):
        FUNCTION_RULES[getattr(torch, _name)] = _spatial_fn(int(_name[-2]))
FUNCTION_RULES[F.interpolate] = _spatial_fn(None)
FUNCTION_RULES[F.upsample] = _spatial_fn(None)


def pad_labels(b: Builder, call: Call, x, lab: Labels | None, pad: tuple, mode: str):
    """``F.pad``: padding the channel dim with constants adds slots that map to no producer. The pad amounts are
    literals, so those slots are pinned (kept) and the padded tensor's other channels stay prunable: an option-A
    ResNet shortcut then prunes correctly. Non-constant padding of a channel dim pins it."""
    if not lab:
        return None
    out = dict(lab)
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        before, after = int(pad[2 * i]), int(pad[2 * i + 1])
        if d not in lab or (before == 0 and after == 0):
            continue
        if mode != "constant" or before < 0 or after < 0:
            b.pin(lab[d], f"{mode} padding of a channel dim in '{call.where}'")
            out.pop(d)
            continue
        reason = f"zero-padded channel slots (F.pad) in '{call.where}': the pad amounts are fixed in the code"
        pre = b.new_ids(before, call.where)
        post = b.new_ids(after, call.where)
        b.pin(pre, reason)
        b.pin(post, reason)
        out[d] = np.concatenate([pre, lab[d], post])
    return out


@function_rule(F.pad)
def pad(b: Builder, call: Call):
    mode = call.arg(2, "mode", "constant") or "constant"
    return pad_labels(b, call, call.arg(0, "input"), call.lab(0, "input"), tuple(call.arg(1, "pad")), mode)


# ---------------------------------------------------------------------------------------------------------------
# shape ops


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
    x, lab = call.args[0], call.largs[0]
    if len(call.args) == 2 and isinstance(call.args[1], torch.dtype):  # x.view(dtype)
        return unknown_rule(b, call)
    raw, rlab = _varargs(call, "size" if call.node.target == "view" else "shape")
    return reshape_labels(b, call, x, lab, tuple(call.out.shape), shape_spec(raw, rlab, call.out.ndim))


@function_rule(torch.reshape)
def reshape_fn(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    spec = shape_spec(call.raw(1, "shape"), call.lab(1, "shape"), call.out.ndim)
    return reshape_labels(b, call, x, lab, tuple(call.out.shape), spec)


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


# ---------------------------------------------------------------------------------------------------------------
# concatenation, stacking, splitting, indexing


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
    items = [(t, l) for t, l in zip(tensors, labs) if is_tensor(t) and t.ndim == nd]
    other = [d for d in range(nd) if d != cd]
    out = _tie_aligned(b, call, items, [other] * len(items), other)
    parts = [l.get(cd) if l else None for _, l in items]
    if any(p is not None for p in parts):
        reason = f"concatenated with a fixed-size tensor in '{call.where}'"
        for i, (t, _) in enumerate(items):
            if parts[i] is None:
                parts[i] = b.new_ids(t.shape[cd], call.where)
                b.pin(parts[i], reason)
        out[cd] = np.concatenate(parts)
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
    same width and ``chunk`` still splits evenly after pruning."""
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
    if len(outs) > 1:
        b.tie(np.tile(arr[0], len(outs) - 1), arr[1:].reshape(-1))
    return tuple({**rest, d: np.ascontiguousarray(arr[i])} for i in range(len(outs)))


@function_rule(torch.split, getattr(torch, "tensor_split", None))
@method_rule("split", "split_with_sizes", "tensor_split")
def split(b: Builder, call: Call):
    """``split`` takes literal sizes: a split channel dim is pinned (unless it is not split at all)."""
    x, lab = call.arg(0, "input", call.kwargs.get("tensor")), call.lab(0, "input") or call.lkwargs.get("tensor")
    outs = call.out
    if not lab:
        return None
    d = norm_dim(call.arg(2, "dim", 0) or 0, x.ndim)
    rest = {k: v for k, v in lab.items() if k != d}
    if d in lab:
        if len(outs) == 1:
            return (lab,)
        b.pin(lab[d], f"split of a channel dim into literal sizes in '{call.where}'")
    return tuple(dict(rest) or None for _ in outs)


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


# ---------------------------------------------------------------------------------------------------------------
# functional layers with parameters read by get_attr (custom modules that call F.conv2d / F.linear / F.*_norm)


def _param_name(call: Call, i: int, key: str) -> str | None:
    raw = call.raw(i, key)
    if isinstance(raw, torch.fx.Node) and raw.op == "get_attr":
        return raw.target
    return None


def _owner(b: Builder, param: str) -> tuple[str, nn.Module]:
    owner = b.param_owners[param][0]
    return owner, b.module(owner)


@function_rule(F.linear)
def f_linear(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input") or {}
    wname = _param_name(call, 1, "weight")
    if wname is None:
        return unknown_rule(b, call)
    w, wl = call.arg(1, "weight"), call.lab(1, "weight") or {}
    owner, _ = _owner(b, wname)
    last = x.ndim - 1
    out_ids = wl.get(0)
    if out_ids is not None:
        b.mark_producer(wname, 0, owner)
    _tie_in(b, call, lab.get(last), wl.get(1))
    bl = call.lab(2, "bias") or {}
    if out_ids is not None and 0 in bl:
        b.tie(out_ids, bl[0])
    rows = call.out.numel() // (b.batch_size * w.shape[0])
    b.add_layer(owner, rows * (1 if 1 in wl else w.shape[1]), ("param", wname, 0) if out_ids is not None else None,
                ("param", wname, 1) if 1 in wl else None)
    result = {d: ids for d, ids in lab.items() if d < last}
    if out_ids is not None:
        result[last] = out_ids
    return result or None


def _tie_in(b: Builder, call: Call, in_ids, w_in) -> None:
    if in_ids is not None and w_in is not None:
        b.tie(in_ids, w_in)
    elif w_in is not None:
        b.pin(w_in, f"input of {call.op_name()} in '{call.where}' is fixed")
    elif in_ids is not None:
        b.pin(in_ids, f"{call.op_name()} in '{call.where}' reads them with a fixed weight")


def _f_conv(k: int):
    def rule(b: Builder, call: Call):
        x, lab = call.arg(0, "input"), call.lab(0, "input") or {}
        wname = _param_name(call, 1, "weight")
        groups = call.arg(6, "groups", 1)
        if wname is None:
            return unknown_rule(b, call)
        w, wl = call.arg(1, "weight"), call.lab(1, "weight") or {}
        owner, mod = _owner(b, wname)
        if groups > 1 and not isinstance(mod, nn.modules.conv._ConvNd):
            return unknown_rule(b, call)
        cdim = x.ndim - k - 1
        out_ids = wl.get(0)
        if out_ids is None:
            return unknown_rule(b, call)
        b.mark_producer(wname, 0, owner)
        in_ids = lab.get(cdim)
        if groups == 1:
            _tie_in(b, call, in_ids, wl.get(1))
        elif in_ids is not None:
            from prunekit.graph.rules.modules import _tie_conv_groups
            _tie_conv_groups(b, in_ids, out_ids, groups)
        else:
            b.pin(out_ids, f"grouped conv in '{call.where}' reads a fixed input")
        bl = call.lab(2, "bias") or {}
        if 0 in bl:
            b.tie(out_ids, bl[0])
        rows = call.out.numel() // (b.batch_size * w.shape[0])
        kk = math.prod(w.shape[2:])
        in_f = ("param", wname, 1) if (groups == 1 and 1 in wl) else None
        b.add_layer(owner, rows * kk * (1 if in_f else w.shape[1]), ("param", wname, 0), in_f)
        result = {d: ids for d, ids in lab.items() if d < cdim}
        result[cdim] = out_ids
        return result
    return rule


FUNCTION_RULES[F.conv1d] = _f_conv(1)
FUNCTION_RULES[F.conv2d] = _f_conv(2)
FUNCTION_RULES[F.conv3d] = _f_conv(3)


def _tie_params(b: Builder, call: Call, ids, params: list[tuple[int, str]]) -> None:
    """Tie dim 0 of the per-channel parameter arguments ``params`` (position, keyword) with ``ids``."""
    for i, key in params:
        pl = call.lab(i, key)
        if pl and 0 in pl:
            if ids is not None:
                b.tie(ids, pl[0])
            else:
                b.pin(pl[0], f"{call.op_name()} in '{call.where}' normalises a fixed tensor")


@function_rule(F.batch_norm, F.instance_norm)
def f_batch_norm(b: Builder, call: Call):
    lab = call.lab(0, "input")
    ids = lab.get(1) if lab else None
    _tie_params(b, call, ids, [(1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")])
    return lab


@function_rule(F.prelu)
def f_prelu(b: Builder, call: Call):
    lab = call.lab(0, "input")
    w = call.arg(1, "weight")
    if w.numel() == 1:
        return lab
    _tie_params(b, call, lab.get(1) if lab else None, [(1, "weight")])
    return lab


@function_rule(F.layer_norm)
def f_layer_norm(b: Builder, call: Call):
    """``F.layer_norm`` inside a LayerNorm subclass (e.g. a channels-first LayerNorm2d that permutes around it):
    its ``normalized_shape`` literal is the owner's attribute, which surgery updates; elsewhere it is a literal
    and channel dims it covers are pinned."""
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    shape = tuple(call.arg(1, "normalized_shape"))
    k = len(shape)
    wname = _param_name(call, 2, "weight")
    owner_name = where_of(call.node)
    try:
        owner = b.module(owner_name) if owner_name != "(root)" else b.model
    except KeyError:
        owner = None
    updatable = isinstance(owner, nn.LayerNorm) and (
        wname is None or b.param_owners.get(wname, ("",))[0] == owner_name)
    operands = [(x, lab)] + [(call.arg(i, key), call.lab(i, key)) for i, key in ((2, "weight"), (3, "bias"))]
    if lab:
        for d in range(x.ndim - k, x.ndim):
            if d in lab:
                if updatable:
                    b.mark_inexact(lab[d])
                else:
                    b.pin(lab[d], f"layer_norm with a literal normalized_shape in '{call.where}'")
    return broadcast(b, call, operands)


@function_rule(F.group_norm)
def f_group_norm(b: Builder, call: Call):
    """``F.group_norm`` outside ``nn.GroupNorm`` (a custom forward): ``num_groups`` is a literal, channels pin."""
    lab = call.lab(0, "input")
    if lab and 1 in lab:
        b.pin(lab[1], f"group_norm with a literal num_groups in '{call.where}'")
    _tie_params(b, call, None, [(2, "weight"), (3, "bias")])
    return lab


# ---------------------------------------------------------------------------------------------------------------
# Python ints computed from sizes (x.size(1), x.shape, arithmetic on them): their provenance (SizeRef)

SIZE_RULES: dict = {}


def _size_of(x, lab, d=None):
    lab = lab or {}
    if d is None:
        return tuple(SizeRef(lab.get(i)) for i in range(x.ndim))
    return SizeRef(lab.get(norm_dim(d, x.ndim)))


def _size_method(b: Builder, call: Call):
    x, lab = call.args[0], call.largs[0]
    return _size_of(x, lab, call.arg(1, "dim"))


def _getattr(b: Builder, call: Call):
    x, name = call.args[0], call.args[1]
    if is_tensor(x) and name == "shape":
        return _size_of(x, call.largs[0])
    return None


def _size_getitem(b: Builder, call: Call):
    lab, idx = call.largs[0], call.args[1]
    if isinstance(lab, (tuple, list)) and isinstance(idx, (int, slice)):
        return lab[idx]
    return None


def _size_arith(b: Builder, call: Call):
    refs = [x for x in list(call.largs) + list(call.lkwargs.values()) if isinstance(x, SizeRef)]
    if not refs:
        return None
    labelled = [r for r in refs if r.ids is not None]
    if not labelled:
        return SizeRef(None)
    if len(labelled) > 1:  # a product/sum of several channel counts: no simple correspondence
        for r in labelled:
            b.pin(r.ids, f"channel counts combined in '{call.where}'")
        return SizeRef(None)
    return SizeRef(labelled[0].ids, derived=True)


def _numel(b: Builder, call: Call):
    lab = call.largs[0]
    if not lab:
        return SizeRef(None)
    if len(lab) > 1:
        return _size_arith(b, Call(call.node, None, "", (), {}, tuple(SizeRef(v) for v in lab.values()), {}, None))
    return SizeRef(next(iter(lab.values())), derived=True)


SIZE_RULES["size"] = _size_method
SIZE_RULES["numel"] = _numel
SIZE_RULES[builtins.getattr] = _getattr
SIZE_RULES[operator.getitem] = _size_getitem
for _op in (operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod,
            operator.neg, builtins.int, builtins.float, math.floor, math.ceil, operator.pow):
    SIZE_RULES[_op] = _size_arith


# builtins that never carry channels
for _fn in (builtins.len, builtins.int, builtins.float, torch._assert):
    FUNCTION_RULES[_fn] = lambda b, call: None


@function_rule(builtins.getattr)
def tensor_attribute(b: Builder, call: Call):
    """``x.data`` passes channels through; other tensor-valued attributes (``x.T``, ``x.mT``...) are unknown."""
    if call.args[1] in ("data",):
        return call.largs[0]
    return unknown_rule(b, call)
