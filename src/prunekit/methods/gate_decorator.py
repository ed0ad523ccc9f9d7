"""Gate Decorator (You et al., NeurIPS 2019): gated BatchNorm, global Taylor ranking of gates, Tick-Tock.

- **GBN**: every BatchNorm's output is multiplied per channel by a trainable gate φ (:mod:`prunekit.methods.gates`;
  networks without BN get the gate after each convolution). At the end the gates are folded into the BN (γ·φ,
  β·φ) and the model is plain again.
- **Importance**: Θ(φᵢ) = |Σ_data φᵢ·∂L/∂φᵢ|, the first-order estimate of the loss change when the gate is set
  to 0, accumulated over the backward passes of a tick (:class:`TaylorScores`). By default the absolute value
  is taken per batch, as the official code does (``score="official"``; ``"paper"`` is the formula as printed,
  see :class:`GateDecoratorConfig` for why it is not the default). A channel tied to others by residual adds is
  one channel of a ChannelGroup; its score is the sum of the Θ of every gate on it (paper eq. 9), so ResNets are
  pruned in the residual path too (``group_pruning=False`` leaves groups with several gates whole: the official
  code's default, which its ResNet-56 notebook overrides by grouping the residual BNs by hand).
- **Tick**: train only the gates and the final linear layer on (a subset of) the training data, accumulating Θ,
  then remove the lowest-scoring ``prune_per_tick`` of the remaining channels (a fraction, or a count) over the
  whole network, keeping at least ``max(min_channels, ceil(floor_ratio · original width))`` channels per group.
  The last tick removes only as many channels as the target needs.
- **Tock**: after ``ticks_per_round`` ticks, fine-tune the whole network with an L1 penalty λ on φ (triangular
  lr). Rounds repeat until ``target_macs`` / ``target_params`` (fractions of the original network kept) are met;
  then the gates are folded and the network fine-tuned without the penalty.

Every tick, tock, fold and fine-tune is a stage of a :class:`~prunekit.methods.pipeline.Pipeline`
(``round{r}-tick{t}``, ``round{r}-tock``, ``fold``, ``finetune``; ``round0-tock`` is the warm-up tock the
official code runs before the first tick): a killed run resumes where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, PrunekitError, check_range
from prunekit.graph import ChannelGroup, DependencyGraph
from prunekit.importance import Importance, MagnitudeImportance, register_importance
from prunekit.methods.gates import Gate, GatedBatchNorm2d, GatedConv2d, add_gates, find_gates, fold_gates
from prunekit.train import Callback, L1Subgradient, TrainConfig, TrainOnly

ScoreMode = Literal["paper", "official"]


# ----------------------------------------------------------------------------- Taylor scores of the gates
class TaylorScores(Callback):
    """Accumulates ``φ·∂L/∂φ`` of every gate over the backward passes of a fit.

    ``scores()`` → {gate name: Tensor[C]}: ``Σ_batches |φ·g|`` (``mode="official"``, as the official code's
    gradient hook accumulates) or ``|Σ_batches φ·g|`` (``mode="paper"``, eq. 5 of the paper: the first-order loss
    change when the gate is zeroed, summed over the data). Resumes with the Trainer.
    """

    def __init__(self, mode: ScoreMode = "official"):
        if mode not in ("paper", "official"):
            raise ConfigError(f"score mode {mode!r} must be 'paper' or 'official'")
        self.mode = mode
        self.gates: list[Gate] = []
        self.sums: dict[str, torch.Tensor] = {}
        self.batches = 0

    def on_fit_start(self, trainer) -> None:
        self.attach(trainer.model)

    def attach(self, model: nn.Module) -> None:
        """Start accumulating for ``model``'s gates (zeroed)."""
        self.gates = find_gates(model)
        if not self.gates:
            raise ConfigError("TaylorScores: the model has no gates (prunekit.methods.gates.add_gates)")
        self.sums = {g.name: torch.zeros(g.channels, dtype=torch.float64, device=g.param.device)
                     for g in self.gates}
        self.batches = 0

    def on_after_backward(self, trainer=None) -> None:
        with torch.no_grad():
            for g in self.gates:
                if g.param.grad is None:
                    continue
                v = (g.param.detach() * g.param.grad).reshape(-1).double()
                self.sums[g.name] += v.abs() if self.mode == "official" else v
        self.batches += 1

    def scores(self) -> dict[str, torch.Tensor]:
        return {k: v.abs().cpu() for k, v in self.sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "batches": self.batches, "sums": {k: v.cpu() for k, v in self.sums.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.get("sums", {}).items():
            if k in self.sums and self.sums[k].shape == v.shape:
                self.sums[k] = v.to(self.sums[k].device, torch.float64)
        self.batches = int(state.get("batches", 0))


def taylor_scores(model: nn.Module, batches: Iterable, *, mode: ScoreMode = "official", train_mode: bool = False,
                  max_batches: int | None = None,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Θ of every gate of ``model`` over ``batches`` of ``(x, y)`` without updating anything (a standalone use of
    the tick's scoring). ``train_mode``: BN in training mode (batch statistics) — note it updates running stats.
    ``loss_fn`` defaults to mean cross-entropy. Gradients of all parameters are cleared afterwards."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    acc = TaylorScores(mode)
    acc.attach(model)
    was = model.training
    model.train(train_mode)
    dev = acc.gates[0].param.device
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            model.zero_grad(set_to_none=True)
            loss_fn(model(x.to(dev)), y.to(dev)).backward()
            acc.on_after_backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return acc.scores()


def _gate_members(group: ChannelGroup):
    """The members of ``group`` that are gate parameters (of GatedBatchNorm2d / GatedConv2d layers)."""
    return [gm for gm in group.members if gm.member.kind == "param" and gm.member.attr == "gate"
            and isinstance(gm.member.module, (GatedBatchNorm2d, GatedConv2d))]


def group_scores(graph: DependencyGraph, gate_scores: Mapping[str, torch.Tensor], *,
                 group_pruning: bool = True) -> dict[str, torch.Tensor]:
    """Per prunable group, the sum of its gates' Θ over each group channel (paper eq. 9): {group: Tensor[size]}.

    ``gate_scores``: {gate name (the gated block's qualified name): Tensor[C]} (e.g. ``TaylorScores.scores()``).
    Groups without a scored gate are left out (never pruned). ``group_pruning=False`` also leaves out groups
    that carry several gates (channels tied across a residual add), the official code's default.
    """
    by_param = {f"{k}.gate" if k else "gate": v for k, v in gate_scores.items()}
    out: dict[str, torch.Tensor] = {}
    for g in graph.prunable_groups:
        members = [gm for gm in _gate_members(g) if gm.member.name in by_param]
        if not members or (not group_pruning and len(members) > 1):
            continue
        total = torch.zeros(g.size, dtype=torch.float64)
        for gm in members:
            s = by_param[gm.member.name].detach().double().cpu().reshape(-1)
            if s.numel() != gm.member.size:
                raise ConfigError(f"scores of gate {gm.member.name} have {s.numel()} entries; the gate has "
                                  f"{gm.member.size} channels (scores from before a pruning step?)")
            total += gm.reduce(s, g.size)
        out[g.name] = total
    return out


def params_without_gates(graph: DependencyGraph, widths: Mapping[str, int] | None = None) -> int:
    """``graph.params(widths)`` minus the gate parameters (they are folded away at the end): the parameter count
    of the plain network the gated one stands for."""
    current = graph.widths()
    gates = 0
    for g in graph.groups:
        w = (widths or {}).get(g.name, current[g.name])
        gates += sum(int(gm.positions.numel()) for gm in _gate_members(g)) * w // max(g.size, 1)
    return graph.params(widths) - gates


@register_importance("gate_taylor")
class GateTaylorImportance(Importance):
    """Gate Decorator's score of a group: the sum over its gates of Θ = |φ·∂L/∂φ| (group channels).

    ``scores``: {gate name: Tensor[C]} accumulated over data (``TaylorScores``); without it, from the gradients
    the gates hold now (call after ``loss.backward()``). Groups without gates fall back to L1 magnitude."""

    def __init__(self, scores: Mapping[str, torch.Tensor] | None = None):
        self.gate_scores = dict(scores) if scores is not None else None

    def __call__(self, graph, group):
        members = _gate_members(group)
        if not members:
            return MagnitudeImportance(1.0)(graph, group)
        total = torch.zeros(group.size, dtype=torch.float64)
        for gm in members:
            name = gm.member.name[:-len(".gate")] if gm.member.name.endswith(".gate") else ""
            if self.gate_scores is not None:
                s = self.gate_scores[name]
            else:
                p = getattr(gm.member.module, gm.member.attr)
                if p.grad is None:
                    raise ConfigError(f"gate {gm.member.name} has no gradient: run loss.backward() first or pass "
                                      "scores=")
                s = (p.detach() * p.grad).abs()
            total += gm.reduce(s.detach().double().cpu().reshape(-1), group.size)
        return total.float()


# ----------------------------------------------------------------------------- one tick's pruning step
@dataclass
class TickPlan:
    """What one tick removes: ``keep`` (kept channel indices per changed group), the resulting ``widths`` of the
    scored groups, ``requested``/``removed`` channel counts, ``remaining`` (scored channels before the tick),
    ``threshold`` (highest removed score), and ``floor_hit`` (groups now at their floor)."""

    keep: dict[str, torch.Tensor]
    widths: dict[str, int]
    requested: int
    removed: int
    remaining: int
    threshold: float
    floor_hit: list[str] = field(default_factory=list)
    limited_by_target: bool = False


def channel_floors(graph: DependencyGraph, original: Mapping[str, int] | None = None, *, floor_ratio: float = 0.1,
                   min_channels: int = 1) -> dict[str, int]:
    """Per prunable group: ``max(min_channels, group.min_width, ceil(floor_ratio · original width))``."""
    out = {}
    for g in graph.prunable_groups:
        size0 = (original or {}).get(g.name, g.size)
        out[g.name] = min(g.size, max(min_channels, g.min_width, math.ceil(floor_ratio * size0 - 1e-9)))
    return out


def tick_count(amount: float | int, remaining: int) -> int:
    """Channels a tick removes: ``amount`` itself if it is an int, else ``max(1, floor(amount · remaining))``."""
    if isinstance(amount, bool):
        raise ConfigError("prune_per_tick must be a fraction in (0, 1) or a channel count >= 1")
    if isinstance(amount, int):
        return amount
    return max(1, int(math.floor(amount * remaining + 1e-9)))


def plan_tick(graph: DependencyGraph, scores: Mapping[str, torch.Tensor], *, amount: float | int,
              floors: Mapping[str, int], fits: Callable[[dict[str, int]], bool] | None = None) -> TickPlan:
    """Rank the channels of the scored groups globally and plan removing the ``amount`` lowest ones.

    ``scores``: {group: Tensor[size]} (higher = keep). ``amount``: a fraction of the scored channels remaining, or
    a count (see :func:`tick_count`). A group never goes below ``floors[group]`` (its highest-scoring channels
    and pinned channels stay). ``fits(widths)``: if given and removing fewer channels already fits (e.g. the
    MACs target), only the smallest such number is removed.
    """
    names = list(scores)
    groups = [graph.group(n) for n in names]
    remaining = sum(g.size for g in groups)
    k = tick_count(amount, remaining)
    cand_s, cand_owner, cand_ch = [], [], []
    for i, (n, g) in enumerate(zip(names, groups)):
        s = torch.as_tensor(scores[n], dtype=torch.float64).detach().cpu().reshape(-1)
        if s.numel() != g.size:
            raise ConfigError(f"scores[{n!r}] has {s.numel()} entries; the group has {g.size} channels")
        s = torch.nan_to_num(s.clone(), nan=float("inf"))
        if g.pinned.numel():
            s[g.pinned] = float("inf")
        floor = max(int(floors.get(n, 1)), g.min_width)
        n_cand = max(0, g.size - floor)
        order = torch.sort(s, stable=True).indices[:n_cand]
        order = order[torch.isfinite(s[order])]
        cand_s.append(s[order])
        cand_owner.append(torch.full((order.numel(),), i, dtype=torch.long))
        cand_ch.append(order)
    flat = torch.cat(cand_s) if cand_s else torch.zeros(0, dtype=torch.float64)
    owner = torch.cat(cand_owner) if cand_owner else torch.zeros(0, dtype=torch.long)
    chans = torch.cat(cand_ch) if cand_ch else torch.zeros(0, dtype=torch.long)
    order = torch.sort(flat, stable=True).indices  # ties: group order, then the group's own ranking
    flat, owner, chans = flat[order], owner[order], chans[order]
    n = min(k, flat.numel())

    def widths_for(j: int) -> dict[str, int]:
        removed = torch.bincount(owner[:j], minlength=len(names)).tolist()
        return {nm: g.size - r for nm, g, r in zip(names, groups, removed)}

    limited = False
    if fits is not None and n > 0 and fits(widths_for(n)):
        lo, hi = 0, n  # fits(hi) holds; find the smallest j with fits(j)
        if fits(widths_for(0)):
            hi = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(widths_for(mid)):
                hi = mid
            else:
                lo = mid
        limited = hi < n
        n = hi
    widths = widths_for(n)
    keep: dict[str, torch.Tensor] = {}
    for i, (nm, g) in enumerate(zip(names, groups)):
        drop = chans[:n][owner[:n] == i]
        if drop.numel():
            mask = torch.ones(g.size, dtype=torch.bool)
            mask[drop] = False
            keep[nm] = torch.nonzero(mask).reshape(-1)
    floor_hit = [nm for nm, g in zip(names, groups)
                 if widths[nm] <= max(int(floors.get(nm, 1)), g.min_width) and nm in keep]
    thr = float(flat[n - 1]) if n > 0 else float("-inf")
    return TickPlan(keep, widths, k, n, remaining, thr, floor_hit, limited)


def prune_tick(model: nn.Module, example_inputs: torch.Tensor, gate_scores: Mapping[str, torch.Tensor], *,
               amount: float | int, floor_ratio: float = 0.1, min_channels: int = 1,
               original_widths: Mapping[str, int] | None = None, group_pruning: bool = True,
               fits: Callable[[dict[str, int]], bool] | None = None,
               graph: DependencyGraph | None = None) -> TickPlan:
    """One tick's pruning step, in place: group scores from the gates' Θ, a global ranking, physical removal.

    Usable alone (after :func:`taylor_scores`): ``prune_tick(model, x, taylor_scores(model, batches),
    amount=0.01)``. ``original_widths`` ({group: width} of the unpruned network) sets the floors (default: the
    current widths). Returns the plan that was applied.
    """
    graph = graph or DependencyGraph(model, example_inputs)
    scores = group_scores(graph, gate_scores, group_pruning=group_pruning)
    if not scores:
        raise ConfigError("no prunable group carries a gate: call add_gates(model) first")
    floors = channel_floors(graph, original_widths, floor_ratio=floor_ratio, min_channels=min_channels)
    plan = plan_tick(graph, scores, amount=amount, floors=floors, fits=fits)
    graph.prune_groups(plan.keep)
    return plan


# ----------------------------------------------------------------------------- configuration
def _tick_default() -> TrainConfig:
    return TrainConfig(epochs=1, lr=1e-3, schedule="constant", progress=False)


def _tock_default() -> TrainConfig:
    return TrainConfig(epochs=10, lr=1e-2, schedule="triangular", min_lr=0.1, progress=False)


def _finetune_default() -> TrainConfig:
    return TrainConfig(epochs=40, lr=1e-2, schedule="triangular", min_lr=0.1)


_TRAIN_DEFAULTS = {"tick": _tick_default, "tock": _tock_default, "finetune": _finetune_default}
_TRAIN_FIELDS = tuple(_TRAIN_DEFAULTS)


@dataclass
class GateDecoratorConfig:
    """Gate Decorator hyper-parameters (defaults: the official code's ResNet-56 run, except ``prune_per_tick``
    and the triangular fine-tune's momentum, 0.9 here, 0 there).

    Targets (at least one; the loop stops when all are met): ``target_macs`` / ``target_params``, fractions of
    the original network's MACs / parameters kept. ``prune_per_tick``: a fraction in (0, 1) of the scored
    channels remaining (official: 0.002–0.005) or an int number of channels. ``ticks_per_round``: T, ticks
    between tocks. ``floor_ratio``/``min_channels``: the per-group floor. ``sparsity``: λ of the L1 penalty on
    φ in the tocks. ``gate_init``: ``bn_scale`` (official: φ = γ, γ = 1, so the L1 acts on each channel's
    scale) or ``one`` (φ = 1, γ kept). ``gates``: ``auto`` (after each BN, or after each conv in BN-free nets),
    ``bn`` or ``conv``. ``score``: ``official`` (Σ over batches of |φ·g|) or ``paper`` (|Σ φ·g|, eq. 5; at a
    stationary point of the gates the data gradient balances the L1 and weight-decay terms, and this score
    degenerates to ≈ λ|φ| + wd·φ²: a magnitude criterion). ``group_pruning``: prune residual-tied groups too.
    ``warmup_tock``: one tock before the first tick (official). ``tick``: the tick's training (only the gates
    and the final linear layer learn; ``steps_per_epoch`` sets the data subset; default one full epoch at lr
    1e-3). ``tock``: triangular 1e-3 → 1e-2 → 1e-3 over 10 epochs. ``finetune``: the final fine-tune after folding
    (None: none). ``classifier``: qualified name of the final linear layer (default: the last ``nn.Linear``).
    ``keep_checkpoints``: keep each finished stage's Trainer checkpoint (default: delete, keep the model file).
    """

    target_macs: float | None = None
    target_params: float | None = None
    prune_per_tick: float | int = 0.01
    ticks_per_round: int = 10
    floor_ratio: float = 0.1
    min_channels: int = 1
    sparsity: float = 1e-3
    gate_init: Literal["one", "bn_scale"] = "bn_scale"
    gates: Literal["auto", "bn", "conv"] = "auto"
    score: ScoreMode = "official"
    group_pruning: bool = True
    warmup_tock: bool = True
    max_ticks: int = 2000
    classifier: str | None = None
    keep_checkpoints: bool = False
    tick: TrainConfig = field(default_factory=_tick_default)
    tock: TrainConfig = field(default_factory=_tock_default)
    finetune: TrainConfig | None = field(default_factory=_finetune_default)

    def __post_init__(self) -> None:
        if self.target_macs is None and self.target_params is None:
            raise ConfigError("GateDecoratorConfig needs target_macs= and/or target_params= (fractions kept)")
        for name in ("target_macs", "target_params"):
            v = getattr(self, name)
            if v is not None:
                check_range(name, v, 0, 1, low_open=True, high_open=True)
        p = self.prune_per_tick
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ConfigError(f"prune_per_tick={p!r} must be a fraction in (0, 1) or a channel count >= 1")
        if isinstance(p, float):
            check_range("prune_per_tick", p, 0, 1, low_open=True, high_open=True)
        elif p < 1:
            raise ConfigError(f"prune_per_tick={p} (a channel count) must be >= 1")
        if not isinstance(self.ticks_per_round, int) or self.ticks_per_round < 1:
            raise ConfigError(f"ticks_per_round={self.ticks_per_round!r} must be an integer >= 1")
        check_range("floor_ratio", self.floor_ratio, 0, 1, high_open=True)
        if not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise ConfigError(f"min_channels={self.min_channels!r} must be an integer >= 1 (a layer is never emptied)")
        check_range("sparsity", self.sparsity, 0)
        if self.gate_init not in ("one", "bn_scale"):
            raise ConfigError(f"gate_init={self.gate_init!r} must be 'one' or 'bn_scale'")
        if self.gates not in ("auto", "bn", "conv"):
            raise ConfigError(f"gates={self.gates!r} must be 'auto', 'bn' or 'conv'")
        if self.score not in ("paper", "official"):
            raise ConfigError(f"score={self.score!r} must be 'paper' or 'official'")
        if self.max_ticks < 1:
            raise ConfigError(f"max_ticks={self.max_ticks} must be >= 1")
        for name in _TRAIN_FIELDS:
            v = getattr(self, name)
            if isinstance(v, Mapping):  # merged over this method's defaults, not TrainConfig's
                setattr(self, name, TrainConfig.from_dict({**_TRAIN_DEFAULTS[name]().to_dict(), **v}))
            elif v is not None and not isinstance(v, TrainConfig):
                raise ConfigError(f"{name} must be a TrainConfig or a mapping of its fields")
        if self.tick is None or self.tock is None:
            raise ConfigError("tick and tock need a training configuration")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GateDecoratorConfig":
        """From a mapping (a recipe's ``prune:`` section); ``tick``/``tock``/``finetune`` are TrainConfig
        mappings merged over the defaults (``finetune: null`` disables it). Unknown keys raise ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown gate_decorator option(s) {unknown}; valid: {sorted(names)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _TRAIN_FIELDS:
                v = None if v is None else {k: x for k, x in v.to_dict().items()
                                             if k not in ("checkpoint_dir", "resume")}
            out[f.name] = v
        return out

    def fits(self, macs: float, params: float, macs0: float, params0: float) -> bool:
        """True when both given targets are met."""
        ok = True
        if self.target_macs is not None:
            ok &= macs <= self.target_macs * macs0 + 1e-6
        if self.target_params is not None:
            ok &= params <= self.target_params * params0 + 1e-6
        return bool(ok)


# ----------------------------------------------------------------------------- helpers of the method
class _EpochOffset:
    """A loader view whose epoch ``e`` is the underlying loader's epoch ``offset + e``: every stage of a run then
    sees its own shuffle/augmentation (each stage's Trainer starts at epoch 0) and resumes exactly."""

    def __init__(self, loader: Any, offset: int):
        self.loader, self.offset = loader, int(offset)
        if hasattr(loader, "iter_from"):
            self.iter_from = loader.iter_from

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self.offset + int(epoch))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


class _GateSelector:
    """``select`` of the tock's L1Subgradient: the gates of the model being trained (looked up once per model)."""

    def __init__(self):
        self._model: nn.Module | None = None
        self._params: list[nn.Parameter] = []

    def __call__(self, model: nn.Module) -> list[nn.Parameter]:
        if model is not self._model:
            self._model, self._params = model, [g.param for g in find_gates(model)]
        return self._params


def classifier_name(model: nn.Module, name: str | None = None) -> str:
    """The final linear layer's qualified name: ``name`` if given (checked), else the last ``nn.Linear``."""
    modules = dict(model.named_modules())
    if name is not None:
        if not isinstance(modules.get(name), nn.Linear):
            raise ConfigError(f"classifier={name!r} is not an nn.Linear of the model")
        return name
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("the model has no nn.Linear: name the final layer with classifier=")
    return linears[-1]


def tick_trainable(model: nn.Module, classifier: str | None = None) -> Callable[[str, nn.Parameter], bool]:
    """TrainOnly predicate of a tick: the gates and the final linear layer."""
    names = {g.param_name for g in find_gates(model)}
    head = classifier_name(model, classifier)
    names |= {f"{head}.{n}" for n, _ in model.get_submodule(head).named_parameters()}
    return lambda name, p: name in names


def _round_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------- the method
class GateDecorator:
    """``GateDecorator(config).run(model, data, output_dir)`` → PruneResult (see the module docstring)."""

    name = "gate_decorator"

    def __init__(self, config: GateDecoratorConfig):
        self.config = config

    def run(self, model: nn.Module, data, output_dir: str | Path, *, device: str = "cpu",
            log: Callable[[str], None] | None = None, latency: bool = True, callbacks: Iterable[Callback] = ()):
        """Gate, tick-tock until the target, fold, fine-tune — under ``output_dir`` (resumable) — and report.

        ``data``: prunekit DataLoaders (train / val / test): ticks and tocks train on ``train``; the trajectory
        shows ``val`` accuracy after every tick and tock (when there is a validation split); the test set gives
        only the final numbers. Writes ``widths.png``, ``trajectory.png``, ``gates_hist.png`` and
        ``model.safetensors`` (the final pruned, gate-free model) into ``output_dir``. ``model`` is modified
        (gated) in place. ``callbacks`` are added to every training stage (logging, custom regularisers).
        """
        from prunekit.io import save
        from prunekit.methods.pipeline import Pipeline
        from prunekit.methods.result import PruneResult
        from prunekit.report import plot_histograms, plot_trajectory, plot_widths, summarize
        from prunekit.train import evaluate

        c = self.config
        out = Path(output_dir)
        log = log or (lambda m: None)
        x = next(iter(data.test))[0][:2].detach().cpu()
        model.cpu()
        graph0 = DependencyGraph(model, x)
        widths0 = {g.name: g.size for g in graph0.prunable_groups}
        macs0, params0 = graph0.macs(), graph0.params()
        model.to(device)
        baseline = summarize(model, x, latency=latency)
        baseline.top1["test"] = evaluate(model, data.test).top1
        if data.val is not None:
            baseline.top1["val"] = evaluate(model, data.val).top1

        model.cpu()
        add_gates(model, where=c.gates, init=c.gate_init)
        phi0 = torch.cat([g.values().abs().cpu() for g in find_gates(model)])
        graph = DependencyGraph(model, x)
        scored = list(group_scores(graph, {g.name: torch.zeros(g.channels) for g in find_gates(model)},
                                   group_pruning=c.group_pruning))
        if not scored:
            raise ConfigError("no prunable channel group carries a gate; nothing Gate Decorator can prune")
        ungated = [n for n in widths0 if n not in scored]
        floors = channel_floors(graph, widths0, floor_ratio=c.floor_ratio, min_channels=c.min_channels)
        floor_widths = {n: floors[n] for n in scored}
        if not c.fits(graph.macs(floor_widths), params_without_gates(graph, floor_widths), macs0, params0):
            raise ConfigError(
                f"the target cannot be met: with every prunable group at its floor the network keeps "
                f"{graph.macs(floor_widths) / macs0:.1%} of its MACs and "
                f"{params_without_gates(graph, floor_widths) / params0:.1%} "
                f"of its parameters (target_macs={c.target_macs}, target_params={c.target_params}); lower "
                "floor_ratio / min_channels or ask for less")
        classifier = classifier_name(model, c.classifier)
        model.to(device)

        pipe = Pipeline(out, x, device=device, log=log)
        trajectory: list[dict[str, Any]] = [{"stage": "start", "macs": macs0, "params": params0,
                                             "macs_kept": 1.0, "params_kept": 1.0,
                                             "val_top1": baseline.top1.get("val")}]
        n_train_stages = 0

        def loader(stage_idx: int):
            return _EpochOffset(data.train, 1000 * stage_idx)

        def done_with(name: str) -> None:
            if not c.keep_checkpoints:
                (pipe.stage_dir(name) / "last.ckpt").unlink(missing_ok=True)

        def tock(name: str, m: nn.Module) -> nn.Module:
            nonlocal n_train_stages
            n_train_stages += 1
            l1 = [L1Subgradient(c.sparsity, select=_GateSelector())] if c.sparsity > 0 else []
            m = pipe.train(name, m, loader(n_train_stages), data.val, c.tock, [*l1, *callbacks])
            done_with(name)
            met = pipe.records[-1].metrics
            trajectory.append({"stage": name, "macs": trajectory[-1]["macs"], "params": trajectory[-1]["params"],
                               "macs_kept": trajectory[-1]["macs_kept"],
                               "params_kept": trajectory[-1]["params_kept"], "val_top1": met.get("val_top1")})
            return m

        def tick(name: str, m: nn.Module) -> nn.Module:
            nonlocal n_train_stages
            n_train_stages += 1
            taylor = TaylorScores(c.score)

            def after(mm: nn.Module, trainer) -> dict[str, Any]:
                gate_scores = taylor.scores()
                mm.cpu()
                g = DependencyGraph(mm, x)
                plan = prune_tick(mm, x, gate_scores, amount=c.prune_per_tick, floor_ratio=c.floor_ratio,
                                  min_channels=c.min_channels, original_widths=widths0,
                                  group_pruning=c.group_pruning, graph=g,
                                  fits=lambda w: c.fits(g.macs(w), params_without_gates(g, w), macs0, params0))
                if plan.removed == 0:
                    raise PrunekitError(f"{name}: no channel above the per-group floors is left to prune, but the "
                                        "target is not met")
                macs, params = g.macs(), params_without_gates(g)
                mm.to(device)
                met = {"requested": plan.requested, "removed": plan.removed, "remaining": plan.remaining,
                       "threshold": plan.threshold, "floor_hit": plan.floor_hit, "macs": macs, "params": params,
                       "macs_kept": macs / macs0, "params_kept": params / params0,
                       "widths": {k: v for k, v in g.widths().items() if k in widths0},
                       "score_batches": taylor.batches}
                if data.val is not None:
                    met["val_top1_after_prune"] = evaluate(mm, data.val).top1
                return met

            m = pipe.train(name, m, loader(n_train_stages), None, c.tick,
                           [TrainOnly(tick_trainable(m, classifier)), taylor, *callbacks], after=after)
            done_with(name)
            met = pipe.records[-1].metrics
            trajectory.append({"stage": name, "macs": met["macs"], "params": met["params"],
                               "macs_kept": met["macs_kept"], "params_kept": met["params_kept"],
                               "removed": met["removed"], "val_top1": met.get("val_top1_after_prune"),
                               "train_loss": met.get("train_loss")})
            log(f"{name}: removed {met['removed']} channels · MACs kept {100 * met['macs_kept']:.1f}% · "
                f"params kept {100 * met['params_kept']:.1f}%"
                + (f" · val top-1 {met['val_top1_after_prune']:.2f}%" if "val_top1_after_prune" in met else ""))
            return m

        if c.warmup_tock:
            model = tock("round0-tock", model)
        reached, ticks, r = False, 0, 0
        while not reached:
            r += 1
            for t in range(1, c.ticks_per_round + 1):
                if ticks >= c.max_ticks:
                    raise PrunekitError(f"max_ticks={c.max_ticks} ticks done and the target is not met; raise "
                                        "prune_per_tick or max_ticks")
                model = tick(f"round{r}-tick{t}", model)
                ticks += 1
                last = pipe.records[-1].metrics
                if c.fits(last["macs"], last["params"], macs0, params0):
                    reached = True
                    break
            if not reached:
                model = tock(f"round{r}-tock", model)
        phi1 = torch.cat([g.values().abs().cpu() for g in find_gates(model)])

        def fold(m: nn.Module) -> dict[str, Any]:
            n = len(find_gates(m))
            fold_gates(m)
            return {"gates_folded": n}

        model = pipe.transform("fold", model, fold, kind="fold")
        if c.finetune is not None:
            model = pipe.train("finetune", model, data.train, data.val, c.finetune, callbacks)
            done_with("finetune")
        model.eval()
        model.cpu()
        graph1 = DependencyGraph(model, x)
        widths1 = graph1.widths()
        model.to(device)
        pruned = summarize(model, x, latency=latency)
        pruned.top1["test"] = evaluate(model, data.test).top1
        if data.val is not None:
            pruned.top1["val"] = evaluate(model, data.val).top1
        widths_after = {k: widths1.get(k, v) for k, v in widths0.items()}
        floor_hit = [n for n in scored if widths_after[n] <= floors[n]]
        details: dict[str, Any] = {
            "config": c.to_dict(), "ticks": ticks, "rounds": r, "trajectory": [_round_dict(t) for t in trajectory],
            "floor_hit": floor_hit, "floors": floors, "scored_groups": scored, "ungated_groups": ungated,
            "macs_kept": pruned.macs / baseline.macs, "params_kept": pruned.params / baseline.params,
            "stages": {"ticks": ticks, "tocks": sum(1 for t in trajectory if t["stage"].endswith("-tock")),
                       "tick_batches": sum(pipe.records[i].metrics.get("score_batches", 0)
                                           for i in range(len(pipe.records))),
                       "tock_epochs": c.tock.epochs, "finetune_epochs": c.finetune.epochs if c.finetune else 0},
        }
        result = PruneResult(self.name, model, widths0, widths_after, baseline, pruned, list(pipe.records), details)
        result.artifacts["widths_png"] = str(plot_widths(widths0, widths_after, out / "widths.png",
                                                         title="Gate Decorator: channels per group"))
        ticks_only = [t for t in trajectory if t["stage"] == "start" or "-tick" in t["stage"]]
        ys = {"MACs kept (%)": [100 * t["macs_kept"] for t in ticks_only],
              "params kept (%)": [100 * t["params_kept"] for t in ticks_only]}
        if data.val is not None:
            ys["val top-1 after the tick (%)"] = [t["val_top1"] if t["val_top1"] is not None else float("nan")
                                                  for t in ticks_only]
        result.artifacts["trajectory_png"] = str(plot_trajectory(
            list(range(len(ticks_only))), ys, out / "trajectory.png", title="Gate Decorator: after every tick",
            xlabel="tick", ylabel="%"))
        result.artifacts["gates_png"] = str(plot_histograms(
            {"at start": phi0.numpy(), "before folding": phi1.numpy()}, out / "gates_hist.png",
            title="gate values |φ|", xlabel="|φ|"))
        save(model.cpu().eval(), out / "model.safetensors", example_inputs=x)
        model.to(device)
        result.artifacts["model"] = str(out / "model.safetensors")
        return result


# ----------------------------------------------------------------------------- recipes (CLI, benchmarks)
def config_from_recipe(recipe: Mapping[str, Any], **overrides: Any) -> GateDecoratorConfig:
    """The config of a ``recipes/gate_decorator/*.yaml`` recipe: its ``gate_decorator:`` section (method options)
    plus the ``tick:``, ``tock:`` and ``finetune:`` sections (TrainConfig fields over this method's defaults;
    ``finetune: null`` disables it). ``overrides`` (None values ignored) replace method options, and
    ``tick``/``tock``/``finetune`` mappings are merged into the recipe's sections."""
    opts = dict(recipe.get("gate_decorator") or {})
    for name in _TRAIN_FIELDS:
        if name in opts:
            raise ConfigError(f"put {name}: at the top level of the recipe, not under gate_decorator:")
        if name in recipe:
            opts[name] = None if recipe[name] is None else dict(recipe[name])
    for k, v in overrides.items():
        if v is None:
            continue
        if k in _TRAIN_FIELDS and isinstance(v, Mapping) and opts.get(k) is not None:
            opts[k] = {**opts[k], **v}
        else:
            opts[k] = v
    return GateDecoratorConfig.from_dict(opts)


def run_recipe(recipe: Mapping[str, Any] | str | Path, output_dir: str | Path, *, checkpoint: str | Path | None = None,
               data_dir: str | None = None, device: str = "cpu", train_subset: int | None = None,
               log: Callable[[str], None] | None = None, latency: bool = True, **overrides: Any):
    """Run a gate_decorator recipe (a path or the parsed mapping); returns ``(PruneResult, loaders)``.

    The recipe holds ``model``, ``data``, ``batch_size``, ``val_split``, ``seed``, ``data_args`` (as the other
    method recipes) and the sections of :func:`config_from_recipe` (``overrides`` go there). ``checkpoint``:
    the trained baseline — a Trainer ``last.ckpt`` or a prunekit ``.safetensors`` model; without it a freshly
    initialised zoo model is pruned (only sensible for smoke tests).
    """
    import yaml

    from prunekit.methods.setup import prepare_run

    if not isinstance(recipe, Mapping):
        recipe = yaml.safe_load(Path(recipe).read_text()) or {}
    if recipe.get("method", "gate_decorator") != "gate_decorator":
        raise ConfigError(f"recipe is for method {recipe.get('method')!r}, not gate_decorator")
    config = config_from_recipe(recipe, **overrides)
    model, loaders, _ = prepare_run(recipe, checkpoint=checkpoint, data_dir=data_dir, device=device,
                                    train_subset=train_subset)
    result = GateDecorator(config).run(model, loaders, output_dir, device=device, log=log, latency=latency)
    return result, loaders
