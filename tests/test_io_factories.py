"""Tensor factories in a forward (``torch.zeros``, ``arange``, ``linspace``, ``eye``...: a positional encoding
built from the input's size) are stored in the file format and rebuilt bit-identically; factories that read
files or memory stay refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import CheckpointError
from prunekit.io import load, save


class PositionalNet(nn.Module):
    """A conv stem plus a sinusoidal 2-D positional encoding made in forward from the feature map's size.

    (Sizes go in as one tuple: fx cannot record ``torch.zeros(n, 1, h, w)`` with traced sizes as separate
    arguments — torch's argument parser rejects them before fx sees the call.)"""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.stem(x)
        n, _, h, w = y.shape
        cols = torch.arange(w, dtype=y.dtype, device=y.device)
        rows = torch.linspace(0.0, 1.0, h, dtype=y.dtype, device=y.device)
        enc = torch.sin(cols / math.pi)[None, :] + torch.cos(rows)[:, None] + torch.eye(h, w, dtype=y.dtype)
        enc = enc + torch.full((h, w), 0.5) + torch.zeros((n, 1, h, w)) + torch.ones((1, 1, h, 1))
        enc = enc + torch.empty((h, w)).fill_(0.25) + torch.zeros_like(y)
        return self.head((y + enc).mean((2, 3)))


def _saved_targets(path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        graph = json.loads(f.metadata()["prunekit"])["graph"]
    return {n["target"] for n in graph if n["op"] == "call_function"}


def test_positional_encoding_roundtrip_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    model = PositionalNet().eval()
    x = torch.randn(2, 3, 6, 5)
    path = save(model, tmp_path / "m.safetensors", example_inputs=x)
    assert {"torch.arange", "torch.linspace", "torch.eye", "torch.full", "torch.zeros", "torch.ones",
            "torch.empty"} <= _saved_targets(path)
    loaded = load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        x2 = torch.randn(1, 3, 9, 4)  # the encoding follows the input's size in the rebuilt model too
        assert torch.equal(loaded(x2), model(x2))


def test_positional_encoding_model_prunes_and_saves(tmp_path):
    torch.manual_seed(0)
    model = PositionalNet().eval()
    x = torch.randn(2, 3, 6, 5)
    graph = prunekit.DependencyGraph(model, x)
    assert graph["stem"].prunable  # the encoding broadcasts over the channels: it does not pin them
    prunekit.prune(model, x, ratio=0.5)
    assert model.stem.out_channels == 4
    with torch.no_grad():
        assert torch.equal(load(save(model, tmp_path / "p.safetensors", example_inputs=x))(x), model(x))


@pytest.mark.parametrize("target", ["torch.from_file", "torch.frombuffer", "torch.load", "torch.set_default_dtype",
                                    "torch.manual_seed"])
def test_factories_that_touch_files_or_global_state_stay_refused(target, tmp_path):
    from safetensors.torch import load_file, save_file

    from safetensors import safe_open

    path = save(PositionalNet().eval(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["prunekit"])
    node = next(n for n in header["graph"] if n["op"] == "call_function" and n["target"] == "torch.arange")
    node["target"] = target
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={"prunekit": json.dumps(header)})
    with pytest.raises(CheckpointError, match="allow-list"):
        load(bad)
