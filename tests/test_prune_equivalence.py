"""The invariants on every zoo model and on torchvision models (small inputs):

- pruning nothing changes nothing (bit-identical output, untouched state);
- pruning channels whose contribution was first zeroed changes the output by float rounding only;
- pruning 50% of every prunable group runs, keeps the output shape, cuts MACs, and ``graph.macs(widths)``
  equals ``prunekit.count`` of the pruned model;
- coverage (conv output channels in prunable groups) is at least 95%.
"""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.graph import DependencyGraph

from _graph_nets import (bit_identical_when_nothing_pruned, check_half, masked_then_pruned, randomize_bn,
                         single_thread)  # noqa: F401  (autouse fixture)
from _tv_models import TORCHVISION

from _zoo import ZOO  # noqa: E402  (every zoo model but the heaviest of a family)
# option-A shortcuts pad channels by literal amounts: only the stage-1 part of the stream can shrink
LOW_COVERAGE = {"zoo:resnet20:A": 0.70}


def _zoo(name: str, shortcut: str | None = None):
    torch.manual_seed(0)
    kwargs = {"shortcut": shortcut} if shortcut else {}
    m = prunekit.models.create(name, **kwargs)
    x = torch.randn(2, *prunekit.models.default_input_size(name))
    return randomize_bn(m).eval(), x


def _tv(name: str):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = tv.models.get_model(name, weights=None)
    return randomize_bn(m).eval(), torch.randn(1, 3, 64, 64)


CASES = [pytest.param(("zoo", n, None), id=f"zoo:{n}") for n in ZOO]
CASES += [pytest.param(("zoo", "resnet20", "A"), id="zoo:resnet20:A")]
CASES += [pytest.param(("tv", n, None), id=f"tv:{n}") for n in TORCHVISION]


def _make(case):
    kind, name, opt = case
    return _zoo(name, opt) if kind == "zoo" else _tv(name)


@pytest.mark.parametrize("case", CASES)
def test_invariants(case, request):
    model, x = _make(case)
    graph = DependencyGraph(model, x)
    cov = graph.coverage()
    assert graph.exact_cost
    assert cov.ratio >= LOW_COVERAGE.get(request.node.callspec.id, 0.95), str(cov)

    bit_identical_when_nothing_pruned(graph, x)

    err, _ = masked_then_pruned(graph, x)
    assert err < 1e-5, f"masked-then-pruned output changed by {err:.2e}"

    before, predicted, after = check_half(graph, x, fresh=False)
    assert after < before
    assert predicted == after
