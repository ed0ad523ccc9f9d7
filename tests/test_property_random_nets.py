"""Property tests over randomly generated small CNNs (residual adds, concatenations, grouped and depthwise convs,
squeeze-excitation, chunks, pooling): masked-then-pruned equals masked, 50% pruning runs and its MACs are
predicted exactly, pruning nothing is bit-identical."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths

from _graph_nets import (SqueezeExcite, bit_identical_when_nothing_pruned, cbr, masked_then_pruned, randomize_bn,
                         single_thread)  # noqa: F401  (autouse fixture)

KINDS = ["conv", "res", "cat", "dw", "grouped", "se", "chunk", "pool"]


class RandNet(nn.Module):
    """A chain of blocks described by ``spec`` [(kind, width, groups)]; the forward walks the spec."""

    def __init__(self, spec):
        super().__init__()
        self.modes: list[str] = []
        self.stem = cbr(3, 8)
        blocks, c = [], 8
        for kind, w, g in spec:
            self.modes.append("split" if kind == "chunk" and c % 2 == 0 else kind if kind in ("res", "cat") else "")
            if kind == "conv":
                blk, c = cbr(c, w), w
            elif kind == "res":
                blk = nn.Sequential(cbr(c, w), nn.Conv2d(w, c, 3, 1, 1), nn.BatchNorm2d(c))
            elif kind == "cat":
                blk = nn.ModuleList([cbr(c, w), cbr(c, w + 2)])
                c = 2 * w + 2
            elif kind == "dw":
                blk = cbr(c, c, 3, groups=c)
            elif kind == "grouped":
                g = g if c % g == 0 else 1
                out = g * max(1, w // g)
                blk, c = cbr(c, out, 3, groups=g), out
            elif kind == "se":
                blk = SqueezeExcite(c, 2) if c >= 2 else nn.Identity()
            elif kind == "chunk":
                if c % 2:
                    blk, c = cbr(c, c + 1, 1), c + 1
                else:
                    blk = cbr(c // 2, c // 2)
            else:
                blk = nn.MaxPool2d(2, 1, 0) if kind == "pool" else nn.Identity()
            blocks.append(blk)
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        x = self.stem(x)
        for mode, blk in zip(self.modes, self.blocks):
            if mode == "res":
                x = F.relu(x + blk(x))
            elif mode == "cat":
                x = torch.cat([blk[0](x), blk[1](x)], 1)
            elif mode == "split":
                a, b = x.chunk(2, 1)
                x = torch.cat([blk(b), a], 1)
            else:
                x = blk(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


specs = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(2, 9), st.sampled_from([1, 2, 4])),
                 min_size=1, max_size=6)


def _net(spec, seed):
    torch.manual_seed(seed)
    return randomize_bn(RandNet(spec), seed).eval()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, seed=st.integers(0, 2**16))
def test_masked_then_pruned_equals_masked(spec, seed):
    x = torch.randn(2, 3, 8, 8)
    bit_identical_when_nothing_pruned(_net(spec, seed), x)
    err, graph = masked_then_pruned(_net(spec, seed), x, seed=seed)
    assert err < 1e-5
    assert graph.macs() == prunekit.count(graph.model, x).macs


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, seed=st.integers(0, 2**16), keep=st.floats(0.05, 1.0))
def test_any_widths_prune_to_a_working_model(spec, seed, keep):
    x = torch.randn(1, 3, 8, 8)
    m = _net(spec, seed)
    g = DependencyGraph(m, x)
    widths = {gr.name: max(1, int(keep * gr.size)) for gr in g.prunable_groups}
    predicted = g.macs(widths)
    exact = g.exact_cost
    apply_widths(g, widths, importance="random")
    assert m(x).shape == (1, 3)
    counted = prunekit.count(m, x).macs
    if exact:
        assert predicted == counted
    else:  # groups whose members hold different subsets of channels: an expected value
        assert abs(predicted - counted) <= 0.5 * counted
    assert g.macs() == counted  # at the current widths the analytic count is always exact
