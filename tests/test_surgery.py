"""Surgery details: optimizer state follows the kept channels, parameters keep their identity, gradients are
sliced, channels-last weights stay channels-last, pruned models save/script like any module."""

from __future__ import annotations

import io

import pytest
import torch

from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths

from _graph_nets import build, single_thread  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 16, 16)


def _train_step(m, opt):
    opt.zero_grad()
    m(X).square().mean().backward()
    opt.step()


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_optimizer_state_is_sliced(opt_name):
    m = build("residual").train()
    opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(m.parameters(), lr=1e-3))
    _train_step(m, opt)
    w = m.a1[0].weight
    key = "momentum_buffer" if opt_name == "sgd" else "exp_avg"
    before = opt.state[w][key].clone()
    g = DependencyGraph(m, X)
    keep = apply_widths(g, {"a1.0": 3}, optimizer=opt)["a1.0"]
    assert m.a1[0].weight is w  # same Parameter object: the optimizer still holds it
    assert torch.equal(opt.state[w][key], before[keep])
    bn_w = m.a1[1].weight
    assert opt.state[bn_w][key].shape == (3,)
    # consumers are sliced along their input dim
    assert opt.state[m.a2[0].weight][key].shape == m.a2[0].weight.shape
    _train_step(m, opt)  # training continues
    if opt_name == "adam":
        assert int(opt.state[w]["step"]) == 2


def test_grads_are_sliced_and_channels_last_kept():
    m = build("residual").to(memory_format=torch.channels_last)
    m(X.to(memory_format=torch.channels_last)).sum().backward()
    g = DependencyGraph(m, X)
    apply_widths(g, {"stem.0": 5})
    w = m.stem[0].weight
    assert w.grad.shape == w.shape == (5, 3, 3, 3)
    assert w.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_pruned_model_is_a_plain_module():
    m = build("concat")
    apply_widths(DependencyGraph(m, X), {"c1.0": 3, "c3.0": 2})
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    scripted = torch.jit.trace(m, X)
    assert torch.allclose(scripted(X), m(X))
    assert m.c1[0].weight.shape == (3, 3, 3, 3) and m.c1[1].running_mean.shape == (3,)
