"""Hand-built networks and helpers shared by the graph / surgery / prune tests."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit.graph import DependencyGraph, select_top
from prunekit.planning import apply_widths
from prunekit.graph.surgery import surgery_for


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def single_thread():
    """These tests run many tiny ops: one intra-op thread per pytest-xdist worker is several times faster on
    the shared 2-core CI machines (restored after each test). Import this fixture into a test module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def zero_channels(group, idx: torch.Tensor) -> None:
    """Make channels ``idx`` of ``group`` contribute nothing: zero their producers' output rows (and biases),
    their norm layers' affine parameters, per-channel parameters, and their consumers' input columns."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    with torch.no_grad():
        for gm in group.members:
            pos = gm.positions[torch.isin(gm.channels, idx)]
            if pos.numel() == 0:
                continue
            m = gm.member
            if m.kind in ("sizes", "index", "shape"):  # split sizes, a channel index, a shape: nothing to zero
                continue
            if m.kind == "param":
                getattr(m.module, m.attr).index_fill_(m.dim, pos, 0.0)
                continue
            for attr, dim in surgery_for(m.module).params(m.module, m.role):
                t = getattr(m.module, attr, None)
                if t is not None:
                    t.index_fill_(dim, pos, 1.0 if attr == "running_var" else 0.0)


def _graph_of(model_or_graph, x, fresh: bool = True) -> DependencyGraph:
    """A graph to work on: a given graph itself, or its deepcopy if ``fresh`` (its model is copied with it), or
    a new graph of a given model."""
    if isinstance(model_or_graph, DependencyGraph):
        return copy.deepcopy(model_or_graph) if fresh else model_or_graph
    model_or_graph.eval()
    return DependencyGraph(model_or_graph, x)


def masked_then_pruned(model, x, *, seed: int = 0, frac: float = 0.5) -> tuple[float, DependencyGraph]:
    """Zero ~``frac`` of the free channels of every exact prunable group, prune exactly those, and return the
    relative output change (should be float rounding only) and the graph of the pruned model.
    ``model``: a model, or a DependencyGraph (a deepcopy of it is pruned)."""
    graph = _graph_of(model, x)
    model = graph.model
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in graph.prunable_groups:
        if not g.exact:
            continue
        width = max(g.min_width, g.size - int(frac * (g.size - g.pinned.numel())))
        k = select_top(torch.rand(g.size, generator=gen), width, g.pinned, g.cover)
        if k.numel() == g.size:
            continue
        removed = torch.tensor(sorted(set(range(g.size)) - set(k.tolist())), dtype=torch.long)
        zero_channels(g, removed)
        keep[g.name] = k
    with torch.no_grad():
        y_masked = _first(model(*_tuple(x)))
    graph.prune_groups(keep)
    with torch.no_grad():
        y_pruned = _first(model(*_tuple(x)))
    assert y_pruned.shape == y_masked.shape
    return rel_err(y_pruned, y_masked), graph


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _first(y):
    return y[0] if isinstance(y, (tuple, list)) else y


def check_half(model, x, fresh: bool = True) -> tuple[int, int, int]:
    """Prune 50% of every prunable group; returns (macs before, analytic prediction, counted after).
    ``model``: a model, or a DependencyGraph (pruned itself, or a deepcopy of it if ``fresh``)."""
    graph = _graph_of(model, x, fresh)
    model = graph.model
    before = prunekit.count(model, x).macs
    assert graph.macs() == before
    with torch.no_grad():
        y0 = _first(model(*_tuple(x)))
    widths = {g.name: g.size - g.size // 2 for g in graph.prunable_groups}
    predicted = graph.macs(widths)
    predicted_params = graph.params(widths)
    apply_widths(graph, widths)
    with torch.no_grad():
        y = _first(model(*_tuple(x)))
    assert y.shape == y0.shape
    cost = prunekit.count(model, x)
    assert predicted_params == cost.params, (predicted_params, cost.params)
    assert graph.macs() == cost.macs
    return before, predicted, cost.macs


def bit_identical_when_nothing_pruned(model, x) -> None:
    """Pruning nothing (full widths, full keep sets) leaves outputs and state bit-identical. A given graph is
    used as is (nothing changes)."""
    graph = _graph_of(model, x, fresh=False)
    model = graph.model
    with torch.no_grad():
        y0 = _first(model(*_tuple(x)))
    # storage, shape and in-place version counter of every tensor: nothing may even be rewritten in place
    state = {k: (v.data_ptr(), tuple(v.shape), v._version) for k, v in model.state_dict(keep_vars=True).items()}
    apply_widths(graph, graph.widths())
    graph.prune_groups({g.name: torch.arange(g.size) for g in graph.groups})
    with torch.no_grad():
        y1 = _first(model(*_tuple(x)))
    assert torch.equal(y0, y1)
    for k, v in model.state_dict(keep_vars=True).items():
        assert (v.data_ptr(), tuple(v.shape), v._version) == state[k], k


# ------------------------------------------------------------------------------------------------ nets
def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics/affine parameters so that tests see real values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


class Head(nn.Module):
    def __init__(self, c: int, n: int = 5):
        super().__init__()
        self.fc = nn.Linear(c, n)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResidualNet(nn.Module):
    """Stem, two residual blocks (add), a projection shortcut."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.a1, self.a2 = cbr(8, 6), nn.Sequential(nn.Conv2d(6, 8, 3, 1, 1), nn.BatchNorm2d(8))
        self.b1, self.b2 = cbr(8, 12, stride=2), nn.Sequential(nn.Conv2d(12, 16, 3, 1, 1), nn.BatchNorm2d(16))
        self.proj = nn.Sequential(nn.Conv2d(8, 16, 1, 2), nn.BatchNorm2d(16))
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.a2(self.a1(x)))
        x = F.relu(self.proj(x) + self.b2(self.b1(x)))
        return self.head(x)


