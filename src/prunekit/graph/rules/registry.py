"""Rule registry and the helpers rules share.

A *rule* says how channel ids flow through one kind of op. It receives a ``Call`` (the fx node, its input
values and their labels, its output value) and returns the labels of the output. *Labels* of a tensor are a
``dict[dim, ids]`` (an int64 array of length ``shape[dim]`` for each dimension that carries channel ids; other
dimensions are fixed: batch, space, and anything prunekit must not change) or None; tuples/lists of tensors
get tuples of labels.

Rules are looked up by op type only: the layer class (walking its MRO), the function object, or the Tensor
method name. Nothing here looks at a model's or module's name. An op without a rule pins every channel it
touches and warns (``unknown_rule``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.fx
import torch.nn as nn

from prunekit.graph.builder import Builder, Ids

Labels = dict[int, Ids]
Rule = Callable[[Builder, "Call"], Any]

MODULE_RULES: dict[type, Rule] = {}
SIZE_AWARE: set = set()   # rules that handle SizeRef arguments themselves (others get them pinned)
FUNCTION_RULES: dict[Any, Rule] = {}
NAMED_FUNCTION_RULES: dict[tuple[str, str], Rule] = {}  # (module, qualname) of functions from optional packages
METHOD_RULES: dict[str, Rule] = {}


def module_rule(*types: type) -> Callable[[Rule], Rule]:
    def wrap(fn: Rule) -> Rule:
        for t in types:
            MODULE_RULES[t] = fn
        return fn
    return wrap


def function_rule(*targets: Any) -> Callable[[Rule], Rule]:
    def wrap(fn: Rule) -> Rule:
        for t in targets:
            if t is not None:
                FUNCTION_RULES[t] = fn
        return fn
    return wrap


def method_rule(*names: str) -> Callable[[Rule], Rule]:
    def wrap(fn: Rule) -> Rule:
        for n in names:
            METHOD_RULES[n] = fn
        return fn
    return wrap


class SizeRef:
    """Provenance of a Python int (or bool) computed from tensor sizes in the traced code: ``ids`` are the
    channel ids of the dim it measures (None: a fixed dim, e.g. batch or space); ``derived``: it went through
    arithmetic (``x.size(1) // 2``). Ops that use such an int as a size must keep it consistent with pruning."""

    __slots__ = ("ids", "derived")

    def __init__(self, ids: Ids | None, derived: bool = False):
        self.ids = ids
        self.derived = derived

    def __repr__(self) -> str:
        return f"SizeRef({None if self.ids is None else len(self.ids)}, derived={self.derived})"


@dataclass
class Call:
    """One op application: ``node`` (fx), input ``args``/``kwargs`` (values; tensors may live on the meta device)
    and their labels ``largs``/``lkwargs``, the output ``out``; ``module``/``name`` for layer calls."""

    node: torch.fx.Node
    module: nn.Module | None
    name: str
    args: tuple
    kwargs: dict
    largs: tuple
    lkwargs: dict
    out: Any

    def arg(self, i: int, key: str, default: Any = None) -> Any:
        if i < len(self.args):
            return self.args[i]
        return self.kwargs.get(key, default)

    def lab(self, i: int, key: str = "") -> Any:
        if i < len(self.largs):
            return self.largs[i]
        return self.lkwargs.get(key)

    def raw(self, i: int, key: str, default: Any = None) -> Any:
        """The fx argument itself (a Node for values computed in the graph, a literal otherwise)."""
        if i < len(self.node.args):
            return self.node.args[i]
        return self.node.kwargs.get(key, default)

    @property
    def where(self) -> str:
        return where_of(self.node, self.name)

    def op_name(self) -> str:
        node = self.node
        if node.op == "call_module":
            t = type(self.module)
            return f"{t.__module__}.{t.__qualname__}"
        if node.op == "call_method":
            return f"Tensor.{node.target}"
        t = node.target
        qual = getattr(t, '__qualname__', None) or getattr(t, '__name__', repr(t))
        return f"{getattr(t, '__module__', None) or ''}.{qual}".lstrip(".")


def function_rule_for(target: Any) -> Rule | None:
    """The rule of a function: by identity, else by (module, qualified name) for optional packages."""
    rule = FUNCTION_RULES.get(target)
    if rule is None:
        key = (getattr(target, "__module__", None), getattr(target, "__qualname__", None))
        rule = NAMED_FUNCTION_RULES.get(key)
    return rule


def where_of(node: torch.fx.Node, name: str = "") -> str:
    if name:
        return name
    stack = node.meta.get("nn_module_stack")
    if stack:
        last = list(stack.values())[-1]
        path = last[0] if isinstance(last, tuple) else str(last)
        return path or "(root)"
    return "(root)"


def is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


def norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def has_labels(lab: Any) -> bool:
    if lab is None:
        return False
    if isinstance(lab, SizeRef):
        return lab.ids is not None
    if isinstance(lab, dict):
        if all(isinstance(k, int) for k in lab):
            return bool(lab)
        return any(has_labels(v) for v in lab.values())
    if isinstance(lab, (tuple, list)):
        return any(has_labels(v) for v in lab)
    return False


def pin_inputs(b: Builder, call: Call, reason: str) -> None:
    b.pin_labels(call.largs, reason)
    b.pin_labels(call.lkwargs, reason)


def unknown_rule(b: Builder, call: Call) -> None:
    """Fallback for ops without a rule: every channel of every input is kept, the output is fixed."""
    if has_labels(call.largs) or has_labels(call.lkwargs):
        op = call.op_name()
        reason = f"reaches {op} (no channel rule)"
        pin_inputs(b, call, reason)
        b.warn(f"prunekit: no channel rule for op {op} in module '{call.where}' (node {call.node.name}); "
               "the channels it touches are kept unprunable")
    return None


def passthrough(b: Builder, call: Call) -> Labels | None:
    """Elementwise op on one tensor (activations, dropout, identity, dtype casts): labels pass unchanged."""
    x = call.arg(0, "input")
    lab = call.lab(0, "input")
    if not lab:
        return None
    if not is_tensor(call.out) or not is_tensor(x) or tuple(call.out.shape) != tuple(x.shape):
        return broadcast(b, call)
    return lab


def broadcast(b: Builder, call: Call, operands: list[tuple[Any, Any]] | None = None) -> Labels | None:
    """Elementwise op with broadcasting (add, mul, where, ...): aligned channel dims are tied.

    A dimension of size 1 broadcasts and ties nothing. If an operand has a fixed (unlabelled) dimension of size
    > 1 where another has channel ids, those ids are pinned: that operand cannot shrink.
    """
    if operands is None:
        operands = list(zip(call.args, call.largs)) + [(v, call.lkwargs.get(k)) for k, v in call.kwargs.items()]
    out = call.out
    if not is_tensor(out):
        return None
    shape = tuple(out.shape)
    nd = len(shape)
    result: Labels = {}
    for od in range(nd):
        labelled: list[Ids] = []
        fixed = False
        for v, lab in operands:
            if not is_tensor(v):
                continue
            d = od - (nd - v.ndim)
            if d < 0:
                continue
            size = v.shape[d]
            if size == 1 and shape[od] != 1:
                continue
            ids = lab.get(d) if isinstance(lab, dict) else None
            if ids is None:
                fixed = True
            else:
                labelled.append(ids)
        if not labelled:
            continue
        if fixed:
            for ids in labelled:
                b.pin(ids, f"combined with a fixed-size tensor by {call.op_name()} in '{call.where}'")
            continue
        first = labelled[0]
        for other in labelled[1:]:
            b.tie(first, other)
        result[od] = first
    return result or None


def _align(a: list[int], b: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Split two shapes with equal products (no size-1 dims) into runs of dims with equal products."""
    groups = []
    i = j = 0
    while i < len(a) and j < len(b):
        gi, gj = [i], [j]
        pa, pb = a[i], b[j]
        i += 1
        j += 1
        while pa != pb:
            if pa < pb:
                if i >= len(a):
                    return None
                pa *= a[i]
                gi.append(i)
                i += 1
            else:
                if j >= len(b):
                    return None
                pb *= b[j]
                gj.append(j)
                j += 1
        groups.append((gi, gj))
    if i != len(a) or j != len(b):
        return None
    return groups


def size_constraint(b: Builder, call: Call, ids: Ids | None, ref: "SizeRef", what: str) -> None:
    """Output dim with channel ids ``ids`` (None: fixed) gets its size from ``ref``: keep them consistent."""
    if ref.ids is None:
        if ids is not None:
            b.pin(ids, f"{what} gets its size from a fixed dim in '{call.where}'")
    elif ids is None:
        b.pin(ref.ids, f"channel count used as the size of a fixed dim by {call.op_name()} in '{call.where}'")
    elif not ref.derived and len(ref.ids) == len(ids):
        b.tie(ids, ref.ids)
    else:
        b.same_classes(ids, ref.ids, f"{what} sized by a computed channel count in '{call.where}'")


def reshape_labels(b: Builder, call: Call, x: torch.Tensor, lab: Labels | None, out_shape: tuple[int, ...],
                   spec: list) -> Labels | None:
    """Labels through a view/reshape/flatten from ``x.shape`` to ``out_shape``.

    ``spec[j]`` says where output dim ``j``'s size comes from: ``"lit"`` (a literal in the code: it will not follow
    pruning), ``"attr"`` (a literal read from a shape attribute of the calling module, which surgery rewrites: a
    channel dim may move to it unchanged), ``"free"`` (-1, inferred, or a flatten), or a ``SizeRef`` (computed
    from a tensor's size: it follows that tensor's pruning, so its channels are tied to this dim's). A channel dim
    may move unchanged, be merged
    with neighbours (ids repeat: channel x spatial positions, as flatten -> linear) or be split into one dynamic
    dim and static ones (channel shuffle: ``view(N, g, C/g, H, W)``; the ids along the static dims are tied so
    every pruned width keeps the split valid). Anything else pins the channels.
    """
    result = _reshape(b, call, x, lab, out_shape, spec) if lab else None
    for j, sp in enumerate(spec):
        if isinstance(sp, SizeRef):
            size_constraint(b, call, result.get(j) if result else None, sp, "a reshaped channel dim")
    return result


def _is_static(sp) -> bool:
    return sp in ("lit", "attr") or (isinstance(sp, SizeRef) and sp.ids is None)


def _reshape(b: Builder, call: Call, x: torch.Tensor, lab: Labels, out_shape: tuple[int, ...],
             spec: list) -> Labels | None:
    in_shape = tuple(x.shape)
    out_shape = tuple(out_shape)
    why = f"reshaped by {call.op_name()} in '{call.where}'"
    for d, ids in lab.items():
        if in_shape[d] == 1:
            b.pin(ids, why)
    if 0 in in_shape:
        b.pin_labels(lab, why)
        return None
    ii = [d for d in range(len(in_shape)) if in_shape[d] != 1]
    jj = [d for d in range(len(out_shape)) if out_shape[d] != 1]
    runs = _align([in_shape[d] for d in ii], [out_shape[d] for d in jj])
    if runs is None:
        b.pin_labels(lab, why)
        return None
    result: Labels = {}
    for gi, gj in runs:
        gi = [ii[k] for k in gi]
        gj = [jj[k] for k in gj]
        labelled = [d for d in gi if d in lab and in_shape[d] > 1]
        if not labelled:
            continue
        if len(labelled) > 1:
            for d in labelled:
                b.pin(lab[d], why + " (several channel dims merged)")
            continue
        c = labelled[0]
        ids = lab[c]
        if len(gj) == 1:
            j = gj[0]
            if spec[j] == "lit" or (spec[j] == "attr" and len(gi) != 1):
                b.pin(ids, why + f" to a literal size {out_shape[j]}")
                continue
            if len(gi) == 1:
                result[j] = ids
            else:
                shape = [in_shape[d] for d in gi]
                view = [1] * len(gi)
                view[gi.index(c)] = -1
                result[j] = np.broadcast_to(ids.reshape(view), shape).reshape(-1)
        elif len(gi) == 1:
            dyn = [j for j in gj if not _is_static(spec[j])]
            if len(dyn) != 1:
                b.pin(ids, why + " (channel dim split into several dims whose sizes are "
                      + ("all literal)" if not dyn else "not literal)"))
                continue
            arr = ids.reshape([out_shape[j] for j in gj])
            arr = np.moveaxis(arr, gj.index(dyn[0]), 0).reshape(out_shape[dyn[0]], -1)
            if arr.shape[1] > 1:
                b.tie(np.repeat(arr[:, 0], arr.shape[1] - 1), arr[:, 1:].reshape(-1))
            result[dyn[0]] = np.ascontiguousarray(arr[:, 0])
        else:
            b.pin(ids, why)
    return result or None


def shift_labels(lab: Labels | None, mapping: dict[int, int]) -> Labels | None:
    """Relabel dims: ``mapping[old_dim] = new_dim``; dims missing from ``mapping`` are dropped."""
    if not lab:
        return None
    out = {mapping[d]: ids for d, ids in lab.items() if d in mapping}
    return out or None
