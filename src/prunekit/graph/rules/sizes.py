"""Python values computed from tensors: sizes (``x.size(1)``, ``x.shape``, arithmetic on them) carry their
provenance (``SizeRef``); builtins that never carry channels; tensor attributes (``x.data``)."""

from __future__ import annotations

import builtins
import math
import operator

import torch

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import (FUNCTION_RULES, Call, SizeRef, function_rule, is_tensor, norm_dim,
                                           unknown_rule)


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
