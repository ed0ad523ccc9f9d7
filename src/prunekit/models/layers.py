"""Building blocks shared by the zoo models, and their weight initialisation.

Conventions every zoo model keeps (the pruning core and the methods rely on them):

- plain ``nn`` modules and torch ops only, so ``torch.fx.symbolic_trace`` traces every model;
- no in-place ops (``ReLU(inplace=False)``, ``a + b`` rather than ``a += b``): forward/backward hooks on any
  layer (gate scores, Taylor importance, activation statistics) see tensors nobody overwrites afterwards;
- the classifier head is ``AdaptiveAvgPool2d(1) -> flatten -> Linear``, so a model accepts other image sizes and
  the last feature map's channels map one-to-one onto the linear layer's inputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """``Conv2d (no bias, 'same' padding) -> BatchNorm2d [-> act]``: the post-activation unit.

    Input ``(N, in_channels, H, W)`` -> output ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """``BatchNorm2d -> ReLU -> Conv2d (no bias)``: the pre-activation unit (pre-act ResNet, DenseNet)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
    )


class ClassifierHead(nn.Module):
    """Global average pool then ``Linear``: ``(N, in_features, H, W) -> (N, num_classes)``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming) initialisation as in the papers; returns ``model``.

    Conv: normal with std ``sqrt(2 / (k*k*out_channels))`` (``kaiming_normal_``, fan-out), bias 0. BatchNorm:
    weight 1, bias 0 (Network Slimming's code starts gamma at 0.5; a method that wants that sets it itself).
    Linear: normal with std 0.01, bias 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model
