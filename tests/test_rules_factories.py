"""Tensors a forward makes from sizes: a constant tensor sized by a channel count follows the pruning; one whose
values depend on the count (``arange``) pins those channels."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths

from _graph_nets import bit_identical_when_nothing_pruned, masked_then_pruned, single_thread  # noqa: F401

X = torch.randn(2, 3, 8, 8)


class Net(nn.Module):
    def __init__(self, factory: str):
        super().__init__()
        self.factory = factory
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        if self.factory == "zeros":
            y = y + torch.zeros((n, c, 1, 1), dtype=y.dtype) + torch.full((1, c, h, w), 0.5)
        else:
            y = y + torch.arange(c, dtype=y.dtype).view(1, c, 1, 1)
        return self.b(y)


def _net(factory):
    torch.manual_seed(0)
    return Net(factory).eval()


def test_a_constant_sized_by_the_channels_follows_them():
    g = DependencyGraph(_net("zeros"), X)
    assert g["a"].prunable and g["a"].exact and not g.warnings
    bit_identical_when_nothing_pruned(_net("zeros"), X)
    err, _ = masked_then_pruned(_net("zeros"), X)
    assert err < 1e-5
    model = _net("zeros")
    apply_widths(DependencyGraph(model, X), {"a": 5})
    assert model(X).shape == (2, 4, 8, 8)


def test_values_that_depend_on_the_channel_count_pin():
    g = DependencyGraph(_net("arange"), X)
    assert not g["a"].prunable and "arange" in g["a"].reason


@pytest.mark.parametrize("factory", ["zeros", "arange"])
def test_factories_save(factory, tmp_path):
    import prunekit

    model = _net(factory)
    with torch.no_grad():
        assert torch.equal(prunekit.load(prunekit.save(model, tmp_path / "m.safetensors", example_inputs=X))(X),
                           model(X))
