"""Depthwise and grouped convolutions (whole conv groups are removed; group structure stays valid),
grouped convs on a fixed input, depthwise with channel multiplier, ConvTranspose (plain and grouped)."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths

from _graph_nets import (bit_identical_when_nothing_pruned, build, cbr, check_half, masked_then_pruned,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 16, 16)


def test_invariants():
    bit_identical_when_nothing_pruned(build("grouped"), X)
    err, _ = masked_then_pruned(build("grouped"), X)
    assert err < 1e-5
    before, predicted, after = check_half(build("grouped"), X)
    assert predicted == after < before


def test_group_structure():
    g = DependencyGraph(build("grouped"), X)
    # g0: groups=3 on the fixed input: the same output index is removed from every conv group (2 choices)
    assert g["g0.0"].size == 2
    # pw -> depthwise -> depthwise x2 -> conv(groups=4): conv groups of 'grp' hold 2 depthwise groups each
    assert g["pw.0"].size == 4
    # transposed conv followed by a grouped transposed conv (2 groups of 5)
    assert g["up"].size == 2


def test_pruned_grouped_layers_are_consistent():
    m = build("grouped")
    g = DependencyGraph(m, X)
    apply_widths(g, {"g0.0": 1, "pw.0": 2, "up": 1})
    assert (m.g0[0].groups, m.g0[0].out_channels, m.g0[0].in_channels) == (3, 3, 3)
    assert m.pw[0].out_channels == 4
    assert (m.dw[0].groups, m.dw[0].in_channels, m.dw[0].out_channels) == (4, 4, 4)
    assert (m.dw2[0].groups, m.dw2[0].out_channels) == (4, 8)
    assert (m.grp[0].groups, m.grp[0].in_channels, m.grp[0].out_channels) == (2, 8, 6)
    assert (m.upg.groups, m.upg.in_channels, m.upg.out_channels) == (1, 5, 5)
    for conv in (m.g0[0], m.dw[0], m.dw2[0], m.grp[0]):
        assert conv.weight.shape[1] * conv.groups == conv.in_channels
    assert m(X).shape == (2, 5)


def test_mobilenet_like_depthwise_group():
    net = nn.Sequential(cbr(3, 8), cbr(8, 16, 1), cbr(16, 16, 3, groups=16), nn.Conv2d(16, 4, 1))
    g = DependencyGraph(net.eval(), X)
    expand = g["1.0"]
    assert expand.size == 16
    assert {gm.name for gm in expand.members} >= {"1.0", "1.1", "2.0", "2.1", "3"}
    apply_widths(g, {"1.0": 5})
    assert net[2][0].groups == 5 and net[2][0].weight.shape == (5, 1, 3, 3)


def test_round_to_counts_layer_channels():
    # conv groups of 4 channels: a group channel is 4 layer channels, so round_to=8 means an even group width
    net = nn.Sequential(cbr(3, 32, 1), cbr(32, 32, 3, groups=8), nn.Conv2d(32, 4, 1)).eval()
    g = DependencyGraph(net, X)
    grp = g["0.0"]
    assert grp.size == 8 and grp.unit == 4 and grp.round_to(8) == 2 and grp.round_to(3) == 3
    apply_widths(g, {"0.0": 3}, round_to=8)
    assert net[1][0].groups == 4 and net[1][0].out_channels == 16
