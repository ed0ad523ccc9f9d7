"""``index_select`` of channels with a constant index buffer (CondenseNet's converted layers gather the input
channels each conv group reads, some several times): pruning keeps the positions of kept channels and
renumbers the index."""

from __future__ import annotations

import torch
import torch.nn as nn

import prunekit
from prunekit.graph import DependencyGraph

from _graph_nets import (bit_identical_when_nothing_pruned, masked_then_pruned, randomize_bn,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 8, 8)


class Gather(nn.Module):
    """Reads input channels ``index`` (with repeats), then BN + ReLU + 1x1 conv."""

    def __init__(self, index):
        super().__init__()
        self.register_buffer("index", torch.tensor(index))
        self.norm = nn.BatchNorm2d(len(index))
        self.conv = nn.Conv2d(len(index), 6, 1)

    def forward(self, x):
        return self.conv(torch.relu(self.norm(torch.index_select(x, 1, self.index))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.gather = Gather([0, 2, 3, 5, 7, 2, 6, 1, 0])
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.gather(self.stem(x)).mean((2, 3)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(Net()).eval()


def test_gathered_channels_prune_and_the_index_is_renumbered(tmp_path):
    graph = DependencyGraph(_net(), X)
    assert graph["stem.0"].prunable and graph["stem.0"].exact and graph["stem.0"].size == 8
    bit_identical_when_nothing_pruned(_net(), X)
    err, pruned = masked_then_pruned(_net(), X)
    assert err < 1e-5 and pruned["stem.0"].size < 8
    model = _net()
    graph = DependencyGraph(model, X)
    graph.prune_groups({"stem.0": torch.tensor([0, 2, 5, 6])})
    # kept channels 0, 2, 5, 6 -> 0, 1, 2, 3; positions reading 3, 7, 1 are gone
    assert model.gather.index.tolist() == [0, 1, 2, 1, 3, 0]
    assert model.gather.norm.num_features == 6 == model.gather.conv.in_channels
    assert model(X).shape == (2, 4)
    with torch.no_grad():
        assert torch.equal(prunekit.load(prunekit.save(model, tmp_path / "m.safetensors", example_inputs=X))(X),
                           model(X))


def test_plan_view_renumbers_the_index_for_the_call_only():
    model = _net()
    plan = DependencyGraph(model, X).plan({"stem.0": 5})
    with torch.no_grad():
        viewed = plan.forward(model, X)
        assert model.gather.index.tolist() == [0, 2, 3, 5, 7, 2, 6, 1, 0]
        assert torch.allclose(viewed, plan.materialize(model)(X), atol=1e-6)
