"""prunekit's own layer types keep their type through save/load even when the module that registers their file
spec was never imported: CondenseNet's layers (defined in ``prunekit.models.layers_lgc``, registered by
``prunekit.methods.condensenet``) saved and loaded by processes that import only ``prunekit.io``."""

from __future__ import annotations

import json
import subprocess
import sys

SAVE = """
import sys, torch, torch.nn as nn
import prunekit.io as io
from prunekit.models.layers_lgc import CondensedLinear, LearnedGroupConv
from safetensors.torch import save_file
assert "prunekit.methods" not in sys.modules
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3), LearnedGroupConv(8, 8, groups=2, condense_factor=2),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), CondensedLinear(8, 3, kept_features=5)).eval()
x = torch.randn(2, 3, 8, 8)
io.save(model, sys.argv[1] + "/m.safetensors", example_inputs=x)
with torch.no_grad():
    save_file({"x": x, "y": model(x)}, sys.argv[1] + "/io.safetensors")
"""

LOAD = """
import json, sys, torch
import prunekit.io as io
from safetensors.torch import load_file
assert "prunekit.methods" not in sys.modules
model = io.load(sys.argv[1] + "/m.safetensors")
ref = load_file(sys.argv[1] + "/io.safetensors")
with torch.no_grad():
    same = torch.equal(model(ref["x"]), ref["y"])
print(json.dumps({"same": same, "types": [f"{type(m).__module__}.{type(m).__name__}" for m in model.children()]}))
"""


def _run(code: str, folder) -> str:
    r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_condensenet_layers_keep_their_type_without_importing_methods(tmp_path):
    _run(SAVE, tmp_path)
    header = json.loads(__import__("safetensors").safe_open(str(tmp_path / "m.safetensors"),
                                                            framework="pt").metadata()["prunekit"])
    saved_types = {v["type"] for v in header["modules"].values()}
    assert {"prunekit.methods.condensenet.LearnedGroupConv",
            "prunekit.methods.condensenet.CondensedLinear"} <= saved_types
    out = json.loads(_run(LOAD, tmp_path).splitlines()[-1])
    assert out["same"]
    assert "prunekit.models.layers_lgc.LearnedGroupConv" in out["types"]
    assert "prunekit.models.layers_lgc.CondensedLinear" in out["types"]
