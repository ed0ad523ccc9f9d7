"""Callbacks: how methods plug into the shared Trainer without copying its loop.

Hooks, in the order the Trainer calls them::

    on_fit_start(trainer)                 freeze parameters, convert layers (before the optimizer is built)
    on_epoch_start(trainer, epoch)
      on_step_start(trainer, batch)       before the forward pass: per-step model changes (MetaPruning samples
                                          an architecture here, from ``trainer.step_generator()``); may
                                          replace ``trainer.batch``
      extra_loss(trainer) -> Tensor|None  loss terms with autograd (group lasso, L1 on gates); may read
                                          ``trainer.batch`` and ``trainer.outputs`` (this step's model output)
      on_after_backward(trainer)          gradient edits (Network Slimming's L1 subgradient on BN gamma)
      on_step_end(trainer)                per-step actions (accumulating Taylor scores)
    on_epoch_end(trainer, epoch, metrics) per-epoch actions (condensation stages, pruning); call
                                          ``trainer.rebuild_optimizer()`` after changing the model
    on_fit_end(trainer)

During a step ``trainer.batch`` is its ``(x, y)`` (on the device) and ``trainer.global_step`` its 0-based index;
``trainer.outputs`` is set after the forward pass, ``trainer.loss`` after the optimizer step; all three stay
readable in ``on_step_end`` and are cleared after it.

A callback with state that must survive a resume implements ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from prunekit.train.trainer import Trainer


class Callback:
    """Base class: every hook is a no-op."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_step_start(self, trainer: "Trainer", batch: tuple[Any, Any]) -> None: ...
    def extra_loss(self, trainer: "Trainer") -> torch.Tensor | None: return None
    def on_after_backward(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None: ...
    def on_fit_end(self, trainer: "Trainer") -> None: ...
    def state_dict(self) -> dict[str, Any]: return {}
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


ParamSelector = Callable[[nn.Module], Iterable[torch.Tensor]]


def bn_weights(model: nn.Module) -> list[torch.Tensor]:
    """The scale γ of every affine BatchNorm in ``model`` (Network Slimming's sparsity target)."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]


class L1Subgradient(Callback):
    """Add ``strength * sign(p)`` to the gradient of every selected parameter (L1 penalty by subgradient).

    With ``select=bn_weights`` and strength 1e-4 (VGG) / 1e-5 (ResNet) this is Network Slimming's
    sparsity training. Applied after backward, before the optimizer step.
    """

    def __init__(self, strength: float, select: ParamSelector = bn_weights):
        from prunekit.errors import check_range

        check_range("strength", strength, 0)
        self.strength = strength
        self.select = select

    def on_after_backward(self, trainer: "Trainer") -> None:
        with torch.no_grad():
            for p in self.select(trainer.model):
                if p.grad is not None:
                    p.grad.add_(torch.sign(p), alpha=self.strength)


class TrainOnly(Callback):
    """Train only the parameters whose qualified name satisfies ``predicate``; freeze the rest.

    The optimizer is built after ``on_fit_start``, so frozen parameters never enter it. Frozen
    parameters are unfrozen at the end of the fit.
    """

    def __init__(self, predicate: Callable[[str, nn.Parameter], bool]):
        self.predicate = predicate
        self._frozen: list[nn.Parameter] = []

    def on_fit_start(self, trainer: "Trainer") -> None:
        self._frozen = []
        for name, p in trainer.model.named_parameters():
            if p.requires_grad and not self.predicate(name, p):
                p.requires_grad_(False)
                self._frozen.append(p)

    def on_fit_end(self, trainer: "Trainer") -> None:
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []


class LossTerm(Callback):
    """Add ``fn(model)`` (a scalar tensor) to the training loss: e.g. group lasso, L1 on gates."""

    def __init__(self, fn: Callable[[nn.Module], torch.Tensor]):
        self.fn = fn

    def extra_loss(self, trainer: "Trainer") -> torch.Tensor | None:
        return self.fn(trainer.model)


class EpochEnd(Callback):
    """Run ``fn(trainer, epoch, metrics)`` after every epoch (evaluation included)."""

    def __init__(self, fn: Callable[["Trainer", int, dict[str, float]], None]):
        self.fn = fn

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        self.fn(trainer, epoch, metrics)


class CallbackList(Callback):
    """Fans every hook out to its callbacks, in order; loss terms are summed."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks = list(callbacks)

    def on_fit_start(self, trainer):
        for c in self.callbacks:
            c.on_fit_start(trainer)

    def on_epoch_start(self, trainer, epoch):
        for c in self.callbacks:
            c.on_epoch_start(trainer, epoch)

    def on_step_start(self, trainer, batch):
        for c in self.callbacks:
            c.on_step_start(trainer, batch)

    def extra_loss(self, trainer):
        terms = [t for t in (c.extra_loss(trainer) for c in self.callbacks) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def on_after_backward(self, trainer):
        for c in self.callbacks:
            c.on_after_backward(trainer)

    def on_step_end(self, trainer):
        for c in self.callbacks:
            c.on_step_end(trainer)

    def on_epoch_end(self, trainer, epoch, metrics):
        for c in self.callbacks:
            c.on_epoch_end(trainer, epoch, metrics)

    def on_fit_end(self, trainer):
        for c in self.callbacks:
            c.on_fit_end(trainer)

    def state_dict(self):
        return {str(i): c.state_dict() for i, c in enumerate(self.callbacks)}

    def load_state_dict(self, state):
        for i, c in enumerate(self.callbacks):
            if str(i) in state:
                c.load_state_dict(state[str(i)])
