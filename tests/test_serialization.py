"""Saved artifact (prunekit.model/1): save → load gives the same function, the same state_dict keys, no pickle.

Covers every zoo model, the torchvision models named in issue 3, user-built models with their own constructor
arguments, pruned models, plain ``torch.save``, and every way a file can be broken or hostile.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.errors import CheckpointError, PrunekitError
from prunekit.io import load, read_metadata, register_function, register_module_spec, save
from prunekit.io.codec import decode_value, encode_value
from prunekit.models import create, default_input_size

from _tv_models import TORCHVISION

tv = pytest.importorskip("torchvision")

from _zoo import ZOO  # noqa: E402  (every zoo model but the heaviest of a family)


def _outputs(model: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


def _roundtrip(model: nn.Module, x: torch.Tensor, path: Path, same_order: bool = True,
               **save_kwargs) -> torch.fx.GraphModule:
    """save → load; asserts bit-identical eval outputs and identical state_dict keys (in the same order unless
    ``same_order=False``), shapes and dtypes."""
    model.eval()
    expected = _outputs(model, x)
    save(model, path, **save_kwargs)
    loaded = load(path)
    assert isinstance(loaded, torch.fx.GraphModule)
    assert not loaded.training
    assert torch.equal(_outputs(loaded, x), expected)
    ref = model.state_dict()
    got = loaded.state_dict()
    assert sorted(got) == sorted(ref)
    if same_order:
        assert list(got) == list(ref)
    assert all(got[k].shape == ref[k].shape and got[k].dtype == ref[k].dtype for k in ref)
    return loaded


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so that a lost buffer would show in the outputs."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)
    return model


# ------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_roundtrip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomize_bn(create(name))
    x = torch.randn(2, *default_input_size(name))
    loaded = _roundtrip(model, x, tmp_path / f"{name}.safetensors")
    assert list(loaded.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_model_roundtrip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomize_bn(tv.models.get_model(name, num_classes=10))
    _roundtrip(model, torch.randn(2, 3, 32, 32), tmp_path / "m.safetensors")


def test_user_constructor_arguments_roundtrip(tmp_path: Path) -> None:
    """A torchvision class built with arguments no registry knows: the file alone rebuilds it."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    model = ResNet(Bottleneck, [1, 1, 2, 1], num_classes=7, groups=4, width_per_group=32,
                   replace_stride_with_dilation=[False, True, False])
    loaded = _roundtrip(_randomize_bn(model), torch.randn(2, 3, 48, 48), tmp_path / "m.safetensors")
    conv = loaded.get_submodule("layer3.1.conv2")
    assert conv.groups == 4 and conv.dilation == (2, 2)


