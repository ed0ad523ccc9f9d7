"""Models fx cannot trace everywhere: a trace failure names the module and the source line; ``leaf_modules=``
(types or qualified names) reaches the graph from ``prunekit.prune``; a Conv2d subclass whose forward computes
its padding from the input's shape (TensorFlow "same" padding, as timm's ``tf_*`` ports use) is kept whole and
pruned as a convolution, automatically."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit.graph import DependencyGraph, GraphError

from _graph_nets import (bit_identical_when_nothing_pruned, masked_then_pruned, randomize_bn,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 15, 15)


class ConvSame(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding, computed in forward from the input's size (fx cannot trace the
    ``max`` on traced sizes)."""

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            pads.append(max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0))
        (ph, pw) = pads
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_net() -> nn.Module:
    """A stem, a depthwise-separable block with a residual, "same"-padded strided convs, a linear head."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(ConvSame(3, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.dw = nn.Sequential(ConvSame(8, 8, 3, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.pw = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
            self.down = nn.Sequential(ConvSame(8, 12, 3, stride=2), nn.ReLU())
            self.fc = nn.Linear(12, 5)

        def forward(self, x):
            x = self.stem(x)
            x = x + self.pw(self.dw(x))
            return self.fc(self.down(x).mean((2, 3)))
    torch.manual_seed(0)
    return randomize_bn(Net()).eval()


def test_conv_subclasses_fx_cannot_trace_are_kept_whole_and_pruned():
    with pytest.warns(UserWarning, match=r"'stem.0' \(.*ConvSame\), 'dw.0'.*kept whole"):
        graph = DependencyGraph(_same_net(), X)
    assert {g.name for g in graph.prunable_groups} == {"stem.0", "down.0"}
    assert graph["stem.0"].exact
    bit_identical_when_nothing_pruned(_same_net(), X)
    err, pruned = masked_then_pruned(_same_net(), X)
    assert err < 1e-5
    assert pruned["stem.0"].size < 8 and pruned["down.0"].size < 12
    model = _same_net()
    prunekit.prune(model, X, ratio=0.5)
    assert (model.stem[0].out_channels, model.dw[0].groups, model.down[0].out_channels) == (4, 4, 6)
    assert model(X).shape == (2, 5)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value
            return self.conv(x)
        return x


class WithBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), DataDependent())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


def test_a_trace_failure_names_the_module_and_the_line():
    with pytest.raises(GraphError) as info:
        DependencyGraph(WithBlock(), X)
    msg = str(info.value)
    assert "inside module 'body.1'" in msg and "DataDependent" in msg
    assert f"{__file__}:" in msg and "if x.sum() > 0" in msg
    assert "leaf_modules=" in msg


@pytest.mark.parametrize("leaf", [DataDependent, "body.1"], ids=["type", "qualified name"])
def test_prune_passes_leaf_modules_to_the_graph(leaf):
    torch.manual_seed(0)
    model = WithBlock().eval()
    with pytest.raises(GraphError):
        prunekit.prune(model, X, ratio=0.5)
    prunekit.prune(model, X, ratio=0.5, leaf_modules=[leaf])
    # the leaf's input channels stay (it is opaque); what it does not touch is pruned
    assert model.stem.out_channels == 8 and model.body[1].conv.out_channels == 8
    assert model(X).shape == (2, 5)


def test_leaf_modules_must_be_types_or_names():
    with pytest.raises(prunekit.errors.ConfigError, match="leaf_modules"):
        DependencyGraph(WithBlock(), X, leaf_modules=[DataDependent()])


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_tf_efficientnet_works_out_of_the_box(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_b0", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.warns(UserWarning, match="Conv2dSame"):
        graph = DependencyGraph(model, x)
    assert graph.coverage().ratio > 0.9
    macs = graph.macs()
    prunekit.prune(model, x, ratio=0.3)
    assert prunekit.count(model, x).macs < 0.75 * macs
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, 10)
        loaded = prunekit.load(prunekit.save(model, tmp_path / "m.safetensors", example_inputs=x))
        assert torch.equal(loaded(x), y)
        assert type(loaded.conv_stem).__name__ == "Conv2dSame"
