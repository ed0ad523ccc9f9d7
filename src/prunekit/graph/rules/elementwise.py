"""Elementwise rules: unary ops and activations pass channels through, binary ops broadcast (tie) them;
constructors that only use a tensor as a dtype/device template."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import (FUNCTION_RULES, METHOD_RULES, NAMED_FUNCTION_RULES, Call, broadcast,
                                           method_rule, passthrough)


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
