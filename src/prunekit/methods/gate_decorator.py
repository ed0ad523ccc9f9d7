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
  whole network, keeping at least ``max(min_channels, ceil(min_keep · original width))`` channels per group.
  The last tick removes only as many channels as the target needs.
- **Tock**: after ``ticks_per_round`` ticks, fine-tune the whole network with an L1 penalty λ on φ (triangular
  lr). Rounds repeat until ``target_macs`` / ``target_params`` (fractions of the original network kept) are met;
  then the gates are folded and the network fine-tuned without the penalty.

Every tick, tock, fold and fine-tune is a stage of the run's :class:`~prunekit.train.pipeline.Pipeline`
(``round{r}-tick{t}``, ``round{r}-tock``, ``fold``, ``finetune``; ``round0-tock`` is the warm-up tock the
official code runs before the first tick): a killed run resumes where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping

import torch
import torch.nn as nn

from prunekit.cost import MacsCost, ParamsCost
from prunekit.errors import ConfigError, PrunekitError, check_range
from prunekit.graph import ChannelGroup, DependencyGraph
from prunekit.importance import Importance, MagnitudeImportance, register_importance
from prunekit.methods.base import Method, MethodRun, config_settings, register_method
from prunekit.methods.gates import Gate, GatedBatchNorm2d, GatedConv2d, add_gates, find_gates, fold_gates
from prunekit.planning import GlobalRanking, channel_floors
from prunekit.train import Callback, L1Subgradient, TrainConfig, TrainOnly
from prunekit.train.gradients import gradient_pass

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
    acc = TaylorScores(mode)
    acc.attach(model)
    gradient_pass(model, batches, on_backward=acc.on_after_backward, train_mode=train_mode,
                  max_batches=max_batches, loss_fn=loss_fn)
    return acc.scores()


def _gate_members(group: ChannelGroup):
    """The members of ``group`` that are gate parameters (of GatedBatchNorm2d / GatedConv2d layers)."""
    return [gm for gm in group.members if gm.member.kind == "param" and gm.member.attr == "gate"
            and isinstance(gm.member.module, (GatedBatchNorm2d, GatedConv2d))]


def group_scores(graph: DependencyGraph, gate_scores: Mapping[str, torch.Tensor], *,
                 group_pruning: bool = True) -> dict[str, torch.Tensor]:
    """Per prunable group, the sum of its gates' Θ over each group channel (paper eq. 9): {group: Tensor[size]}
    (float64, :class:`GateTaylorImportance`).

    ``gate_scores``: {gate name (the gated block's qualified name): Tensor[C]} (e.g. ``TaylorScores.scores()``).
    Groups without a scored gate are left out (never pruned). ``group_pruning=False`` also leaves out groups
    that carry several gates (channels tied across a residual add), the official code's default.
    """
    imp = GateTaylorImportance(gate_scores)
    out: dict[str, torch.Tensor] = {}
    for g in graph.prunable_groups:
        members = imp.scored_members(g)
        if members and (group_pruning or len(members) == 1):
            out[g.name] = imp(graph, g)
    return out


def gate_param_count(graph: DependencyGraph, widths: Mapping[str, int] | None = None) -> int:
    """Gate parameters of the gated network ``graph`` at ``widths`` (default: current): they are folded away at
    the end, so the parameter target counts the network without them (``ParamsCost(graph, exclude=...)``)."""
    current = graph.widths()
    gates = 0
    for g in graph.groups:
        w = (widths or {}).get(g.name, current[g.name])
        gates += sum(int(gm.positions.numel()) for gm in _gate_members(g)) * w // max(g.size, 1)
    return gates


def params_without_gates(graph: DependencyGraph, widths: Mapping[str, int] | None = None) -> int:
    """``graph.params(widths)`` minus the gate parameters: the parameter count of the plain network the gated
    one stands for."""
    return graph.params(widths) - gate_param_count(graph, widths)