class ConcatNet(nn.Module):
    """DenseNet-style concatenations, a concat with a fixed (input-derived) tensor, and a view(N, -1) head."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 6)
        self.c2 = cbr(6, 4)
        self.c3 = cbr(10, 5)
        self.c4 = cbr(18, 7)
        self.fc = nn.Linear(7 * 4 * 4, 5)

    def forward(self, x):
        a = self.c1(x)
        b = self.c2(a)
        ab = torch.cat([a, b], 1)
        c = self.c3(ab)
        d = self.c4(torch.cat([ab, c, x], dim=1))       # x: fixed channels (model input) inside a concat
        d = F.adaptive_max_pool2d(d, 4)
        return self.fc(d.view(d.size(0), -1))


class ChunkShuffleNet(nn.Module):
    """ShuffleNet-v2 style: chunk, concat, channel shuffle by view/transpose/view; plus nn.ChannelShuffle."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.branch = nn.Sequential(cbr(4, 4, 1), nn.Conv2d(4, 4, 3, 1, 1, groups=4), nn.BatchNorm2d(4), cbr(4, 4, 1))
        self.shuffle = nn.ChannelShuffle(2)
        self.after = cbr(8, 6)
        self.head = Head(6)

    @staticmethod
    def channel_shuffle(x, groups: int):
        n, c, h, w = x.size()
        x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
        return x.view(n, -1, h, w)

    def forward(self, x):
        x = self.stem(x)
        x1, x2 = x.chunk(2, dim=1)
        x = self.channel_shuffle(torch.cat([x1, self.branch(x2)], 1), 2)
        x = self.shuffle(x)
        return self.head(self.after(x))


