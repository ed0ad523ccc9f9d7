"""Mixed-kernel convolutions (MixNet): ``torch.split(x, self.splits, 1)`` -> one conv per piece -> concat. Each
piece is pruned on its own; surgery rewrites the module's ``splits`` list with the kept counts."""

from __future__ import annotations

import torch
import torch.nn as nn

import prunekit
from prunekit.graph import DependencyGraph

from _graph_nets import (bit_identical_when_nothing_pruned, masked_then_pruned, randomize_bn,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 12, 12)


class MixedConv(nn.ModuleDict):
    """Depthwise convs with kernels 3/5/7 on three channel pieces (sizes in ``self.splits``)."""

    def __init__(self, c: int, kernels=(3, 5, 7)):
        super().__init__()
        self.splits = [c // len(kernels)] * len(kernels)
        self.splits[0] += c - sum(self.splits)
        for i, (k, ci) in enumerate(zip(kernels, self.splits)):
            self.add_module(str(i), nn.Conv2d(ci, ci, k, padding=k // 2, groups=ci, bias=False))

    def forward(self, x):
        pieces = torch.split(x, self.splits, 1)
        return torch.cat([conv(pieces[i]) for i, conv in enumerate(self.values())], 1)


class MixNetBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(8, 14, 1, bias=False), nn.BatchNorm2d(14), nn.ReLU())
        self.mix = MixedConv(14)
        self.bn = nn.BatchNorm2d(14)
        self.project = nn.Sequential(nn.Conv2d(14, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(torch.relu(self.bn(self.mix(self.expand(x)))))
        return self.fc(x.mean((2, 3)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(MixNetBlock()).eval()


def test_each_split_piece_prunes_and_the_sizes_follow():
    graph = DependencyGraph(_net(), X)
    assert graph["expand.0"].prunable and graph["expand.0"].exact and not graph["expand.0"].pinned.numel()
    assert {gm.member.kind for gm in graph["expand.0"].members} >= {"sizes", "module"}
    bit_identical_when_nothing_pruned(_net(), X)
    err, pruned = masked_then_pruned(_net(), X)
    assert err < 1e-5 and pruned["expand.0"].size < 14
    # which piece loses channels changes the cost (kernels differ): the analytic cost of a width is an estimate
    assert not graph["expand.0"].uniform
    model = _net()
    graph = DependencyGraph(model, X)
    before = prunekit.count(model, X).macs
    prunekit.apply_widths(graph, {"expand.0": 7})
    assert graph.macs() == prunekit.count(model, X).macs < before  # exact again on the pruned model


def test_no_piece_is_emptied_and_the_model_saves(tmp_path):
    model = _net()
    prunekit.prune(model, X, ratio=0.9)
    assert all(n >= 1 for n in model.mix.splits) and sum(model.mix.splits) == model.expand[0].out_channels
    assert [c.in_channels for c in model.mix.values()] == model.mix.splits
    with torch.no_grad():
        y = model(X)
        assert torch.equal(prunekit.load(prunekit.save(model, tmp_path / "m.safetensors", example_inputs=X))(X), y)


def test_plan_view_uses_the_pruned_sizes():
    model = _net()
    graph = DependencyGraph(model, X)
    plan = graph.plan({"expand.0": 7})
    with torch.no_grad():
        viewed = plan.forward(model, X)
        assert model.mix.splits == [6, 4, 4]  # restored after the view
        assert torch.allclose(viewed, plan.materialize(model)(X), atol=1e-6)


class Res2Block(nn.Module):
    """Res2Net: a 1x1 conv, ``split(out, self.width, 1)`` into equal scales, a 3x3 conv per scale fed with the
    previous scale's output added in, the last scale passed through, concat, a 1x1 conv, a residual."""

    def __init__(self, c: int = 8, width: int = 3, scale: int = 4):
        super().__init__()
        self.width, self.scale = width, scale
        self.conv1 = nn.Conv2d(c, width * scale, 1, bias=False)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        self.conv3 = nn.Conv2d(width * scale, c, 1, bias=False)

    def forward(self, x):
        spx = torch.split(torch.relu(self.conv1(x)), self.width, 1)
        out, sp = [], spx[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = torch.relu(bn(conv(sp)))
            out.append(sp)
        out.append(spx[-1])
        return torch.relu(x + self.conv3(torch.cat(out, 1)))


class Res2Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = Res2Block()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def _res2net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(Res2Net()).eval()


def test_res2net_scales_shrink_alike():
    graph = DependencyGraph(_res2net(), X)
    g = graph["block.conv1"]
    assert g.prunable and g.exact and g.size == 3  # one channel = position k of every scale
    bit_identical_when_nothing_pruned(_res2net(), X)
    err, pruned = masked_then_pruned(_res2net(), X)
    assert err < 1e-5 and pruned["block.conv1"].size < 3
    model = _res2net()
    prunekit.apply_widths(DependencyGraph(model, X), {"block.conv1": 2})
    # conv1's 4 scales and the first two scale convs (added into the next scale) shrink; the last scale conv
    # is a group of its own
    assert model.block.width == 2 and model.block.conv1.out_channels == 8 and model.block.conv3.in_channels == 9
    assert model(X).shape == (2, 5)


class CoincidentalAttribute(nn.Module):
    """A literal split size that happens to equal an unrelated attribute (``pieces`` is a count of pieces, not
    their size): surgery must not rewrite ``pieces``; the split is a literal one (the last piece may shrink)."""

    def __init__(self):
        super().__init__()
        self.pieces = 4
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        parts = torch.split(self.a(x), 4, 1)
        return self.b(parts[0]) * self.pieces + self.c(torch.cat(parts[1:], 1))


def test_a_coincidentally_equal_attribute_is_not_taken_for_the_split_size():
    model = randomize_bn(CoincidentalAttribute()).eval()
    graph = DependencyGraph(model, X)
    member_attrs = {getattr(m.member, "attr", None) for g in graph.groups for m in g.members}
    assert "pieces" not in member_attrs
    prunekit.prune(model, X, ratio=0.5)
    assert model.pieces == 4
    with torch.no_grad():
        model(X)
