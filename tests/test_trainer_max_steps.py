"""TrainConfig.max_steps: the Trainer stops after that many optimizer steps, the run is the prefix of the longer
one (same lr schedule), and a run killed before the limit resumes to the same weights."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from prunekit.errors import ConfigError
from prunekit.train import Callback, TrainConfig, Trainer, TrainingInterrupted, load_checkpoint
from prunekit.train.pipeline import train_settings
from _toy import ToyLoader, toy_model  # 6 batches per epoch


def _cfg(tmp_path=None, **kw) -> TrainConfig:
    base = dict(epochs=4, lr=0.05, schedule="cosine", progress=False, checkpoint_dir=tmp_path, seed=0)
    base.update(kw)
    return TrainConfig(**base)


class Steps(Callback):
    def __init__(self):
        self.lrs = []

    def on_step_end(self, trainer):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


class KillAt(Callback):
    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, trainer):
        if trainer.global_step == self.n:
            os.kill(os.getpid(), signal.SIGTERM)


def test_stops_mid_epoch_with_an_epoch_row_and_validation(tmp_path):
    steps = Steps()
    t = Trainer(toy_model(), ToyLoader(), ToyLoader(shuffle=False), config=_cfg(tmp_path, max_steps=9),
                callbacks=[steps])
    hist = t.fit().history
    assert t.global_step == 9 and len(steps.lrs) == 9
    assert [r["epoch"] for r in hist] == [1, 2] and "val_top1" in hist[-1]
    assert load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 9


def test_is_the_prefix_of_the_longer_run():
    long_steps, short_steps = Steps(), Steps()
    ref = toy_model()
    Trainer(ref, ToyLoader(), config=_cfg(None, max_steps=12), callbacks=[short_steps]).fit()
    full = toy_model()
    Trainer(full, ToyLoader(), config=_cfg(None, epochs=2, schedule="constant")).fit()
    assert short_steps.lrs == pytest.approx([0.05 * f for f in _cosine_factors(12, 24)])
    Trainer(toy_model(), ToyLoader(), config=_cfg(None), callbacks=[long_steps]).fit()
    assert long_steps.lrs[:12] == short_steps.lrs  # same schedule: the prefix of the 4-epoch run
    const = toy_model()
    Trainer(const, ToyLoader(), config=_cfg(None, epochs=5, schedule="constant", max_steps=12)).fit()
    for k, v in full.state_dict().items():  # constant lr: 12 steps of a 5-epoch run == a 2-epoch run
        assert torch.equal(v, const.state_dict()[k]), k


def _cosine_factors(n, total):
    from prunekit.train import lr_factor

    c = _cfg(None)
    return [lr_factor(c, 4 * i / total) for i in range(n)]


@pytest.mark.parametrize("kill_step", [4, 6, 8])  # mid-epoch, at an epoch boundary, in the truncated epoch
def test_resume_is_exact(tmp_path, kill_step):
    ref = toy_model()
    Trainer(ref, ToyLoader(), config=_cfg(None, max_steps=10)).fit()
    with pytest.raises(TrainingInterrupted):
        Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, max_steps=10), callbacks=[KillAt(kill_step)]).fit()
    resumed = toy_model(seed=99)
    t = Trainer(resumed, ToyLoader(), config=_cfg(tmp_path, max_steps=10, resume=True))
    t.fit()
    assert t.global_step == 10
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    again = Trainer(resumed, ToyLoader(), config=_cfg(tmp_path, max_steps=10, resume=True))
    again.fit()  # a finished run resumed does nothing
    assert again.global_step == 10
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_larger_than_the_run_changes_nothing():
    a, b = toy_model(), toy_model()
    Trainer(a, ToyLoader(), config=_cfg(None, epochs=2)).fit()
    Trainer(b, ToyLoader(), config=_cfg(None, epochs=2, max_steps=1000)).fit()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_invalid(bad):
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(max_steps=bad)


def test_unset_is_not_part_of_stage_fingerprints():
    assert "max_steps" not in train_settings(TrainConfig())
    assert train_settings(TrainConfig(max_steps=5))["max_steps"] == 5


def test_cli_train_max_steps(tmp_path):
    from _cli import run_cli

    out = tmp_path / "run"
    r = run_cli("train", "--model", "smallcnn", "--data", "digits", "--epochs", "3", "--batch-size", "64",
                "--max-steps", "5", "--device", "cpu", "--no-progress", "-o", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint(out / "last.ckpt")
    assert ckpt["global_step"] == 5 and ckpt["config"]["max_steps"] == 5 and len(ckpt["history"]) == 1
    bad = run_cli("train", "--model", "smallcnn", "--max-steps", "0", "-o", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--max-steps 0 must be >= 1" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()