class SplitSliceNet(nn.Module):
    """Static split sizes and slicing on channels (pinned), and a full slice (free)."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.c2 = cbr(8, 6)
        self.c3 = cbr(3, 6)
        self.c4 = cbr(6, 4)

    def forward(self, x):
        a, b = torch.split(self.c1(x), [5, 3], dim=1)
        y = self.c2(torch.cat([a, b], 1))
        z = self.c3(x)[:, 0:6]
        w = self.c4(y[:, :] + z)
        return w[:, :2].mean((2, 3))


class GroupedNet(nn.Module):
    """Depthwise (multiplier 1 and 2), grouped conv, grouped conv on the fixed input, ConvTranspose."""

    def __init__(self):
        super().__init__()
        self.g0 = nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1, groups=3), nn.BatchNorm2d(6), nn.ReLU())  # fixed input
        self.pw = cbr(6, 8, 1)
        self.dw = cbr(8, 8, 3, groups=8)
        self.dw2 = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1, groups=8), nn.BatchNorm2d(16), nn.ReLU())
        self.grp = cbr(16, 12, 3, groups=4)
        self.up = nn.ConvTranspose2d(12, 10, 2, 2)
        self.upg = nn.ConvTranspose2d(10, 10, 3, 1, 1, groups=2)
        self.head = Head(10)

    def forward(self, x):
        x = self.pw(self.g0(x))
        x = self.dw2(self.dw(x))
        x = F.relu(self.up(self.grp(x)))
        return self.head(self.upg(x))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 2):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(s))))


class SENet(nn.Module):
    """Squeeze-excitation with mean + broadcast gate, hardswish, dropout, PReLU, GroupNorm (whole groups and
    GroupNorm(1, C)), residual with SE branch."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.GroupNorm(4, 8), nn.PReLU(8))
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.GroupNorm(1, 8), nn.Hardswish(), SqueezeExcite(8))
        self.drop = nn.Dropout(0.2)
        self.head = Head(8)

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.drop(x + self.body(x)))


class ChannelsLastBlock(nn.Module):
    """ConvNeXt-style: depthwise conv, permute, LayerNorm over the last dim, Linear MLP, permute back,
    layer-scale parameter, residual add."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, 1, 3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        y = y * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, 2)
        self.blocks = nn.Sequential(ChannelsLastBlock(8), ChannelsLastBlock(8))
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class SharedNet(nn.Module):
    """A conv applied twice (shared weights), modules reused across branches, and a fixed-size reshape."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.shared = cbr(8, 8)
        self.c2 = cbr(8, 6)
        self.head = Head(6)

    def forward(self, x):
        x = self.c1(x)
        x = self.shared(self.shared(x))
        return self.head(self.c2(x))


class ZeroPadShortcutNet(nn.Module):
    """Option-A ResNet shortcut: subsample + F.pad on the channel dim with literal amounts."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.r1 = nn.Sequential(cbr(8, 16, stride=2), nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))
        return self.head(F.relu(self.r1(x) + short))


class LiteralReshapeNet(nn.Module):
    """A reshape to a literal channel count (pinned) and a reshape whose size comes from another tensor."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.c2 = cbr(8, 6)
        self.q = nn.Linear(6, 4)
        self.o = nn.Linear(4, 5)

    def forward(self, x):
        x = self.c1(x)
        n, _, h, w = x.shape
        x = x.reshape(n, 8, -1).reshape(n, 8, h, w)       # literal 8: pinned
        y = self.c2(x).flatten(2).transpose(1, 2)          # (N, HW, 6)
        b, t, d = y.shape
        z = self.q(y).reshape(b, t, 2, 2).reshape(b, t, d - 2)  # size from y's channel count
        return self.o(z).mean(1)


ALL_NETS = {"residual": ResidualNet, "concat": ConcatNet, "chunk_shuffle": ChunkShuffleNet,
            "split_slice": SplitSliceNet,
            "grouped": GroupedNet, "se": SENet, "convnext_like": ConvNeXtLike, "shared": SharedNet,
            "zero_pad": ZeroPadShortcutNet, "literal_reshape": LiteralReshapeNet}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(ALL_NETS[name](), seed).eval()
