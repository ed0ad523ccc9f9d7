"""Learning-rate schedules as pure functions of progress, so resuming needs only the step counter."""

from __future__ import annotations

import math

from prunekit.train.config import TrainConfig


def lr_factor(config: TrainConfig, epoch_float: float) -> float:
    """Multiplier of ``config.lr`` at ``epoch_float`` (epochs done, fractional) — warm-up included.

    step: ×gamma at each milestone epoch. cosine: half cosine from 1 to ``min_lr``. onecycle: linear
    warm-up (``warmup_epochs``, default 15% of the run) then cosine to ``min_lr``. triangular: linear
    ``min_lr`` → 1 over the first half, back to ``min_lr`` over the second (Gate Decorator's tock).
    """
    E = config.epochs
    t = min(max(epoch_float, 0.0), E)
    warm = config.warmup_epochs
    if config.schedule == "onecycle" and warm == 0:
        warm = 0.15 * E
    floor = config.min_lr
    if config.schedule == "constant":
        f = 1.0
    elif config.schedule == "step":
        ms = config.milestones if config.milestones is not None else (0.5 * E, 0.75 * E)  # fractions: E=1 works
        f = config.gamma ** sum(t >= m for m in ms)
    elif config.schedule in ("cosine", "onecycle"):
        start = warm if config.schedule == "onecycle" else 0.0
        p = 0.0 if E <= start else max(0.0, (t - start) / (E - start))
        f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    elif config.schedule == "triangular":
        p = t / E
        f = floor + (1 - floor) * (1 - abs(2 * p - 1))
    else:  # validated in TrainConfig
        raise AssertionError(config.schedule)
    if warm > 0 and t < warm:
        start_f = config.warmup_start if config.schedule != "onecycle" else max(floor, config.warmup_start)
        w = start_f + (1 - start_f) * t / warm
        f = w if config.schedule == "onecycle" else f * w
    return f
