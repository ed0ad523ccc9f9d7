"""Model zoo: every registered model builds, trains a step and traces; the reference figures; external models."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.fx
import torch.nn as nn

from prunekit.cost import count
from prunekit.errors import ConfigError, PrunekitError, UnknownModelError
from prunekit.models import create, default_input_size, list_models
from prunekit.models.resnet_cifar import ZeroPadShortcut

from _zoo import ZOO  # noqa: E402  (every zoo model but the heaviest of a family)


def _batch(name: str, n: int = 2, channels: int | None = None) -> torch.Tensor:
    c, h, w = default_input_size(name)
    return torch.randn(n, channels or c, h, w)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_builds_trains_and_traces(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, num_classes=7)
    x = _batch(name)
    assert model(x).shape == (2, 7)

    # One SGD step: every parameter gets a gradient and the weights move.
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged

    # torch.fx traces it, and the traced module computes the same function.
    model.eval()
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_in_channels(name: str) -> None:
    model = create(name, num_classes=3, in_channels=5)
    _, h, w = default_input_size(name)
    assert model.eval()(torch.randn(1, 5, h, w)).shape == (1, 3)


# (params, MACs per 32x32 image), 10 classes. The papers' figures: see each model's module docstring.
REFERENCE_FIGURES = {
    "resnet56": (855_770, 125_747_840),   # 0.856M; "126.8M" = these MACs + thop's BN ops (resnet_cifar.py)
    "vgg19": (20_035_018, 398_136_320),   # Network Slimming: 20.04M params, 7.97e8 FLOPs = 2 x MACs
    "resnet164": (1_703_258, 247_646_720),  # Network Slimming: 1.70M params
    "densenet40": (1_059_298, 282_917_328),  # Network Slimming's code (24-channel stem)
}


@pytest.mark.parametrize("name", sorted(REFERENCE_FIGURES))
def test_reference_params_and_macs(name: str) -> None:
    cost = count(create(name), torch.randn(1, 3, 32, 32))
    assert (cost.params, cost.macs) == REFERENCE_FIGURES[name]


def test_resnet56_figures_match_the_papers() -> None:
    model = create("resnet56").eval()
    x = torch.randn(1, 3, 32, 32)
    cost = count(model, x)
    assert str(cost) == "0.856M params, 125.7M MACs"
    # Gate Decorator's "126.8M" is thop's count of this network: conv + linear MACs, plus 2 ops per BatchNorm
    # output element and (pooled elements + 1) per output of the global average pool. Measured here.
    bn_elements, pool_ops = [], []
    hooks = [m.register_forward_hook(lambda m, i, o: bn_elements.append(o.numel()))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks += [m.register_forward_hook(lambda m, i, o: pool_ops.append(o.numel() * (i[0][0, 0].numel() + 1)))
              for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(bn_elements) == 57 and len(pool_ops) == 1  # 2 per block x 27 + stem + 2 projection shortcuts
    assert sum(bn_elements) == 544_768 and pool_ops == [64 * 65]  # the figures in resnet_cifar's docstring
    assert abs(cost.macs + 2 * sum(bn_elements) + sum(pool_ops) - 126.8e6) < 0.05e6
    assert round(count(create("vgg19"), torch.randn(1, 3, 32, 32)).params / 1e6, 2) == 20.04
    assert round(count(create("densenet40", stem_channels=16), torch.randn(1, 3, 32, 32)).params / 1e6, 2) == 1.02


def test_resnet_shortcut_a_is_parameter_free_zero_pad() -> None:
    a, b = create("resnet56", shortcut="A"), create("resnet56", shortcut="B")
    x = torch.randn(1, 3, 32, 32)
    cost_a, cost_b = count(a, x), count(b, x)
    assert cost_b.params - cost_a.params == 16 * 32 + 32 * 64 + 2 * (32 + 64)  # 1x1 convs + their BN
    assert cost_b.macs - cost_a.macs == 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8
    assert isinstance(a.layer2[0].shortcut, ZeroPadShortcut)
    assert isinstance(a.layer2[1].shortcut, nn.Identity)

    y = ZeroPadShortcut(16, 32, stride=2)(torch.randn(2, 16, 8, 8))
    assert y.shape == (2, 32, 4, 4)
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0 and y[:, 8:24].abs().sum() > 0
    with pytest.raises(ConfigError, match="shortcut"):
        create("resnet20", shortcut="C")


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        create("resnet57")
    message = str(info.value)
    assert all(name in message for name in ZOO)
    assert "tv:" in message


def test_vgg_custom_cfg() -> None:
    model = create("vgg11", cfg=[8, "M", 16, "M", 32])
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="cfg"):
        create("vgg11", cfg=["M", "X"])


def test_mobilenetv2_width_mult() -> None:
    x = torch.randn(1, 3, 32, 32)
    assert count(create("mobilenetv2", width_mult=0.5), x).macs < count(create("mobilenetv2"), x).macs / 2
    with pytest.raises(ConfigError, match="width_mult"):
        create("mobilenetv2", width_mult=0)


needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision not installed")


@needs_torchvision
def test_torchvision_model_builds() -> None:
    model = create("tv:resnet18", num_classes=10)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert "tv:resnet18" in list_models(include_external=True)


@needs_torchvision
def test_torchvision_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="tv:resnet18"):
        create("tv:resnet19")


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_missing_is_a_clear_error() -> None:
    with pytest.raises(PrunekitError, match="pip install timm"):
        create("timm:resnet18")
