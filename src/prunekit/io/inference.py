"""Inference export: fold each BatchNorm into the conv/linear before it, drop eval no-ops, go channels_last.

Folding removes one full read+write of every activation per BN layer, the part of a pruned network's time
that does not shrink with its MACs; channels_last is the layout GPU convolution kernels (and oneDNN on CPU)
run fastest in. The result is an eval-mode ``torch.fx.GraphModule`` for inference only.
"""

from __future__ import annotations

import copy
import sys
from typing import Callable

import torch
import torch.fx
import torch.nn as nn

from prunekit.io.artifact import ExampleInputs, _as_tuple
from prunekit.io.tracing import trace

# ---------------------------------------------------------------------------------------- registries
NormAffine = Callable[[nn.Module], "tuple[torch.Tensor, torch.Tensor] | None"]
FoldFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], None]

_NORMS: dict[type, NormAffine] = {}
_PRODUCERS: dict[type, FoldFn] = {}
_NOOPS: set[type] = set()


def register_foldable_norm(cls: type, affine: NormAffine) -> None:
    """``affine(norm) -> (scale, shift)`` per channel in eval mode (or None when it cannot be folded)."""
    _NORMS[cls] = affine


def register_fold_target(cls: type, fold: FoldFn) -> None:
    """``fold(producer, scale, shift)`` rewrites ``producer`` in place to compute ``producer(x) * scale + shift``."""
    _PRODUCERS[cls] = fold


def _batchnorm_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    if bn.running_mean is None or bn.running_var is None:  # track_running_stats=False: batch statistics
        return None
    inv = torch.rsqrt(bn.running_var.double() + bn.eps)
    scale = inv if bn.weight is None else bn.weight.double() * inv
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _scale_out_dim(weight: torch.Tensor, scale: torch.Tensor, groups: int = 1, transposed: bool = False
                   ) -> torch.Tensor:
    w = weight.double()
    if not transposed:  # output channels on dim 0
        return w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    # ConvTranspose weight: (in, out // groups, k...); output channel = group * (out // groups) + j
    in_ch, out_per_group = w.shape[0], w.shape[1]
    grouped = w.reshape(groups, in_ch // groups, out_per_group, *w.shape[2:])
    s = scale.reshape(groups, 1, out_per_group, *([1] * (w.dim() - 2)))
    return (grouped * s).reshape(w.shape)


def _fold_into(module: nn.Module, scale: torch.Tensor, shift: torch.Tensor, *, transposed: bool = False) -> None:
    weight = module.weight
    groups = getattr(module, "groups", 1)
    new_w = _scale_out_dim(weight, scale, groups, transposed)
    bias = shift if module.bias is None else module.bias.double() * scale + shift
    with torch.no_grad():
        module.weight = nn.Parameter(new_w.to(weight.dtype), requires_grad=weight.requires_grad)
        module.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=weight.requires_grad)


def _register_defaults() -> None:
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
        register_foldable_norm(cls, _batchnorm_affine)
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear):
        register_fold_target(cls, _fold_into)
    for cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        register_fold_target(cls, lambda m, s, b: _fold_into(m, s, b, transposed=True))
    _NOOPS.update({nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                   nn.FeatureAlphaDropout})


def _register_torchvision() -> None:
    """torchvision's FrozenBatchNorm2d / StochasticDepth, once torchvision is loaded. Importing torchvision here
    eagerly would double ``import prunekit``'s time (it pulls torch._dynamo); a model holding these layers has
    imported it already."""
    global _TORCHVISION_DONE
    if _TORCHVISION_DONE or "torchvision" not in sys.modules:
        return
    _TORCHVISION_DONE = True
    try:
        from torchvision.ops import FrozenBatchNorm2d, StochasticDepth
    except Exception:  # a broken torchvision install is not our concern here
        return
    register_foldable_norm(FrozenBatchNorm2d, _batchnorm_affine)
    _NOOPS.add(StochasticDepth)


_TORCHVISION_DONE = False
_register_defaults()


# ------------------------------------------------------------------------------------------ passes
def fold_batchnorm(gm: torch.fx.GraphModule, example_inputs: ExampleInputs | None = None) -> int:
    """Fold, in ``gm``, every eval-mode BN whose input is a conv/linear output used by nothing else.

    The folded conv/linear is a new module in ``gm`` (modules ``gm`` shares with another model stay untouched).

    Linear → BatchNorm1d is folded only when ``example_inputs`` show the linear output is 2-D (N, C).
    Returns the number of folded norms.
    """
    _register_torchvision()
    inputs = _as_tuple(example_inputs)
    if inputs is not None:
        from torch.fx.passes.shape_prop import ShapeProp

        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for bn_node in list(gm.graph.nodes):
        if bn_node.op != "call_module" or len(bn_node.args) != 1 or bn_node.kwargs:
            continue
        bn = gm.get_submodule(bn_node.target)
        producer_node = bn_node.args[0]
        if type(bn) not in _NORMS or not isinstance(producer_node, torch.fx.Node) \
                or producer_node.op != "call_module" or len(producer_node.users) != 1:
            continue
        producer = gm.get_submodule(producer_node.target)
        fold = _PRODUCERS.get(type(producer))
        if fold is None or calls[producer_node.target] != 1 or calls[bn_node.target] != 1:
            continue
        if isinstance(producer, nn.Linear):
            meta = producer_node.meta.get("tensor_meta")
            if meta is None or len(meta.shape) != 2:
                continue
        affine = _NORMS[type(bn)](bn)
        out_channels = getattr(producer, "out_channels", getattr(producer, "out_features", None))
        if affine is None or affine[0].numel() != out_channels:
            continue
        producer = copy.deepcopy(producer)  # never touch modules shared with the traced model
        fold(producer, *affine)
        _replace_submodule(gm, producer_node.target, producer)
        bn_node.replace_all_uses_with(producer_node)
        gm.graph.erase_node(bn_node)
        folded += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def _replace_submodule(gm: torch.fx.GraphModule, target: str, module: nn.Module) -> None:
    parent_path, _, attr = target.rpartition(".")
    setattr(gm.get_submodule(parent_path) if parent_path else gm, attr, module)


def drop_noops(gm: torch.fx.GraphModule) -> int:
    """Remove, in place, modules that are the identity in eval mode (Dropout, Identity, StochasticDepth)."""
    _register_torchvision()
    dropped = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and len(node.args) >= 1 and not node.kwargs \
                and type(gm.get_submodule(node.target)) in _NOOPS and isinstance(node.args[0], torch.fx.Node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            dropped += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return dropped


def for_inference(model: nn.Module, example_inputs: ExampleInputs | None = None, *, fold_bn: bool = True,
                  channels_last: bool = True, remove_noops: bool = True) -> torch.fx.GraphModule:
    """An inference-only copy of ``model``: BN folded into convs, eval no-ops removed, channels_last weights.

    ``model`` itself is not modified. The copy is in eval mode and computes the same function as ``model.eval()``
    up to float rounding. Give it channels_last inputs (``x.to(memory_format=torch.channels_last)``) for the
    full effect. ``example_inputs`` additionally enable folding Linear → BatchNorm1d.
    """
    gm = trace(copy.deepcopy(model))
    gm.eval()
    if fold_bn:
        fold_batchnorm(gm, example_inputs)
    if remove_noops:
        drop_noops(gm)
    if channels_last:
        gm = gm.to(memory_format=torch.channels_last)
    return gm