@register_importance("gate_taylor")
class GateTaylorImportance(Importance):
    """Gate Decorator's score of a group: the sum over its gates of Θ = |φ·∂L/∂φ| per group channel (float64).

    ``scores``: {gate name: Tensor[C]} accumulated over data (``TaylorScores``); without it, from the gradients
    the gates hold now (call after ``loss.backward()``). Groups without a (scored) gate fall back to L1
    magnitude."""

    def __init__(self, scores: Mapping[str, torch.Tensor] | None = None):
        self.gate_scores = dict(scores) if scores is not None else None

    def scored_members(self, group: ChannelGroup) -> list:
        """The gate members of ``group`` that have scores."""
        members = _gate_members(group)
        if self.gate_scores is None:
            return members
        return [gm for gm in members if _gate_name(gm) in self.gate_scores]

    def __call__(self, graph, group):
        members = self.scored_members(group)
        if not members:
            return MagnitudeImportance(1.0)(graph, group)
        total = torch.zeros(group.size, dtype=torch.float64)
        for gm in members:
            if self.gate_scores is not None:
                s = self.gate_scores[_gate_name(gm)]
            else:
                p = getattr(gm.member.module, gm.member.attr)
                if p.grad is None:
                    raise ConfigError(f"gate {gm.member.name} has no gradient: run loss.backward() first or pass "
                                      "scores=")
                s = (p.detach() * p.grad).abs()
            s = s.detach().double().cpu().reshape(-1)
            if s.numel() != gm.member.size:
                raise ConfigError(f"scores of gate {gm.member.name} have {s.numel()} entries; the gate has "
                                  f"{gm.member.size} channels (scores from before a pruning step?)")
            total += gm.reduce(s, group.size)
        return total


def _gate_name(gm) -> str:
    """The gated layer's qualified name of a gate member (its parameter name without ``.gate``)."""
    name = gm.member.name
    return name[:-len(".gate")] if name.endswith(".gate") else ""


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
    ranking = GlobalRanking(graph, scores, floors, mode="candidates")
    remaining = sum(g.size for g in ranking.groups)
    k = tick_count(amount, remaining)
    n = min(k, ranking.num_ranked)
    limited = False
    if fits is not None and n > 0:
        smallest = ranking.smallest(fits, high=n)
        if smallest is not None:
            limited, n = smallest < n, smallest
    p = ranking.at(n)
    return TickPlan(p.keep, p.widths, k, n, remaining, p.threshold, p.floor_hit, limited)


