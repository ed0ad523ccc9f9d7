"""Parameter and MAC counting by running the model once with forward hooks.

Convention (the papers' "FLOPs" columns, Torch-Pruning's ``count_ops_and_params``):

- ``macs``: multiply-accumulates of the convolutions (``Conv1d/2d/3d`` incl. grouped and depthwise,
  ``ConvTranspose1d/2d/3d``) and ``Linear`` layers, **for one image** (the total for ``example_inputs`` divided by
  its batch size). Biases, BatchNorm, activations, additions, concatenations and pooling are *not* counted.
  A module that runs twice in a forward counts twice. Ops called as functions (``F.conv2d``, ``x @ w``) are
  not seen.
- ``params``: every parameter of the model (a parameter shared by several modules counts once), including
  BN's weight/bias and the parameters of layers that the forward does not use.

Per layer: ``Conv``: ``out.numel() / N * (in_channels / groups) * prod(kernel_size)``;
``ConvTranspose``: ``in.numel() / N * (out_channels / groups) * prod(kernel_size)``;
``Linear``: ``out.numel() / N * in_features``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.utils import eval_mode  # noqa: F401  (re-exported)

Inputs = torch.Tensor | tuple[torch.Tensor, ...]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def format_count(n: float) -> str:
    """``855770 -> '0.856M'``, ``125747200 -> '125.7M'``, ``4.1e9 -> '4.10G'``, ``3400 -> '3.40K'``."""
    for unit, scale, floor in (("G", 1e9, 1e9), ("M", 1e6, 1e5), ("K", 1e3, 1e2)):
        if abs(n) >= floor:
            v = n / scale
            return f"{v:.3f}{unit}" if abs(v) < 10 else f"{v:.2f}{unit}" if abs(v) < 100 else f"{v:.1f}{unit}"
    return f"{n:g}"


@dataclass(frozen=True)
class Cost:
    """Size and compute of a model: ``params`` (count), ``macs`` (per image), ``per_layer`` (module name -> MACs)."""

    params: int
    macs: int
    per_layer: dict[str, int] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        return f"{format_count(self.params)} params, {format_count(self.macs)} MACs"


def as_tuple(example_inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """Normalise ``example_inputs`` (a tensor or a tuple/list of tensors) to a non-empty tuple."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].dim() == 0:
        raise ConfigError("example_inputs must be a batched tensor (N, ...) or a tuple whose first item is one")
    return inputs


def batch_size(example_inputs: Inputs) -> int:
    """The batch size: dimension 0 of the first input tensor."""
    return as_tuple(example_inputs)[0].shape[0]


def _layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if isinstance(module, _CONV):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, _CONV_T):
        return inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_params(model: nn.Module) -> int:
    """Number of parameters; shared parameters count once."""
    return sum(p.numel() for p in model.parameters())


def count(model: nn.Module, example_inputs: Inputs) -> Cost:
    """Count ``model``'s parameters and per-image MACs by one eval-mode forward of ``example_inputs``.

    ``example_inputs``: a tensor ``(N, ...)`` or a tuple of tensors passed as positional arguments; ``N`` (dim 0 of
    the first) is divided out. Any batch size gives the same figures. The model's training flags are restored.
    See the module docstring for what is counted.
    """
    inputs = as_tuple(example_inputs)
    n = inputs[0].shape[0]
    if n == 0:
        raise ConfigError("example_inputs has batch size 0")
    totals: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (*_CONV, *_CONV_T, nn.Linear)):
            def hook(mod: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
                totals[name] = totals.get(name, 0) + _layer_macs(mod, args, out)

            handles.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    per_layer = {name: macs // n for name, macs in totals.items()}
    return Cost(params=count_params(model), macs=sum(totals.values()) // n, per_layer=per_layer)
