"""Channel flow through the other op types: residual add, squeeze-excitation, GroupNorm, PReLU, channels-last
blocks (permute + LayerNorm + Linear + layer scale), shared layers, option-A zero padding, reshapes with literal or
computed sizes, flatten -> linear, torchvision StochasticDepth."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths

from _graph_nets import (bit_identical_when_nothing_pruned, build, cbr, check_half, masked_then_pruned,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 16, 16)


# the prunable groups of each net (literal_reshape: its literal sizes pin every group)
PRUNABLE = {"residual": {"stem.0", "a1.0", "proj.0", "b1.0"}, "se": {"stem.0", "body.3.fc1"},
            "convnext_like": {"stem", "blocks.0.fc1", "blocks.1.fc1"}, "shared": {"c1.0", "c2.0"},
            "zero_pad": {"stem.0", "r1.0.0"}, "literal_reshape": set()}


@pytest.mark.parametrize("name", sorted(PRUNABLE))
def test_invariants(name):
    graph = DependencyGraph(build(name), X)
    assert {g.name for g in graph.prunable_groups} == PRUNABLE[name]
    bit_identical_when_nothing_pruned(build(name), X)
    err, pruned = masked_then_pruned(build(name), X)
    assert err < 1e-5
    # every exact prunable group really lost channels (so the error bound above is not vacuous)
    assert all(pruned[g.name].size < g.size for g in graph.prunable_groups if g.exact)
    before, predicted, after = check_half(build(name), X)
    assert predicted == after
    assert after < before if PRUNABLE[name] else after == before


def test_squeeze_excitation_gate_is_tied_to_its_input():
    g = DependencyGraph(build("se"), X)
    stream = g["stem.0"]
    names = {(gm.name, gm.role) for gm in stream.members}
    # the gate producer (fc2) and the SE input are one group; fc1's hidden channels are their own group
    assert ("body.3.fc2", "out") in names and ("body.3.fc1", "in") in names and ("body.0", "out") in names
    assert g["body.3.fc1"].prunable


def test_groupnorm_whole_groups_and_shared_positions():
    m = build("se")
    g = DependencyGraph(m, X)
    stream = g["stem.0"]
    # GroupNorm(4, 8): whole norm groups (4 channels of 2); GroupNorm(1, 8) in the same stream: inexact
    assert stream.size == 4 and not stream.exact
    apply_widths(g, {"stem.0": 2})
    assert (m.stem[1].num_groups, m.stem[1].num_channels) == (2, 4)
    assert (m.body[1].num_groups, m.body[1].num_channels) == (1, 4)
    assert m.stem[2].num_parameters == 4 and m(X).shape == (2, 5)


def test_channels_last_block():
    m = build("convnext_like")
    g = DependencyGraph(m, X)
    stream = g["stem"]
    held = {(gm.name, gm.role) for gm in stream.members}
    assert {("blocks.0.dw", "out"), ("blocks.0.norm", "d0"), ("blocks.0.fc1", "in"), ("blocks.0.fc2", "out"),
            ("blocks.0.gamma", "dim0")} <= held
    assert not stream.exact           # LayerNorm statistics run over these channels
    assert g["blocks.0.fc1"].exact    # the MLP hidden channels do not
    apply_widths(g, {"stem": 5, "blocks.0.fc1": 7})
    assert m.blocks[0].norm.normalized_shape == (5,) and m.blocks[0].gamma.shape == (5,)
    assert m.blocks[0].fc1.weight.shape == (7, 5) and m(X).shape == (2, 5)


def test_shared_layer_is_one_group():
    m = build("shared")
    g = DependencyGraph(m, X)
    stream = g["c1.0"]
    # 'shared' is applied twice in a row: its input and output channels are the same channels
    assert {gm.name for gm in stream.members} >= {"c1.0", "shared.0", "shared.1", "c2.0"}
    assert "shared.0" not in g  # no group of its own
    assert prunekit.count(m, X).macs == g.macs()


def test_option_a_zero_padding_pins_padded_slots():
    m = build("zero_pad")
    g = DependencyGraph(m, X)
    stream = g["stem.0"]
    # channel order: first-seen (stem's 8 channels, then the 8 pad slots met at r1's output)
    assert stream.size == 16 and stream.pinned.tolist() == list(range(8, 16))
    assert stream.min_width == 9  # pinned slots + at least one channel of the stem
    apply_widths(g, {"stem.0": 11})
    assert m.stem[0].out_channels == 3 and m.r1[1].out_channels == 11 and m(X).shape == (2, 5)
    with pytest.raises(prunekit.ConfigError, match="pinned"):
        DependencyGraph(build("zero_pad"), X).prune_groups({"stem.0": torch.arange(0, 12)})


def test_zoo_option_a_resnet_prunes_correctly():
    m = prunekit.models.create("resnet20", shortcut="A").eval()
    x = torch.randn(1, 3, 32, 32)
    err, _ = masked_then_pruned(m, x)
    assert err < 1e-5
    g = DependencyGraph(m, x)
    stream = g.groups[0]
    assert stream.pinned.numel() == 48  # stage-2 and stage-3 pad slots
    apply_widths(g, {stream.name: stream.min_width})
    assert m(x).shape == (1, 10)


def test_literal_reshape_pins_and_computed_sizes_follow():
    g = DependencyGraph(build("literal_reshape"), X)
    assert not g["c1.0"].prunable and "literal" in g["c1.0"].reason
    # y's channel count sizes a later reshape of another tensor: pinned, since that tensor cannot follow
    assert not g["c2.0"].prunable


def test_flatten_linear_and_view_head():
    g = DependencyGraph(build("concat"), X)
    c4 = g["c4.0"]
    (fc,) = [gm for gm in c4.members if gm.name == "fc"]
    assert fc.positions.numel() == 7 * 16  # channel x spatial positions
    assert fc.channels.tolist()[:17] == [0] * 16 + [1]


def test_size_computed_from_same_tensor_follows_pruning():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = cbr(3, 8)
            self.fc = nn.Linear(8 * 4, 5)

        def forward(self, x):
            y = F.adaptive_avg_pool2d(self.c(x), 2)
            n, c, h, w = y.shape
            return self.fc(y.reshape(n, c * h * w))

    m = Net().eval()
    g = DependencyGraph(m, X)
    assert g["c.0"].prunable
    apply_widths(g, {"c.0": 3})
    assert m(X).shape == (2, 5) and m.fc.in_features == 12


def test_stochastic_depth_and_torchvision_blocks():
    pytest.importorskip("torchvision")
    from torchvision.ops import StochasticDepth

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = cbr(3, 8), cbr(8, 8)
            self.sd = StochasticDepth(0.2, "row")
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = self.a(x)
            x = x + self.sd(self.b(x))
            return self.fc(x.mean((2, 3)))

    g = DependencyGraph(Net().eval(), X)
    assert g["a.0"].prunable and not g.warnings
    # stochastic depth passes channels through: the residual add ties b's output to a's (one group)
    assert {("a.0", "out"), ("b.0", "out"), ("fc", "in")} <= {(gm.name, gm.role) for gm in g["a.0"].members}
    err, pruned = masked_then_pruned(g, X)
    assert err < 1e-5 and pruned["a.0"].size < 8
    before, predicted, after = check_half(g, X)
    assert predicted == after < before


@pytest.mark.parametrize("op", ["amax", "mean"])
def test_reduction_over_channels_pins(op):
    """A max over the channels, or a mean that drops the channel dim, pins them (a mean kept as a size-1 dim:
    see the next test)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = cbr(3, 8)
            self.b = nn.Conv2d(1, 4, 3, 1, 1)

        def forward(self, x):
            x = self.a(x)
            return self.b(x.amax(1, keepdim=True) if op == "amax" else x.mean(1)[:, None])

    g = DependencyGraph(Net().eval(), X)
    assert not g["a.0"].prunable and op in g["a.0"].reason


