"""``smallcnn``: a tiny BN CNN for the quickstart (8x8 one-channel digits) and for fast tests.

Layout: ``conv1 (16, 8 px) -> conv2 (32, stride 2, 4 px) -> conv3 (32) + conv2's output -> conv4 (64) ->
global pool -> linear``; every conv is 3x3 -> BN -> ReLU. The residual add ties conv2's and conv3's output
channels into one group, so the pruning core's coupled-channel logic is exercised even on this net.
33,338 params, 0.526M MACs for an 8x8 image (it accepts any size: the head pools globally).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.models.layers import ClassifierHead, conv_bn, init_weights
from prunekit.models.registry import register_model


class SmallCNN(nn.Module):
    """``(N, in_channels, H, W) -> (N, num_classes)``; widths ``(w1, w2, w3)``, default 16/32/64."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = conv_bn(in_channels, w1)
        self.conv2 = conv_bn(w1, w2, stride=2)
        self.conv3 = conv_bn(w2, w2, act=None)
        self.relu3 = nn.ReLU()
        self.conv4 = conv_bn(w2, w3)
        self.head = ClassifierHead(w3, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = self.relu3(x + self.conv3(x))
        return self.head(self.conv4(x))


@register_model("smallcnn", input_size=(1, 8, 8),
                description="Tiny 4-conv BN CNN with one residual add (quickstart on 8x8 digits, tests)")
def smallcnn(num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int, int] = (16, 32, 64)) -> SmallCNN:
    """Small BN CNN for 8x8 one-channel digits."""
    return SmallCNN(num_classes, in_channels, widths)
