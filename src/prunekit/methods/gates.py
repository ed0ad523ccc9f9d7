"""Channel gates: a trainable per-channel factor φ after a BatchNorm (GBN) or after a convolution (gated conv).

    gates = add_gates(model)          # every BatchNorm2d becomes a GatedBatchNorm2d (or every Conv2d, if no BN)
    ...                               # train; score channels by φ·∂L/∂φ; prune with the graph
    fold_gates(model)                 # γ·φ, β·φ back into the BN (W·φ, b·φ into the conv): a plain model again

A gated layer is an ordinary module holding the original layer (``bn`` or ``conv``) and the parameter ``gate`` of
shape ``(1, C, 1, 1)``, multiplied with broadcasting. The dependency graph sees ``layer(x) * gate`` and ties
``gate``'s dim 1 to the layer's channels, so pruning slices the gate together with the channels it scales;
prunekit's model files store it like any other parameter. After ``prunekit.io.load`` (e.g. between the stages of
a Pipeline) the gated layer is a plain container with the same ``bn``/``conv`` child and ``gate`` parameter:
:func:`find_gates` recognises both forms, and :func:`fold_gates` removes the gates from either (module
replacement, or an edit of the fx graph of a loaded model).

``init="one"`` starts every gate at 1 (the network's function is unchanged). ``init="bn_scale"`` is the
official code's form: φ takes the BN scale γ and the BN keeps γ/φ = 1 and β/φ (same function, up to rounding),
so the L1 penalty on φ acts on each channel's actual scale. In both, ``freeze_scale=True`` freezes γ while the
gates exist (otherwise γ could undo any shrinking of φ); folding unfreezes it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx
import torch.nn as nn

from prunekit.errors import ConfigError, PrunekitError

GATE = "gate"
_LAYER_ATTR = {"bn": "bn", "conv": "conv"}


class GatedBatchNorm2d(nn.Module):
    """``bn(x) * gate``: a BatchNorm2d whose output channels are scaled by trainable gates (init 1)."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        if not isinstance(bn, nn.BatchNorm2d) or not bn.affine:
            raise ConfigError("GatedBatchNorm2d needs an affine nn.BatchNorm2d (its γ/β receive the folded gates)")
        self.bn = bn
        self.gate = nn.Parameter(torch.ones(1, bn.num_features, 1, 1, dtype=bn.weight.dtype,
                                            device=bn.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gate


class GatedConv2d(nn.Module):
    """``conv(x) * gate``: the gated convolution for networks without BatchNorm (the paper's appendix)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise ConfigError("GatedConv2d needs an nn.Conv2d")
        self.conv = conv
        self.gate = nn.Parameter(torch.ones(1, conv.out_channels, 1, 1, dtype=conv.weight.dtype,
                                            device=conv.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.gate


@dataclass(eq=False)
class Gate:
    """One gated layer of a model: ``name`` (qualified name of the gated block; the gate parameter is
    ``name + ".gate"``), the ``param`` (shape ``(1, C, 1, 1)``), the gated ``layer`` and its ``kind``."""

    name: str
    param: nn.Parameter
    layer: nn.Module
    kind: Literal["bn", "conv"]

    @property
    def param_name(self) -> str:
        return f"{self.name}.{GATE}" if self.name else GATE

    @property
    def layer_name(self) -> str:
        return f"{self.name}.{_LAYER_ATTR[self.kind]}" if self.name else _LAYER_ATTR[self.kind]

    @property
    def channels(self) -> int:
        return int(self.param.shape[1])

    def values(self) -> torch.Tensor:
        """φ as a flat tensor ``[C]`` (detached)."""
        return self.param.detach().reshape(-1)


def _gate_of(name: str, module: nn.Module) -> Gate | None:
    p = module._parameters.get(GATE)
    if not isinstance(p, torch.Tensor) or p.ndim != 4 or p.shape[0] != 1 or tuple(p.shape[2:]) != (1, 1):
        return None
    bn, conv = module._modules.get("bn"), module._modules.get("conv")
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.num_features == p.shape[1]:
        return Gate(name, p, bn, "bn")
    if isinstance(conv, nn.Conv2d) and conv.out_channels == p.shape[1]:
        return Gate(name, p, conv, "conv")
    return None


def find_gates(model: nn.Module) -> list[Gate]:
    """Every gated layer of ``model`` (live ``GatedBatchNorm2d``/``GatedConv2d`` or their reloaded containers)."""
    return [g for name, m in model.named_modules() if (g := _gate_of(name, m)) is not None]


def gate_params(model: nn.Module) -> list[nn.Parameter]:
    """The gate parameters of ``model`` (e.g. the selection of an L1 penalty)."""
    return [g.param for g in find_gates(model)]


def gate_l1(model: nn.Module) -> torch.Tensor:
    """``Σ |φ|`` over every gate of ``model`` (the sparsity term of the tock, before its λ)."""
    ps = gate_params(model)
    if not ps:
        raise ConfigError("the model has no gates: call add_gates(model) first")
    return sum(p.abs().sum() for p in ps)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def add_gates(model: nn.Module, *, where: Literal["auto", "bn", "conv"] = "auto",
              init: Literal["one", "bn_scale"] = "one", freeze_scale: bool = True) -> list[Gate]:
    """Gate ``model``'s channels in place; returns the gates.

    ``where="bn"``: every affine ``BatchNorm2d`` becomes a :class:`GatedBatchNorm2d`; ``"conv"``: every ``Conv2d``
    becomes a :class:`GatedConv2d` (for networks without BatchNorm: gating a conv that a BN follows would be
    useless, the BN normalises the gate away); ``"auto"``: ``bn`` if the model has an affine BatchNorm2d, else
    ``conv``. ``init``/``freeze_scale``: see the module docstring. The model's outputs are unchanged (exactly
    for ``init="one"``, up to float rounding for ``"bn_scale"``). Works on a loaded ``GraphModule`` as well.
    """
    if where not in ("auto", "bn", "conv"):
        raise ConfigError(f"where={where!r} must be 'auto', 'bn' or 'conv'")
    if init not in ("one", "bn_scale"):
        raise ConfigError(f"init={init!r} must be 'one' or 'bn_scale'")
    if find_gates(model):
        raise ConfigError("the model is gated already (find_gates(model) lists its gates); fold_gates(model) first")
    if where == "auto":
        has_bn = any(isinstance(m, nn.BatchNorm2d) and m.affine for m in model.modules())
        where = "bn" if has_bn else "conv"
    targets = [(n, m) for n, m in model.named_modules() if n and (
        (where == "bn" and type(m) is nn.BatchNorm2d and m.affine) or (where == "conv" and type(m) is nn.Conv2d))]
    if not targets:
        raise ConfigError(f"the model has no {'affine BatchNorm2d' if where == 'bn' else 'Conv2d'} layer to gate")
    if init == "bn_scale" and where != "bn":
        raise ConfigError("init='bn_scale' applies to BatchNorm gates (where='bn')")
    for name, layer in targets:
        gated = GatedBatchNorm2d(layer) if where == "bn" else GatedConv2d(layer)
        if where == "bn":
            with torch.no_grad():
                if init == "bn_scale":
                    gamma = layer.weight.detach()
                    phi = torch.where(gamma.abs() > 1e-8, gamma, torch.ones_like(gamma))
                    gated.gate.copy_(phi.view(1, -1, 1, 1))
                    layer.weight.div_(phi)
                    layer.bias.div_(phi)
            if freeze_scale:
                layer.weight.requires_grad_(False)
        _replace(model, name, gated)
    return find_gates(model)


def _fold_values(g: Gate) -> None:
    phi = g.values().to(g.layer.weight.dtype)
    with torch.no_grad():
        if g.kind == "bn":
            g.layer.weight.mul_(phi)
            g.layer.bias.mul_(phi)
        else:
            g.layer.weight.mul_(phi.view(-1, *([1] * (g.layer.weight.ndim - 1))))
            if g.layer.bias is not None:
                g.layer.bias.mul_(phi)
    g.layer.weight.requires_grad_(True)


_MULS = (operator.mul, torch.mul, operator.imul)


def _unlink(gm: torch.fx.GraphModule, g: Gate) -> None:
    """Remove ``layer(x) * gate`` from a GraphModule's graph: the product's users read the layer's output."""
    graph = gm.graph
    for node in [n for n in graph.nodes if n.op == "get_attr" and n.target == g.param_name]:
        for user in list(node.users):
            is_mul = (user.op == "call_function" and user.target in _MULS) or \
                     (user.op == "call_method" and user.target in ("mul", "mul_"))
            if not is_mul or len(user.args) != 2 or user.kwargs:
                raise PrunekitError(f"cannot fold gate {g.param_name}: the graph uses it in {user.format_node()}, "
                                    "not in a plain `output * gate`")
            other = user.args[1] if user.args[0] is node else user.args[0]
            user.replace_all_uses_with(other)
            graph.erase_node(user)
        graph.erase_node(node)
    for node in graph.nodes:
        if node.op == "call_module" and node.target == g.layer_name:
            node.target = g.name


def fold_gates(model: nn.Module) -> nn.Module:
    """Fold every gate into its layer (BN: γ·φ and β·φ; conv: each output row of W and b times φ) and remove it,
    in place; returns ``model``. Outputs are unchanged up to float rounding; the result holds no gates (the
    gated block is replaced by its BatchNorm2d / Conv2d under the block's name, so state_dict keys are the
    original model's). Folding re-enables ``requires_grad`` on the layer's weight."""
    gates = find_gates(model)
    edited = False
    targets = set()
    if isinstance(model, torch.fx.GraphModule):
        targets = {n.target for n in model.graph.nodes if n.op == "get_attr"}
    for g in gates:
        if not g.name:
            raise ConfigError("the model itself is a gated layer; fold its parent model instead")
        _fold_values(g)
        if g.param_name in targets:
            _unlink(model, g)
            edited = True
        _replace(model, g.name, g.layer)
    if edited:
        model.graph.lint()
        model.recompile()
    return model
