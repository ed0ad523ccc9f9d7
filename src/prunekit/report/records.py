"""Result records in the format of RESULTS-SCHEMA (``prunekit.result/1``): the envelope every benchmark writes."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

SCHEMA = "prunekit.result/1"


def git_sha(short: bool = True) -> str:
    """The commit of the prunekit checkout (``unknown`` outside git), ``-dirty`` when uncommitted changes exist."""
    here = Path(__file__).resolve().parent
    try:
        args = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
        sha = subprocess.run(args, cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_SHA_AT_IMPORT = git_sha()


def device_name(device: str = "cpu") -> str:
    """``NVIDIA H100 80GB HBM3`` for CUDA, else the CPU model and core count."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def versions(**extra: str) -> dict[str, str]:
    """prunekit's commit when this module was imported (the code a long run loaded; ``prunekit_when_written``
    is added if the checkout moved on since), torch and Python versions, plus ``extra``."""
    import torch

    v = {"prunekit": _SHA_AT_IMPORT, "torch": torch.__version__, "python": platform.python_version()}
    now = git_sha()
    if now != _SHA_AT_IMPORT:
        v["prunekit_when_written"] = now
    v.update(extra)
    return v


def envelope(name: str, *, device: str = "cpu", command: str | None = None, **fields: Any) -> dict[str, Any]:
    """A result record: schema, name, command (default: this process's argv), device, versions, date + fields."""
    rec: dict[str, Any] = {
        "schema": SCHEMA, "name": name,
        "command": command or " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "device": device_name(device), "versions": versions(),
        "date": _dt.date.today().isoformat(),
    }
    rec.update(fields)
    return rec


def write_record(record: dict[str, Any] | list[dict[str, Any]], path: str | Path) -> Path:
    """Write one record (or a list of records) as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    return path