def prune_tick(model: nn.Module, example_inputs: torch.Tensor, gate_scores: Mapping[str, torch.Tensor], *,
               amount: float | int, min_keep: float = 0.1, min_channels: int = 1,
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
    floors = channel_floors(graph, original_widths, min_keep=min_keep, min_channels=min_channels)
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
    between tocks. ``min_keep``/``min_channels``: the per-group floor (a fraction of the original width
    kept, a channel count). ``sparsity``: λ of the L1 penalty on
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
    min_keep: float = 0.1
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
        check_range("min_keep", self.min_keep, 0, 1, high_open=True)
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
            raise ConfigError("tick and tock need a training configuration (epochs >= 1)")

    def fits(self, macs: float, params: float, macs0: float, params0: float) -> bool:
        """True when both given targets are met."""
        ok = True
        if self.target_macs is not None:
            ok &= macs <= self.target_macs * macs0 + 1e-6
        if self.target_params is not None:
            ok &= params <= self.target_params * params0 + 1e-6
        return bool(ok)


# ----------------------------------------------------------------------------- helpers of the method
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
_NOT_STAGE_SETTINGS = ("tick", "tock", "finetune", "keep_checkpoints", "max_ticks")


@register_method("gate_decorator", config=GateDecoratorConfig, title="Gate Decorator")
class GateDecorator(Method):
    """``GateDecorator(config).run(model, data, output_dir)`` → PruneResult (see the module docstring). The model
    is gated in place; ticks and tocks train on ``train``; the trajectory shows ``val`` accuracy after every tick
    and tock; the test set gives only the final numbers. Plots: ``trajectory.png``, ``gates_hist.png``."""

    def check(self, run: MethodRun, model: nn.Module) -> None:
        run.set_baseline(model)
        c = self.config
        add_gates(model.cpu(), where=c.gates, init=c.gate_init)
        graph = run.graph(model)
        self.scored = list(group_scores(graph, {g.name: torch.zeros(g.channels) for g in find_gates(model)},
                                        group_pruning=c.group_pruning))
        if not self.scored:
            raise ConfigError("no prunable channel group carries a gate; nothing Gate Decorator can prune")
        self.floors = channel_floors(graph, run.widths0, min_keep=c.min_keep, min_channels=c.min_channels)
        floor_widths = {n: self.floors[n] for n in self.scored}
        macs, params = self.costs(graph)
        if not c.fits(macs(floor_widths), params(floor_widths), self.macs0, self.params0):
            raise ConfigError(
                f"the target cannot be met: with every prunable group at its floor the network keeps "
                f"{macs(floor_widths) / self.macs0:.1%} of its MACs and {params(floor_widths) / self.params0:.1%} "
                f"of its parameters (target_macs={c.target_macs}, target_params={c.target_params}); lower "
                "min_keep / min_channels or ask for less")
        self.classifier = classifier_name(model, c.classifier)
        self.settings = config_settings(c, exclude=_NOT_STAGE_SETTINGS)
        run.to_device(model)

    def costs(self, graph: DependencyGraph) -> tuple[MacsCost, ParamsCost]:
        """MACs and gate-free parameter counts of the gated network ``graph`` (the targets' cost models)."""
        macs, params = MacsCost(graph), ParamsCost(graph, exclude=gate_param_count)
        if not hasattr(self, "macs0"):
            self.macs0, self.params0 = macs.full, params.full
        return macs, params

    def execute(self, run: MethodRun, model: nn.Module) -> nn.Module:
        c = self.config
        phi0 = torch.cat([g.values().abs().cpu() for g in find_gates(model)])
        self.trajectory = [{"stage": "start", "macs": self.macs0, "params": self.params0, "macs_kept": 1.0,
                            "params_kept": 1.0, "val_top1": run.baseline_top1.get("val")}]
        if c.warmup_tock:
            model = self.tock(run, "round0-tock", model)
        ticks, r = 0, 0
        while True:
            r += 1
            for t in range(1, c.ticks_per_round + 1):
                if ticks >= c.max_ticks:
                    raise PrunekitError(f"max_ticks={c.max_ticks} ticks done and the target is not met; raise "
                                        "prune_per_tick or max_ticks")
                model, ticks = self.tick(run, f"round{r}-tick{t}", model), ticks + 1
                if c.fits(self.trajectory[-1]["macs"], self.trajectory[-1]["params"], self.macs0, self.params0):
                    break
            else:
                model = self.tock(run, f"round{r}-tock", model)
                continue
            break
        phi1 = torch.cat([g.values().abs().cpu() for g in find_gates(model)])
        model = run.transform("fold", model, _fold, kind="fold")
        if c.finetune is not None:
            model = run.train("finetune", model, c.finetune)
        self.report(run, model, ticks, r, phi0, phi1)
        return model

    def tock(self, run: MethodRun, name: str, model: nn.Module) -> nn.Module:
        """Fine-tune the whole gated network with L1 on the gates (triangular lr)."""
        c = self.config
        l1 = [L1Subgradient(c.sparsity, select=_GateSelector())] if c.sparsity > 0 else []
        model = run.train(name, model, c.tock, l1, settings=self.settings)
        last = self.trajectory[-1]
        self.trajectory.append({"stage": name, **{k: last[k] for k in ("macs", "params", "macs_kept", "params_kept")},
                                "val_top1": run.last_metrics().get("val_top1")})
        return model

    def tick(self, run: MethodRun, name: str, model: nn.Module) -> nn.Module:
        """Train only the gates and the classifier while accumulating Θ, then prune the lowest channels."""
        c = self.config
        taylor = TaylorScores(c.score)

        def after(m: nn.Module, trainer) -> dict[str, Any]:
            g = run.graph(m)
            macs, params = self.costs(g)
            plan = prune_tick(m, run.x, taylor.scores(), amount=c.prune_per_tick, min_keep=c.min_keep,
                              min_channels=c.min_channels, original_widths=run.widths0,
                              group_pruning=c.group_pruning, graph=g,
                              fits=lambda w: c.fits(macs(w), params(w), self.macs0, self.params0))
            if plan.removed == 0:
                raise PrunekitError(f"{name}: no channel above the per-group floors is left to prune, but the "
                                    "target is not met")
            mc, pc = macs(g.widths()), params(g.widths())
            run.to_device(m)
            met = {"requested": plan.requested, "removed": plan.removed, "remaining": plan.remaining,
                   "threshold": plan.threshold, "floor_hit": plan.floor_hit, "macs": mc, "params": pc,
                   "macs_kept": mc / self.macs0, "params_kept": pc / self.params0,
                   "widths": {k: v for k, v in g.widths().items() if k in run.widths0},
                   "score_batches": taylor.batches}
            top1 = run.evaluate(m, "val")
            if top1 is not None:
                met["val_top1_after_prune"] = top1
            return met

        model = run.train(name, model, c.tick, [TrainOnly(tick_trainable(model, self.classifier)), taylor],
                          validate=False, after=after, settings=self.settings)
        met = run.last_metrics()
        self.trajectory.append({"stage": name,
                                **{k: met[k] for k in ("macs", "params", "macs_kept", "params_kept", "removed")},
                                "val_top1": met.get("val_top1_after_prune"),
                                "train_loss": met.get("train_loss")})
        run.log(f"{name}: removed {met['removed']} channels · MACs kept {100 * met['macs_kept']:.1f}% · "
                f"params kept {100 * met['params_kept']:.1f}%"
                + (f" · val top-1 {met['val_top1_after_prune']:.2f}%" if "val_top1_after_prune" in met else ""))
        return model

    def report(self, run: MethodRun, model: nn.Module, ticks: int, rounds: int, phi0, phi1) -> None:
        """Details (trajectory, floors, stage counts) and the trajectory and gate plots."""
        c = self.config
        graph = run.graph(model)
        widths = graph.widths()
        run.to_device(model)
        traj = self.trajectory
        run.details.update({
            "ticks": ticks, "rounds": rounds, "trajectory": [_round_dict(t) for t in traj],
            "floor_hit": [n for n in self.scored if widths.get(n, run.widths0[n]) <= self.floors[n]],
            "floors": self.floors,
            "scored_groups": self.scored, "ungated_groups": [n for n in run.widths0 if n not in self.scored],
            "macs_kept": graph.macs() / self.macs0, "params_kept": graph.params() / self.params0,
            "stages": {"ticks": ticks, "tocks": sum(1 for t in traj if t["stage"].endswith("-tock")),
                       "tick_batches": sum(s.metrics.get("score_batches", 0) for s in run.records),
                       "tock_epochs": c.tock.epochs, "finetune_epochs": c.finetune.epochs if c.finetune else 0}})
        ticks_only = [t for t in traj if t["stage"] == "start" or "-tick" in t["stage"]]
        ys = {"MACs kept (%)": [100 * t["macs_kept"] for t in ticks_only],
              "params kept (%)": [100 * t["params_kept"] for t in ticks_only]}
        if run.data.val is not None:
            ys["val top-1 after the tick (%)"] = [t["val_top1"] if t["val_top1"] is not None else float("nan")
                                                  for t in ticks_only]
        run.plot_trajectory("trajectory.png", list(range(len(ticks_only))), ys,
                            title="Gate Decorator: after every tick", xlabel="tick", ylabel="%")
        run.plot_histograms("gates_hist.png", {"at start": phi0.numpy(), "before folding": phi1.numpy()},
                            title="gate values |φ|", xlabel="|φ|")


def _fold(model: nn.Module) -> dict[str, Any]:
    n = len(find_gates(model))
    fold_gates(model)
    return {"gates_folded": n}
