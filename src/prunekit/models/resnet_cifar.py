"""CIFAR ResNets (He et al. 2016, section 4.2) and the pre-activation ResNet-164 of Network Slimming.

``resnet20/32/56/110``: a 3x3 conv stem (16 channels), three stages of ``n = (depth - 2) / 6`` BasicBlocks with
16, 32 and 64 channels at 32, 16 and 8 pixels, global average pool, linear. Where a block changes the shape
(first block of stages 2 and 3), the shortcut is

- ``shortcut="B"`` (default): a 1x1 conv (stride 2) + BN projection, as in Gate Decorator's and Torch-Pruning's
  CIFAR ResNets. It adds two 1x1 convs to option A: 16*32 + 32*64 = 2,560 weights (+ 192 BN parameters) and
  16*32*16*16 + 32*64*8*8 = 262,144 MACs. ResNet-56 "B", 32x32 image, 10 classes: **855,770 params (0.856M),
  125,747,840 MACs (125.7M)** by ``prunekit.count`` (conv + linear MACs; checked in ``tests/test_models.py``).
  The "126.8M" of Gate Decorator's table is the same network counted by ``thop``, which adds 2 ops per
  BatchNorm output element (544,768 elements -> 1,089,536) and the global pool (4,160):
  125,747,840 + 1,089,536 + 4,160 = 126,841,536. Option A: 853,018 params, 125,485,696 MACs (the "125.49M"
  of Torch-Pruning/DepGraph tables).
- ``shortcut="A"``: parameter-free identity: subsample ``x[:, :, ::2, ::2]`` and zero-pad the new channels
  (half before, half after), done with ``F.pad`` so that torch.fx traces it.

``resnet164``: the pre-activation bottleneck ResNet used by Network Slimming (``depth = 9n + 2``, n = 18 blocks
per stage): blocks ``BN-ReLU-conv1x1(planes) - BN-ReLU-conv3x3(planes) - BN-ReLU-conv1x1(4 planes)`` with
planes 16/32/64 (block outputs 64/128/256), a 1x1 conv projection (no BN) on the raw input where the shape
changes, a final BN-ReLU before the pool. 1,703,258 params (paper: 1.70M), 247.6M MACs. Network Slimming's
``channel_selection`` mask layer is left out: prunekit removes channels physically.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import ConfigError
from prunekit.models.layers import ClassifierHead, bn_relu_conv, conv_bn, init_weights
from prunekit.models.registry import register_model

Shortcut = Literal["A", "B"]


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: ``(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)``, new channels zero."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError(f"zero-pad shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; output ``planes`` channels."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: Shortcut = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != planes:
            if shortcut == "B":
                self.shortcut = conv_bn(in_channels, planes, kernel_size=1, stride=stride, act=None)
            else:
                self.shortcut = ZeroPadShortcut(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: ``x + conv3(conv2(conv1(x)))`` with BN-ReLU before each conv; out ``4 planes``."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = bn_relu_conv(in_channels, planes, kernel_size=1)
        self.conv2 = bn_relu_conv(planes, planes, kernel_size=3, stride=stride)
        self.conv3 = bn_relu_conv(planes, out_channels, kernel_size=1)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x)


class CifarResNet(nn.Module):
    """Stem, three stages of ``blocks_per_stage`` blocks (strides 1, 2, 2), head.

    ``block`` is :class:`BasicBlock` (post-activation: stem conv-BN-ReLU) or :class:`PreActBottleneck`
    (stem conv only, BN-ReLU before the head). Input ``(N, in_channels, 32, 32)`` -> ``(N, num_classes)``.
    """

    def __init__(self, block: type[BasicBlock] | type[PreActBottleneck], blocks_per_stage: int,
                 num_classes: int = 10, in_channels: int = 3, stem_channels: int = 16,
                 planes: tuple[int, int, int] = (16, 32, 64), **block_kwargs):
        super().__init__()
        preact = block is PreActBottleneck
        self.stem = (nn.Conv2d(in_channels, stem_channels, 3, 1, 1, bias=False) if preact
                     else conv_bn(in_channels, stem_channels))
        channels = stem_channels
        stages = []
        for stage_planes, stride in zip(planes, (1, 2, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(block(channels, stage_planes, stride if i == 0 else 1, **block_kwargs))
                channels = stage_planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.final_act: nn.Module = (nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if preact
                                     else nn.Identity())
        self.head = ClassifierHead(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(self.final_act(x))


def _basic_resnet(depth: int, num_classes: int, in_channels: int, shortcut: str) -> CifarResNet:
    if shortcut not in ("A", "B"):
        raise ConfigError(f"shortcut={shortcut!r}: expected 'A' (zero-pad identity) or 'B' (1x1 conv projection)")
    return CifarResNet(BasicBlock, (depth - 2) // 6, num_classes, in_channels, shortcut=shortcut)


@register_model("resnet20", description="CIFAR ResNet-20 (BasicBlock, 16/32/64), 0.27M params")
def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "B") -> CifarResNet:
    """CIFAR ResNet-20 (3 BasicBlocks per stage)."""
    return _basic_resnet(20, num_classes, in_channels, shortcut)


@register_model("resnet32", description="CIFAR ResNet-32 (BasicBlock, 16/32/64), 0.467M params")
def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "B") -> CifarResNet:
    """CIFAR ResNet-32 (5 BasicBlocks per stage)."""
    return _basic_resnet(32, num_classes, in_channels, shortcut)


@register_model("resnet56", description="CIFAR ResNet-56 (BasicBlock, 16/32/64), 0.856M params, 125.7M MACs")
def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "B") -> CifarResNet:
    """CIFAR ResNet-56 (9 BasicBlocks per stage)."""
    return _basic_resnet(56, num_classes, in_channels, shortcut)


@register_model("resnet110", description="CIFAR ResNet-110 (BasicBlock, 16/32/64), 1.73M params")
def resnet110(num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "B") -> CifarResNet:
    """CIFAR ResNet-110 (18 BasicBlocks per stage)."""
    return _basic_resnet(110, num_classes, in_channels, shortcut)


@register_model("resnet164", description="Pre-activation bottleneck ResNet-164 (Network Slimming), 1.7M params")
def resnet164(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """Pre-activation bottleneck ResNet-164 (18 blocks per stage, outputs 64/128/256 channels)."""
    return CifarResNet(PreActBottleneck, (164 - 2) // 9, num_classes, in_channels)
