"""CIFAR VGG-11/13/16/19 with BatchNorm: the variant of Network Slimming (Liu et al. 2017).

Layout (Eric-mingjie/network-slimming ``models/vgg.py``): the VGG conv configuration with every conv
``3x3 (no bias) -> BN -> ReLU``, a 2x2 max-pool after each of the first four conv groups (the fifth group runs at
2x2 pixels for a 32x32 input), global average pool, and a single ``Linear(512, num_classes)`` — no 4096-wide
fully-connected layers. 32x32 image, 10 classes: VGG-19 20,035,018 params (20.04M), 398.1M MACs (the paper's
"20.04M / 7.97e8 FLOPs" baseline: its FLOPs are 2 x MACs); VGG-16 14.72M params, 313.2M MACs.

Gate Decorator's CIFAR VGG-16 (youzhonghui/gate-decorator-pruning ``models/cifar/vgg.py``) is the same network
up to two details: its convs have biases (+4,224 params for VGG-16) and the final 2x2 map is max-pooled instead
of average-pooled; MACs are identical. prunekit uses the Network Slimming definition for all four depths.

``AdaptiveAvgPool2d(1)`` replaces the reference's ``AvgPool2d(2)`` — identical for 32x32 inputs, and it keeps
the model usable at other sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.models.layers import ClassifierHead, conv_bn, init_weights
from prunekit.models.registry import register_model

LayerSpec = int | str  # output channels of a conv, or "M" for a 2x2 max-pool

CONFIGS: dict[int, list[LayerSpec]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """``features`` (conv-BN-ReLU units and max-pools) then ``head``: ``(N, C, 32, 32) -> (N, num_classes)``.

    ``cfg`` lists the layers: an int is a conv unit with that many output channels, ``"M"`` a 2x2 max-pool.
    """

    def __init__(self, cfg: Sequence[LayerSpec], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in cfg:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            elif isinstance(spec, int) and spec > 0:
                layers.append(conv_bn(channels, spec))
                channels = spec
            else:
                raise ConfigError(f"VGG cfg entry {spec!r}: expected a positive int (conv width) or 'M' (max-pool)")
        if not any(isinstance(m, nn.Sequential) for m in layers):
            raise ConfigError(f"VGG cfg {list(cfg)!r} has no conv layer")
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _vgg(depth: int, num_classes: int, in_channels: int, cfg: Sequence[LayerSpec] | None) -> VGG:
    return VGG(CONFIGS[depth] if cfg is None else cfg, num_classes, in_channels)


@register_model("vgg11", description="CIFAR VGG-11-BN (Network Slimming variant, one linear layer)")
def vgg11(num_classes: int = 10, in_channels: int = 3, cfg: Sequence[LayerSpec] | None = None) -> VGG:
    """CIFAR VGG-11 with BN; ``cfg`` overrides the layer list (e.g. a pruned one)."""
    return _vgg(11, num_classes, in_channels, cfg)


@register_model("vgg13", description="CIFAR VGG-13-BN (Network Slimming variant, one linear layer)")
def vgg13(num_classes: int = 10, in_channels: int = 3, cfg: Sequence[LayerSpec] | None = None) -> VGG:
    """CIFAR VGG-13 with BN; ``cfg`` overrides the layer list (e.g. a pruned one)."""
    return _vgg(13, num_classes, in_channels, cfg)


@register_model("vgg16", description="CIFAR VGG-16-BN (Network Slimming variant, one linear layer), 14.7M params")
def vgg16(num_classes: int = 10, in_channels: int = 3, cfg: Sequence[LayerSpec] | None = None) -> VGG:
    """CIFAR VGG-16 with BN; ``cfg`` overrides the layer list (e.g. a pruned one)."""
    return _vgg(16, num_classes, in_channels, cfg)


@register_model("vgg19", description="CIFAR VGG-19-BN (Network Slimming variant, one linear layer), 20.04M params")
def vgg19(num_classes: int = 10, in_channels: int = 3, cfg: Sequence[LayerSpec] | None = None) -> VGG:
    """CIFAR VGG-19 with BN; ``cfg`` overrides the layer list (e.g. a pruned one)."""
    return _vgg(19, num_classes, in_channels, cfg)
