"""The Trainer: one training loop shared by every method (methods plug in through callbacks).

It owns: SGD with momentum/nesterov and weight decay (or any optimizer from ``optimizer_factory``), per-step
lr schedules with warm-up, cross-entropy with label smoothing (or any ``loss_fn``), AMP (bf16 autocast on CUDA,
fp16 with a grad scaler on request), channels_last, evaluation, an atomic checkpoint after every epoch (and on
SIGTERM/Ctrl-C, mid-epoch), exact resume, CSV/TensorBoard logs, a progress bar, DDP when launched by torchrun,
and per-step random generators that agree on every rank (``Trainer.step_generator``).

The step loop never waits for the device (no ``.item()``/``bool(tensor)`` per step): the finite-loss check runs
every 50 steps, the progress bar reads the running sums every 10 steps only when it is shown, and DDP ranks agree
on a stop request every 20 steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import CheckpointError, ConfigError
from prunekit.train import distributed as dist_utils
from prunekit.train.callbacks import Callback, CallbackList
from prunekit.train.checkpoint import FORMAT, atomic_torch_save, load_checkpoint, rng_state, seed_everything, \
    set_rng_state
from prunekit.train.config import TrainConfig
from prunekit.train.logs import TensorBoardLog, write_csv
from prunekit.train.progress import TrainProgress
from prunekit.train.schedule import lr_factor

CHECKPOINT_NAME = "last.ckpt"
NONFINITE_CHECK_EVERY = 50  # steps between the (host-syncing) checks that the loss is finite

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def step_seed(seed: int, step: int, stream: int | str = 0) -> int:
    """A 63-bit seed that depends only on ``(seed, step, stream)`` (the same in every process and run)."""
    key = f"prunekit.step/{int(seed)}/{int(step)}/{stream!r}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


class TrainingInterrupted(RuntimeError):
    """Raised by ``fit`` after a SIGTERM/SIGINT once the checkpoint has been written; resume continues."""

    def __init__(self, checkpoint: Path | None, signum: int | None = None):
        where = f"; resume from {checkpoint}" if checkpoint else " (no checkpoint_dir: progress is lost)"
        super().__init__(f"training interrupted{where}")
        self.checkpoint = checkpoint
        self.signum = signum


@dataclass
class EvalResult:
    loss: float
    top1: float  # percent
    top5: float  # percent
    samples: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}top1": self.top1, f"{prefix}top5": self.top5}


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return precision


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batches_from(loader: Iterable, start: int) -> Iterator:
    """Iterate ``loader`` from batch ``start`` (loaders with ``iter_from`` skip without computing)."""
    if start and hasattr(loader, "iter_from"):
        return iter(loader.iter_from(start))
    it = iter(loader)
    for _ in range(start):
        next(it)
    return it


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device | None = None,
             precision: str = "auto", channels_last: bool = False, max_batches: int | None = None) -> EvalResult:
    """Loss and top-1/top-5 accuracy (percent) of ``model`` over ``loader`` (summed over DDP ranks)."""
    device = device or model_device(model)
    precision = resolve_precision(precision, device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct1, correct5, n
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, precision):
                out = model(x)
            out = out.float()
            k = min(5, out.shape[1])
            top = out.topk(k, dim=1).indices
            hit = top.eq(y[:, None])
            sums += torch.stack([F.cross_entropy(out, y, reduction="sum").double(),
                                 hit[:, :1].sum().double(), hit.sum().double(),
                                 torch.full((), float(y.numel()), device=device, dtype=torch.float64)])
    finally:
        model.train(was_training)
    dist_utils.all_reduce_sum(sums)
    loss, c1, c5, n = sums.tolist()
    if n == 0:
        raise ConfigError("evaluation loader yielded no samples")
    return EvalResult(loss / n, 100 * c1 / n, 100 * c5 / n, int(n))


class _StopFlag:
    """Sets itself on SIGTERM/SIGINT while installed (main thread only); restores the old handlers."""

    def __init__(self):
        self.raised = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.raised and signum == signal.SIGINT:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.raised = True
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """Train ``model`` on ``train_loader`` with ``config``; ``fit()`` returns the per-epoch history.

    Loaders yield ``(x, y)`` batches; loaders with ``set_epoch(e)`` (prunekit's TensorLoader) get a
    deterministic order and augmentation per epoch, which makes resume exact. ``meta`` (JSON-able) is stored
    in each checkpoint, e.g. the model and data spec so ``prunekit eval`` can rebuild the run.

    ``optimizer_factory(params)`` builds the optimizer over the trainable parameters (a list of
    ``nn.Parameter``; close over the model for named groups) instead of the default SGD from ``config``. The
    schedule still sets every param group's lr each step to ``config.lr * lr_factor * group.get("lr_scale",
    1)``. ``loss_fn(outputs, targets)`` replaces the default ``cross_entropy(outputs.float(), targets,
    label_smoothing=config.label_smoothing)``; it runs under autocast and gets the model's raw output. Train
    accuracy is counted from ``outputs`` (or its first element when it is a tuple/list) when the targets are
    class indices.

    Launched by torchrun, the Trainer trains with DDP across the process group (each rank on its own shard of
    the data). Built inside ``with prunekit.train.distributed.local():`` it trains in this process alone — no
    DDP, no reduction of metrics, evaluation or stop requests with the other ranks, its own checkpoint — so
    every rank can train a different model at the same time (NetAdapt's proposals).
    """

    def __init__(self, model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *,
                 config: TrainConfig | None = None, callbacks: Iterable[Callback] = (),
                 device: str | torch.device | None = None, meta: dict[str, Any] | None = None,
                 optimizer_factory: OptimizerFactory | None = None, loss_fn: LossFn | None = None):
        self.config = config or TrainConfig()
        self.config.validate()
        self.device = torch.device(device) if device is not None else model_device(model)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.dist = dist_utils.current()
        self.model = model.to(self.device)
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.callbacks = CallbackList(callbacks)
        self.meta = dict(meta or {})
        self.optimizer: torch.optim.Optimizer | None = None
        self.optimizer_factory = optimizer_factory
        self.loss_fn = loss_fn
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.epoch = 0            # epochs completed
        self.step_in_epoch = 0    # batches done in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self._sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, correct, n (this epoch)
        self._epoch_time = 0.0
        self._ddp: nn.Module | None = None
        self.loss: torch.Tensor | None = None  # the last step's loss (callbacks may read it)
        self.batch: tuple[Any, Any] | None = None  # this step's (x, y) on the device, during the step
        self.outputs: Any = None  # this step's model output, from the forward pass to on_step_end

    # ---------------------------------------------------------------- public
    @property
    def steps_per_epoch(self) -> int:
        n = len(self.train_loader)  # type: ignore[arg-type]
        return min(n, self.config.steps_per_epoch) if self.config.steps_per_epoch else n

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run: ``epochs × steps_per_epoch``, or ``max_steps`` if fewer."""
        n = self.config.epochs * self.steps_per_epoch
        return min(n, self.config.max_steps) if self.config.max_steps else n

    @property
    def checkpoint_path(self) -> Path | None:
        d = self.config.checkpoint_dir
        return d / CHECKPOINT_NAME if d is not None else None

    def lr_at(self, epoch_float: float) -> float:
        return self.config.lr * lr_factor(self.config, epoch_float)

    def rebuild_optimizer(self) -> None:
        """(Re)create the optimizer over the parameters that require grad — call after changing the model's
        parameters. SGD from the config unless the Trainer was given an ``optimizer_factory``."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("no trainable parameters: every parameter has requires_grad=False")
        c = self.config
        if self.optimizer_factory is None:
            self.optimizer = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                             weight_decay=c.weight_decay)
        else:
            opt = self.optimizer_factory(params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise ConfigError(f"optimizer_factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
            self.optimizer = opt
        self._wrap_ddp()

    def step_generator(self, stream: int | str = 0, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh ``torch.Generator`` seeded from ``(config.seed, global_step, stream)`` alone.

        Called during a step (``on_step_start``, ``extra_loss``...) it gives the same draws on every DDP rank
        (the rank is not part of the seed, unlike the global RNG, which ``fit`` seeds with ``seed + rank``)
        and again after a resume. Its draws do not touch the global RNG. Use distinct ``stream`` values for
        independent draws within one step; ``device`` is where the generator samples.
        """
        return torch.Generator(device=device).manual_seed(
            step_seed(self.config.seed, self.global_step, stream))

    def evaluate(self, loader: Iterable) -> EvalResult:
        with self._scope():
            return evaluate(self.model, loader, device=self.device, precision=self.precision,
                            channels_last=self.config.channels_last)

    def fit(self) -> FitResult:
        """Train for ``config.epochs`` (continuing from the checkpoint when ``config.resume``)."""
        with self._scope():
            return self._fit()

    def _scope(self):
        """A Trainer built alone (not distributed, or inside ``distributed.local()``) stays alone."""
        return contextlib.nullcontext() if self.dist.enabled else dist_utils.local()

    def _fit(self) -> FitResult:
        c = self.config
        seed_everything(c.seed + self.dist.rank)
        self.callbacks.on_fit_start(self)
        self.rebuild_optimizer()
        if c.resume:
            self._try_resume()
        tb = None
        if c.tensorboard and self.dist.is_main and c.checkpoint_dir is not None:
            tb = TensorBoardLog(c.checkpoint_dir / "tb", purge_step=self.epoch)
        elif c.tensorboard and c.checkpoint_dir is None:
            raise ConfigError("tensorboard=True needs checkpoint_dir (the logs are written there)")
        bar = TrainProgress(c.progress and self.dist.is_main, self.total_steps,
                            self.global_step, lines=self.dist.is_main)
        if self.global_step:
            bar.log(f"resumed from {self.checkpoint_path}: epoch {self.epoch + 1}/{c.epochs}, step "
                    f"{self.step_in_epoch}/{self.steps_per_epoch} ({self.global_step} steps done)")
        try:
            with _StopFlag() as stop:
                while self.epoch < c.epochs and self.global_step < self.total_steps:
                    self._train_epoch(stop, bar)
                    row = self._end_epoch()
                    bar.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in row.items()))
                    if tb is not None:
                        tb.log(row, self.epoch)
        finally:
            bar.close()
            if tb is not None:
                tb.close()
        self.callbacks.on_fit_end(self)
        return FitResult(list(self.history))

    # ---------------------------------------------------------------- loop
    def _wrap_ddp(self) -> None:
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DDP(self.model, device_ids=ids)
        else:
            self._ddp = None

    def _train_epoch(self, stop: _StopFlag, bar: TrainProgress) -> None:
        c = self.config
        model = self._ddp or self.model
        model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(self.epoch)
        if self.step_in_epoch == 0:
            self._sums.zero_()
            self._epoch_time = 0.0
            self.callbacks.on_epoch_start(self, self.epoch)
        n_steps = self.steps_per_epoch
        last_step = self.step_in_epoch + self.total_steps - self.global_step  # max_steps may end this epoch early
        t0 = time.perf_counter()
        batches = _batches_from(self.train_loader, self.step_in_epoch)
        while self.step_in_epoch < min(n_steps, last_step):
            x, y = next(batches)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if c.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            self.batch = (x, y)
            self.callbacks.on_step_start(self, self.batch)
            x, y = self.batch  # a callback may replace the batch
            self._step(model, x, y, self.step_in_epoch / n_steps)
            self.step_in_epoch += 1
            self.global_step += 1
            self.callbacks.on_step_end(self)
            self.batch = self.outputs = None  # release this step's tensors
            if self._should_stop(stop):
                self._epoch_time += time.perf_counter() - t0
                self.save_checkpoint()
                raise TrainingInterrupted(self.checkpoint_path, stop.signum)
            if bar.enabled and (self.step_in_epoch % 10 == 0 or self.step_in_epoch == n_steps):
                loss, correct, n = self._sums.tolist()
                el = self._epoch_time + time.perf_counter() - t0
                bar.update(self.global_step, self.epoch, c.epochs,
                           {"loss": loss / max(n, 1), "acc": 100 * correct / max(n, 1),
                            "lr": self.optimizer.param_groups[0]["lr"], "img/s": n / max(el, 1e-9)})
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._epoch_time += time.perf_counter() - t0

    def _step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, frac: float) -> None:
        c = self.config
        lr = self.lr_at(self.epoch + frac)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        with _autocast(self.device, self.precision):
            out = model(x)
            self.outputs = out
            if self.loss_fn is None:
                loss = F.cross_entropy(out.float(), y, label_smoothing=c.label_smoothing)
            else:
                loss = self.loss_fn(out, y)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
                    raise ConfigError(f"loss_fn(outputs, targets) must return a scalar tensor; got {got}")
            extra = self.callbacks.extra_loss(self)
            total = loss + extra if extra is not None else loss
        # the check reads the loss on the host (a device sync): only every NONFINITE_CHECK_EVERY steps
        if self.global_step % NONFINITE_CHECK_EVERY == 0 and not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(f"loss is {loss.item()} at epoch {self.epoch} step {self.step_in_epoch}: "
                                     "lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        self.callbacks.on_after_backward(self)
        if c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.loss = loss.detach()
        with torch.no_grad():
            # no host->device copy here (torch.tensor(..., device=cuda) would wait for the GPU every step)
            self._sums += torch.stack([self.loss.double() * y.numel(), self._correct(out, y),
                                       torch.full((), float(y.numel()), dtype=torch.float64, device=self.device)])

    def _correct(self, out: Any, y: torch.Tensor) -> torch.Tensor:
        """Top-1 hits in this batch (float64, on the device); 0 when the targets are not class indices."""
        logits = out[0] if isinstance(out, (tuple, list)) else out
        if (self.loss_fn is None or (isinstance(logits, torch.Tensor) and logits.dim() == 2 and y.dim() == 1
                                     and not y.is_floating_point() and len(logits) == len(y))):
            return logits.argmax(1).eq(y).sum().double()
        return torch.zeros((), dtype=torch.float64, device=self.device)

    def _should_stop(self, stop: _StopFlag) -> bool:
        if not self.dist.enabled:
            return stop.raised
        if self.global_step % 20:  # agree across ranks every 20 steps (one tiny all-reduce)
            return False
        flag = torch.tensor([float(stop.raised)], device=self.device)
        return bool(dist_utils.all_reduce_sum(flag).item() > 0)

    def _end_epoch(self) -> dict[str, Any]:
        sums = dist_utils.all_reduce_sum(self._sums.clone())
        loss, correct, n = sums.tolist()
        row: dict[str, Any] = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                               "train_loss": loss / max(n, 1), "train_top1": 100 * correct / max(n, 1),
                               "epoch_seconds": self._epoch_time,
                               "img_per_s": n / max(self._epoch_time, 1e-9)}
        last = self.epoch + 1 == self.config.epochs or self.global_step >= self.total_steps
        if self.val_loader is not None and ((self.epoch + 1) % self.config.eval_every == 0 or last):
            row.update(self.evaluate(self.val_loader).as_dict("val_"))
        self.callbacks.on_epoch_end(self, self.epoch, row)
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self.save_checkpoint()
        return row

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, optimizer, schedule position, RNG, callbacks."""
        return {
            "format": FORMAT,
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "optimizer_class": type(self.optimizer).__name__ if self.optimizer else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "schedule": {"global_step": self.global_step, "epoch_float":
                         self.epoch + self.step_in_epoch / max(self.steps_per_epoch, 1)},
            "epoch_sums": self._sums.cpu(), "epoch_time": self._epoch_time,
            "rng": rng_state(), "callbacks": self.callbacks.state_dict(),
            "history": self.history, "config": self.config.to_dict(), "meta": self.meta,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint_dir/last.ckpt`` atomically (rank 0 only) and the CSV log; returns the path."""
        path = self.checkpoint_path
        if path is None:
            return None
        if self.dist.is_main:
            atomic_torch_save(self.state_dict(), path)
            write_csv(self.history, path.parent / "metrics.csv")
        dist_utils.barrier()
        return path

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint does not fit this model: {str(e).splitlines()[0][:300]} "
                                  "(was it written for another architecture or a pruned variant?)") from None
        saved_opt = ckpt.get("optimizer_class")
        if saved_opt is not None and self.optimizer is not None and saved_opt != type(self.optimizer).__name__:
            raise CheckpointError(f"checkpoint was written with optimizer {saved_opt}; this Trainer builds "
                                  f"{type(self.optimizer).__name__} (pass the same optimizer_factory to resume)")
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self._sums = ckpt["epoch_sums"].to(self.device)
        self._epoch_time = float(ckpt.get("epoch_time", 0.0))
        self.history = list(ckpt["history"])
        self.callbacks.load_state_dict(ckpt.get("callbacks", {}))
        set_rng_state(ckpt["rng"])

    def _try_resume(self) -> None:
        path = self.checkpoint_path
        if path is None:
            raise ConfigError("resume=True needs checkpoint_dir")
        if not path.exists():
            return  # nothing to resume: a fresh start
        ckpt = load_checkpoint(path, map_location=self.device)
        saved = ckpt.get("config", {})
        for key in ("epochs", "lr", "schedule", "seed"):
            if key in saved and saved[key] != getattr(self.config, key):
                raise CheckpointError(f"{path}: cannot resume with {key}={getattr(self.config, key)!r}; "
                                      f"the checkpoint was written with {key}={saved[key]!r}")
        self.load_state_dict(ckpt)
