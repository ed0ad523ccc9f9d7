"""Ops without a channel rule make the channels they touch unprunable, with a warning naming op and module;
untraceable models raise a clear error. Never a silently wrong model."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn

from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph, GraphError
from prunekit.planning import apply_widths, prune

from _graph_nets import cbr, single_thread  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 8, 8)


@torch.fx.wrap
def _opaque_roll(x):
    return torch.roll(x, 1, dims=1)


@torch.library.custom_op("prunekit_test::scale", mutates_args=())
def _scale(x: torch.Tensor) -> torch.Tensor:
    return x * 3


@_scale.register_fake
def _(x):
    return torch.empty_like(x)


class Opaque(nn.Module):
    def forward(self, x):
        return x.flip(1)


class Net(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.a = cbr(3, 8)
        self.inner = Opaque()
        self.b = cbr(8, 6)
        self.c = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = self.a(x)
        if self.kind == "wrap":
            y = _opaque_roll(y)
        elif self.kind == "custom_op":
            y = _scale(y)
        elif self.kind == "leaf":
            y = self.inner(y)
        return self.c(self.b(y))


@pytest.mark.parametrize("kind,op", [("wrap", "_opaque_roll"), ("custom_op", "prunekit_test::scale"),
                                     ("leaf", "Opaque")])
def test_unknown_op_warns_and_pins(kind, op):
    m = Net(kind).eval()
    with pytest.warns(UserWarning, match=op) as rec:
        g = DependencyGraph(m, X, leaf_modules=[Opaque] if kind == "leaf" else ())
    assert any("(root)" in str(w.message) or "inner" in str(w.message) for w in rec)
    assert not g["a.0"].prunable and op in g["a.0"].reason
    assert g["b.0"].prunable  # channels downstream of the op are unaffected
    assert any(op in w for w in g.warnings)
    with pytest.raises(PrunekitError, match="not prunable"):
        apply_widths(g, {"a.0": 4})
    with pytest.warns(UserWarning):
        prune(m, X, ratio=0.5)
    assert m.a[0].out_channels == 8 and m.b[0].out_channels == 3 and m(X).shape == (2, 4, 8, 8)


def test_autograd_function_is_traced_through():
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = cbr(3, 8), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(Double.apply(self.a(x)))

    g = DependencyGraph(M().eval(), X)  # fx records the Function's forward ops (here: a multiplication)
    assert g["a.0"].prunable


def test_untraceable_model_raises_clear_error():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.a(x)
            if y.sum() > 0:
                return y
            return -y

    with pytest.raises(GraphError, match="torch.fx could not trace DataDependent"):
        DependencyGraph(DataDependent(), X)


def test_model_failing_on_inputs_raises_clear_error():
    with pytest.raises(GraphError, match="failed on example_inputs"):
        DependencyGraph(nn.Sequential(nn.Conv2d(4, 4, 1)), X)


def test_bad_example_inputs():
    with pytest.raises(PrunekitError, match="example_inputs"):
        DependencyGraph(nn.Conv2d(3, 4, 1), ())
