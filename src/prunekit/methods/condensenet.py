"""CondenseNet (Huang, Liu, van der Maaten, Weinberger, CVPR 2018): learned group convolution, condensed during
training, converted to standard group convolutions for inference.

- **Learned group convolution** (:class:`~prunekit.models.layers_lgc.LearnedGroupConv`): a 1x1 conv whose
  filters form G groups (filter o in group ``o mod G``, as upstream) and whose weight is multiplied by a mask.
- **Condensation** (:class:`Condensation`, a Trainer callback): ``C - 1`` condensing stages in the first
  ``condense_end`` (upstream: half) of training — stage ``i`` starts when the fraction of training steps done
  reaches ``condense_end * i / (C - 1)``: 1/6, 1/3, 1/2 for C = 4 — each removing, per group, the ``in / C``
  input channels with the smallest L1 norm over that group's weights; the rest of training optimises the
  condensed network. Progress is ``global_step / (epochs * steps_per_epoch)`` and the stage reached is in the
  model's state dict, so the schedule follows any epoch count and a resumed run condenses exactly as an
  uninterrupted one. Optional **group lasso** (``group_lasso`` λ: 0 on CIFAR, 1e-5 on ImageNet upstream).
- **Conversion** (:func:`convert`): every learned group conv becomes index-select → BN → ReLU → grouped 1x1
  conv → channel shuffle (:class:`~prunekit.models.layers_lgc.CondensedConv`), computing the same function;
  optionally (upstream does it, ``prune_classifier``) every Linear keeps only the half of its inputs with the
  largest weight-column L1 norm, without retraining — its accuracy change is reported.

The report's *baseline* is the trained network in its training form (dense masked 1x1 convs), the *pruned*
model its converted inference form: MACs, params, latency and accuracy of both. The conversion itself is exact
(``details.conversion.max_abs_diff``), so the two forms' accuracies differ only by the classifier pruning (also
reported on the validation split, when there is one, as ``val_top1_classifier_full/_pruned``).

``learned_1x1`` applies learned group convolution to a DenseNet-style model of your own
(:func:`use_learned_group_convs`: its pre-activation 1x1 convs become uncondensed learned group convs carrying
the same weights), which then condenses while it trains and is converted the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, check_range
from prunekit.io import register_module_spec
from prunekit.io.specs import attrs
from prunekit.methods.base import Method, MethodRun, register_method
from prunekit.models.layers_lgc import ChannelShuffle, CondensedConv, CondensedLinear, LearnedGroupConv
from prunekit.train import Callback, TrainConfig

# models/ sits below io/ in the package's layers: the layer types register their file specs here, under this
# module's name (the loader imports it to rebuild them).
for _cls, _spec in ((LearnedGroupConv, attrs("in_channels", "out_channels", "groups", "condense_factor", "dropout")),
                    (CondensedConv, attrs("in_channels", "out_channels", "groups", "in_per_group")),
                    (CondensedLinear, lambda m: {"in_features": m.in_features, "out_features": m.out_features,
                                                 "kept_features": m.kept_features,
                                                 "bias": m.linear.bias is not None}),
                    (ChannelShuffle, attrs("groups"))):
    register_module_spec(_cls, _spec, name=f"{__name__}.{_cls.__name__}")


def learned_group_convs(model: nn.Module) -> list[tuple[str, LearnedGroupConv]]:
    """Every :class:`LearnedGroupConv` of ``model`` with its qualified name, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LearnedGroupConv)]


def stage_at(progress: float | Fraction, condense_factor: int, condense_end: float = 0.5) -> int:
    """The condensing stages done at ``progress`` (fraction of training steps done): the first ``i`` in
    ``0..C-2`` with ``progress < condense_end * (i + 1) / (C - 1)``, else ``C - 1`` (upstream ``_check_drop``).
    Compared in exact rationals (pass ``Fraction(step, total)``), so a stage starts exactly at its step."""
    last = condense_factor - 1
    p, end = Fraction(progress), Fraction(condense_end)
    for i in range(last):
        if p < end * (i + 1) / last:
            return i
    return last


def condense(model: nn.Module, progress: float | Fraction, condense_end: float = 0.5) -> list[str]:
    """Bring every learned group conv of ``model`` to its stage at ``progress``; returns the names of the layers
    that condensed now."""
    changed = []
    for name, m in learned_group_convs(model):
        if m.condense_to(stage_at(progress, m.condense_factor, condense_end)):
            changed.append(name)
    return changed


