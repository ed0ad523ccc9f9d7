"""TrainConfig: every hyper-parameter of one training run, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from prunekit.errors import ConfigError, check_range

Schedule = Literal["constant", "step", "cosine", "onecycle", "triangular"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class TrainConfig:
    """Hyper-parameters of a run. Learning rates are per step of SGD; epochs count passes over the train set.

    ``milestones`` are epoch numbers where the ``step`` schedule multiplies the lr by ``gamma``
    (default: 50% and 75% of ``epochs``, the Network Slimming recipe). ``warmup_epochs`` ramps the lr
    linearly from ``lr * warmup_start`` (may be fractional). ``min_lr`` is the floor factor of ``cosine``,
    ``onecycle`` and ``triangular`` (fraction of ``lr``). ``precision="auto"`` = bf16 autocast on CUDA, fp32 on CPU.
    ``max_steps`` stops training after that many optimizer steps in all (None: no limit): the epoch it falls in
    ends there (its row, validation and checkpoint as at any epoch end); the lr schedule is still that of
    ``epochs``, so a run of ``max_steps`` is the prefix of the longer run.
    """

    epochs: int = 160
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: Schedule = "step"
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start: float = 0.1
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    precision: Precision = "auto"
    channels_last: bool = False
    grad_clip: float | None = None
    seed: int = 0
    steps_per_epoch: int | None = None  # cap batches per epoch (quick runs, tests)
    max_steps: int | None = None  # stop after this many optimizer steps in all
    eval_every: int = 1
    checkpoint_dir: Path | None = None
    resume: bool = False
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)
        if self.milestones is not None:
            self.milestones = tuple(int(m) for m in self.milestones)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid hyper-parameter."""
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs!r} must be a positive integer")
        check_range("lr", self.lr, 0, None, low_open=True)
        check_range("momentum", self.momentum, 0, 1, high_open=True)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("gamma", self.gamma, 0, 1, low_open=True)
        check_range("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        check_range("warmup_start", self.warmup_start, 0, 1)
        check_range("min_lr", self.min_lr, 0, 1)
        check_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov=True needs momentum > 0")
        valid_sched = ("constant", "step", "cosine", "onecycle", "triangular")
        if self.schedule not in valid_sched:
            raise ConfigError(f"schedule={self.schedule!r} is not one of {', '.join(valid_sched)}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision={self.precision!r} is not one of auto, fp32, bf16, fp16")
        if self.milestones is not None and any(not 0 < m <= self.epochs for m in self.milestones):
            raise ConfigError(f"milestones={list(self.milestones)} must lie in (0, epochs={self.epochs}]")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch={self.steps_per_epoch} must be >= 1")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise ConfigError(f"max_steps={self.max_steps!r} must be a positive integer")
        if self.grad_clip is not None:
            check_range("grad_clip", self.grad_clip, 0, None, low_open=True)
        if self.eval_every < 1:
            raise ConfigError(f"eval_every={self.eval_every} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint_dir"] = str(self.checkpoint_dir) if self.checkpoint_dir else None
        d["milestones"] = list(self.milestones) if self.milestones is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping (e.g. a YAML recipe); unknown keys raise ConfigError naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)
