"""Layout regions (``prunekit.graph.layout``): channel shuffles with the chunks and concatenations around them
(ShuffleNet-v2) keep equal *counts* per segment instead of tying positions, so the stream stays prunable block
after block; surgery slices every layer in the order the pruned shuffles produce."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths, uniform_widths

from _graph_nets import cbr, randomize_bn, rel_err, single_thread, zero_channels  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 16, 16)


def channel_shuffle(x, groups: int):
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class Unit(nn.Module):
    """ShuffleNet-v2 unit: stride 1 splits the stream in halves, stride 2 runs two branches on all of it."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                         cbr(cin, half, 1))
        c2 = cin if stride == 2 else half
        self.branch2 = nn.Sequential(cbr(c2, half, 1), nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
                                     nn.BatchNorm2d(half), cbr(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNet(nn.Module):
    def __init__(self, c: int = 8, depth: int = 5):
        super().__init__()
        self.stem = cbr(3, 6)
        self.stage = nn.Sequential(Unit(6, 2 * c, 2), *[Unit(2 * c, 2 * c, 1) for _ in range(depth - 1)])
        self.head = cbr(2 * c, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.head(self.stage(self.stem(x))).mean((2, 3)))


def _net(**kw) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(ShuffleNet(**kw)).eval()


def _masked_vs_pruned(graph: DependencyGraph, widths, seed: int = 0, x: torch.Tensor = X) -> float:
    """Zero the channels a score-based plan removes, then apply it: the relative output change."""
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(graph[n].size, generator=gen) for n in widths}
    plan = graph.plan(widths, keep=scores)
    for name, kept in plan.keep.items():
        g = graph[name]
        zero_channels(g, torch.tensor(sorted(set(range(g.size)) - set(kept.tolist())), dtype=torch.long))
    with torch.no_grad():
        masked = graph.model(x)
    graph.apply_plan(plan)
    with torch.no_grad():
        pruned = graph.model(x)
    return rel_err(pruned, masked)


def test_shuffle_stream_is_one_prunable_group_with_allowed_widths():
    g = DependencyGraph(_net(), X)
    assert g.coverage().ratio == 1.0
    (stream,) = [gr for gr in g.groups if gr.region is not None]
    # the two stride-2 branches and the four stride-1 branch outputs: 6 producers of 8 channels each
    assert stream.size == 48 and stream.prunable and stream.uniform
    widths = stream.allowed_widths
    assert widths[-1] == 48 and widths[0] == stream.min_width and len(widths) > 3
    assert all(w % 6 == 0 for w in widths)  # every producer keeps the same count
    assert {gm.name for gm in stream.producers} >= {"stage.0.branch1.2.0", "stage.4.branch2.3.0"}


def test_shuffle_identity_is_bit_identical():
    model = _net()
    graph = DependencyGraph(model, X)
    with torch.no_grad():
        y0 = model(X)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    apply_widths(graph, graph.widths())
    graph.prune_groups({gr.name: torch.arange(gr.size) for gr in graph.groups})
    with torch.no_grad():
        assert torch.equal(model(X), y0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
def test_shuffle_masked_equals_pruned_also_twice(ratio):
    graph = DependencyGraph(_net(), X)
    assert _masked_vs_pruned(graph, uniform_widths(graph, ratio)) < 1e-5
    # the pruned graph describes the pruned model (its shuffles reorder channels): prune it again
    assert _masked_vs_pruned(graph, uniform_widths(graph, 0.3), seed=1) < 1e-5


def test_shuffle_macs_exact_at_allowed_widths_and_plans_snap():
    model = _net()
    graph = DependencyGraph(model, X)
    before = prunekit.count(model, X).macs
    stream = [gr for gr in graph.groups if gr.region is not None][0]
    want = stream.allowed_widths[-3] + 1  # not allowed: snaps down
    plan = graph.plan({stream.name: want}, keep="prefix")
    assert plan.widths[stream.name] == stream.allowed_widths[-3]
    predicted = graph.macs(plan.widths)
    graph.apply_plan(plan)
    assert prunekit.count(model, X).macs == predicted == graph.macs() < before
    # an explicit kept set the shuffles cannot take becomes an allowed one
    graph2 = DependencyGraph(_net(), X)
    plan = graph2.plan_keep({stream.name: torch.arange(20)})
    assert plan.widths[stream.name] in stream.allowed_widths


def test_shuffle_prune_forward_shapes_and_save_load(tmp_path):
    model = _net()
    before = prunekit.count(model, X).macs
    prunekit.prune(model, X, ratio=0.3)
    with torch.no_grad():
        y = model(X)
    assert y.shape == (2, 5)
    assert prunekit.count(model, X).macs < 0.75 * before
    assert model.stage[1].branch2[0][0].in_channels * 2 == model.head[0].in_channels
    loaded = prunekit.load(prunekit.save(model, tmp_path / "shuffle.safetensors", example_inputs=X))
    with torch.no_grad():
        assert torch.equal(loaded(X), y)


def test_shuffle_pattern_used_elsewhere_falls_back_to_position_ties():
    """A split view whose halves are used by anything but the transpose and the view back is no shuffle: the
    old position ties (channel k of every half is one channel) keep it sound."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = cbr(3, 8)
            self.b = cbr(4, 4)

        def forward(self, x):
            y = self.a(x)
            n, c, h, w = y.size()
            z = y.view(n, 2, c // 2, h, w)
            return self.b(z.sum(1)).mean((2, 3))

    torch.manual_seed(0)
    graph = DependencyGraph(randomize_bn(Net()).eval(), X)
    assert graph["a.0"].size == 4 and graph["a.0"].region is None


tv = pytest.importorskip("torchvision")


def test_torchvision_shufflenet_v2_x0_5(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(tv.models.shufflenet_v2_x0_5(num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = DependencyGraph(model, x)
    assert graph.coverage().ratio == 1.0
    assert sum(gr.region is not None for gr in graph.groups) == 3  # one stream per stage
    with torch.no_grad():
        y0 = model(x)
    before = prunekit.count(model, x).macs
    copy.deepcopy(graph).prune_groups({gr.name: torch.arange(gr.size) for gr in graph.groups})
    apply_widths(copy.deepcopy(graph), graph.widths())
    widths = uniform_widths(graph, 0.3)
    work = copy.deepcopy(graph)
    assert _masked_vs_pruned(work, widths, x=x) < 1e-5
    with torch.no_grad():
        assert work.model(x).shape == y0.shape
    after = prunekit.count(work.model, x).macs
    assert after == work.macs() and after < 0.6 * before  # more than 40% of the MACs removed
    with torch.no_grad():
        assert torch.equal(model(x), y0)  # the graph's model was never touched (copies were pruned)
    loaded = prunekit.load(prunekit.save(work.model, tmp_path / "shufflenet.safetensors", example_inputs=x))
    with torch.no_grad():
        assert torch.equal(loaded(x), work.model(x))


def test_two_shuffles_in_a_row_prune_exactly():
    """A shuffle of a shuffle's output stays in one layout region; a plan's kept sets (per segment) prune it
    exactly. (Arbitrary kept sets are first moved to an allowed one, so a mask must follow the plan's.)"""
    from _graph_nets import ChunkShuffleNet

    class TwoShuffles(ChunkShuffleNet):
        def forward(self, x):
            x = self.stem(x)
            x1, x2 = x.chunk(2, dim=1)
            x = self.channel_shuffle(self.channel_shuffle(torch.cat([x1, self.branch(x2)], 1), 2), 2)
            return self.head(self.after(x))

    x = torch.randn(2, 3, 8, 8)
    for seed in range(3):
        torch.manual_seed(0)
        graph = DependencyGraph(randomize_bn(TwoShuffles()).eval(), x)
        widths = {g.name: max(1, g.size // 2) for g in graph.prunable_groups}
        assert _masked_vs_pruned(graph, widths, seed, x) < 1e-5


def _shuffle(x, g):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)


class _RandomBlock(nn.Module):
    """chunk(2) -> a conv on one half, the other or both -> cat in either order -> shuffle with 2 or 4 groups."""

    def __init__(self, c: int, rnd):
        super().__init__()
        self.mode, self.order = rnd.choice(["first", "second", "both"]), rnd.choice([0, 1])
        self.g = rnd.choice([2, 2, 4]) if c % 8 == 0 else 2
        self.b1, self.b2 = cbr(c // 2, c // 2, 1), cbr(c // 2, c // 2, 3)

    def forward(self, x):
        a, b = x.chunk(2, 1)
        a = self.b1(a) if self.mode in ("second", "both") else a
        b = self.b2(b) if self.mode in ("first", "both") else b
        return _shuffle(torch.cat([a, b] if self.order == 0 else [b, a], 1), self.g)


@pytest.mark.parametrize("seed", range(8))
def test_random_shuffle_nets_prune_exactly(seed):
    import random

    rnd = random.Random(seed)
    c = rnd.choice([8, 16, 24])
    torch.manual_seed(seed)
    net = randomize_bn(nn.Sequential(cbr(3, c), *[_RandomBlock(c, rnd) for _ in range(rnd.randint(1, 4))],
                                     nn.Conv2d(c, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())).eval()
    x = torch.randn(2, 3, 8, 8)
    graph = DependencyGraph(net, x)
    widths = {g.name: max(1, g.size // 2) for g in graph.prunable_groups}
    assert _masked_vs_pruned(graph, widths, seed, x) < 1e-5
