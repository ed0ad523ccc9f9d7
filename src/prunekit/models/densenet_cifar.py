"""DenseNet-40 (k = 12) as used by Network Slimming (Eric-mingjie/network-slimming ``models/densenet.py``).

No bottleneck and no compression: a 3x3 stem conv to ``2k = 24`` channels, three dense blocks of
``(depth - 4) / 3 = 12`` layers ``BN -> ReLU -> conv3x3(k)`` whose output is concatenated to their input,
transitions ``BN -> ReLU -> conv1x1 (same width) -> avgpool 2`` between blocks, then BN -> ReLU -> global pool ->
linear. Widths: 24 -> 168 | 168 -> 312 | 312 -> 456 channels at 32, 16 and 8 px. 10 classes: 1,059,298 params
(1.06M), 282.9M MACs.

The 24-channel stem (``2k``) is that of Network Slimming's PyTorch code. The Network Slimming *paper's* table
("1.02M params, 5.33e8 FLOPs") matches the original DenseNet-40 of Huang et al., whose stem has 16 channels:
``densenet40(stem_channels=16)`` gives 1,019,722 params (1.02M) and 264.8M MACs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.models.layers import ClassifierHead, bn_relu_conv, init_weights
from prunekit.models.registry import register_model


class DenseLayer(nn.Module):
    """``(N, C, H, W) -> (N, C + growth_rate, H, W)``: ``cat([x, conv(relu(bn(x)))], dim=1)``."""

    def __init__(self, in_channels: int, growth_rate: int):
        super().__init__()
        self.conv = bn_relu_conv(in_channels, growth_rate, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class Transition(nn.Module):
    """``(N, C_in, H, W) -> (N, C_out, H/2, W/2)``: BN -> ReLU -> conv1x1 -> avgpool 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = bn_relu_conv(in_channels, out_channels, kernel_size=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class DenseNet(nn.Module):
    """CIFAR DenseNet with basic (non-bottleneck) layers: ``(N, in_channels, 32, 32) -> (N, num_classes)``."""

    def __init__(self, depth: int = 40, growth_rate: int = 12, num_classes: int = 10, in_channels: int = 3,
                 compression: float = 1.0, stem_channels: int | None = None):
        super().__init__()
        if (depth - 4) % 3 != 0 or depth < 7:
            raise ConfigError(f"DenseNet depth={depth}: expected 3n + 4 with n >= 1")
        layers_per_block = (depth - 4) // 3
        channels = stem_channels or 2 * growth_rate
        stages: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)]
        for b in range(3):
            block = []
            for _ in range(layers_per_block):
                block.append(DenseLayer(channels, growth_rate))
                channels += growth_rate
            stages.append(nn.Sequential(*block))
            if b < 2:
                out = int(channels * compression)
                stages.append(Transition(channels, out))
                channels = out
        stages += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*stages)
        self.head = ClassifierHead(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("densenet40",
                description="DenseNet-40 (k=12, no bottleneck/compression; Network Slimming), 1.06M params")
def densenet40(num_classes: int = 10, in_channels: int = 3, growth_rate: int = 12,
               stem_channels: int | None = None) -> DenseNet:
    """DenseNet-40, growth rate 12; stem ``2 * growth_rate`` channels unless ``stem_channels`` is given."""
    return DenseNet(40, growth_rate, num_classes, in_channels, stem_channels=stem_channels)
