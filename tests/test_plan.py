"""Pruning plans as data: one plan, three ways to run it (sliced view, materialized copy, in-place surgery)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.planning import plan, uniform_widths


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = 0.1 * torch.randn(m.num_features, generator=g)
            m.running_var = 0.5 + torch.rand(m.num_features, generator=g)
    return model


@pytest.mark.parametrize("name", ["resnet56", "mobilenetv2", "densenet40"])
def test_prefix_plan_view_equals_materialize_equals_apply(name):
    torch.manual_seed(0)
    model = _randomize_bn(prunekit.models.create(name)).eval()
    x = torch.randn(2, 3, 16, 16)
    graph = DependencyGraph(model, x)
    full = model(x)
    p = graph.plan(uniform_widths(graph, 0.5), keep="prefix")
    assert not p.is_identity
    for group, idx in p.keep.items():  # prefix: the first channels of every changed group
        pinned = graph.group(group).pinned
        assert torch.equal(idx[:idx.numel() - pinned.numel()], torch.arange(idx.numel() - pinned.numel()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y_view = p.forward(model, x)
    after_view = model.state_dict()
    assert all(torch.equal(before[k], after_view[k]) for k in before)  # the view restores everything
    assert torch.equal(model(x), full)
    copy_ = p.materialize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    y_copy = copy_(x)
    graph.apply_plan(p)
    y_apply = model(x)
    assert y_view.shape == (2, 10)
    assert torch.allclose(y_view, y_copy, atol=1e-5) and torch.allclose(y_copy, y_apply, atol=1e-6)
    assert not torch.allclose(y_apply, full, atol=1e-3)  # something was really removed
    assert graph.macs() == prunekit.count(model, x[:1]).macs == prunekit.count(copy_, x[:1]).macs


def test_view_is_differentiable_into_the_full_weights():
    torch.manual_seed(0)
    model = prunekit.models.create("resnet20").eval()
    x = torch.randn(2, 3, 16, 16)
    graph = DependencyGraph(model, x)
    p = graph.plan(uniform_widths(graph, 0.5), keep="prefix")
    p.forward(model, x).sum().backward()
    name = next(n for n in p.index_map() if n.endswith("weight") and n.count(".") >= 1)
    param = dict(model.named_parameters())[name]
    dims = dict(p.index_map()[name])
    assert param.grad is not None and param.grad.shape == param.shape
    dim, kept = next(iter(dims.items()))
    dropped = torch.ones(param.shape[dim], dtype=torch.bool)
    dropped[kept] = False
    assert param.grad.index_select(dim, torch.nonzero(dropped).reshape(-1)).abs().sum() == 0  # removed: no grad
    assert param.grad.abs().sum() > 0


def test_masks_match_the_materialized_weights():
    torch.manual_seed(0)
    model = prunekit.models.create("resnet20").eval()
    x = torch.randn(1, 3, 16, 16)
    graph = DependencyGraph(model, x)
    p = plan(graph, uniform_widths(graph, 0.25), keep="l1")
    masks = p.masks(model)
    small = p.materialize(model)
    full, pruned = dict(model.named_parameters()), dict(small.named_parameters())
    for name, mask in masks.items():
        if name in full:
            assert int(mask.sum()) == pruned[name].numel(), name
            assert torch.equal(full[name][mask], pruned[name].reshape(-1)), name


def test_plan_checks_widths_and_applies_to_its_own_graph_only():
    model = prunekit.models.create("resnet20")
    x = torch.randn(1, 3, 16, 16)
    graph = DependencyGraph(model, x)
    name = graph.prunable_groups[0].name
    with pytest.raises(ConfigError, match="outside"):
        graph.plan({name: 10_000})
    with pytest.raises(ConfigError, match="unknown channel group"):
        graph.plan({"nope": 3})
    p = graph.plan({name: 4})
    graph.apply_plan(p)
    with pytest.raises(ConfigError, match="not made by this graph"):
        graph.apply_plan(p)
    assert graph.plan({name: 4}).is_identity
