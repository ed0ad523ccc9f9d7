"""Trainer extension points for the Method layer: on_step_start, batch/outputs, optimizer and loss factories,
the rank-independent step generator, BatchNorm recalibration, and the step loop without per-step host syncs."""

from __future__ import annotations

import copy
import os
import signal
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import CheckpointError, ConfigError
from prunekit.train import (Callback, CallbackList, TrainConfig, Trainer, TrainingInterrupted, lr_factor,
                            recalibrate_bn, step_seed)
from prunekit.train import trainer as trainer_mod
from prunekit.train.distributed import DistInfo
from _toy import ToyLoader, toy_model


def _cfg(tmp_path=None, **kw) -> TrainConfig:
    base = dict(epochs=2, lr=0.05, schedule="cosine", warmup_epochs=0.5, progress=False,
                checkpoint_dir=tmp_path, seed=0, nesterov=True)
    base.update(kw)
    return TrainConfig(**base)


class Scaled(nn.Module):
    """A dropout-free net whose logits are multiplied by ``scale`` (an attribute a callback may change)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        self.scale = 1.0

    def forward(self, x):
        return self.body(x) * self.scale


class KillAt(Callback):
    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, trainer):
        if trainer.global_step == self.n:
            os.kill(os.getpid(), signal.SIGTERM)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- on_step_start, batch, outputs
def test_on_step_start_runs_before_forward_and_sees_the_batch():
    events: list[tuple[str, int]] = []
    model = Scaled()
    model.register_forward_pre_hook(lambda m, args: events.append(("forward", id(args[0]))))

    class PerStep(Callback):
        def on_step_start(self, trainer, batch):
            assert batch is trainer.batch and batch[0].shape == (16, 3, 8, 8)
            trainer.model.scale = 1.0 + trainer.global_step  # a per-step architecture change
            events.append(("start", id(batch[0])))

        def extra_loss(self, trainer):
            x = trainer.batch[0]
            with torch.no_grad():
                plain = trainer.model.body(x)
            # the forward pass of this step ran with the scale set in on_step_start
            torch.testing.assert_close(trainer.outputs, plain * (1.0 + trainer.global_step))
            events.append(("extra", trainer.global_step))
            return None

        def on_after_backward(self, trainer):
            events.append(("backward", trainer.global_step))

        def on_step_end(self, trainer):
            assert trainer.outputs is not None and trainer.batch is not None
            events.append(("end", trainer.global_step))

    t = Trainer(model, ToyLoader(), config=_cfg(epochs=1, steps_per_epoch=3), callbacks=[PerStep()])
    t.fit()
    kinds = [e[0] for e in events]
    assert kinds == ["start", "forward", "extra", "backward", "end"] * 3
    for i in range(3):
        assert events[5 * i][1] == events[5 * i + 1][1]  # the forward pass got the batch on_step_start saw
    assert t.batch is None and t.outputs is None  # released after the step


def test_on_step_start_may_replace_the_batch():
    seen = []
    model = Scaled()
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].abs().sum().item()))

    class Zero(Callback):
        def on_step_start(self, trainer, batch):
            trainer.batch = (torch.zeros_like(batch[0]), batch[1])

    Trainer(model, ToyLoader(), config=_cfg(epochs=1, steps_per_epoch=2), callbacks=[Zero()]).fit()
    assert seen == [0.0, 0.0]


def test_callback_list_fans_out_on_step_start():
    calls = []

    class Rec(Callback):
        def __init__(self, tag):
            self.tag = tag

        def on_step_start(self, trainer, batch):
            calls.append((self.tag, batch))

    CallbackList([Rec("a"), Rec("b")]).on_step_start(None, "B")
    assert calls == [("a", "B"), ("b", "B")]
    Callback().on_step_start(None, "B")  # the base hook is a no-op


def test_extra_loss_can_use_the_outputs():
    lam = 0.7
    grads = []

    class OutputPenalty(Callback):
        def extra_loss(self, trainer):
            return lam * trainer.outputs.pow(2).mean()

        def on_after_backward(self, trainer):
            grads.append(trainer.model.body[5].weight.grad.clone())

    model = Scaled()
    ref = copy.deepcopy(model)
    Trainer(model, ToyLoader(), config=_cfg(epochs=1, steps_per_epoch=1), callbacks=[OutputPenalty()]).fit()
    x, y = next(iter(ToyLoader()))
    ref.train()
    out = ref(x)
    (F.cross_entropy(out, y) + lam * out.pow(2).mean()).backward()
    torch.testing.assert_close(grads[0], ref.body[5].weight.grad)


# ---------------------------------------------------------------- optimizer and loss factories
def test_default_path_equals_the_explicit_sgd_and_cross_entropy():
    cfg = _cfg(epochs=2, label_smoothing=0.1)
    a, b = toy_model(), toy_model()
    Trainer(a, ToyLoader(), config=cfg).fit()
    sgd = lambda ps: torch.optim.SGD(ps, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,  # noqa: E731
                                     weight_decay=cfg.weight_decay)
    ce = lambda out, y: F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)  # noqa: E731
    Trainer(b, ToyLoader(), config=cfg, optimizer_factory=sgd, loss_fn=ce).fit()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_optimizer_factory_is_used_and_the_schedule_drives_its_lr():
    got = []

    def adam(params):
        got.append(params)
        head = [p for p in params if p.dim() == 2]
        rest = [p for p in params if p.dim() != 2]
        return torch.optim.Adam([{"params": rest}, {"params": head, "lr_scale": 0.5}], lr=123.0)

    model = toy_model()
    cfg = _cfg(epochs=1, lr=1e-3, schedule="constant", warmup_epochs=0)
    t = Trainer(model, ToyLoader(), config=cfg, optimizer_factory=adam)
    t.fit()
    assert isinstance(t.optimizer, torch.optim.Adam)
    assert len(got) == 1 and all(isinstance(p, nn.Parameter) and p.requires_grad for p in got[0])
    assert len(got[0]) == len(list(model.parameters()))
    for p in model.parameters():
        assert "exp_avg" in t.optimizer.state[p] and "exp_avg_sq" in t.optimizer.state[p]
    assert [g["lr"] for g in t.optimizer.param_groups] == [1e-3, 0.5e-3]


def test_optimizer_factory_must_return_an_optimizer():
    with pytest.raises(ConfigError, match="optimizer_factory returned list"):
        Trainer(toy_model(), ToyLoader(), config=_cfg(epochs=1), optimizer_factory=lambda ps: ps).fit()


def test_resume_with_a_custom_optimizer_is_exact_and_refuses_another(tmp_path):
    adam = lambda ps: torch.optim.Adam(ps, lr=1e-3)  # noqa: E731
    ref = toy_model()
    Trainer(ref, ToyLoader(), config=_cfg(None, epochs=2), optimizer_factory=adam).fit()
    with pytest.raises(TrainingInterrupted):
        Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, epochs=2), optimizer_factory=adam,
                callbacks=[KillAt(4)]).fit()
    with pytest.raises(CheckpointError, match="optimizer Adam"):
        Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, epochs=2, resume=True)).fit()
    resumed = toy_model(seed=5)
    Trainer(resumed, ToyLoader(), config=_cfg(tmp_path, epochs=2, resume=True), optimizer_factory=adam).fit()
    for k, v in _weights(ref).items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_custom_loss_is_used():
    calls = []

    def loss_fn(out, y):
        loss = F.multi_margin_loss(out.float(), y)
        calls.append(loss.detach())
        return loss

    t = Trainer(toy_model(), ToyLoader(), config=_cfg(epochs=1), loss_fn=loss_fn)
    hist = t.fit().history
    assert len(calls) == t.steps_per_epoch == 6
    assert torch.equal(t.loss, calls[-1])
    assert hist[0]["train_loss"] == pytest.approx(torch.stack(calls).double().mean().item())
    assert 0 <= hist[0]["train_top1"] <= 100


def test_custom_loss_with_tuple_outputs_and_a_bad_loss():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = toy_model()

        def forward(self, x):
            out = self.net(x)
            return out, out.pow(2).mean()

    t = Trainer(TwoHeads(), ToyLoader(), config=_cfg(epochs=2),
                loss_fn=lambda out, y: F.cross_entropy(out[0], y) + 0.01 * out[1])
    hist = t.fit().history
    assert hist[-1]["train_top1"] > 0  # accuracy counted from the first output
    with pytest.raises(ConfigError, match="scalar tensor"):
        Trainer(toy_model(), ToyLoader(), config=_cfg(epochs=1),
                loss_fn=lambda out, y: F.cross_entropy(out, y, reduction="none")).fit()


def test_nesterov_and_cosine_per_step():
    """CondenseNet's schedule: nesterov SGD, cosine lr updated every step (not every epoch)."""
    cfg = _cfg(epochs=3, schedule="cosine", warmup_epochs=0, nesterov=True)
    lrs = []

    class Lr(Callback):
        def on_after_backward(self, trainer):
            lrs.append((trainer.epoch, trainer.step_in_epoch, trainer.optimizer.param_groups[0]["lr"]))

    t = Trainer(toy_model(), ToyLoader(), config=cfg, callbacks=[Lr()])
    t.fit()
    assert t.optimizer.param_groups[0]["nesterov"] is True
    n = t.steps_per_epoch
    assert [lr for *_, lr in lrs] == [cfg.lr * lr_factor(cfg, e + s / n) for e, s, _ in lrs]
    assert all(a[2] > b[2] for a, b in zip(lrs, lrs[1:]))  # strictly decreasing, step by step


