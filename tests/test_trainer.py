"""Trainer: schedules, callbacks, atomic checkpoints, exact resume after an interrupt, logs."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from prunekit.errors import CheckpointError, ConfigError
from prunekit.train import (Callback, L1Subgradient, LossTerm, TrainConfig, Trainer, TrainingInterrupted,
                            TrainOnly, bn_weights, load_checkpoint, lr_factor)
from _toy import ToyLoader, toy_model


def _cfg(tmp_path=None, **kw) -> TrainConfig:
    base = dict(epochs=3, lr=0.05, schedule="cosine", warmup_epochs=0.5, progress=False,
                checkpoint_dir=tmp_path, seed=0, nesterov=True)
    base.update(kw)
    return TrainConfig(**base)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class KillAt(Callback):
    """Sends this process SIGTERM after global step ``n`` (the Trainer's handler catches it)."""

    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, trainer):
        if trainer.global_step == self.n:
            os.kill(os.getpid(), signal.SIGTERM)


def test_training_learns_and_logs(tmp_path):
    model = toy_model()
    res = Trainer(model, ToyLoader(), ToyLoader(shuffle=False), config=_cfg(tmp_path, epochs=4)).fit()
    assert len(res.history) == 4
    assert res.final["val_top1"] > 60  # 4 separable classes
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert (tmp_path / "last.ckpt").exists() and (tmp_path / "metrics.csv").exists()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 5 and "val_top1" in lines[0]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


@pytest.mark.parametrize("kill_step", [4, 6, 13])  # mid-epoch, at an epoch boundary, in the last epoch
def test_resume_after_interrupt_is_exact(tmp_path, kill_step):
    ref = toy_model()
    Trainer(ref, ToyLoader(), config=_cfg(None)).fit()

    first = toy_model()
    with pytest.raises(TrainingInterrupted):
        Trainer(first, ToyLoader(), config=_cfg(tmp_path), callbacks=[KillAt(kill_step)]).fit()
    ckpt = load_checkpoint(tmp_path / "last.ckpt")
    assert ckpt["global_step"] == kill_step

    resumed = toy_model(seed=99)  # different init: everything must come from the checkpoint
    hist = Trainer(resumed, ToyLoader(), config=_cfg(tmp_path, resume=True)).fit().history
    assert len(hist) == 3
    for k, v in _weights(ref).items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_refuses_changed_schedule(tmp_path):
    Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, epochs=1)).fit()
    with pytest.raises(CheckpointError, match="epochs"):
        Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, epochs=2, resume=True)).fit()


def test_resume_of_finished_run_does_nothing(tmp_path):
    m = toy_model()
    Trainer(m, ToyLoader(), config=_cfg(tmp_path, epochs=1)).fit()
    before = _weights(m)
    Trainer(m, ToyLoader(), config=_cfg(tmp_path, epochs=1, resume=True)).fit()
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, resume=True)).fit()
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a prunekit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_checkpoint_for_another_architecture(tmp_path):
    Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, epochs=1)).fit()
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 4))
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(other, ToyLoader(), config=_cfg(tmp_path, epochs=1, resume=True)).fit()


def test_l1_subgradient_shrinks_bn_gamma():
    plain, sparse = toy_model(), toy_model()
    Trainer(plain, ToyLoader(), config=_cfg(epochs=2)).fit()
    Trainer(sparse, ToyLoader(), config=_cfg(epochs=2), callbacks=[L1Subgradient(0.5)]).fit()
    l1 = lambda m: sum(g.abs().sum().item() for g in bn_weights(m))  # noqa: E731
    assert l1(sparse) < 0.9 * l1(plain)


def test_train_only_freezes_the_rest():
    m = toy_model()
    before = _weights(m)
    Trainer(m, ToyLoader(), config=_cfg(epochs=1, weight_decay=0.0),
            callbacks=[TrainOnly(lambda name, p: name.startswith("9."))]).fit()
    after = m.state_dict()
    assert not torch.equal(before["9.weight"], after["9.weight"])
    assert torch.equal(before["0.weight"], after["0.weight"])
    assert all(p.requires_grad for p in m.parameters())  # unfrozen after the fit


def test_loss_term_is_added():
    seen = []

    class Spy(Callback):
        def on_after_backward(self, trainer):
            seen.append(trainer.model[9].weight.grad.abs().sum().item())

    penalty = LossTerm(lambda m: 10.0 * m[9].weight.abs().sum())
    Trainer(toy_model(), ToyLoader(), config=_cfg(epochs=1, steps_per_epoch=1), callbacks=[Spy()]).fit()
    Trainer(toy_model(), ToyLoader(), config=_cfg(epochs=1, steps_per_epoch=1), callbacks=[penalty, Spy()]).fit()
    assert seen[1] > seen[0] + 1.0


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle", "triangular"])
def test_schedules_shape(schedule):
    warmup = 5 if schedule in ("constant", "step", "cosine") else 0
    cfg = TrainConfig(epochs=100, schedule=schedule, warmup_epochs=warmup, min_lr=0.01)
    f = [lr_factor(cfg, e) for e in range(101)]
    assert all(0 <= x <= 1 + 1e-9 for x in f)
    if schedule == "step":
        assert f[10] == 1.0 and f[60] == pytest.approx(0.1) and f[80] == pytest.approx(0.01)
    if schedule in ("cosine", "onecycle"):
        assert f[100] == pytest.approx(0.01) and max(f) == pytest.approx(1.0, abs=0.02)
    if schedule == "triangular":
        assert f[50] == pytest.approx(1.0) and f[0] == pytest.approx(0.01)
    if schedule != "onecycle":
        assert f[0] < f[5]  # warm-up ramps


@pytest.mark.parametrize("kwargs, name", [
    ({"lr": -1}, "lr"), ({"epochs": 0}, "epochs"), ({"momentum": 1.5}, "momentum"),
    ({"schedule": "linear"}, "schedule"), ({"milestones": (500,)}, "milestones"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"precision": "int8"}, "precision"),
    ({"nesterov": True, "momentum": 0.0}, "nesterov"),
])
def test_invalid_hyper_parameters(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        TrainConfig(**kwargs)


def test_unknown_recipe_key():
    with pytest.raises(ConfigError, match="lerning_rate"):
        TrainConfig.from_dict({"lerning_rate": 0.1})


def test_tensorboard_log(tmp_path):
    pytest.importorskip("tensorboard")
    Trainer(toy_model(), ToyLoader(), ToyLoader(shuffle=False),
            config=_cfg(tmp_path, epochs=1, tensorboard=True)).fit()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
