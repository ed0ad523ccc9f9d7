"""Regenerate the regression pins of tests/test_method_regression.py (run from the repository root):

    .venv/bin/python tests/data/regression/make_reference.py

Runs each digits recipe here through the CLI and stores its result (widths, accuracies, MACs, stage names) and
its final model file. Only regenerate on purpose: the pins exist to show a refactoring changed nothing.
``--check`` compares a fresh run with the pins (exact tensor digests) and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
RUNS = {"slimming": "slimming_digits.yaml", "gate-decorator": "gate_decorator_digits.yaml"}


def run(method: str, recipe: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunekit", "prune", method, "--recipe", str(recipe),
                           "--device", "cpu", "--no-progress", "-o", str(out)], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def tensor_digest(path: Path) -> str:
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for k, v in sorted(load_file(str(path)).items()):
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def summary(out: Path) -> dict:
    rec = json.loads((out / "result.json").read_text())
    return {"widths_after": rec["widths"]["after"], "baseline": rec["baseline"], "pruned": rec["pruned"],
            "stages": [s["name"] for s in rec["stages"]], "digest": tensor_digest(out / "model.safetensors")}


def main() -> None:
    check = "--check" in sys.argv
    ref = {}
    for method, recipe in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            r = run(method, HERE / recipe, out)
            if r.returncode:
                sys.exit(r.stderr[-3000:])
            ref[method] = summary(out)
            if not check:
                shutil.copy(out / "model.safetensors", HERE / f"{method}.safetensors")
    if check:
        pinned = json.loads((HERE / "reference.json").read_text())
        bad = [m for m in RUNS if pinned[m] != ref[m]]
        print("identical to the pins" if not bad else f"DIFFERENT from the pins: {bad}")
        sys.exit(1 if bad else 0)
    (HERE / "reference.json").write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: v["digest"] for k, v in ref.items()}, indent=1))


if __name__ == "__main__":
    main()
