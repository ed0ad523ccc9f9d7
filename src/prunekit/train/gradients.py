"""A gradient pass: forward + backward over batches without an optimizer step (scores such as Taylor's)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_pass(model: nn.Module, batches: Iterable, *, on_backward: Callable[[], None],
                  loss_fn: LossFn | None = None, train_mode: bool = False, max_batches: int | None = None) -> int:
    """For each ``(x, y)`` of ``batches`` (at most ``max_batches``): clear gradients, ``loss_fn(model(x), y)``
    (default: mean cross-entropy), backward, then ``on_backward()`` (read the gradients there). Nothing is
    updated; gradients are cleared at the end and the model's mode restored. ``train_mode``: BatchNorm uses
    batch statistics (and updates its running ones). Returns the number of batches."""
    loss_fn = loss_fn or F.cross_entropy
    was = model.training
    model.train(train_mode)
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    n = 0
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            model.zero_grad(set_to_none=True)
            loss_fn(model(x.to(dev)), y.to(dev)).backward()
            on_backward()
            n += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return n
