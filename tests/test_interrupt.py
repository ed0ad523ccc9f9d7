"""A real `prunekit train` process killed with SIGTERM checkpoints, exits, and resumes to the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from _cli import run_cli

ARGS = ["train", "--model", "smallcnn", "--data", "synthetic", "--batch-size", "16", "--epochs", "6",
        "--lr", "0.05", "--schedule", "cosine", "--no-progress", "--device", "cpu",
        "--model-arg", "in_channels=1"]


def _recipe(tmp_path):
    r = tmp_path / "synthetic.yaml"
    r.write_text("data_args: {num_train: 256, num_test: 64, image_size: 8, in_channels: 1}\n")
    return str(r)


def test_sigterm_checkpoints_and_resume_matches(tmp_path):
    recipe = _recipe(tmp_path)
    ref = tmp_path / "ref"
    r = run_cli(*ARGS, "--recipe", recipe, "-o", str(ref))
    assert r.returncode == 0, r.stderr

    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "prunekit", *ARGS, "--recipe", recipe, "-o", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (run / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "resume" in err
    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] < 6

    r = run_cli(*ARGS, "--recipe", recipe, "-o", str(run), "--resume")
    assert r.returncode == 0, r.stderr
    a = torch.load(ref / "last.ckpt", weights_only=True)["model"]
    b = torch.load(run / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
