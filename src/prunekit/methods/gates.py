"""Channel gates: a trainable per-channel factor φ after a BatchNorm (GBN) or after a convolution (gated conv).

    gates = add_gates(model)          # every BatchNorm2d becomes a GatedBatchNorm2d (or every Conv2d, if no BN)
    ...                               # train; score channels by φ·∂L/∂φ; prune with the graph
    fold_gates(model)                 # γ·φ, β·φ back into the BN (W·φ, b·φ into the conv): a plain model again

:class:`GatedBatchNorm2d` is a BatchNorm2d that computes ``BN(x)·φ`` as a BatchNorm with scale ``γ·φ`` and shift
``β·φ``: the product costs C-sized operations, not an extra pass over the activations (the gradient of φ comes
from the BN's own ∂γ, ∂β reductions), so a gated network trains about as fast as the plain one.
:class:`GatedConv2d` (networks without BN, the paper's appendix) is a Conv2d whose output is multiplied by φ.

Both keep the layer's parameters and add ``gate`` (shape ``[C]``). The dependency graph traces through them
(``F.batch_norm`` / ``F.conv2d`` with the layer's own parameters, and the gate tied to the same channels), so
pruning slices the gate together with the channels it scales; prunekit's model files store them as layers of
their own (registered specs), so a Pipeline stage reloads a gated model as gated modules.

``init="one"`` starts every gate at 1. ``init="bn_scale"`` is the official code's form: φ takes the BN scale γ and
the BN keeps γ/φ = 1 and β/φ (same function up to rounding), so an L1 penalty on φ acts on each channel's
scale. With ``freeze_scale=True`` (default) γ is frozen while the gates exist (otherwise γ could undo any
shrinking of φ); folding gives back a plain, fully trainable layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import ConfigError
from prunekit.io import register_module_spec

GATE = "gate"


class GatedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d(x) · gate`` (per channel), computed as one BatchNorm with scale ``γ·gate``, shift
    ``β·gate``. Affine, with an exponential running average (``momentum`` not None)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None):
        if not affine or momentum is None:
            raise ConfigError("GatedBatchNorm2d needs affine=True and a momentum (not the cumulative average)")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.gate = nn.Parameter(torch.ones(num_features, device=self.weight.device, dtype=self.weight.dtype))

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> "GatedBatchNorm2d":
        """A gated copy of ``bn`` (its parameters and statistics; gates at 1)."""
        if type(bn) is not nn.BatchNorm2d or not bn.affine or bn.momentum is None:
            raise ConfigError("only affine nn.BatchNorm2d layers with a momentum can be gated")
        g = cls(bn.num_features, bn.eps, bn.momentum, True, bn.track_running_stats, device=bn.weight.device,
                dtype=bn.weight.dtype)
        g.load_state_dict(bn.state_dict(), strict=False)
        g.weight.requires_grad_(bn.weight.requires_grad)
        g.bias.requires_grad_(bn.bias.requires_grad)
        g.train(bn.training)
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # BatchNorm2d.forward with γ·φ, β·φ (fx-traceable)
        factor = self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if keep else None, self.running_var if keep else None,
                            self.weight * self.gate, self.bias * self.gate, use_batch, factor, self.eps)

    def folded(self) -> nn.BatchNorm2d:
        """The plain BatchNorm2d computing the same function (γ·φ, β·φ)."""
        bn = nn.BatchNorm2d(self.num_features, self.eps, self.momentum, True, self.track_running_stats,
                            device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            state = {k: v for k, v in self.state_dict().items() if k != GATE}
            state["weight"] = self.weight * self.gate
            state["bias"] = self.bias * self.gate
            bn.load_state_dict(state)
        bn.train(self.training)
        return bn


class GatedConv2d(nn.Conv2d):
    """``Conv2d(x) · gate`` (per output channel): the gated convolution for networks without BatchNorm."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = nn.Parameter(torch.ones(self.out_channels, device=self.weight.device, dtype=self.weight.dtype))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "GatedConv2d":
        if type(conv) is not nn.Conv2d:
            raise ConfigError("only nn.Conv2d layers can be gated")
        g = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, device=conv.weight.device,
                dtype=conv.weight.dtype)
        g.load_state_dict(conv.state_dict(), strict=False)
        g.train(conv.training)
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gate.view(1, -1, 1, 1)

    def folded(self) -> nn.Conv2d:
        """The plain Conv2d computing the same function (each output row of W and b times φ)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None, self.padding_mode,
                         device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight * self.gate.view(-1, 1, 1, 1))
            if self.bias is not None:
                conv.bias.copy_(self.bias * self.gate)
        conv.train(self.training)
        return conv


def _bn_spec(m: GatedBatchNorm2d) -> dict:
    return {k: getattr(m, k) for k in ("num_features", "eps", "momentum", "affine", "track_running_stats")}


def _conv_spec(m: GatedConv2d) -> dict:
    out = {k: getattr(m, k) for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                      "dilation", "groups", "padding_mode")}
    out["bias"] = m.bias is not None
    return out


register_module_spec(GatedBatchNorm2d, _bn_spec)
register_module_spec(GatedConv2d, _conv_spec)


@dataclass(eq=False)
class Gate:
    """One gated layer: ``name`` (its qualified name; the gate parameter is ``name + ".gate"``), the ``param``
    (shape ``[C]``), the gated ``layer`` itself and its ``kind`` (``bn`` or ``conv``)."""

    name: str
    param: nn.Parameter
    layer: nn.Module
    kind: Literal["bn", "conv"]

    @property
    def param_name(self) -> str:
        return f"{self.name}.{GATE}" if self.name else GATE

    @property
    def channels(self) -> int:
        return int(self.param.numel())

    def values(self) -> torch.Tensor:
        """φ as a flat tensor ``[C]`` (detached)."""
        return self.param.detach().reshape(-1)


def find_gates(model: nn.Module) -> list[Gate]:
    """Every gated layer of ``model``, in module order."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, GatedBatchNorm2d):
            out.append(Gate(name, m.gate, m, "bn"))
        elif isinstance(m, GatedConv2d):
            out.append(Gate(name, m.gate, m, "conv"))
    return out


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
    becomes a :class:`GatedConv2d` (for networks without BatchNorm: a gate before a BN would be normalised away);
    ``"auto"``: ``bn`` if the model has an affine BatchNorm2d, else ``conv``. ``init``/``freeze_scale``: see the
    module docstring. Outputs are unchanged (exactly for ``init="one"``, up to float rounding for
    ``"bn_scale"``). Works on a loaded ``GraphModule`` too (its layers are replaced under the same names).
    """
    if where not in ("auto", "bn", "conv"):
        raise ConfigError(f"where={where!r} must be 'auto', 'bn' or 'conv'")
    if init not in ("one", "bn_scale"):
        raise ConfigError(f"init={init!r} must be 'one' or 'bn_scale'")
    if find_gates(model):
        raise ConfigError("the model is gated already (find_gates(model) lists its gates); fold_gates(model) first")
    if where == "auto":
        has_bn = any(type(m) is nn.BatchNorm2d and m.affine for m in model.modules())
        where = "bn" if has_bn else "conv"
    if init == "bn_scale" and where != "bn":
        raise ConfigError("init='bn_scale' applies to BatchNorm gates (where='bn')")
    if where == "bn":
        targets = [(n, m) for n, m in model.named_modules()
                   if n and type(m) is nn.BatchNorm2d and m.affine and m.momentum is not None]
    else:
        targets = [(n, m) for n, m in model.named_modules() if n and type(m) is nn.Conv2d]
    if not targets:
        raise ConfigError(f"the model has no {'affine BatchNorm2d' if where == 'bn' else 'Conv2d'} layer to gate")
    for name, layer in targets:
        if where == "conv":
            _replace(model, name, GatedConv2d.from_conv(layer))
            continue
        gated = GatedBatchNorm2d.from_bn(layer)
        with torch.no_grad():
            if init == "bn_scale":
                gamma = gated.weight.detach()
                phi = torch.where(gamma.abs() > 1e-8, gamma, torch.ones_like(gamma))
                gated.gate.copy_(phi)
                gated.weight.div_(phi)
                gated.bias.div_(phi)
        if freeze_scale:
            gated.weight.requires_grad_(False)
        _replace(model, name, gated)
    return find_gates(model)


def fold_gates(model: nn.Module) -> nn.Module:
    """Replace every gated layer by the plain layer computing the same function (BN: γ·φ, β·φ; conv: each
    output row of W and b times φ), in place; returns ``model``. Outputs are unchanged up to float rounding;
    state_dict keys are the original model's; every parameter of the new layers is trainable."""
    for g in find_gates(model):
        if not g.name:
            raise ConfigError("the model itself is a gated layer; call its .folded() instead")
        _replace(model, g.name, g.layer.folded())
    return model