# ---------------------------------------------------------------- step generator
class Draws(Callback):
    """Records, per global step, draws from the step generator (and from the global RNG)."""

    def __init__(self):
        self.step: dict[int, list[int]] = {}
        self.glob: dict[int, float] = {}

    def on_step_start(self, trainer, batch):
        g = trainer.step_generator()
        self.step[trainer.global_step] = torch.randint(0, 10**6, (4,), generator=g).tolist()
        self.glob[trainer.global_step] = torch.rand(()).item()


def test_step_generator_is_reproducible_on_resume(tmp_path):
    ref = Draws()
    Trainer(toy_model(), ToyLoader(), config=_cfg(None, epochs=3), callbacks=[ref]).fit()
    assert len(ref.step) == 18 and len({tuple(v) for v in ref.step.values()}) == 18  # a new draw every step

    first = Draws()
    with pytest.raises(TrainingInterrupted):
        Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, epochs=3), callbacks=[first, KillAt(8)]).fit()
    second = Draws()
    Trainer(toy_model(), ToyLoader(), config=_cfg(tmp_path, epochs=3, resume=True), callbacks=[second]).fit()
    assert sorted(first.step) == list(range(8)) and sorted(second.step) == list(range(8, 18))
    assert {**first.step, **second.step} == ref.step


