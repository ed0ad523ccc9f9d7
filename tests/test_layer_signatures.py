"""Layer signatures: every leaf layer call recorded, evaluated at any widths without re-tracing."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.planning import uniform_widths


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "densenet40"])
def test_signatures_at_widths_equal_those_of_the_pruned_model(name):
    torch.manual_seed(0)
    model = prunekit.models.create(name).eval()
    x = torch.randn(1, 3, 16, 16)
    graph = prunekit.DependencyGraph(model, x)
    sig = graph.layer_signatures()
    leaves = [n for n, m in model.named_modules() if not list(m.children())]
    called = {s.name for s in sig}
    assert {"Conv2d", "BatchNorm2d", "Linear"} <= {s.type for s in sig}
    assert len(called) >= 0.9 * len([n for n in leaves if not n.endswith("shortcut")])  # every layer, not conv only
    widths = uniform_widths(graph, 0.4)
    predicted = graph.layer_signatures(widths)
    small = graph.plan(widths).materialize(model)
    assert predicted == prunekit.DependencyGraph(small, x).layer_signatures()
    assert predicted != sig
    depthwise = [s for s in predicted if dict(s.attrs).get("groups", 1) > 1]
    assert all(dict(s.attrs)["groups"] == s.in_shape[0] for s in depthwise)  # depthwise stays depthwise


def test_identical_layers_share_a_key():
    model = prunekit.models.create("resnet56").eval()
    sig = prunekit.DependencyGraph(model, torch.randn(1, 3, 32, 32)).layer_signatures()
    assert len({s.key for s in sig}) < len(sig) / 3  # 27 identical blocks per stage: one measurement each