def kept_fraction(model: nn.Module) -> float:
    """Fraction of all learned-group-conv weights still connected."""
    layers = [m for _, m in learned_group_convs(model)]
    total = sum(m.conv.weight.numel() for m in layers)
    return sum(m.kept_fraction() * m.conv.weight.numel() for m in layers) / total if total else 1.0


def group_lasso(model: nn.Module) -> torch.Tensor:
    """``Σ`` over the learned group convs of their group-lasso term (0 for condensed ones)."""
    terms = [m.lasso() for _, m in learned_group_convs(model)]
    if not terms:
        raise ConfigError("the model has no LearnedGroupConv layer")
    return sum(terms[1:], terms[0])


class Condensation(Callback):
    """Runs the condensing stages at their fraction of training (see the module docstring), before the forward
    pass of the first step past each threshold, and keeps the removed weights at zero (their gradients, and at a
    stage their optimizer state, are masked). ``events``: one entry per stage reached (step, epoch, stage, kept
    fraction of the learned connections); it survives a resume."""

    def __init__(self, condense_end: float = 0.5):
        check_range("condense_end", condense_end, 0, 1, low_open=True)
        self.condense_end = condense_end
        self.events: list[dict[str, Any]] = []

    def on_fit_start(self, trainer) -> None:
        self._layers = learned_group_convs(trainer.model)
        if not self._layers:
            raise ConfigError("Condensation: the model has no LearnedGroupConv layer")
        for _, m in self._layers:
            m.apply_mask()
        self._stages: list[int] | None = None  # the stage each layer was last brought to (no device syncs)

    def on_step_start(self, trainer, batch) -> None:
        progress = Fraction(trainer.global_step, trainer.config.epochs * trainer.steps_per_epoch)
        targets = [stage_at(progress, m.condense_factor, self.condense_end) for _, m in self._layers]
        if targets == self._stages:
            return
        changed = [(n, m) for (n, m), t in zip(self._layers, targets) if m.condense_to(t)]
        self._stages = targets
        if not changed:
            return
        with torch.no_grad():
            for _, m in changed:
                for v in trainer.optimizer.state.get(m.conv.weight, {}).values():
                    if isinstance(v, torch.Tensor) and v.shape == m.mask.shape:
                        v.mul_(m.mask)  # momentum / Adam moments of the removed weights
        self.events.append({"step": trainer.global_step, "progress": float(progress),
                            "epoch": trainer.global_step / trainer.steps_per_epoch, "stage": max(targets),
                            "kept": kept_fraction(trainer.model)})

    def on_after_backward(self, trainer) -> None:
        with torch.no_grad():
            for _, m in self._layers:
                if m.conv.weight.grad is not None:
                    m.conv.weight.grad.mul_(m.mask)

    def state_dict(self) -> dict[str, Any]:
        return {"events": list(self.events)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events = list(state.get("events", []))


class GroupLasso(Callback):
    """Adds ``strength * group_lasso(model)`` to the loss (upstream ``--group-lasso-lambda``)."""

    def __init__(self, strength: float):
        check_range("strength", strength, 0)
        self.strength = strength

    def extra_loss(self, trainer) -> torch.Tensor | None:
        return self.strength * group_lasso(trainer.model) if self.strength else None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


@torch.no_grad()
def convert(model: nn.Module, *, prune_classifier: bool = False, classifier_keep: float = 0.5) -> nn.Module:
    """The inference form of ``model``, in place (returned): every :class:`LearnedGroupConv` becomes a
    :class:`CondensedConv` (same function; layers not fully condensed keep their current connections) and, with
    ``prune_classifier``, every ``nn.Linear`` a :class:`CondensedLinear` keeping the ``classifier_keep`` fraction
    of its inputs with the largest weight-column L1 norm (upstream: 0.5; changes the function)."""
    layers = learned_group_convs(model)
    if isinstance(model, LearnedGroupConv):
        return model.condensed()
    for name, m in layers:
        _replace(model, name, m.condensed())
    if prune_classifier:
        for name, m in [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]:
            if not name:
                return CondensedLinear.from_linear(m, classifier_keep)
            _replace(model, name, CondensedLinear.from_linear(m, classifier_keep))
    return model


def _pre_activation_1x1(module: nn.Module) -> list[tuple[str, str, str]]:
    """``(bn, relu, conv)`` child names of ``module`` registered consecutively as BatchNorm2d, ReLU and a 1x1
    stride-1 bias-free dense Conv2d reading the BN's channels (DenseNet bottlenecks and transitions)."""
    kids = list(module.named_children())
    out = []
    for (a, bn), (b, relu), (c, conv) in zip(kids, kids[1:], kids[2:]):
        if (type(bn) is nn.BatchNorm2d and type(relu) is nn.ReLU and type(conv) is nn.Conv2d
                and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
                and conv.bias is None and conv.in_channels == bn.num_features and bn.affine
                and bn.track_running_stats):
            out.append((a, b, c))
    return out


@torch.no_grad()
def use_learned_group_convs(model: nn.Module, example_inputs: torch.Tensor, *, groups: int = 4,
                            condense_factor: int | None = None) -> list[str]:
    """Replace, in place, every pre-activation 1x1 convolution of ``model`` — BatchNorm2d, ReLU, Conv2d 1x1
    registered one after the other (DenseNet-BC bottlenecks and transitions: ``densenet40``'s transitions,
    torchvision DenseNet's ``norm1/relu1/conv1`` and transitions) — by a :class:`LearnedGroupConv` carrying the
    same BN and weights (the BN and ReLU slots become ``Identity``): the same function, uncondensed. Layers whose
    widths are not multiples of ``groups``/``condense_factor`` are left alone. The outputs on ``example_inputs``
    are checked (the model is restored and ConfigError raised if they change). Returns the new layers' names."""
    c = groups if condense_factor is None else condense_factor
    was = model.training
    model.eval()
    before = model(example_inputs)
    undo: list[tuple[nn.Module, str, nn.Module]] = []
    names = []
    for parent_name, parent in list(model.named_modules()):
        for a, b, k in _pre_activation_1x1(parent):
            bn, conv = getattr(parent, a), getattr(parent, k)
            if conv.in_channels % groups or conv.in_channels % c or conv.out_channels % groups:
                continue
            lgc = LearnedGroupConv(conv.in_channels, conv.out_channels, groups, c).to(conv.weight.device)
            lgc.norm.load_state_dict(bn.state_dict())
            lgc.norm.eps, lgc.norm.momentum = bn.eps, bn.momentum
            lgc.conv.weight.copy_(conv.weight)
            lgc.train(bn.training)
            for name, new in ((a, nn.Identity()), (b, nn.Identity()), (k, lgc)):
                undo.append((parent, name, getattr(parent, name)))
                setattr(parent, name, new)
            names.append(f"{parent_name}.{k}" if parent_name else k)
    after = model(example_inputs)
    if not torch.allclose(after, before, rtol=1e-4, atol=1e-5):
        for parent, name, old in reversed(undo):
            setattr(parent, name, old)
        model.train(was)
        raise ConfigError("replacing the pre-activation 1x1 convs by learned group convs changed the model's output "
                          "(its forward does not run BN -> ReLU -> conv in registration order); model restored")
    model.train(was)
    return names


@dataclass
class CondenseNetConfig:
    """CondenseNet hyper-parameters (the model's learned group convs carry G and C).

    ``group_lasso``: λ of the group-lasso term (upstream 0 on CIFAR, 1e-5 on ImageNet). ``condense_end``:
    fraction of training by which all C - 1 condensing stages have run (upstream 0.5). ``prune_classifier``:
    after conversion keep only ``classifier_keep`` of each Linear's inputs (largest column L1 norm, no
    retraining; upstream does it with 0.5). ``classifier_keep``: fraction of the classifier's inputs kept.
    ``learned_1x1``: first replace the model's pre-activation 1x1 convs (BN -> ReLU -> Conv2d 1x1: DenseNet
    bottlenecks/transitions of your own model) by learned group convs, then condense while training (fine-tune
    a trained model: give it a shorter ``train`` schedule). ``groups``: G of those new layers.
    ``condense_factor``: their C (default G). ``train``: the training schedule with condensation (upstream
    CIFAR: 300 epochs, batch 64, lr 0.1 cosine per
    step, nesterov, wd 1e-4; None: the model is trained and condensed already, only convert).
    """

    group_lasso: float = 0.0
    condense_end: float = 0.5
    prune_classifier: bool = False
    classifier_keep: float = 0.5
    learned_1x1: bool = False
    groups: int = 4
    condense_factor: int | None = None
    train: TrainConfig | None = field(default_factory=lambda: TrainConfig(
        epochs=300, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine"))

    def __post_init__(self) -> None:
        check_range("group_lasso", self.group_lasso, 0)
        check_range("condense_end", self.condense_end, 0, 1, low_open=True)
        check_range("classifier_keep", self.classifier_keep, 0, 1, low_open=True)
        if not isinstance(self.groups, int) or self.groups < 1:
            raise ConfigError(f"groups={self.groups!r} must be an integer >= 1")
        if self.condense_factor is not None and (not isinstance(self.condense_factor, int) or self.condense_factor < 1):
            raise ConfigError(f"condense_factor={self.condense_factor!r} must be an integer >= 1")


@register_method("condensenet", config=CondenseNetConfig, title="CondenseNet")
class CondenseNetMethod(Method):
    """``CondenseNetMethod(config).run(model, data, output_dir)`` → PruneResult: train with condensation, convert
    (see the module docstring). ``model`` must contain learned group convs (``condensenet86`` etc.)."""

    def check(self, run: MethodRun, model: nn.Module) -> None:
        if not learned_group_convs(model) and not self.config.learned_1x1:
            raise ConfigError("the model has no LearnedGroupConv layer: CondenseNet condenses learned group "
                              "convolutions (use a condensenet zoo model, e.g. --model condensenet86, or "
                              "learned_1x1=true to convert the pre-activation 1x1 convs of a DenseNet-style model)")

    def execute(self, run: MethodRun, model: nn.Module) -> nn.Module:
        c = self.config
        if c.learned_1x1:
            model = run.transform("learned-1x1", model, lambda m: self.replace_step(run, m), kind="replace",
                                  settings={"groups": c.groups, "condense_factor": c.condense_factor})
        if c.train is not None:
            cond = Condensation(c.condense_end)
            cbs: list[Callback] = [cond] + ([GroupLasso(c.group_lasso)] if c.group_lasso > 0 else [])
            model = run.train("condense", model, c.train, cbs,
                              settings={"group_lasso": c.group_lasso, "condense_end": c.condense_end},
                              after=lambda m, t: {"condensation": list(cond.events), "kept": kept_fraction(m)})
            run.details["condensation"] = run.last_metrics().get("condensation", [])
        not_done = [n for n, m in learned_group_convs(model) if int(m.stage) < m.final_stage]
        if not_done:
            run.log(f"warning: {len(not_done)} learned group conv(s) are not fully condensed (e.g. {not_done[0]}); "
                    "they are converted with their current connections")
        run.details["kept_per_layer"] = {n: m.kept_fraction() for n, m in learned_group_convs(model)}
        run.set_baseline(model)
        model = run.transform("convert", model, lambda m: self.convert_step(run, m), kind="convert",
                              settings={"prune_classifier": c.prune_classifier,
                                        "classifier_keep": c.classifier_keep})
        run.details["conversion"] = run.last_metrics()
        events = run.details.get("condensation") or []
        if events:
            run.plot_trajectory("condensation.png", [0.0] + [e["epoch"] for e in events],
                                {"kept connections": [1.0] + [e["kept"] for e in events]},
                                title="CondenseNet: learned 1x1 connections kept", xlabel="epoch",
                                ylabel="fraction kept")
        return model

    def replace_step(self, run: MethodRun, model: nn.Module) -> dict[str, Any]:
        """Pre-activation 1x1 convs → learned group convs, in place; metrics: the layers replaced."""
        names = use_learned_group_convs(model, run.x.to(next(model.parameters()).device), groups=self.config.groups,
                                        condense_factor=self.config.condense_factor)
        if not names:
            raise ConfigError("learned_1x1: the model has no pre-activation 1x1 conv (BN -> ReLU -> Conv2d 1x1) whose "
                              f"widths are multiples of groups={self.config.groups}")
        run.log(f"learned_1x1: {len(names)} pre-activation 1x1 convs are now learned group convs")
        return {"replaced": names}

    def convert_step(self, run: MethodRun, model: nn.Module) -> dict[str, Any]:
        """Convert in place; metrics: the output difference to the training form, accuracy with and without the
        classifier pruning."""
        c = self.config
        model.eval()
        x = run.x.to(next(model.parameters()).device)
        with torch.no_grad():
            before = model(x)
        convert(model)
        with torch.no_grad():
            diff = float((model(x) - before).abs().max())
        metrics: dict[str, Any] = {"max_abs_diff": diff}
        if c.prune_classifier:
            top1 = run.evaluate(model, "val")
            convert(model, prune_classifier=True, classifier_keep=c.classifier_keep)
            metrics["val_top1_classifier_full"] = top1
            metrics["val_top1_classifier_pruned"] = run.evaluate(model, "val")
        return metrics


__all__ = ["CondenseNetConfig", "CondenseNetMethod", "Condensation", "GroupLasso", "condense", "convert",
           "group_lasso", "kept_fraction", "learned_group_convs", "stage_at",
           "use_learned_group_convs", "LearnedGroupConv", "CondensedConv",
           "CondensedLinear", "ChannelShuffle"]