def test_step_generator_is_the_same_on_every_rank(monkeypatch):
    """Two simulated DDP ranks (different data shards, different global RNG) draw the same per-step values."""
    monkeypatch.setattr(Trainer, "_wrap_ddp", lambda self: setattr(self, "_ddp", None))
    draws = []
    for rank in (0, 1):
        monkeypatch.setattr(trainer_mod.dist_utils, "current", lambda r=rank: DistInfo(r, 2, r))
        d = Draws()
        t = Trainer(toy_model(), ToyLoader(rank=rank, world_size=2), config=_cfg(None, epochs=2), callbacks=[d])
        assert t.dist.rank == rank
        t.fit()
        draws.append(d)
    assert len(draws[0].step) == 6
    assert draws[0].step == draws[1].step
    assert draws[0].glob != draws[1].glob  # the global RNG is seeded per rank: the ranks really differ


def test_step_generator_streams_and_seeds():
    t = Trainer(toy_model(), ToyLoader(), config=_cfg(epochs=1))
    draw = lambda **kw: torch.rand(3, generator=t.step_generator(**kw)).tolist()  # noqa: E731
    a = draw()
    assert draw() == a and draw(stream=1) != a and draw(stream="arch") != draw(stream="arch2")
    state = torch.get_rng_state()
    t.step_generator()
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    t.global_step = 7
    assert draw() != a
    t.config.seed = 1
    assert draw() != a
    assert step_seed(0, 7) == step_seed(0, 7) != step_seed(0, 8)
    assert 0 <= step_seed(2**40, 10**9, "x") < 2**63
    assert step_seed(0, 1, 1) != step_seed(0, 1, "1")


