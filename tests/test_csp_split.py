"""Cross-stage partial blocks (CSPNet): ``x.split(k, 1)`` with a literal ``k`` (timm's CrossStage writes
``x.split(self.expand_chs // 2, dim=1)``, an int in the traced graph). Every piece but the last keeps exactly ``k``
channels after pruning; the last takes the remainder, so it (and the residual stream it feeds) is prunable while
the first pieces are pinned."""

from __future__ import annotations

import torch
import torch.nn as nn

import prunekit
from prunekit.graph import DependencyGraph

from _graph_nets import (bit_identical_when_nothing_pruned, cbr, masked_then_pruned, randomize_bn,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 12, 12)


class Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = cbr(c, c // 2, 1)
        self.conv2 = nn.Sequential(nn.Conv2d(c // 2, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.conv2(self.conv1(x)))


class CrossStage(nn.Module):
    """timm's CrossStage in small: expand, split into a cross part and a block part, blocks, transition, cat."""

    def __init__(self, cin: int, exp: int, pieces: int = 2):
        super().__init__()
        self.exp = exp
        self.pieces = pieces
        self.conv_exp = cbr(cin, exp, 1)
        self.blocks = nn.Sequential(Bottleneck(exp // pieces), Bottleneck(exp // pieces))
        self.conv_transition_b = cbr(exp // pieces, exp // pieces, 1)
        self.conv_transition = cbr(exp, cin, 1)

    def forward(self, x):
        parts = self.conv_exp(x).split(self.exp // self.pieces, dim=1)  # a literal int in the traced graph
        xb = self.conv_transition_b(self.blocks(parts[self.pieces - 1]))
        return self.conv_transition(torch.cat([parts[i] for i in range(self.pieces - 1)] + [xb], dim=1))


class CSPNet(nn.Module):
    def __init__(self, pieces: int = 2):
        super().__init__()
        self.stem = cbr(3, 8)
        self.stage = CrossStage(8, 24, pieces)  # no attribute equals the split size (24 // pieces)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.stage(self.stem(x)).mean((2, 3)))


def _net(pieces: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(CSPNet(pieces)).eval()


def test_csp_split_last_piece_is_prunable_and_the_others_pinned():
    g = DependencyGraph(_net(), X)
    exp = g["stage.conv_exp.0"]
    assert exp.prunable and exp.size == 24 and sorted(exp.pinned.tolist()) == list(range(12))
    assert "literal pieces" in exp.reason
    # the block stream (the last piece, tied by the residual adds) shrinks with it
    assert {gm.name for gm in exp.members} >= {"stage.blocks.0.conv1.0", "stage.blocks.1.conv2.0"}


def test_csp_split_identity_and_masked_equivalence():
    for pieces in (2, 4):
        bit_identical_when_nothing_pruned(_net(pieces), X)
        err, pruned = masked_then_pruned(_net(pieces), X)
        assert err < 1e-5
        assert pruned["stage.conv_exp.0"].size < 24


def test_csp_split_prune_macs_shapes_and_save_load(tmp_path):
    for pieces in (2, 4):
        model = _net(pieces)
        before = prunekit.count(model, X).macs
        graph = DependencyGraph(model, X)
        predicted = graph.macs({"stage.conv_exp.0": graph["stage.conv_exp.0"].min_width})
        prunekit.apply_widths(graph, {"stage.conv_exp.0": graph["stage.conv_exp.0"].min_width})
        k = 24 // pieces
        # every piece but the last keeps its literal size; the last keeps one channel (the piece count stays)
        assert model.stage.conv_exp[0].out_channels == 24 - k + 1
        assert model.stage.blocks[0].conv1[0].in_channels == 1
        with torch.no_grad():
            y = model(X)
        assert y.shape == (2, 5)
        after = prunekit.count(model, X).macs
        assert after == predicted == graph.macs() < before
        loaded = prunekit.load(prunekit.save(model, tmp_path / f"csp{pieces}.safetensors", example_inputs=X))
        with torch.no_grad():
            assert torch.equal(loaded(X), y)


def test_csp_split_uniform_ratio():
    model = _net()
    before = prunekit.count(model, X).macs
    prunekit.prune(model, X, ratio=0.3)
    with torch.no_grad():
        assert model(X).shape == (2, 5)
    assert prunekit.count(model, X).macs < before
    assert model.stage.conv_exp[0].out_channels > 12  # the pinned cross part is whole
