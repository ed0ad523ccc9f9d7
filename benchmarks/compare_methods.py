"""Every pruning method, one baseline, one MACs budget: prunekit's registered methods side by side with
Torch-Pruning's matching pruners, all from the same checkpoint, on the same data, for the same training epochs.

    # the CPU protocol (default; ~1 hour on 2 busy cores; resumable: re-run the same command after a kill)
    nohup nice -n 19 .venv/bin/python benchmarks/compare_methods.py > /dev/null 2>&1 &
    tail -f benchmarks/results/compare-methods.log
    # a check of the script end to end (digits, 1 epoch, tiny): ~2-3 minutes, writes under runs/ only
    .venv/bin/python benchmarks/compare_methods.py --smoke

What one run does (every part is skipped when its output exists, so a killed run continues where it stopped):

1. **Baseline**: ``resnet20`` trained once with prunekit's Trainer (``OUTPUT/baseline``, resumable checkpoint).
2. **Arms**: for every budget (fraction of the baseline's MACs kept) and every seed,
   - every registered prunekit method (``prunekit.methods.list_methods()``); a method whose config has no
     ``target_macs`` cannot be put on the budget and is skipped with the reason logged, and so is CondenseNet
     (an architecture trained from scratch, not a pruner of a given baseline). NetAdapt runs with MACs as its
     resource (see ``NETADAPT_*``). Each runs through the method's own resumable pipeline (``Method.run``) under
     ``OUTPUT/<arm>``;
   - Torch-Pruning's counterparts (each a resumable prunekit ``Pipeline``: pruned models and Trainer checkpoints
     are stages): ``BNScalePruner`` + ``BNScaleImportance`` global (~ slimming, same sparsity phase),
     ``GroupTaylorImportance`` global, iterative steps with gradients of a few training batches each (~ Gate
     Decorator), ``GroupMagnitudeImportance(p=1)`` uniform (~ l1) and ``GroupMagnitudeImportance(p=2)`` global
     (~ l2, but global). Uniform/global ratios are bisected to the same MACs budget; the final classifier is
     never pruned; global pruning keeps >= 10% of each layer (``max_pruning_ratio=0.9``).
3. **Latency** of every final model (CPU, batch 1 and 16, ``prunekit.cost.compare_latency``: interleaved rounds,
   1 thread), then the records, the markdown table and the Pareto plot.

Fairness — the **epoch budget**: every arm trains exactly ``E = --epochs`` epochs after the baseline (the
protocol's number). A method's pre-pruning phase counts toward E: slimming and Torch-Pruning's BNScale run ``P``
epochs of sparsity training then ``E - P`` of fine-tuning; Gate Decorator runs its warm-up tock (``P`` epochs, L1
on the gates) then ``E - P`` of fine-tuning after folding, with all ticks in one round (``ticks_per_round`` large,
so the number of tocks — and the budget — does not depend on the data); the one-shot arms (l1, l2, Torch-Pruning
magnitude and Taylor) fine-tune all E epochs. Not counted in E (recorded as ``scoring_batches``): Gate
Decorator's ticks (gate-only training, ``tick_steps`` batches each) and Torch-Pruning Taylor's gradient batches
(``tp_grad_batches`` per pruner step) — both a few hundred batches at most. Every fine-tune uses the same
schedule (SGD momentum 0.9, wd 5e-4, cosine from ``ft_lr``), every pre-pruning phase the same constant
``pre_lr``. Same baseline checkpoint, same validation split (held out of the training set; it makes every
decision and is printed per epoch), same train-loader seed per seed (the seed changes only the data order and
augmentation of the pruning runs, never the split or the baseline); the test set gives only the final numbers.

Records: ``benchmarks/results/compare-methods-<protocol>-<arm>.json`` (RESULTS-SCHEMA), ``compare-methods-
<protocol>-table.md``, ``compare-methods-<protocol>-pareto.png``, ``compare-methods-<protocol>-summary.json``.
``--from-records`` writes the last three again from the per-arm records alone (no run folder, nothing re-run).
New arms only (e.g. NetAdapt's): ``--only netadapt`` (re-trains the baseline if its run folder is gone: the same
seed and schedule; its test top-1 is in every record to compare), then ``--from-records``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slimming_cifar import TPRegularize  # noqa: E402  Torch-Pruning's sparsity term as a Trainer callback

from prunekit.app.recipes import method_config  # noqa: E402
from prunekit.app.training import TrainJob, load_trained_model, run_training  # noqa: E402
from prunekit.cost import compare_latency, count  # noqa: E402
from prunekit.data import build_data  # noqa: E402
from prunekit.methods import RunInfo, get_method, list_methods  # noqa: E402
from prunekit.methods.base import phase_epochs, train_fields  # noqa: E402
from prunekit.report import envelope, write_record  # noqa: E402
from prunekit.train import Callback, TrainConfig, TrainingInterrupted, evaluate  # noqa: E402
from prunekit.train.pipeline import Pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ----------------------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Protocol:
    """Every number that determines a comparison run (part of each arm's fingerprint)."""

    name: str
    data: str = "cifar10"
    image_size: int | None = 16
    train_subset: int | None = 10_000
    val_split: float = 0.04  # of the 50k training images: 2,000 held out, never trained on
    batch_size: int = 128
    model: str = "resnet20"
    budgets: tuple[float, ...] = (0.5, 0.3)
    seeds: tuple[int, ...] = (0, 1)
    baseline_epochs: int = 10
    baseline_lr: float = 0.1
    epochs: int = 3  # E: training epochs of every arm after the baseline
    pre_epochs: int = 1  # P: slimming / BNScale sparsity, Gate Decorator warm-up tock (part of E)
    pre_lr: float = 0.01
    ft_lr: float = 0.05
    sparsity: float = 1e-4  # slimming's s and Torch-Pruning BNScalePruner's reg (the same L1 subgradient)
    gd_sparsity: float = 1e-3  # Gate Decorator's λ on the gates in the tock
    prune_per_tick: float = 0.06
    tick_steps: int = 4
    tp_grad_batches: int = 2
    tp_granularity: int = 100
    steps_per_epoch: int | None = None  # cap (smoke only)
    reduced: bool = True


PROTOCOLS = {
    "cpu": Protocol("cpu"),
    "smoke": Protocol("smoke", data="digits", image_size=None, train_subset=None, val_split=0.15, batch_size=64,
                      budgets=(0.5,), seeds=(0, 1), baseline_epochs=1, epochs=2, pre_epochs=1, prune_per_tick=0.1,
                      tick_steps=2, tp_grad_batches=1, tp_granularity=20, steps_per_epoch=3),
}


def pre_phase(p: Protocol) -> dict[str, Any]:
    return {"epochs": p.pre_epochs, "lr": p.pre_lr, "schedule": "constant", "momentum": 0.9,
            "weight_decay": 5e-4, "progress": False, "steps_per_epoch": p.steps_per_epoch}


def finetune_phase(p: Protocol, epochs: int) -> dict[str, Any]:
    return {"epochs": epochs, "lr": p.ft_lr, "schedule": "cosine", "momentum": 0.9, "weight_decay": 5e-4,
            "progress": False, "steps_per_epoch": p.steps_per_epoch}


def _tc(d: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict({k: v for k, v in d.items() if v is not None})


# ----------------------------------------------------------------------------------------------- arms
# colour family of every method (Torch-Pruning's arms share their counterpart's colour, hollow markers)
COLOURS = {"l1": "#1f77b4", "l2": "#17becf", "slimming": "#2ca02c", "gate_decorator": "#d62728",
           "metapruning": "#9467bd", "netadapt": "#8c564b", "condensenet": "#e377c2"}
TP_ARMS = {  # arm -> (counterpart, description)
    "tp-bn_scale": ("slimming", "Torch-Pruning BNScalePruner + BNScaleImportance, global, same sparsity phase"),
    "tp-group_taylor": ("gate_decorator", "Torch-Pruning GroupTaylorImportance, global, iterative steps"),
    "tp-magnitude_l1_uniform": ("l1", "Torch-Pruning GroupMagnitudeImportance(p=1), uniform ratio"),
    "tp-magnitude_l2_global": ("l2", "Torch-Pruning GroupMagnitudeImportance(p=2), global"),
}


# NetAdapt on a MACs budget (resource = MACs, analytic: no latency table): the official loop, with the first
# iteration's reduction sized so that ~NETADAPT_ITERS iterations reach the budget (the official 0.025 x 0.96^i
# would need ~40 iterations of 12 proposals for 50 %), the last iteration's target clipped to the budget (the
# other arms land on it exactly), NETADAPT_SHORT_STEPS short-term steps per proposal (upstream 500; recorded as
# scoring_batches, outside the epoch budget, like Gate Decorator's ticks), then all E epochs as the long-term
# fine-tune with the common fine-tune schedule. A proposal alone cannot always meet its iteration's target
# above its floor (it then takes the floor, the official fallback), so a run takes more iterations than
# NETADAPT_ITERS (the smoke protocol: 9 for 6); each costs <= 12 proposals of short-term steps + a validation pass.
NETADAPT_ITERS = 4
NETADAPT_SHORT_STEPS = 5
NETADAPT_DECAY = 0.96
# methods that are not pruners of a given baseline: never armed, with the reason in the summary
NOT_PRUNERS = {
    "condensenet": "CondenseNet is an architecture trained from scratch with learned group convolutions (a "
                   "DenseNet-style network condensed while it trains), not a pruner of a given baseline "
                   "checkpoint: it cannot start from the shared resnet20 nor be put on its MACs budget",
    "metapruning": "MetaPruning trains a PruningNet and the searched network from scratch (the paper's protocol), "
                   "not from the shared baseline checkpoint, so the fixed fine-tuning budget does not apply; "
                   "benchmarks/metapruning_cifar.py compares it with the uniform multiplier trained the same way",
}


def netadapt_init_reduction(budget: float, iters: int = NETADAPT_ITERS, decay: float = NETADAPT_DECAY) -> float:
    """The first iteration's reduction (fraction of R0) for which ``iters`` iterations remove ``1 - budget``."""
    return (1 - budget) * (1 - decay) / (1 - decay ** iters)


def method_recipe(name: str, p: Protocol, budget: float) -> tuple[dict[str, Any] | None, str]:
    """The recipe that puts method ``name`` on the budget and the epoch budget, or (None, why it is skipped)."""
    if name in NOT_PRUNERS:
        return None, NOT_PRUNERS[name]
    if name == "netadapt":
        return {"netadapt": {"target_macs": budget, "init_reduction": round(netadapt_init_reduction(budget), 6),
                             "decay": NETADAPT_DECAY, "max_iters": 4 * NETADAPT_ITERS, "clip_to_budget": True,
                             "round_to": 1, "min_channels": 8, "selection": "accuracy_per_latency",
                             "short_term_steps": NETADAPT_SHORT_STEPS, "uniform_points": 0, "measure_family": False},
                "short_term": {"epochs": 1, "lr": 1e-3, "schedule": "constant", "momentum": 0.9,
                               "weight_decay": 1e-4, "progress": False},
                "long_term": finetune_phase(p, p.epochs)}, ""
    cls = get_method(name).config_class
    names = {f.name for f in fields(cls)}
    if "target_macs" not in names:
        return None, f"its config ({cls.__name__}) has no target_macs: it cannot be put on a MACs budget"
    phases = train_fields(cls)
    if "finetune" not in phases:
        return None, (f"its training phases {phases} have no mapping onto the fixed epoch budget yet (no "
                      "`finetune` phase; add one to method_recipe)")
    E, P = p.epochs, p.pre_epochs
    if name == "slimming":
        return {"slimming": {"target_macs": budget, "sparsity": p.sparsity},
                "sparsity_train": pre_phase(p), "finetune": finetune_phase(p, E - P)}, ""
    if name == "gate_decorator":
        return {"gate_decorator": {"target_macs": budget, "prune_per_tick": p.prune_per_tick,
                                   "ticks_per_round": 100_000, "max_ticks": 100_000, "warmup_tock": True,
                                   "sparsity": p.gd_sparsity},
                "tick": {"epochs": 1, "steps_per_epoch": p.tick_steps, "lr": 1e-3, "schedule": "constant",
                         "progress": False},
                "tock": pre_phase(p), "finetune": finetune_phase(p, E - P)}, ""
    others = [ph for ph in phases if ph != "finetune"]
    if not others:  # one-shot methods (l1, l2): all E epochs fine-tune
        return {name: {"target_macs": budget}, "finetune": finetune_phase(p, E)}, ""
    # a method registered later with its own pre-pruning phases: each gets the pre-phase schedule, the rest is
    # fine-tuning, so its total is still E
    rest = E - P * len(others)
    if rest < 1:
        return None, f"its {len(others)} pre-pruning phase(s) {others} leave no fine-tuning within E={E}"
    return {name: {"target_macs": budget}, **{ph: pre_phase(p) for ph in others},
            "finetune": finetune_phase(p, rest)}, ""


def arm_id(method: str, budget: float, seed: int) -> str:
    return f"{method}-m{round(100 * budget)}-s{seed}"


# ----------------------------------------------------------------------------------------------- logging
class Log:
    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")


class EpochLog(Callback):
    """One log line per finished epoch of every training stage (the stages run without progress bars)."""

    def __init__(self, log: Log, arm: str):
        self.log, self.arm = log, arm

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        shown = {k: round(v, 3) for k, v in metrics.items() if isinstance(v, float) and k in
                 ("train_loss", "val_top1", "epoch_seconds")}
        self.log(f"  {self.arm} epoch {epoch + 1}/{trainer.config.epochs}: {shown}")


@contextmanager
def timed(path: Path, part: str):
    """Add this invocation's wall seconds of ``part`` to ``path`` (JSON), also when interrupted."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        data = json.loads(path.read_text()) if path.exists() else {}
        data[part] = data.get(part, 0.0) + time.perf_counter() - t0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))


def seconds(path: Path, part: str) -> float:
    return json.loads(path.read_text()).get(part, 0.0) if path.exists() else 0.0


# ----------------------------------------------------------------------------------------------- data / baseline
def data_args(p: Protocol) -> dict[str, Any]:
    return {} if p.image_size is None else {"image_size": p.image_size}


def build_loaders(p: Protocol, data_dir: str | None):
    """The protocol's loaders; the split and subset always come from seed 0 (the baseline's)."""
    return build_data(p.data, data_dir=data_dir, batch_size=p.batch_size, val_split=p.val_split, device="cpu",
                      seed=0, train_subset=p.train_subset, **data_args(p))


def with_order_seed(data, seed: int):
    """``data`` whose training loader shuffles and augments with ``seed`` (same images, same split)."""
    train = copy.copy(data.train)
    train.seed = int(seed)
    train._generator = torch.Generator(device=train.device)
    return replace(data, train=train)


def train_baseline(p: Protocol, data_dir: str | None, out: Path, log: Log) -> tuple[nn.Module, dict[str, Any]]:
    done = out / "baseline" / "baseline.json"
    ckpt = out / "baseline" / "last.ckpt"
    if not done.exists():
        cfg = _tc({"epochs": p.baseline_epochs, "lr": p.baseline_lr, "schedule": "cosine", "warmup_epochs": 1,
                   "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "seed": 0, "progress": False,
                   "steps_per_epoch": p.steps_per_epoch, "checkpoint_dir": out / "baseline", "resume": True})
        job = TrainJob(model=p.model, data=p.data, data_dir=data_dir, batch_size=p.batch_size, val_split=p.val_split,
                       train_subset=p.train_subset, data_args=data_args(p), config=cfg)
        log(f"baseline: training {p.model} for {p.baseline_epochs} epochs -> {ckpt}")
        with timed(out / "timing.json", "baseline"):
            outcome = run_training(job, log=log)
        hist = outcome.fit.history
        info = {"epochs": p.baseline_epochs, "test_top1": outcome.test.top1,
                "val_top1": hist[-1].get("val_top1") if hist else None,
                "seconds": seconds(out / "timing.json", "baseline"),
                "epoch_seconds": [h.get("epoch_seconds") for h in hist]}
        done.write_text(json.dumps(info, indent=2))
    info = json.loads(done.read_text())
    model, _ = load_trained_model(ckpt)
    log(f"baseline: test top-1 {info['test_top1']:.2f}% val {info['val_top1']}, {info['seconds'] / 60:.1f} min")
    return model.eval(), info


# ----------------------------------------------------------------------------------------------- prunekit arms
def run_prunekit_arm(name: str, recipe: dict[str, Any], base: nn.Module, data, p: Protocol, budget: float,
                     seed: int, out: Path, log: Log, command: str) -> dict[str, Any]:
    method = get_method(name)
    config = method_config(method, recipe, progress=False)
    info = RunInfo(name=arm_id(name, budget, seed), model_name=p.model, reduced=True, command=command,
                   settings={"protocol": asdict(p), "seed": seed, "budget": budget})
    with timed(out / "timing.json", "method"):
        res = method(config).run(copy.deepcopy(base), data, out, device="cpu", log=log, latency=False, info=info,
                                 callbacks=[EpochLog(log, arm_id(name, budget, seed))])
    schedule = {**phase_epochs(config), "total_epochs": sum(phase_epochs(config).values()) - (
        phase_epochs(config).get("tick_epochs", 0)), "batch_size": p.batch_size}
    if name == "netadapt":
        iters = int(res.details.get("iterations", 0))
        schedule.update(short_term_epochs=0, total_epochs=config.long_term.epochs if config.long_term else 0,
                        iterations=iters, proposals=sum(len(x) for x in res.details.get("proposals", [])),
                        scoring_batches=iters * config.short_term_steps)
    if name == "gate_decorator":
        st = res.details.get("stages", {})
        schedule.update(tick_epochs=0, ticks=st.get("ticks"), tocks=st.get("tocks"),
                        scoring_batches=st.get("tick_batches"))
        schedule["total_epochs"] = st.get("tocks", 0) * config.tock.epochs + (config.finetune.epochs
                                                                              if config.finetune else 0)
    torch.save(res.model.cpu(), out / "final.pt")
    return {"model": res.model.cpu().eval(), "top1": res.pruned.top1.get("test"), "val_top1": res.pruned.top1.get(
        "val"), "params": res.pruned.params, "macs": res.pruned.macs, "schedule": schedule,
        "details": {k: v for k, v in res.details.items() if k in ("ratio", "passes", "ticks", "rounds", "floor_hit",
                                                                   "macs_kept", "stages", "ratio_removed",
                                                                   "iterations", "stopped")},
        "config": {k: v for k, v in recipe.items()}}


# ----------------------------------------------------------------------------------------------- Torch-Pruning arms
def _head(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _tp_pruner(kind: str, model: nn.Module, x: torch.Tensor, ratio: float, p: Protocol, **kw):
    import torch_pruning as tp

    common = dict(pruning_ratio=ratio, ignored_layers=[_head(model)], **kw)
    if kind == "tp-bn_scale":
        return tp.pruner.BNScalePruner(model, x, importance=tp.importance.BNScaleImportance(), reg=p.sparsity,
                                       global_pruning=True, max_pruning_ratio=0.9, **common)
    if kind == "tp-magnitude_l1_uniform":
        return tp.pruner.MagnitudePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                         global_pruning=False, **common)
    if kind == "tp-magnitude_l2_global":
        return tp.pruner.MagnitudePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                         global_pruning=True, max_pruning_ratio=0.9, **common)
    if kind == "tp-group_taylor":
        return tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupTaylorImportance(),
                                    global_pruning=True, max_pruning_ratio=0.9, **common)
    raise ValueError(kind)


def tp_ratio_for(kind: str, model: nn.Module, x: torch.Tensor, budget_macs: float, p: Protocol) -> float:
    """The smallest pruning ratio (bisection, 12 halvings) whose one-shot Torch-Pruning step meets the budget."""
    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        _tp_pruner(kind, trial, x, mid, p).step()
        lo, hi = (lo, mid) if count(trial, x).macs <= budget_macs else (mid, hi)
    return hi


def tp_taylor_prune(model: nn.Module, loader, x: torch.Tensor, budget_macs: float, p: Protocol) -> dict[str, Any]:
    """Iterative Torch-Pruning Taylor steps (gradients of ``tp_grad_batches`` training batches before each, BN in
    eval mode) until the MACs fit."""
    pruner = _tp_pruner("tp-group_taylor", model, x, 0.9, p, iterative_steps=p.tp_granularity)
    loader.set_epoch(10**6)  # a data order of its own, seeded by the loader's seed
    it, steps, batches = iter(loader), 0, 0
    while count(model, x).macs > budget_macs and pruner.current_step < p.tp_granularity:
        model.zero_grad(set_to_none=True)
        model.eval()
        for _ in range(p.tp_grad_batches):
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                xb, yb = next(it)
            nn.functional.cross_entropy(model(xb), yb).backward()
            batches += 1
        pruner.step()
        steps += 1
    model.zero_grad(set_to_none=True)
    model.train()
    return {"pruner_steps": steps, "scoring_batches": batches, "macs": count(model, x).macs}


def run_tp_arm(kind: str, base: nn.Module, data, p: Protocol, budget: float, seed: int, out: Path, log: Log
               ) -> dict[str, Any]:
    x = next(iter(data.test))[0][:1].detach().cpu()
    model = copy.deepcopy(base).cpu()
    budget_macs = budget * count(model, x).macs
    pipe = Pipeline(out, x, device="cpu", log=log,
                    settings={"arm": kind, "protocol": asdict(p), "seed": seed, "budget": budget})
    E, P = p.epochs, p.pre_epochs
    schedule: dict[str, Any] = {"batch_size": p.batch_size}
    elog = EpochLog(log, arm_id(kind, budget, seed))
    with timed(out / "timing.json", "method"):
        if kind == "tp-bn_scale":
            reg = TPRegularize(_tp_pruner(kind, model, x, 0.5, p))
            model = pipe.train("sparsity", model, data.train, data.val, _tc(pre_phase(p)), [reg, elog],
                               settings={"reg": p.sparsity})
            schedule["sparsity_epochs"] = P
            ft = E - P
        else:
            ft = E

        def prune(m: nn.Module) -> dict[str, Any]:
            m.cpu()
            if kind == "tp-group_taylor":
                return tp_taylor_prune(m, data.train, x, budget_macs, p)
            ratio = tp_ratio_for(kind, m, x, budget_macs, p)
            _tp_pruner(kind, m, x, ratio, p).step()
            m.zero_grad(set_to_none=True)
            return {"ratio": ratio, "macs": count(m, x).macs, "val_top1_before_finetune": evaluate(m, data.val).top1}

        model = pipe.transform("prune", model, prune, settings={"budget": budget})
        pruned_metrics = pipe.records[-1].metrics
        model = pipe.train("finetune", model, data.train, data.val, _tc(finetune_phase(p, ft)), [elog])
        schedule.update(finetune_epochs=ft, total_epochs=E)
        if "scoring_batches" in pruned_metrics:
            schedule["scoring_batches"] = pruned_metrics["scoring_batches"]
    model.eval()
    c = count(model, x)
    torch.save(model.cpu(), out / "final.pt")
    return {"model": model, "top1": evaluate(model, data.test).top1, "val_top1": evaluate(model, data.val).top1,
            "params": c.params, "macs": c.macs, "schedule": schedule,
            "details": {"description": TP_ARMS[kind][1], **{k: v for k, v in pruned_metrics.items()
                                                              if k in ("ratio", "pruner_steps", "macs")}}}


# ----------------------------------------------------------------------------------------------- records
def tp_version() -> str:
    """The installed torch-pruning distribution's version (its module's ``__version__`` says 1.6.0 in 1.6.1)."""
    try:
        from importlib.metadata import version
        return version("torch-pruning")
    except Exception:  # noqa: BLE001
        return "not installed"


def arm_record(p: Protocol, arm: str, method: str, budget: float, seed: int, r: dict[str, Any],
               baseline: dict[str, Any], command: str, wall_s: float) -> dict[str, Any]:
    is_tp = method.startswith("tp-")
    rec = envelope(f"compare-methods-{p.name}-{arm}", device="cpu", command=command,
                   method=("torch_pruning:" + method[3:]) if is_tp else method, model=p.model,
                   dataset=p.data, reduced=p.reduced, seed=seed, budget_macs_kept=budget,
                   schedule={**r["schedule"], "protocol": asdict(p)},
                   baseline={"top1": round(baseline["top1"], 2), "top1_val": baseline.get("val_top1"),
                             "params": baseline["params"], "macs": baseline["macs"]},
                   pruned={"top1": round(r["top1"], 2), "top1_val": round(r["val_top1"], 2) if r["val_top1"] else None,
                           "params": r["params"], "macs": r["macs"], "macs_kept": r["macs"] / baseline["macs"]},
                   latency_ms=None, method_wall_s=round(wall_s, 1), details=r.get("details", {}),
                   counterpart=TP_ARMS[method][0] if is_tp else None)
    rec["versions"]["torch_pruning"] = tp_version()
    rec["metrics"] = {"top1": rec["pruned"]["top1"], "macs": r["macs"], "params": r["params"],
                      "method_wall_s": rec["method_wall_s"]}
    return rec


def label(method: str) -> str:
    if method.startswith("tp-"):
        return "TP " + method[3:].replace("_", " ")
    return method


def mean_std(vals: list[float]) -> tuple[float, float]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return float("nan"), float("nan")
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def measure_latencies(models: dict[str, nn.Module], x1: torch.Tensor, path: Path, log: Log) -> dict[str, Any]:
    """{arm: {"cpu_bs1": ms, "cpu_bs16": ms}} with every model timed in the same interleaved rounds."""
    cached = json.loads(path.read_text()) if path.exists() else {}
    if set(models) <= set(cached.get("models", {})):
        return cached
    out: dict[str, Any] = {"models": {k: {} for k in models}, "settings": {}}
    for key, bs in (("cpu_bs1", 1), ("cpu_bs16", 16)):
        x = x1[:1].repeat(bs, 1, 1, 1)
        log(f"latency {key}: {len(models)} models, interleaved, 1 thread, thread CPU-time clock")
        # clock="cpu": the process's own CPU time, which other processes on a shared machine do not distort (the
        # load rule flags every wall-clock measurement there); one attempt, at most 6 s per model
        res = compare_latency(models, x, threads=1, repeats=30, warmup=5, clock="cpu", retries=0, budget_s=6.0)
        for k, r in res.items():
            out["models"][k][key] = round(r.median_ms, 4)
            out["models"][k][key + "_noisy"] = bool(getattr(r, "noisy", False))
        any_r = next(iter(res.values()))
        out["settings"][key] = {"batch": bs, "threads": 1, "repeats": 30, "clock": "cpu (process time)",
                                "loadavg": getattr(any_r, "loadavg", None)}
    path.write_text(json.dumps(out, indent=2))
    return out


def write_outputs(p: Protocol, recs: list[dict[str, Any]], baseline: dict[str, Any], prefix: str, log: Log,
                  command: str, skipped: dict[str, str], total_s: float | None, note: str | None = None) -> None:
    rows = []
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault((r["_method"], r["budget_macs_kept"]), []).append(r)
    order = [m for m in list_methods()] + list(TP_ARMS)
    bl = baseline.get("latency_ms") or {}
    lines = [f"**Protocol `{p.name}`** (reduced): {p.model} on {p.data}"
             + (f" at {p.image_size}x{p.image_size}" if p.image_size else "")
             + f", {baseline['train_images']} training images, {baseline['val_images']} validation (held out of the "
               f"training set), {baseline['test_images']} test; baseline {p.baseline_epochs} epochs; every arm "
               f"{p.epochs} epochs after the baseline (pre-pruning phases: {p.pre_epochs} of them); seeds "
               f"{list(p.seeds)}. Top-1 on the test set, mean ± std over seeds; latency: median ms per batch on the "
               f"CPU, 1 thread, all models timed in the same interleaved rounds; wall: the method's own minutes "
               f"(training included) per run.", "",
             f"Baseline: top-1 {baseline['top1']:.2f}%, {baseline['params'] / 1e3:.1f}K params, "
             f"{baseline['macs'] / 1e6:.2f}M MACs, latency bs1 {bl.get('cpu_bs1', float('nan')):.3f} ms, "
             f"bs16 {bl.get('cpu_bs16', float('nan')):.3f} ms.", "",
             "| method | MACs budget | top-1 (%) | val top-1 (%) | params | MACs (kept) | CPU bs1 ms | CPU bs16 ms "
             "| bs16 speed-up | wall min | n |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for budget in p.budgets:
        for m in order:
            g = groups.get((m, budget))
            if not g:
                continue
            t, ts = mean_std([r["pruned"]["top1"] for r in g])
            v, _ = mean_std([r["pruned"]["top1_val"] for r in g])
            params = statistics.mean(r["pruned"]["params"] for r in g)
            macs = statistics.mean(r["pruned"]["macs"] for r in g)
            l1, _ = mean_std([(r.get("latency_ms") or {}).get("cpu_bs1") for r in g])
            l16, _ = mean_std([(r.get("latency_ms") or {}).get("cpu_bs16") for r in g])
            wall, _ = mean_std([r["method_wall_s"] / 60 for r in g])
            sp = bl.get("cpu_bs16", float("nan")) / l16 if l16 == l16 else float("nan")
            rows.append({"method": m, "budget": budget, "top1": t, "top1_std": ts, "val_top1": v, "params": params,
                         "macs": macs, "cpu_bs1_ms": l1, "cpu_bs16_ms": l16, "wall_min": wall, "n": len(g)})
            lines.append(f"| {label(m)} | {budget:.0%} | {t:.2f} ± {ts:.2f} | {v:.2f} | {params / 1e3:.1f}K | "
                         f"{macs / 1e6:.2f}M ({macs / baseline['macs']:.1%}) | {l1:.3f} | {l16:.3f} | {sp:.2f}x | "
                         f"{wall:.1f} | {len(g)} |")
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())]
    lines += ["", f"Command: `{command}`" + (f" — total wall time {total_s / 60:.0f} min" if total_s else "")]
    if note:
        lines += ["", note]
    table = "\n".join(lines) + "\n"
    (RESULTS if p.name != "smoke" else prefix_dir(prefix)).mkdir(parents=True, exist_ok=True)
    Path(prefix + "-table.md").write_text(table)
    summary = envelope(f"compare-methods-{p.name}-summary", device="cpu", command=command, reduced=p.reduced,
                       protocol=asdict(p), baseline=baseline, rows=rows, skipped=skipped,
                       total_wall_s=total_s, arms=[r["name"] for r in recs], **({"note": note} if note else {}))
    summary["versions"]["torch_pruning"] = tp_version()
    write_record(summary, prefix + "-summary.json")
    plot(p, rows, baseline, prefix + "-pareto.png")
    log(f"table -> {prefix}-table.md\n{table}")


def prefix_dir(prefix: str) -> Path:
    return Path(prefix).parent


def plot(p: Protocol, rows: list[dict[str, Any]], baseline: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_spec = [("macs", "MACs (M)", 1e-6), ("cpu_bs1_ms", "CPU latency, batch 1 (ms)", 1.0),
                 ("cpu_bs16_ms", "CPU latency, batch 16 (ms)", 1.0)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    markers = {"l1": "o", "l2": "s", "slimming": "^", "gate_decorator": "D"}
    tp_markers = {"tp-magnitude_l1_uniform": "o", "tp-magnitude_l2_global": "s", "tp-bn_scale": "^",
                  "tp-group_taylor": "D"}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    bl = baseline.get("latency_ms") or {}
    for ax, (key, xlabel, scale) in zip(axes, axes_spec):
        for m in methods:
            pts = sorted((r for r in rows if r["method"] == m), key=lambda r: r["macs"])
            xs = [r[key] * scale for r in pts]
            if not xs or any(v != v for v in xs):
                continue
            is_tp = m.startswith("tp-")
            colour = COLOURS.get(TP_ARMS[m][0] if is_tp else m, "#7f7f7f")
            marker = (tp_markers if is_tp else markers).get(m, "v")
            ax.errorbar(xs, [r["top1"] for r in pts], yerr=[r["top1_std"] for r in pts], color=colour,
                        marker=marker, markersize=8, linestyle="--" if is_tp else "-", linewidth=1, capsize=3,
                        markerfacecolor="none" if is_tp else colour, markeredgewidth=1.6, label=label(m))
        bx = {"macs": baseline["macs"] * 1e-6, "cpu_bs1_ms": bl.get("cpu_bs1"), "cpu_bs16_ms": bl.get("cpu_bs16")}[key]
        if bx is not None:
            ax.plot([bx], [baseline["top1"]], marker="*", color="black", markersize=14, linestyle="none",
                    label="baseline")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{p.model} on {p.data}" + (f" {p.image_size}px" if p.image_size else "")
                 + f": every method at budgets {', '.join(f'{b:.0%}' for b in p.budgets)} of the MACs "
                   f"(filled: prunekit, hollow: Torch-Pruning {tp_version()}; mean ± std over {len(p.seeds)} seeds)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu")
    ap.add_argument("--smoke", action="store_true", help="= --protocol smoke (digits, 1 epoch, tiny)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--output", type=Path, default=None, help="run folder (default runs/compare-methods-<protocol>)")
    ap.add_argument("--log", type=Path, default=None, help="progress log (default: results/compare-methods.log)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these methods / TP arms (debugging)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (1 on a crowded machine)")
    ap.add_argument("--seeds", type=int, nargs="*", default=None,
                    help="run only these of the protocol's seeds (e.g. one process per seed); the others are "
                         "reported if finished")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: latency, table and plot of the arms finished so far")
    ap.add_argument("--from-records", action="store_true",
                    help="train and measure nothing, need no run folder: the table, summary and plot again from "
                         "the per-arm records already written (with the latencies they hold) and the baseline of "
                         "the last summary")
    args = ap.parse_args(argv)
    pname = "smoke" if args.smoke else args.protocol
    p = PROTOCOLS[pname]
    torch.set_num_threads(args.threads)
    out = args.output or ROOT / "runs" / f"compare-methods-{pname}"
    out.mkdir(parents=True, exist_ok=True)
    prefix = str((out / "records" if pname == "smoke" else RESULTS) / f"compare-methods-{pname}")
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    log = Log(args.log or (out / "compare-methods.log" if pname == "smoke" else RESULTS / "compare-methods.log"))
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/compare_methods.py",
                                                 *(argv if argv is not None else sys.argv[1:])])
    data_dir = args.data_dir if p.data.startswith("cifar") else None
    if args.from_records:
        return from_records(p, prefix, log, command)
    t_start = time.perf_counter()
    log(f"compare-methods protocol {pname}: {asdict(p)}")
    try:
        with timed(out / "timing.json", "total"):  # wall time of all invocations together
            return _run(p, pname, args, out, prefix, log, command, data_dir, t_start)
    except TrainingInterrupted as e:
        log(f"interrupted ({e}); run the same command again to continue")
        return 3


def planned_arms(p: Protocol) -> tuple[list[tuple[str, float, int, dict | None]], dict[str, str]]:
    """Every arm of the protocol (seed-major) and the methods skipped, with why."""
    skipped: dict[str, str] = {}
    arms: list[tuple[str, float, int, dict | None]] = []
    for seed in p.seeds:  # seed-major: a run cut short still has every arm of the first seed
        for budget in p.budgets:
            for name in list_methods():
                recipe, why = method_recipe(name, p, budget)
                if recipe is None:
                    skipped[name] = why
                    continue
                arms.append((name, budget, seed, recipe))
            for kind in TP_ARMS:
                arms.append((kind, budget, seed, None))
    return arms, skipped


def from_records(p: Protocol, prefix: str, log: Log, command: str) -> int:
    """Table, summary and plot from the per-arm records (``--from-records``); arms without one are listed."""
    old_path = Path(prefix + "-summary.json")
    if not old_path.exists():
        log(f"--from-records needs {old_path} (the baseline of the run that wrote the records)")
        return 2
    old = json.loads(old_path.read_text())
    arms, skipped = planned_arms(p)
    recs, missing = [], []
    for name, budget, seed, _ in arms:
        path = Path(f"{prefix}-{arm_id(name, budget, seed)}.json")
        if not path.exists():
            missing.append(arm_id(name, budget, seed))
            continue
        rec = json.loads(path.read_text())
        rec["_method"] = name
        rec["latency_ms"] = {k: (v.get("pruned") if isinstance(v, dict) else v)
                             for k, v in (rec.get("latency_ms") or {}).items()}
        recs.append(rec)
    for name, why in skipped.items():
        log(f"skip {name}: {why}")
    if missing:
        skipped["not run yet (run the protocol's command to add them)"] = ", ".join(missing)
    note = (f"Table regenerated from the {len(recs)} per-arm records by `{command}` (nothing re-run); latencies "
            "as each record holds them (arms of one invocation were timed in the same interleaved rounds).")
    write_outputs(p, recs, old["baseline"], prefix, log, old.get("command", command), skipped,
                  old.get("total_wall_s"), note=note)
    return 0


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _run(p: Protocol, pname: str, args, out: Path, prefix: str, log: Log, command: str, data_dir: str | None,
         t_start: float) -> int:

    base, binfo = train_baseline(p, data_dir, out, log)
    data0 = build_loaders(p, data_dir)
    log(f"data: {data0.summary()}")
    x1 = next(iter(data0.test))[0][:1].cpu()
    c0 = count(base, x1)
    baseline = {"top1": binfo["test_top1"], "val_top1": binfo["val_top1"], "params": c0.params, "macs": c0.macs,
                "epochs": p.baseline_epochs, "seconds": binfo["seconds"], "train_images": data0.train.num_samples,
                "val_images": data0.val.num_samples, "test_images": data0.test.num_samples}

    arms, skipped = planned_arms(p)
    for name, why in skipped.items():
        log(f"skip {name}: {why}")
    if args.only:
        arms = [a for a in arms if a[0] in args.only]
    mine = set(args.seeds if args.seeds is not None else p.seeds)

    recs, models, failed, missing = [], {"baseline": base}, {}, []
    for i, (name, budget, seed, recipe) in enumerate(arms, 1):
        aid = arm_id(name, budget, seed)
        rec_path = Path(f"{prefix}-{aid}.json")
        arm_dir = out / aid
        if rec_path.exists() and (arm_dir / "final.pt").exists():
            rec = json.loads(rec_path.read_text())
            rec["_method"] = name
            recs.append(rec)
            models[aid] = torch.load(arm_dir / "final.pt", weights_only=False).eval()
            log(f"[{i}/{len(arms)}] {aid}: done before ({rec['pruned']['top1']:.2f}%)")
            continue
        if args.report_only or seed not in mine:
            missing.append(aid)
            continue
        lock = arm_dir / "running.pid"
        if lock.exists() and _alive(int(lock.read_text() or 0)):
            log(f"[{i}/{len(arms)}] {aid}: running in process {lock.read_text()}, skipped here")
            missing.append(aid)
            continue
        arm_dir.mkdir(parents=True, exist_ok=True)
        lock.write_text(str(os.getpid()))
        log(f"[{i}/{len(arms)}] {aid}: start")
        data = with_order_seed(data0, seed)
        try:
            if recipe is not None:
                r = run_prunekit_arm(name, recipe, base, data, p, budget, seed, arm_dir, log, command)
            else:
                r = run_tp_arm(name, base, data, p, budget, seed, arm_dir, log)
        except TrainingInterrupted as e:
            log(f"{aid}: interrupted ({e}); run the same command again to continue")
            return 3
        except Exception as e:  # noqa: BLE001  one failing arm must not stop the comparison
            failed[aid] = f"{type(e).__name__}: {e}"
            log(f"{aid}: FAILED {failed[aid]}\n{traceback.format_exc()}")
            continue
        finally:
            lock.unlink(missing_ok=True)
        wall = seconds(arm_dir / "timing.json", "method")
        rec = arm_record(p, aid, name, budget, seed, r, baseline, command, wall)
        write_record(rec, rec_path)
        rec["_method"] = name
        recs.append(rec)
        models[aid] = r["model"]
        log(f"[{i}/{len(arms)}] {aid}: top-1 {r['top1']:.2f}% (val {r['val_top1']:.2f}%) at "
            f"{r['macs'] / c0.macs:.1%} MACs, {r['params']} params, {wall / 60:.1f} min "
            f"(elapsed {(time.perf_counter() - t_start) / 60:.1f} min this invocation)")

    lat = measure_latencies(models, x1, out / "latency.json", log)
    baseline["latency_ms"] = lat["models"]["baseline"]
    for rec in recs:
        aid = rec["name"].split(f"compare-methods-{p.name}-", 1)[1]
        where = "2-core x86_64 CPU, 1 thread, CPU-time clock"
        rec["latency_ms"] = {k: {"device": where, "baseline": baseline["latency_ms"][k],
                                 "pruned": lat["models"][aid][k]} for k in ("cpu_bs1", "cpu_bs16")}
        flat = {k: lat["models"][aid][k] for k in ("cpu_bs1", "cpu_bs16")}
        rec["metrics"].update({f"latency_{k}_ms": v for k, v in flat.items()})
        write_record({k: v for k, v in rec.items() if k != "_method"}, f"{prefix}-{aid}.json")
        rec["latency_ms"] = flat
    total = seconds(out / "timing.json", "total") + time.perf_counter() - t_start  # earlier invocations + this
    if failed:
        skipped.update({k: "FAILED " + v for k, v in failed.items()})
    if missing:
        skipped["not finished yet (re-run the command to continue)"] = ", ".join(missing)
    write_outputs(p, recs, baseline, prefix, log, command, skipped, total)
    log(f"done: {len(recs)} arms, {len(failed)} failed, total wall {total / 60:.1f} min (all invocations)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
