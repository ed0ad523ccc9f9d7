"""Grouped convolutions with few, wide groups (ResNeSt's split attention: one conv group per radix branch) keep
their groups and shrink each alike, so the radix reshape ``(N, radix, C, H, W)`` stays valid; many narrow groups
(depthwise, ResNeXt) still lose whole groups."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths

from _graph_nets import (bit_identical_when_nothing_pruned, check_half, masked_then_pruned, randomize_bn,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 10, 10)


class SplitAttention(nn.Module):
    """A radix-``r`` split-attention conv: a grouped conv makes ``r`` branches, their sum is pooled, a bottleneck
    MLP gives per-branch channel weights, softmax across branches, weighted sum of the branches."""

    def __init__(self, cin: int, cout: int, radix: int = 2, hidden: int = 8):
        super().__init__()
        self.radix = radix
        self.conv = nn.Conv2d(cin, cout * radix, 3, padding=1, groups=radix, bias=False)
        self.bn0 = nn.BatchNorm2d(cout * radix)
        self.fc1 = nn.Conv2d(cout, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, cout * radix, 1)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv(x)))
        n, rc, h, w = x.shape
        x = x.reshape((n, self.radix, rc // self.radix, h, w))
        gap = x.sum(dim=1).mean((2, 3), keepdim=True)
        attn = self.fc2(F.relu(self.bn1(self.fc1(gap))))
        attn = attn.view(n, self.radix, -1).softmax(dim=1).reshape(n, -1)
        attn = attn.reshape((n, self.radix, rc // self.radix, 1, 1))
        return (x * attn).sum(dim=1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(12, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.split = SplitAttention(8, 8)
        self.expand = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12))
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.expand(self.split(self.reduce(x))))
        return self.fc(x.mean((2, 3)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(Net()).eval()


def test_split_attention_branches_prune_alike():
    graph = DependencyGraph(_net(), X)
    # the grouped conv's input (reduce) keeps its 2 conv groups, each of 4 channels: 4 group channels
    assert graph["reduce.0"].prunable and graph["reduce.0"].size == 4
    # the branches' channels: 8 per branch, shared by both branches and the attention MLP's output
    assert graph["split.conv"].prunable and graph["split.conv"].size == 8
    assert graph["split.fc1"].prunable
    bit_identical_when_nothing_pruned(_net(), X)
    err, pruned = masked_then_pruned(_net(), X)
    assert err < 1e-5 and pruned["reduce.0"].size < 4 and pruned["split.conv"].size < 8
    before, predicted, after = check_half(_net(), X)
    assert predicted == after < before


def test_the_conv_keeps_its_groups():
    model = _net()
    graph = DependencyGraph(model, X)
    apply_widths(graph, {"reduce.0": 3, "split.conv": 5})
    conv = model.split.conv
    assert (conv.in_channels, conv.out_channels, conv.groups, tuple(conv.weight.shape[:2])) == (6, 10, 2, (10, 3))
    assert model.reduce[0].out_channels == 6 and model.split.fc2.out_channels == 10
    assert model(X).shape == (2, 5)


def test_narrow_groups_still_lose_whole_groups():
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=8),
                          nn.Conv2d(16, 4, 1)).eval()
    graph = DependencyGraph(model, X)
    assert graph["0"].size == 8  # 8 conv groups of 2 channels: a group channel is a whole conv group
    apply_widths(graph, {"0": 5})
    assert (model[2].groups, model[2].in_channels, model[2].out_channels) == (5, 10, 10)