def test_channel_statistic_broadcast_back_is_prunable_inexact_on_opt_in():
    """ConvNeXt-V2's global response norm: a spatial L2 norm, divided by its mean over the channels (kept as a
    size-1 dim and broadcast back), per-channel weight and bias: any width works, but the mean shifts, so the
    channels are pinned unless approximate_statistics=True (then prunable, inexact)."""
    class GRN(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.rand(c)), nn.Parameter(torch.rand(c))

        def forward(self, x):  # channels last
            g = x.norm(p=2, dim=(1, 2), keepdim=True)
            n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
            return x + torch.addcmul(self.bias.view(1, 1, 1, -1), self.weight.view(1, 1, 1, -1), x * n)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.fc1, self.grn, self.fc2 = nn.Linear(8, 16), GRN(16), nn.Linear(16, 8)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            y = self.a(x).permute(0, 2, 3, 1)
            y = y + self.fc2(self.grn(F.gelu(self.fc1(y))))
            return self.head(y.mean((1, 2)))

    torch.manual_seed(0)
    model = Net().eval()
    pinned = DependencyGraph(model, X)["fc1"]
    assert not pinned.prunable and "approximate_statistics=True" in pinned.reason
    g = DependencyGraph(model, X, approximate_statistics=True)
    assert g["fc1"].prunable and not g["fc1"].exact and g["a"].prunable and g["a"].exact
    bit_identical_when_nothing_pruned(Net().eval(), X)
    apply_widths(g, {"fc1": 6})
    assert model.grn.weight.shape == (6,) and model.fc2.in_features == 6 and model(X).shape == (2, 5)


def test_groupnorm_subclass_with_one_group_is_prunable():
    """A GroupNorm subclass whose forward calls F.group_norm with its one group (fx traces through it)."""
    class GroupNorm1(nn.GroupNorm):
        def __init__(self, c):
            super().__init__(1, c)

        def forward(self, x):
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    model = nn.Sequential(nn.Conv2d(3, 8, 3), GroupNorm1(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    g = DependencyGraph(model, X)
    assert g["0"].prunable and not g["0"].exact
    apply_widths(g, {"0": 5})
    assert (model[1].num_channels, model[1].weight.shape, model[3].in_channels) == (5, (5,), 5)
    assert model(X).shape == (2, 4, 14, 14)


def test_layer_scale_viewed_to_a_shape_attribute_is_prunable():
    """A layer scale ``x * self.scale.view(self.shape)`` (MetaFormer / PoolFormer): the literal shape is the
    module's own attribute, which surgery rewrites with the kept count."""
    class Scale(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.shape = (c, 1, 1)
            self.scale = nn.Parameter(torch.rand(c) + 0.5)

        def forward(self, x):
            return x * self.scale.view(self.shape)

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3), Scale(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()

    g = DependencyGraph(net(), X)
    assert g["0"].prunable and g["0"].exact
    bit_identical_when_nothing_pruned(net(), X)
    err, _ = masked_then_pruned(net(), X)
    assert err < 1e-5
    model = net()
    apply_widths(DependencyGraph(model, X), {"0": 5})
    assert model[1].shape == (5, 1, 1) and model[1].scale.shape == (5,) and model(X).shape == (2, 4, 14, 14)
