"""Inference export: BN folded into the conv/linear before it, eval no-ops dropped, channels_last weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from prunekit.io import fold_batchnorm, for_inference, load, save
from prunekit.io.tracing import trace
from prunekit.models import create, default_input_size

from _tv_models import TORCHVISION_DISTINCT

tv = pytest.importorskip("torchvision")


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _count(model: nn.Module, cls: type | tuple[type, ...]) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


BN = nn.modules.batchnorm._BatchNorm
CASES = {  # name -> (builder, input shape, BN layers expected to remain after folding)
    "resnet20": (lambda: create("resnet20"), (2, *default_input_size("resnet20")), 0),
    "mobilenetv2": (lambda: create("mobilenetv2"), (2, 3, 32, 32), 0),
    "vgg11": (lambda: create("vgg11"), (2, 3, 32, 32), 0),
    # pre-activation (BN → ReLU → conv) everywhere: no BN directly follows a conv, nothing folds
    "densenet40": (lambda: create("densenet40"), (2, 3, 32, 32), None),
    **{f"tv:{n}": (lambda n=n: tv.models.get_model(n, num_classes=10), (2, 3, 32, 32), 0)
       for n in TORCHVISION_DISTINCT},
}


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_match_with_fewer_modules(name: str) -> None:
    build, shape, bn_left = CASES[name]
    torch.manual_seed(0)
    model = _randomize_bn(build()).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(*shape)
    fast = for_inference(model, x)
    with torch.no_grad():
        expected = model(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert _rel(got, expected) < 1e-5
    assert not fast.training
    n_modules = sum(1 for _ in model.modules())
    if bn_left is not None:
        assert _count(fast, BN) == bn_left
        assert sum(1 for _ in fast.modules()) < n_modules
    else:
        assert _count(fast, BN) == _count(model, BN)
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    # the user's model is untouched
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_pruned_model_folds() -> None:
    try:
        from prunekit.planning import prune
    except ImportError:
        pytest.skip("prunekit.graph.prune is not available yet")
    torch.manual_seed(0)
    model = _randomize_bn(create("resnet20")).eval()
    x = torch.randn(2, 3, 32, 32)
    prune(model, x, ratio=0.5)
    fast = for_inference(model, x)
    with torch.no_grad():
        assert _rel(fast(x), model(x)) < 1e-5
    assert _count(fast, BN) == 0


class Patterns(nn.Module):
    """Foldable and unfoldable placements side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(4, 6, 3, padding=1, bias=True)       # → bn_a: folds (bias kept and scaled)
        self.bn_a = nn.BatchNorm2d(6)
        self.conv_b = nn.Conv2d(6, 6, 3, padding=1, groups=3)         # output also used by the residual: no fold
        self.bn_b = nn.BatchNorm2d(6)
        self.shared = nn.Conv2d(6, 6, 1, bias=False)                 # called twice: no fold
        self.bn_s = nn.BatchNorm2d(6)
        self.deconv = nn.ConvTranspose2d(6, 8, 2, stride=2, groups=2)  # transposed, grouped: folds
        self.bn_d = nn.BatchNorm2d(8)
        self.conv_n = nn.Conv2d(8, 8, 1)                             # BN without running stats: no fold
        self.bn_n = nn.BatchNorm2d(8, track_running_stats=False)
        self.fc = nn.Linear(8, 5)                                    # linear → BN1d on (N, C): folds
        self.bn_fc = nn.BatchNorm1d(5, affine=False)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn_a(self.conv_a(x)))
        b = self.conv_b(y)
        y = self.bn_b(b) + b
        y = self.bn_s(self.shared(self.shared(y)))
        y = self.bn_d(self.deconv(y))
        y = self.bn_n(self.conv_n(y))
        y = self.drop(y.mean(dim=(2, 3)))
        return self.bn_fc(self.fc(y))


def test_fold_patterns() -> None:
    torch.manual_seed(0)
    model = _randomize_bn(Patterns()).eval()
    x = torch.randn(3, 4, 6, 6)
    gm = trace(model)
    folded = fold_batchnorm(gm, x)
    assert folded == 3
    remaining = {n for n, m in gm.named_modules() if isinstance(m, BN)}
    assert remaining == {"bn_b", "bn_s", "bn_n"}
    with torch.no_grad():
        assert _rel(gm(x), model(x)) < 1e-5

    # without example inputs the linear → BN1d fold is skipped (the BN's channel dim is unknown)
    assert fold_batchnorm(trace(model)) == 2

    fast = for_inference(model, x)
    assert not any(isinstance(m, nn.Dropout) for m in fast.modules())
    with torch.no_grad():
        assert _rel(fast(x), model(x)) < 1e-5


def test_inference_export_saves_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomize_bn(create("resnet20")).eval()
    x = torch.randn(2, 3, 32, 32)
    fast = for_inference(model, x)
    loaded = load(save(fast, tmp_path / "fast.safetensors", example_inputs=x))
    assert _count(loaded, BN) == 0
    conv = next(m for m in loaded.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(loaded(x), fast(x))


def test_options_off_keep_layers() -> None:
    model = create("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    plain = for_inference(model, x, fold_bn=False, channels_last=False)
    assert _count(plain, BN) == _count(model, BN)
    conv = next(m for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous()
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))
