"""ONNX export (legacy TorchScript exporter, ``dynamo=False``): onnxruntime reproduces PyTorch (< 1e-4 relative)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.cost import count
from prunekit.errors import PrunekitError
from prunekit.io import ExportError, check_onnx, export_onnx, load, save
from prunekit.models import create, default_input_size

from _tv_models import TORCHVISION_DISTINCT

ort = pytest.importorskip("onnxruntime")
tv = pytest.importorskip("torchvision")

# One model per zoo family (the deeper ResNets/VGGs are the same layers, more of them); a name that leaves the
# zoo fails here (create raises) instead of silently dropping out ...
ZOO = ["resnet20", "vgg11", "mobilenetv2", "densenet40", "smallcnn"]
# ... and the torchvision models of issue 3 whose ONNX graphs differ in kind (the others: see _tv_models).
TORCHVISION = list(TORCHVISION_DISTINCT)


def _export_and_check(model: nn.Module, x: torch.Tensor, path: Path, **kwargs) -> list[float]:
    model.eval()
    export_onnx(model, x, path, **kwargs)
    with torch.no_grad():
        expected = model(x)
    return check_onnx(path, (x,), (expected,), rtol=1e-4)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_exports(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, *default_input_size(name))
    errors = _export_and_check(create(name), x, tmp_path / "m.onnx")
    assert errors[0] < 1e-4


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_model_exports(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    export_onnx(tv.models.get_model(name, num_classes=10), torch.randn(2, 3, 32, 32), tmp_path / "m.onnx",
                verify=True)  # raises ExportError above 1e-4


def test_dynamic_batch_and_names(tmp_path: Path) -> None:
    import onnx

    model = create("smallcnn").eval()
    path = export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "m.onnx", input_names=["images"],
                       output_names=["logits"], opset=13)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x5 = torch.randn(5, 1, 8, 8)  # another batch size than the example
    with torch.no_grad():
        check_onnx(path, (x5,), (model(x5),))

    fixed = export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "fixed.onnx", dynamic_batch=False)
    assert onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_fold_bn_export_and_training_flag(tmp_path: Path) -> None:
    model = create("resnet20").train()
    x = torch.randn(2, 3, 32, 32)
    export_onnx(model, x, tmp_path / "m.onnx", fold_bn=True, verify=True)
    assert model.training  # exported in eval mode, the user's flag restored


def test_loaded_and_pruned_models_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create("mobilenetv2").eval()
    x = torch.randn(2, 3, 32, 32)
    full = count(model, x)
    prunekit.prune(model, x, ratio=0.5)
    pruned = count(model, x)
    assert pruned.params < 0.35 * full.params and pruned.macs < 0.35 * full.macs  # half the channels: ~1/4
    loaded = load(save(model, tmp_path / "m.safetensors"))
    assert count(loaded, x).params == pruned.params
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    export_onnx(loaded, x, tmp_path / "m.onnx", verify=True)  # raises ExportError above 1e-4


def test_mismatch_raises_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create("smallcnn").eval()
    x = torch.randn(2, 1, 8, 8)
    path = export_onnx(model, x, tmp_path / "m.onnx")
    with torch.no_grad():
        wrong = model(x) + 1.0
    with pytest.raises(ExportError, match="relative error"):
        check_onnx(path, (x,), (wrong,))

    import prunekit.io.onnx_export as mod

    def failing_check(*args, **kwargs):
        raise ExportError("forced mismatch")

    monkeypatch.setattr(mod, "check_onnx", failing_check)
    with pytest.raises(ExportError, match="forced"):
        export_onnx(model, x, tmp_path / "bad.onnx", verify=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_unexportable_model_is_a_prunekit_error(tmp_path: Path) -> None:
    class NoOnnxOp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.kthvalue(x, 2, dim=1)[0]  # no ONNX symbolic in opset 17

    with pytest.raises(PrunekitError, match="kthvalue") as info:
        export_onnx(NoOnnxOp(), torch.randn(2, 3), tmp_path / "m.onnx", verify=True)
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())
