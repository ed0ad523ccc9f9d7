"""A real `prunekit train` process that gets SIGTERM mid-epoch checkpoints, exits, and resumes to the same weights."""

from __future__ import annotations

import textwrap

import torch

from _cli import run_cli

ARGS = ["train", "--model", "smallcnn", "--data", "synthetic", "--batch-size", "16", "--epochs", "6",
        "--lr", "0.05", "--schedule", "cosine", "--no-progress", "--device", "cpu",
        "--model-arg", "in_channels=1"]
STEPS_PER_EPOCH = 256 // 16
KILL_AT = 2 * STEPS_PER_EPOCH + 5  # the SIGTERM arrives after this many steps: mid-way through epoch 3

# The `prunekit` entry point with one extra Trainer callback that sends this process SIGTERM at a fixed step,
# so where the run stops does not depend on timing.
SIGTERM_AT_STEP = textwrap.dedent("""
    import runpy, signal, sys
    from prunekit.train import Callback, Trainer

    class SigtermAt(Callback):
        def on_step_end(self, trainer):
            if trainer.global_step == {step}:
                signal.raise_signal(signal.SIGTERM)  # handled by the Trainer like one from outside

    fit = Trainer.fit

    def fit_with_sigterm(self):
        self.callbacks.callbacks.append(SigtermAt())
        return fit(self)

    Trainer.fit = fit_with_sigterm
    sys.argv[0] = "prunekit"
    runpy.run_module("prunekit", run_name="__main__")
""")


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
    script = tmp_path / "sigterm_at_step.py"
    script.write_text(SIGTERM_AT_STEP.format(step=KILL_AT))
    r = run_cli(str(script), *ARGS, "--recipe", recipe, "-o", str(run), module=())
    assert r.returncode == 143, r.stderr
    assert "resume" in r.stderr
    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (2, 5, KILL_AT)  # saved at that step

    r = run_cli(*ARGS, "--recipe", recipe, "-o", str(run), "--resume")
    assert r.returncode == 0, r.stderr
    a = torch.load(ref / "last.ckpt", weights_only=True)["model"]
    b = torch.load(run / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