class _Tagged(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Handmade(nn.Module):
    """Residual add, concat, chunk, view/size, interpolate, get_attr parameters (layer scale), a non-persistent
    buffer, a tensor constant, tied weights, a frozen parameter, an unused head, mixed dtypes."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=2), nn.ReLU(inplace=True))
        self.other = nn.Conv2d(width, width, 1)
        self.scale = nn.Parameter(torch.full((1, 2 * width, 1, 1), 0.5))
        self.register_buffer("offset", torch.linspace(-1, 1, 2 * width).view(1, -1, 1, 1), persistent=False)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(width, 4)
        self.fc2 = nn.Linear(width, 4)
        self.fc2.weight = self.fc1.weight  # tied
        self.aux = nn.Linear(3, 3)          # unused in forward: kept under its name anyway
        self.fc1.bias.requires_grad_(False)
        self.fc1.stddev = 0.01              # a plain attribute user code put on a layer
        self.tagged = _Tagged()
        self.dbl = nn.Linear(4, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.stem(x)))
        y = y + self.branch(y)
        y = torch.cat([y, self.other(y)], dim=1) * self.scale + self.offset
        a, b = torch.chunk(y, 2, dim=1)
        y = self.up(a - b)[:, :, ::2, ::2] * torch.tensor(2.0)
        z = self.pool(self.tagged(y)).view(y.size(0), -1)
        out = self.fc1(z) + self.fc2(z)
        return self.dbl(out.double()).float()


def test_handmade_model_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomize_bn(Handmade())
    loaded = _roundtrip(model, torch.randn(2, 3, 8, 8), tmp_path / "m.safetensors", same_order=False)
    # the traced graph lists the layers forward uses, in model order; the unused ``aux`` is appended after them
    ref = list(model.state_dict())
    assert list(loaded.state_dict()) == [k for k in ref if not k.startswith("aux.")] + ["aux.weight", "aux.bias"]
    assert loaded.fc1.weight is loaded.fc2.weight
    assert not loaded.fc1.bias.requires_grad and loaded.fc1.weight.requires_grad
    assert loaded.fc1.stddev == 0.01
    assert loaded.dbl.weight.dtype == torch.float64
    assert "aux.weight" in loaded.state_dict() and "offset" not in loaded.state_dict()
    assert not hasattr(model, "_tensor_constant0")  # tracing left no trace on the user's model


def test_training_flag_and_metadata(tmp_path: Path) -> None:
    model = create("resnet20").train()
    x = torch.randn(2, 3, 32, 32)
    path = save(model, tmp_path / "m.safetensors", example_inputs=x, metadata={"ratio": 0.5, "method": "l1"})
    assert model.training  # save put it in eval mode only while tracing
    loaded = load(path)
    assert loaded.training
    info = read_metadata(path)
    assert info["meta"] == {"ratio": 0.5, "method": "l1"}
    assert info["inputs"] == [{"shape": [2, 3, 32, 32], "dtype": "float32"}]
    assert info["format"] == "prunekit.model/1"


def test_same_model_same_bytes(tmp_path: Path) -> None:
    model = create("smallcnn")
    a, b = save(model, tmp_path / "a.safetensors"), save(model, tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()


def test_state_dict_interoperates(tmp_path: Path) -> None:
    """``torch.save(model.state_dict())`` of the original loads into the prunekit-loaded model, and back."""
    torch.manual_seed(0)
    model = create("resnet20").eval()
    loaded = load(save(model, tmp_path / "m.safetensors"))
    torch.manual_seed(1)
    trained = _randomize_bn(create("resnet20")).eval()  # other weights, same architecture
    torch.save(trained.state_dict(), tmp_path / "sd.pt")
    loaded.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    expected = _outputs(trained, x)
    assert torch.equal(_outputs(loaded, x), expected)
    model.load_state_dict(loaded.state_dict())
    assert torch.equal(_outputs(model, x), expected)


def test_loaded_model_resaves_and_pickles(tmp_path: Path) -> None:
    model = create("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    expected = _outputs(model, x)
    loaded = load(save(model, tmp_path / "a.safetensors"))
    again = load(save(loaded, tmp_path / "b.safetensors"))
    assert torch.equal(_outputs(again, x), expected)
    torch.save(loaded, tmp_path / "gm.pt")  # plain torch.save of the GraphModule works too
    assert torch.equal(_outputs(torch.load(tmp_path / "gm.pt", weights_only=False), x), expected)


# ----------------------------------------------------------------------------------------- pruned
def _prune():
    try:
        from prunekit.planning import prune
    except ImportError:
        pytest.skip("prunekit.graph.prune is not available yet")
    return prune


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "densenet40", "tv:resnet18"])
def test_pruned_model_roundtrip(name: str, tmp_path: Path) -> None:
    """Residual (zero-pad shortcuts), depthwise, concat and torchvision models, 50% pruned, then saved."""
    prune = _prune()
    torch.manual_seed(0)
    model = _randomize_bn(create(name)).eval()
    x = torch.randn(2, 3, 32, 32)
    dense_params = sum(p.numel() for p in model.parameters())
    prune(model, x, ratio=0.5, round_to=2)
    assert sum(p.numel() for p in model.parameters()) < 0.5 * dense_params
    loaded = _roundtrip(model, x, tmp_path / "pruned.safetensors")
    assert list(loaded.state_dict()) == list(model.state_dict())

    # Plain torch.save of the pruned module (a trusted file: weights_only=False) works as well.
    torch.save(model, tmp_path / "pruned.pt")
    again = torch.load(tmp_path / "pruned.pt", weights_only=False)
    assert torch.equal(_outputs(again, x), _outputs(loaded, x))


# ------------------------------------------------------------------------------------------- safety
def test_load_executes_no_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Handmade().eval()
    x = torch.randn(2, 3, 8, 8)
    path = save(model, tmp_path / "m.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = load(path)
    monkeypatch.undo()
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


def _rewrite_header(src: Path, dst: Path, edit) -> Path:
    """Copy a saved model, passing its prunekit JSON header through ``edit(header) -> header``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["prunekit"] = json.dumps(edit(json.loads(meta["prunekit"])))
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(create("smallcnn"), tmp_path_factory.mktemp("saved") / "m.safetensors")


def _set_first(header: dict, kind: str, **changes) -> dict:
    """Change the first node whose op is ``kind``."""
    node = next(n for n in header["graph"] if n["op"] == kind)
    node.update(changes)
    return header


HOSTILE = {
    "os.system as a function": lambda h: _set_first(h, "call_function", target="os.system"),
    "builtins.eval as a function": lambda h: _set_first(h, "call_function", target="builtins.eval"),
    "torch.load as a function": lambda h: _set_first(h, "call_function", target="torch.load"),
    "a private method": lambda h: _set_first(h, "call_method", target="__reduce__")
    if any(n["op"] == "call_method" for n in h["graph"]) else _set_first(h, "call_function", op="call_method",
                                                                           target="__reduce__"),
    "code in a node name": lambda h: _set_first(h, "call_module", name="x; import os"),
    "code in a module path": lambda h: _set_first(h, "call_module", target='a")\nimport os\n("'),
    "an unknown module type": lambda h: {**h, "modules": {k: {**v, "type": "subprocess.Popen"}
                                                        for k, v in h["modules"].items()}},
    "a newer format": lambda h: {**h, "format": "prunekit.model/99"},
    "a foreign format": lambda h: {**h, "format": "other.model/1"},
    "a shape mismatch": lambda h: {**h, "modules": {k: ({**v, "kwargs": {**v["kwargs"], "out_channels": 3}}
                                                        if "out_channels" in v["kwargs"] else v)
                                                    for k, v in h["modules"].items()}},
    "a dangling node reference": lambda h: _set_first(h, "output", args=[{"$node": "nowhere"}]),
    "no output": lambda h: {**h, "graph": [n for n in h["graph"] if n["op"] != "output"]},
}


@pytest.mark.parametrize("problem", list(HOSTILE))
def test_broken_or_hostile_header_is_a_checkpoint_error(problem: str, saved: Path, tmp_path: Path) -> None:
    path = _rewrite_header(saved, tmp_path / "bad.safetensors", HOSTILE[problem])
    with pytest.raises(CheckpointError, match="bad.safetensors") as info:
        load(path)
    if "newer" in problem:
        assert "upgrade prunekit" in str(info.value)


def test_broken_files_are_checkpoint_errors(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    cases = {
        "missing.safetensors": None,
        "truncated.safetensors": data[: len(data) // 2],
        "header_only.safetensors": data[: 8 + struct.unpack("<Q", data[:8])[0]],
        "garbage.safetensors": b"\x00\x01 not a model" * 10,
        "empty.safetensors": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(CheckpointError, match=name):
            load(path)

    torch.save(create("smallcnn"), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="torch.save"):
        load(tmp_path / "model.pt")

    from safetensors.torch import save_file

    save_file(create("smallcnn").state_dict(), str(tmp_path / "sd.safetensors"))
    with pytest.raises(CheckpointError, match="state_dict"):
        load(tmp_path / "sd.safetensors")


# ------------------------------------------------------------------------------------ save-time errors
def _not_allowed(x: torch.Tensor) -> torch.Tensor:
    return x * 2


torch.fx.wrap("_not_allowed")


class UsesWrappedFunction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _not_allowed(self.conv(x))


class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


def test_unknown_function_fails_at_save_then_registers(tmp_path: Path) -> None:
    model = UsesWrappedFunction()
    path = tmp_path / "m.safetensors"
    with pytest.raises(PrunekitError, match="_not_allowed.*torch.save"):
        save(model, path)
    assert not path.exists() and not list(tmp_path.iterdir())
    register_function(_not_allowed, "tests.not_allowed")
    x = torch.randn(1, 3, 4, 4)
    assert torch.equal(_outputs(load(save(model, path)), x), _outputs(model, x))


def test_unknown_leaf_type_fails_at_save_then_registers(tmp_path: Path) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.lrn = nn.CrossMapLRN2d(3)  # a torch.nn layer without a spec

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lrn(self.conv(x))

    with pytest.raises(PrunekitError, match="CrossMapLRN2d.*torch.save"):
        save(Net(), tmp_path / "m.safetensors")
    register_module_spec(nn.CrossMapLRN2d, lambda m: {"size": m.size, "alpha": m.alpha, "beta": m.beta, "k": m.k})
    model = Net().eval()
    x = torch.randn(1, 3, 4, 4)
    assert torch.equal(_outputs(load(save(model, tmp_path / "m.safetensors")), x), _outputs(model, x))


def test_inconsistent_layer_is_refused(tmp_path: Path) -> None:
    """A layer whose attributes disagree with its weights (a botched surgery) is not silently written."""
    model = create("smallcnn")
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.weight = nn.Parameter(conv.weight[: conv.out_channels // 2].detach())
    with pytest.raises(PrunekitError, match="cannot be rebuilt"):
        save(model, tmp_path / "m.safetensors")


def test_example_inputs_catch_what_tracing_froze(tmp_path: Path) -> None:
    """fx records a random draw in forward as a constant: with example_inputs, save notices before writing."""

    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.randn(1)

    with pytest.raises(PrunekitError, match="does not reproduce"):
        save(Noisy(), tmp_path / "m.safetensors", example_inputs=torch.randn(2, 3))
    assert not list(tmp_path.iterdir())


def test_failed_save_keeps_the_old_file(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(saved.read_bytes())
    with pytest.raises(PrunekitError):
        save(UsesWrappedFunctionUnregistered(), path)
    assert path.read_bytes() == saved.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def _never_registered(x: torch.Tensor) -> torch.Tensor:
    return x


torch.fx.wrap("_never_registered")


class UsesWrappedFunctionUnregistered(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _never_registered(x)


# ------------------------------------------------------------------------------------------- codec
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                  st.text(max_size=5), st.sampled_from([torch.float16, torch.channels_last, torch.strided,
                                                        Ellipsis, torch.device("cpu")]))
_values = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.builds(slice, inner, inner, inner), st.lists(st.integers(0, 9), max_size=4).map(torch.Size),
    st.dictionaries(st.text(max_size=3), inner, max_size=3)), max_leaves=10)


@settings(max_examples=25, deadline=None)
@given(_values)
def test_codec_roundtrip(value) -> None:
    encoded = encode_value(value)
    decoded = decode_value(json.loads(json.dumps(encoded)))
    assert decoded == value and type(decoded) is type(value)
