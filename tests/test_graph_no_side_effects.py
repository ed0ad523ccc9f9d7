"""Building a graph, pruning to full widths and saving leave the model exactly as it was: every parameter and
buffer bit-identical (BatchNorm running statistics, ``num_batches_tracked``), the training flags, the modules'
attributes — with batch-1 and batch-2 example inputs, in train and in eval mode."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.models import create, default_input_size

from _tv_models import TORCHVISION_DISTINCT
from _zoo import ZOO

# one model per kind of zoo block (deeper members of a family repeat the same blocks), to keep the test fast
ZOO_KINDS = [n for n in ("resnet20", "vgg11", "mobilenetv2", "densenet40", "smallcnn", "condensenet50") if n in ZOO]
HAS_TIMM = importlib.util.find_spec("timm") is not None
TIMM = ("mobilenetv4_conv_small",)


class TracedBatchNorm(nn.BatchNorm2d):
    """A BatchNorm subclass outside torch.nn (fx traces through it), written as timm's BatchNormAct2d is: it
    bumps ``num_batches_tracked`` itself and calls ``F.batch_norm`` with ``training=self.training``."""

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                                   self.momentum, self.eps))


def _traced_bn_net() -> nn.Module:
    # the second BN sees a 1x1 map: with a batch-1 example its train-mode F.batch_norm cannot run on real data
    return nn.Sequential(nn.Conv2d(3, 8, 3), TracedBatchNorm(8), nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1),
                         TracedBatchNorm(8), nn.Flatten(), nn.Linear(8, 4))


def _randomize(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)
    return model


def _make(case: str) -> tuple[nn.Module, tuple[int, ...]]:
    kind, _, name = case.partition(":")
    torch.manual_seed(0)
    if kind == "zoo":
        return create(name), default_input_size(name)
    if kind == "tv":
        tv = pytest.importorskip("torchvision")
        return tv.models.get_model(name, num_classes=10), (3, 32, 32)
    if kind == "timm":
        timm = pytest.importorskip("timm")
        return timm.create_model(name, num_classes=10), (3, 64, 64)
    return _traced_bn_net(), (3, 8, 8)


def _snapshot(model: nn.Module) -> dict:
    return {"tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
            "training": [m.training for m in model.modules()],
            "attrs": [sorted(vars(m)) for m in model.modules()]}


def _assert_unchanged(model: nn.Module, before: dict, what: str) -> None:
    after = _snapshot(model)
    changed = [k for k, v in before["tensors"].items() if not torch.equal(v, after["tensors"][k])]
    assert not changed, f"{what} changed {len(changed)} tensors: {changed[:5]}"
    assert list(after["tensors"]) == list(before["tensors"]), f"{what} changed the state_dict keys"
    assert after["training"] == before["training"], f"{what} changed training flags"
    assert after["attrs"] == before["attrs"], f"{what} added or removed module attributes"


CASES = (["handmade:traced_bn"] + [f"zoo:{n}" for n in ZOO_KINDS] + [f"tv:{n}" for n in TORCHVISION_DISTINCT]
         + [pytest.param(f"timm:{n}", marks=pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed"))
            for n in TIMM])


@pytest.mark.parametrize("case", CASES)
def test_graph_prune_and_save_leave_the_model_unchanged(case, tmp_path):
    model, size = _make(case)
    _randomize(model)
    # every mode x batch for the nets whose BNs fx traces through; the two ends of the matrix (train + batch 1:
    # the train-only code and a batch the train-mode BN cannot run on; eval + batch 2) for the others (time)
    full = case.startswith(("handmade", "timm"))
    combos = [(True, 1), (True, 2), (False, 1), (False, 2)] if full else [(True, 1), (False, 2)]
    for training, batch in combos:
        model.train(training)
        x = torch.randn(batch, *size)
        before = _snapshot(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a train-only branch that a batch-1 input cannot run
            prunekit.prune(model, x, ratio=0.0)  # builds a graph, applies the identity plan
            _assert_unchanged(model, before, f"graph + prune to full widths (train={training}, batch {batch})")
            if training and batch == 1:  # saving traces and runs the eval-mode forward, whatever the mode
                prunekit.save(model, tmp_path / "m.safetensors", example_inputs=x)
                _assert_unchanged(model, before, f"save (train={training}, batch {batch})")


def test_a_batch_one_train_mode_graph_keeps_its_train_branch():
    """``F.batch_norm(training=True)`` on a 1x1 map with one sample cannot run on real data; on meta tensors the
    shape pass skips it, so the train-mode graph is analysed instead of dropped with a warning."""
    model = _traced_bn_net().train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = DependencyGraph(model, torch.randn(1, 3, 8, 8))
    assert graph["0"].prunable and graph["3"].prunable
