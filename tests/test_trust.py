"""What a user relies on: impossible settings are said, quiet runs still report, resumed runs say from where."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.train import Callback, TrainConfig, Trainer, TrainingInterrupted

from _cli import run_cli
from _toy import ToyLoader, toy_model


def test_prune_warns_when_rounding_leaves_everything_whole():
    model = prunekit.models.create("resnet20")
    with pytest.warns(UserWarning, match="nothing was pruned"):
        prunekit.prune(model, torch.randn(1, 3, 16, 16), ratio=0.3, round_to=128)


def test_no_progress_still_prints_epoch_lines(tmp_path):
    r = run_cli("train", "--model", "smallcnn", "--epochs", "2", "--no-progress", "-o", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("epoch=") == 2  # one line per epoch, bar or no bar


class _Stop(Callback):
    def on_step_end(self, trainer):
        if trainer.global_step == 4:
            import os
            import signal
            os.kill(os.getpid(), signal.SIGINT)


def test_a_resumed_run_says_where_it_resumed(tmp_path, capfd):
    cfg = dict(epochs=2, lr=0.05, progress=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(TrainingInterrupted) as e:
        Trainer(toy_model(), ToyLoader(), config=TrainConfig(**cfg), callbacks=[_Stop()]).fit()
    import signal
    assert e.value.signum == signal.SIGINT  # the CLI exits 130 for Ctrl-C, 143 for SIGTERM
    capfd.readouterr()
    Trainer(toy_model(), ToyLoader(), config=TrainConfig(**cfg)).fit()
    err = capfd.readouterr().err
    assert "resumed from" in err and "epoch 1/2, step 4/6" in err


def test_model_files_get_the_usual_permissions(tmp_path):
    import os

    model = prunekit.models.create("smallcnn", in_channels=1)
    path = prunekit.save(model, tmp_path / "m.safetensors", example_inputs=torch.randn(1, 1, 8, 8))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_help_shows_defaults_and_does_not_import_torch():
    import subprocess
    import sys

    r = run_cli("train", "--help")
    assert r.returncode == 0 and "[default: 160]" in r.stdout and "Epochs ." not in r.stdout
    code = "import sys, prunekit.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # `prunekit --help` answers without loading torch


def test_one_epoch_step_schedule_starts_at_the_full_lr():
    from prunekit.train.schedule import lr_factor

    cfg = TrainConfig(epochs=1, schedule="step")
    assert lr_factor(cfg, 0.0) == 1.0 and lr_factor(cfg, 0.6) == pytest.approx(0.1)


def test_collapse_after_pruning_is_said_with_the_floor_hits():
    from types import SimpleNamespace

    from prunekit.methods.base import MethodRun

    logged = []
    run = SimpleNamespace(floor_hit=["layer3.0.conv1"], log=logged.append, details={})
    MethodRun._warn_if_collapsed(run, 90.0, 12.0)
    assert "collapsed" in logged[0] and "layer3.0.conv1" in logged[0] and run.details["warnings"]
    MethodRun._warn_if_collapsed(run, 90.0, 80.0)
    assert len(logged) == 1
