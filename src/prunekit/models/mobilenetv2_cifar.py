"""MobileNetV2 (Sandler et al. 2018) with the common CIFAR strides.

Same blocks and widths as the ImageNet network (inverted residuals ``1x1 expand -> 3x3 depthwise -> 1x1
project``, ReLU6, linear bottleneck, identity residual when stride is 1 and widths match, 1280-wide last conv),
with the two first stride-2 layers made stride 1 for 32x32 inputs (as in kuangliu/pytorch-cifar): the stem
conv and the first block of the 24-channel stage. Feature maps: 32 px (stem to the 24-channel stage),
16 px (32), 8 px (64, 96), 4 px (160, 320, 1280). 10 classes: 2,236,682 params, 88.0M MACs at
``width_mult=1``.

``width_mult`` scales every width (rounded to a multiple of 8, as the paper's reference code); the last conv
keeps 1280 channels for ``width_mult <= 1``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.errors import check_range
from prunekit.models.layers import ClassifierHead, conv_bn, init_weights
from prunekit.models.registry import register_model

# (expansion t, output channels c, blocks n, stride of the first block s); s is the CIFAR stride.
CIFAR_SETTINGS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 on ImageNet
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it (nor below divisor)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """``(N, in, H, W) -> (N, out, H/stride, W/stride)``; adds the input when ``stride == 1 and in == out``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn(in_channels, hidden, kernel_size=1, act=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, kernel_size=3, stride=stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, out_channels, kernel_size=1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """``(N, in_channels, 32, 32) -> (N, num_classes)``; see the module docstring for the layout."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0,
                 settings: list[tuple[int, int, int, int]] | None = None, last_channels: int = 1280):
        super().__init__()
        check_range("width_mult", width_mult, 0.0, low_open=True)
        channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, kernel_size=3, stride=1, act=nn.ReLU6)]
        for t, c, n, s in settings or CIFAR_SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        last = make_divisible(last_channels * max(1.0, width_mult))
        layers.append(conv_bn(channels, last, kernel_size=1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(last, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("mobilenetv2",
                description="MobileNetV2 with CIFAR strides (stem and 24-ch stage stride 1), 2.2M params")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 for 32x32 images; ``width_mult`` scales the widths."""
    return MobileNetV2(num_classes, in_channels, width_mult)