# ---------------------------------------------------------------- BatchNorm recalibration
def _batches(n: int, size: int = 32, seed: int = 0, shape=(3, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    shift = torch.tensor([2.0, -1.0, 0.5]).view(1, 3, *([1] * (len(shape) - 1)))
    return [(3.0 * torch.randn(size, *shape, generator=g) + shift, torch.zeros(size, dtype=torch.long))
            for _ in range(n)]


def test_recalibrate_bn_gives_the_statistics_of_the_data_seen():
    bn = nn.BatchNorm2d(3, momentum=0.3)
    bn.running_mean.fill_(100.0)
    bn.running_var.fill_(1e-3)
    bn.eval()
    data = _batches(10)
    out = recalibrate_bn(bn, data, batches=4)
    assert out is bn
    seen = torch.cat([x for x, _ in data[:4]])  # only the first 4 batches
    dims = (0, 2, 3)
    torch.testing.assert_close(bn.running_mean, seen.mean(dims), rtol=1e-5, atol=1e-5)
    per_batch_var = torch.stack([x.var(dims, unbiased=True) for x, _ in data[:4]]).mean(0)
    torch.testing.assert_close(bn.running_var, per_batch_var, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, seen.var(dims), rtol=0.05, atol=0)  # ~ the population var
    assert int(bn.num_batches_tracked) == 4
    assert bn.momentum == 0.3 and not bn.training  # momentum and mode restored

    one = nn.BatchNorm1d(3)
    recalibrate_bn(one, [(x[:, :, 0, 0],) for x, _ in data], batches=1)  # (x,) items, one batch: exact
    torch.testing.assert_close(one.running_mean, data[0][0][:, :, 0, 0].mean(0))
    torch.testing.assert_close(one.running_var, data[0][0][:, :, 0, 0].var(0, unbiased=True))
    assert one.training and one.momentum == 0.1


def test_recalibrate_bn_in_a_network_restores_modes_and_keeps_parameters():
    model = toy_model()
    model.eval()
    model[8].train()  # a mixed mode must come back as it was
    params = {k: v.clone() for k, v in model.named_parameters()}
    acts = []
    model[1].register_forward_hook(lambda m, i, o: acts.append(i[0].detach()))
    data = _batches(3, shape=(3, 8, 8))
    recalibrate_bn(model, data, batches=3)
    assert [m.training for m in model] == [False] * 8 + [True, False]
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in params.items())
    torch.testing.assert_close(model[1].running_mean, torch.cat(acts).mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no batch"):
        recalibrate_bn(model, [], batches=2)
    with pytest.raises(ConfigError, match="batches"):
        recalibrate_bn(model, data, batches=0)


# ---------------------------------------------------------------- non-finite loss, no per-step host sync
def test_non_finite_loss_raises_a_clear_error():
    model = toy_model()
    with torch.no_grad():
        model[9].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 0 step 0: lower the learning rate"):
        Trainer(model, ToyLoader(), config=_cfg(epochs=1)).fit()


def test_non_finite_loss_is_caught_at_the_next_check():
    """A loss that turns non-finite at step 3 stays so; the check (every 50 steps) reports it at step 50."""
    def loss_fn(out, y):
        return F.cross_entropy(out, y) * (float("inf") if trainer.global_step >= 3 else 1.0)

    trainer = Trainer(toy_model(), ToyLoader(), config=_cfg(epochs=10, warmup_epochs=0), loss_fn=loss_fn)
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at epoch 8 step 2"):  # step 50 = 8 * 6 + 2
        trainer.fit()
    assert trainer.global_step == 50


def test_no_host_sync_inside_steps(monkeypatch):
    """Inside a step the Trainer reads no tensor on the host (.item/.tolist/bool/float) except every 50 steps."""
    reads: list[tuple[str, int | None]] = []
    current: list[int | None] = [None]
    trainer_file = trainer_mod.__file__

    def spy(name):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, **kw):
            if sys._getframe(1).f_code.co_filename == trainer_file:
                reads.append((name, current[0]))
            return orig(self, *a, **kw)
        return wrapped

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, spy(name))

    class Window(Callback):
        def on_step_start(self, trainer, batch):
            current[0] = trainer.global_step

        def on_step_end(self, trainer):
            current[0] = None

    t = Trainer(toy_model(), ToyLoader(), ToyLoader(shuffle=False), config=_cfg(epochs=10), callbacks=[Window()])
    t.fit()
    assert t.global_step == 60
    in_steps = [r for r in reads if r[1] is not None]
    assert in_steps and {step for _, step in in_steps} == {0, 50}  # the finite-loss check only
    assert any(step is None for _, step in reads)  # epoch-end metrics are read outside the steps
