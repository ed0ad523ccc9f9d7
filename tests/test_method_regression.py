"""Regression pins: the digits runs of Network Slimming and Gate Decorator give the pinned models and metrics.

The pins (``tests/data/regression``) were made before the Method-layer refactoring; ``make_reference.py``
regenerates them on purpose only (a deliberate behaviour change, named in its commit). Runs go through the real
CLI with one thread, so the digests are bit-exact on one machine; across machines with other CPU kernels the
weights are compared with a tolerance instead (the digest equality is reported, not required).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent / "data" / "regression"
sys.path.insert(0, str(HERE))

from make_reference import RUNS, run, summary  # noqa: E402


@pytest.mark.parametrize("method", sorted(RUNS))
def test_digits_run_matches_the_pins(method, tmp_path):
    pinned = json.loads((HERE / "reference.json").read_text())[method]
    r = run(method, HERE / RUNS[method], tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    got = summary(tmp_path / "run")
    assert got["stages"] == pinned["stages"]
    assert got["widths_after"] == pinned["widths_after"]
    for side in ("baseline", "pruned"):
        assert got[side]["macs"] == pinned[side]["macs"] and got[side]["params"] == pinned[side]["params"]
        assert got[side]["top1"] == pytest.approx(pinned[side]["top1"], abs=0.6)
    a = load_file(str(HERE / f"{method}.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-4, rtol=1e-3), k
    if got["digest"] != pinned["digest"]:
        pytest.skip(f"{method}: same widths and weights within 1e-4, but not bit-identical on this CPU")
