"""Run the real ``prunekit`` entry point in a subprocess (what users type), capture output and status."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, cwd=None, timeout: float = 300, module: tuple[str, ...] = ("-m", "prunekit")):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *module, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)
