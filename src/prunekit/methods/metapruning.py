"""MetaPruning (Liu et al., ICCV 2019): a PruningNet that generates weights for any width configuration,
evolutionary search of configurations under a MACs / params budget, the winner retrained from scratch.

- **Encoding**: one gene per prunable group (channels tied across residual adds share one, as upstream's
  per-stage gene), ``levels`` 0.10..1.00 step 0.03 (31) of the group's width; the group read by the classifier is
  held at full width (``fixed_groups``), as in every official network.
- **PruningNet** (:mod:`prunekit.methods.pruningnet`): a generator per conv / linear, prefix crops, affine-free
  BatchNorm; trained by the shared Trainer with one configuration drawn uniformly per step (the same on every
  DDP rank, and again after a resume), label smoothing 0.1, ``cudnn.benchmark`` off.
- **Sanity gate** (upstream users met near-random search accuracy): after BatchNorm recalibration the full and
  the uniform-0.5 configurations must score well above chance on the validation split, and accuracy must rise
  along the uniform family 0.3 → 1.0; otherwise the run stops and says which check failed.
- **Search** (:class:`~prunekit.planning.search.EvolutionarySearch`, upstream's defaults): candidates inside the
  window ``[target - window, target]`` of the full network's MACs (or params; analytic), fitness = validation
  top-1 of the generated weights after ``recal_batches`` training batches of BatchNorm recalibration; resumable
  per iteration. Under DDP every candidate is scored data-parallel (statistics and counts all-reduced), so every
  rank holds the same population. A random search with as many candidates is the control.
- **Winner**: the generated weights as they are (evaluated), optionally ``finetune``-d, and **retrained from
  scratch** (``retrain``, the paper's protocol; fresh weights: every layer's ``reset_parameters``), beside the
  **uniform width multiplier at equal or higher cost** and the random control's best, trained with the same recipe
  and data order, ``retrain_seeds`` seeds each (mean ± std in the record).

Report: ``search.png`` (best and mean fitness per iteration, the random control's best at equal evaluations),
``arms.png`` (per-group widths of full, uniform and winner), ``details["arms"]`` (MACs, params, measured latency,
top-1 per seed), ``details["gate"]``, ``details["search"]``.
"""

from __future__ import annotations

import copy
import math
import statistics
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

import numpy as np
import torch
import torch.nn as nn

from prunekit.cost import MacsCost, ParamsCost
from prunekit.errors import ConfigError, check_range
from prunekit.graph import DependencyGraph
from prunekit.methods.base import Method, MethodRun, register_method
from prunekit.methods.resources import latency_backend, latency_table
from prunekit.methods.pruningnet import PruningNet, classifier_groups, no_cudnn_benchmark
from prunekit.planning import EvolutionConfig, EvolutionarySearch, WidthSpace, random_search, width_levels
from prunekit.train import Callback, TrainConfig, evaluate
from prunekit.train.trainer import step_seed

Arm = Literal["winner", "uniform", "random"]


def _pruningnet_default() -> TrainConfig:
    # upstream ResNet: 1/4 of a normal training, wd 1e-4, lr x0.1 at 25/50/75 % (MobileNet: linear decay); a
    # cosine decay here, so that any epoch count works without milestones
    return TrainConfig(epochs=40, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="cosine", label_smoothing=0.1)


def _retrain_default() -> TrainConfig:
    return TrainConfig(epochs=160, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine",
                       label_smoothing=0.1)


@dataclass
class MetaPruningConfig:
    """MetaPruning options (upstream defaults where upstream has one).

    ``target_macs``: the budget as a fraction of the full network's MACs (this or ``target_params``).
    ``target_params``: the budget as a fraction of its parameters. ``target_latency``: the budget as a fraction of
    its latency on ``platform``, predicted by a latency look-up table measured there (NetAdapt's; needs
    ``round_to`` >= 4: the table holds every width of that grid). ``platform``: where latency is measured: cpu
    (torch eager, pinned threads) | onnxruntime | cuda (CUDA graphs). ``latency_batch``: batch size of the
    measurements (default 1 on the CPU targets, 128 on cuda). ``threads``: CPU threads of the measurements.
    ``clock``: wall or cpu (process CPU time, torch CPU only). ``lut_cache``: folder of the table cache (default
    ~/.cache/prunekit/lut). ``lut_check``: random configurations in the table's error report. ``window``:
    candidates must cost between target - window and target (fractions of the full network; upstream's ResNet-50
    window is ±2.5 % of 2.0 G).
    ``levels``: low, high, step of the width levels (fractions of a group kept; 31 levels by default).
    ``hidden``: generator width (upstream 32; 64 for MobileNetV2). ``fixed_groups``: groups held at full width
    (default: the classifier's input group). ``round_to``: channel grid of every width. ``min_channels``: the
    smallest width of a group. ``pruningnet``: the PruningNet's training. ``population``: candidates per search
    iteration. ``select``: best candidates kept across iterations. ``parents``: the top candidates children come
    from. ``mutations``: mutated children per iteration. ``crossovers``: crossover children per iteration.
    ``mutation_prob``: probability that a gene mutates. ``iterations``: search iterations.
    ``random_level_range``: level indices [lo, hi) random candidates draw from (default: all).
    ``recal_batches``: training batches of BatchNorm recalibration per candidate (upstream 100 × 1000 images).
    ``gate``: run the sanity gate before the search. ``gate_min_top1``: the validation top-1 the full and the
    uniform-0.5 configurations need (default 2 × chance). ``gate_tolerance``: the largest drop (points) allowed
    between neighbours of the uniform family 0.3, 0.5, 0.7, 1.0. ``random_control``: also score as many random
    candidates (the control). ``finetune``: fine-tuning of the winner's generated weights (default: none).
    ``retrain``: training of the winner and the controls from scratch (the paper's protocol).
    ``retrain_seeds``: seeds per retrained arm. ``controls``: the arms retrained beside the winner: uniform (the
    uniform multiplier at equal or higher cost) and/or random (the random control's best). ``train_full``: also
    train the full-width network with the retrain recipe (the report's baseline). ``seed``: the search's draws.
    """

    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    platform: Literal["cpu", "onnxruntime", "cuda"] = "cpu"
    latency_batch: int | None = None
    threads: int = 1
    clock: Literal["wall", "cpu"] = "wall"
    lut_cache: str | None = None
    lut_check: int = 20
    window: float = 0.025
    levels: tuple[float, float, float] = (0.10, 1.00, 0.03)
    hidden: int = 32
    fixed_groups: tuple[str, ...] | None = None
    round_to: int = 1
    min_channels: int = 1
    pruningnet: TrainConfig = field(default_factory=_pruningnet_default)
    population: int = 50
    select: int = 50
    parents: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    iterations: int = 20
    random_level_range: tuple[int, int] | None = None
    recal_batches: int = 100
    gate: bool = True
    gate_min_top1: float | None = None
    gate_tolerance: float = 2.0
    random_control: bool = True
    finetune: TrainConfig | None = None
    retrain: TrainConfig | None = field(default_factory=_retrain_default)
    retrain_seeds: int = 1
    controls: tuple[str, ...] = ("uniform", "random")
    train_full: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        given = [k for k in ("target_macs", "target_params", "target_latency") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError("MetaPruning needs exactly one of target_macs= / target_params= / target_latency= (the "
                              "fraction of the full network's MACs / parameters / latency the searched network may "
                              "keep)")
        if self.target_latency is not None and self.round_to < 4:
            raise ConfigError(f"target_latency needs round_to >= 4 (got {self.round_to}): the latency table measures "
                              "every width on that grid")
        if self.platform not in ("cpu", "onnxruntime", "cuda"):
            raise ConfigError(f"platform={self.platform!r} must be cpu, onnxruntime or cuda")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"clock={self.clock!r} must be 'wall' or 'cpu'")
        check_range(given[0], getattr(self, given[0]), 0, 1, low_open=True, high_open=True)
        check_range("window", self.window, 0, getattr(self, given[0]))
        if len(tuple(self.levels)) != 3:
            raise ConfigError(f"levels={self.levels!r} must be (low, high, step)")
        self.levels = tuple(float(v) for v in self.levels)
        width_levels(*self.levels)
        for name, low in (("hidden", 1), ("round_to", 1), ("min_channels", 1), ("recal_batches", 1),
                          ("retrain_seeds", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name}={v!r} must be an integer >= {low}")
        check_range("gate_tolerance", self.gate_tolerance, 0)
        self.controls = tuple(self.controls or ())
        bad = [a for a in self.controls if a not in ("uniform", "random")]
        if bad:
            raise ConfigError(f"controls={list(self.controls)!r}: each must be 'uniform' or 'random'")
        self.evolution()  # validates the search options
        if self.fixed_groups is not None:
            self.fixed_groups = tuple(self.fixed_groups)
        if self.random_level_range is not None:
            self.random_level_range = tuple(int(v) for v in self.random_level_range)

    @property
    def resource(self) -> str:
        return next(k for k in ("macs", "params", "latency") if getattr(self, f"target_{k}") is not None)

    @property
    def target(self) -> float:
        return float(getattr(self, f"target_{self.resource}"))

    def evolution(self) -> EvolutionConfig:
        return EvolutionConfig(population=self.population, select=self.select, parents=self.parents,
                               mutations=self.mutations, crossovers=self.crossovers,
                               mutation_prob=self.mutation_prob, iterations=self.iterations,
                               random_level_range=self.random_level_range)


class SampleWidths(Callback):
    """Before every PruningNet step: a configuration drawn uniformly over the levels of every gene, from
    ``(seed, step)`` alone — the same on every DDP rank and after a resume."""

    def __init__(self, net: PruningNet, space: WidthSpace):
        self.net, self.space = net, space

    def on_step_start(self, trainer, batch) -> None:
        rng = np.random.default_rng(step_seed(trainer.config.seed, trainer.global_step, "metapruning"))
        self.net.set_widths(self.space.widths(self.space.random(rng)))


def width_space(graph: DependencyGraph, c: MetaPruningConfig) -> WidthSpace:
    """The genes of ``graph`` under ``c``: every prunable group but the fixed ones (at full width)."""
    fixed = list(classifier_groups(graph) if c.fixed_groups is None else c.fixed_groups)
    for name in fixed:
        graph.group(name)  # unknown names raise with close matches
    groups = [g for g in graph.prunable_groups if g.name not in fixed]
    if not groups:
        raise ConfigError("MetaPruning: no prunable group left to search (all are fixed); check fixed_groups")
    return WidthSpace(tuple(g.name for g in groups), tuple(g.size for g in groups), width_levels(*c.levels),
                      fixed={n: graph.group(n).size for n in fixed}, round_to=c.round_to,
                      min_channels=c.min_channels)


def uniform_at_least(space: WidthSpace, cost, budget: float) -> tuple[float, dict[str, int]]:
    """The smallest uniform width multiplier (to 1e-4) whose network costs at least ``budget``: the paper's
    comparison at equal or higher cost."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost(space.uniform(mid)) >= budget:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-4:
            break
    return hi, space.uniform(hi)


def fresh_pruned(model: nn.Module, graph: DependencyGraph, widths: Mapping[str, int], seed: int) -> nn.Module:
    """A from-scratch network of ``widths``: ``model``'s architecture cut to the widths (prefix), every layer's
    ``reset_parameters()`` under ``torch.manual_seed(seed)``."""
    pruned = graph.plan(dict(widths), keep="prefix").materialize(copy.deepcopy(model).cpu())
    torch.manual_seed(seed)
    for m in pruned.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return pruned


def calibrate(run: MethodRun, net: PruningNet, widths: Mapping[str, int], batches: int) -> None:
    """BatchNorm statistics of ``widths`` from the first ``batches`` training batches of one fixed epoch order
    (every candidate sees the same images)."""
    if hasattr(run.data.train, "set_epoch"):
        run.data.train.set_epoch(10 ** 6)
    with torch.no_grad(), no_cudnn_benchmark(run.device):
        net.calibrate_bn(widths, run.data.train, batches)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return (float(statistics.mean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0)


@register_method("metapruning", config=MetaPruningConfig, title="MetaPruning")
class MetaPruning(Method):
    """MetaPruning: see the module docstring."""

    def check(self, run: MethodRun, model: nn.Module) -> None:
        if not any(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in model.modules()):
            raise ConfigError("MetaPruning needs a network with conv or linear layers")
        width_space(run.graph0, self.config)

    # ---- pieces ---------------------------------------------------------------------------------------------
    def cost(self, run: MethodRun, model: nn.Module, graph: DependencyGraph):
        """The resource model of the budget: analytic MACs / params, or the measured latency table."""
        c = self.config
        if c.resource == "macs":
            return MacsCost(graph)
        if c.resource == "params":
            return ParamsCost(graph)
        backend = latency_backend(run, c.platform, batch=c.latency_batch, dtype=None, threads=c.threads,
                                  clock=c.clock)
        table, metrics = latency_table(run, model, backend, round_to=c.round_to, min_channels=c.min_channels,
                                       cache_dir=c.lut_cache, check=c.lut_check)
        run.details["lut"] = {k: v for k, v in metrics.items() if k != "table"}
        return table

    def fitness(self, run: MethodRun, net: PruningNet, space: WidthSpace):
        """Validation top-1 of each candidate's generated weights after BatchNorm recalibration (the same
        ``recal_batches`` training batches for every candidate)."""
        c = self.config

        def score(widths: Mapping[str, int]) -> float:
            calibrate(run, net, widths, c.recal_batches)
            return evaluate(net, run.data.val).top1

        def fitness(candidates: list) -> list[float]:
            net.eval()
            with torch.no_grad(), no_cudnn_benchmark(run.device):
                return [score(space.widths(g)) for g in candidates]
        return score, fitness

    def gate(self, run: MethodRun, score, space: WidthSpace) -> dict[str, Any]:
        """The sanity gate's numbers and verdict (see the module docstring)."""
        c = self.config
        classes = getattr(getattr(run.data, "spec", None), "num_classes", None) or 10
        chance = 100.0 / classes
        need = c.gate_min_top1 if c.gate_min_top1 is not None else 2 * chance
        family = {f"{r:.1f}": score(space.uniform(r)) for r in (0.3, 0.5, 0.7, 1.0)}
        failures = []
        for key in ("1.0", "0.5"):
            if family[key] < need:
                failures.append(f"the {'full' if key == '1.0' else 'uniform-0.5'} configuration scores "
                                f"{family[key]:.1f}% on the validation split, below {need:.1f}% ({chance:.0f}% is "
                                "chance)")
        vals = list(family.values())
        drops = [(a, b) for a, b in zip(family, list(family)[1:]) if family[a] - family[b] > c.gate_tolerance]
        if vals[-1] <= vals[0]:
            failures.append(f"accuracy does not rise along the uniform family (0.3: {vals[0]:.1f}%, 1.0: "
                            f"{vals[-1]:.1f}%)")
        for a, b in drops:
            failures.append(f"accuracy falls from uniform {a} ({family[a]:.1f}%) to {b} ({family[b]:.1f}%) by more "
                            f"than gate_tolerance={c.gate_tolerance}")
        return {"uniform_family_val_top1": family, "min_top1": need, "chance": chance, "failures": failures}

    # ---- the loop -------------------------------------------------------------------------------------------
    def execute(self, run: MethodRun, model: nn.Module) -> nn.Module:
        c = self.config
        graph = run.graph0
        space = width_space(graph, c)
        cost = self.cost(run, model, graph)
        full = float(cost(graph.widths()))
        window = ((c.target - c.window) * full, c.target * full)
        run.details["space"] = {"genes": len(space.groups), "levels": len(space.levels),
                                "fixed": dict(space.fixed), "resource": c.resource, "full": full,
                                "window": list(window)}

        net = PruningNet(model.cpu(), graph, hidden=c.hidden).to(run.device)
        run.details["pruningnet"] = {"generator_params": net.generator_params(),
                                     "network_params": sum(p.numel() for p in model.parameters())}
        with no_cudnn_benchmark(run.device):
            net = run.train("pruningnet", net, c.pruningnet, [SampleWidths(net, space)], validate=False,
                            artifact="state")
        run.details["pruningnet"].update(run.last_metrics())
        net.to(run.device)
        score, fitness = self.fitness(run, net, space)

        if c.gate:
            def gate(_m: nn.Module) -> dict[str, Any]:
                out = self.gate(run, score, space)
                if out["failures"]:
                    run.log("sanity gate: " + str(out["uniform_family_val_top1"]))
                    raise ConfigError("MetaPruning sanity gate failed before the search: " + "; ".join(
                        out["failures"]) + ". Train the PruningNet longer (pruningnet.epochs), check the data "
                        "normalisation, or raise recal_batches.")
                return out
            run.transform("gate", model, gate, kind="evaluate", artifact="json",
                          settings={"recal_batches": c.recal_batches, "tolerance": c.gate_tolerance,
                                    "min_top1": c.gate_min_top1})
            run.details["gate"] = run.last_metrics()
            run.log(f"sanity gate passed: {run.details['gate']['uniform_family_val_top1']}")

        evo = c.evolution()

        def search(_m: nn.Module) -> dict[str, Any]:
            es = EvolutionarySearch(space, cost, window, fitness, evo, seed=c.seed,
                                    snapshot=run.pipe.stage_dir("search") / "search.json", log=run.log)
            best = es.run()
            return {"genes": list(best), "widths": space.widths(best), "fitness": es.cache[best],
                    "cost": es.costs.get(best, float(cost(space.widths(best)))), "history": es.history,
                    "evaluated": len(es.cache)}
        run.transform("search", model, search, kind="search", artifact="json",
                      settings={"search": evo.__dict__, "window": list(window), "levels": list(c.levels),
                                "recal_batches": c.recal_batches, "seed": c.seed, "fixed": dict(space.fixed)})
        found = run.last_metrics()
        winner = {k: int(v) for k, v in found["widths"].items()}
        run.details["search"] = found
        arms: dict[str, dict[str, int]] = {"winner": winner}

        if c.random_control:
            def control(_m: nn.Module) -> dict[str, Any]:
                scored = random_search(space, cost, window, fitness, found["evaluated"], seed=c.seed + 1,
                                       batch=c.population, level_range=c.random_level_range)
                best_so_far = list(np.maximum.accumulate([f for _, f in scored]))
                g, f = max(scored, key=lambda t: t[1])
                return {"genes": list(g), "widths": space.widths(g), "fitness": f, "best_so_far": best_so_far,
                        "evaluated": len(scored)}
            run.transform("random-control", model, control, kind="search", artifact="json", parent="search",
                          settings={"count": found["evaluated"], "seed": c.seed + 1})
            rc = run.last_metrics()
            run.details["random_control"] = rc
            arms["random"] = {k: int(v) for k, v in rc["widths"].items()}
        ratio, uniform = uniform_at_least(space, cost, float(cost(winner)))
        arms["uniform"] = uniform
        run.details["uniform_multiplier"] = ratio
        self._plot_search(run, found, run.details.get("random_control"))

        def generated(_m: nn.Module) -> dict[str, Any]:
            calibrate(run, net, winner, c.recal_batches)
            m = net.materialize(winner).to(run.device)
            return {"val_top1": run.evaluate(m, "val"), "test_top1": run.evaluate(m, "test")}
        run.transform("generated", model, generated, kind="evaluate", artifact="json", parent="search")
        run.details["generated"] = run.last_metrics()
        calibrate(run, net, winner, c.recal_batches)
        final = net.materialize(winner).to(run.device)
        if c.finetune is not None:
            final = run.train("finetune", final, c.finetune, parent="generated")
            run.details["finetuned"] = {k: run.evaluate(final, k) for k in ("val", "test")}

        if c.retrain is not None:
            names = ["winner"] + [a for a in c.controls if a in arms]
            results: dict[str, list[dict[str, Any]]] = {a: [] for a in names}
            for s in range(c.retrain_seeds):
                for arm in names:
                    m = self._retrain(run, model, graph, arm, arms[arm], s)
                    results[arm].append(run.last_metrics())
                    if arm == "winner" and s == 0:
                        final = m
            run.details["arms"] = self._arms(run, model, graph, cost, full, arms, results)
            from prunekit.report import arms_table

            run.tables.append(arms_table("MetaPruning: searched winner vs controls (retrained from scratch)",
                                         {a: run.details["arms"][a] for a in results},
                                         full_macs=graph.macs()))
        if c.train_full and c.retrain is not None:
            full_model = run.train("retrain-full-s0", fresh_pruned(model, graph, {}, c.retrain.seed), c.retrain,
                                   parent="search", data_offset=1000 * 10)
            run.set_baseline(full_model)
        else:
            run.set_baseline(model)
        self._plot_widths(run, graph, arms)
        return final

    def _retrain(self, run: MethodRun, model: nn.Module, graph: DependencyGraph, arm: str,
                 widths: Mapping[str, int], s: int) -> nn.Module:
        c = self.config
        cfg = replace(c.retrain, seed=c.retrain.seed + s)
        fresh = fresh_pruned(model, graph, widths, cfg.seed)

        def after(m: nn.Module, _t=None) -> dict[str, Any]:
            return {"val_top1": run.evaluate(m, "val"), "test_top1": run.evaluate(m, "test")}
        # every arm of seed s sees the same data order: a paired comparison
        return run.train(f"retrain-{arm}-s{s}", fresh, cfg, parent="search", after=after,
                         data_offset=1000 * (10 + s), settings={"widths": dict(widths)},
                         artifact="model" if s == 0 else "json")

    def _arms(self, run: MethodRun, model: nn.Module, graph: DependencyGraph, cost, full: float,
              arms: Mapping[str, Mapping[str, int]], results: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """Per arm: widths, cost, params, MACs, top-1 per seed with mean ± std, and measured latency."""
        out: dict[str, Any] = {}
        for arm, recs in results.items():
            tests = [float(r["test_top1"]) for r in recs]
            vals = [float(r["val_top1"]) for r in recs]
            mean, std = _mean_std(tests)
            out[arm] = {"widths": dict(arms[arm]), "cost_fraction": float(cost(arms[arm])) / full,
                        "macs": int(graph.macs(dict(arms[arm]))), "params": int(graph.params(dict(arms[arm]))),
                        "test_top1": tests, "val_top1": vals, "test_top1_mean": mean, "test_top1_std": std}
        if run.latency:
            from prunekit.cost.latency import compare_latency

            models = {a: fresh_pruned(model, graph, arms[a], 0).eval() for a in results}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # recorded per arm as "noisy"
                lat = compare_latency(models, run.x[:1], threads=1, repeats=30, warmup=5, clock="cpu")
            for arm, r in lat.items():
                out[arm]["latency_ms_cpu_bs1"] = {"median": r.median_ms, "p10": r.p10_ms, "p90": r.p90_ms,
                                                  "clock": r.clock, "noisy": r.noisy}
        if "uniform" in out and len(out["winner"]["test_top1"]) > 1:
            w, u = out["winner"], out["uniform"]
            pooled = math.sqrt((w["test_top1_std"] ** 2 + u["test_top1_std"] ** 2) / 2)
            diff = w["test_top1_mean"] - u["test_top1_mean"]
            out["winner_minus_uniform"] = {"difference": diff, "pooled_std": pooled,
                                           "verdict": "winner better" if diff > pooled else
                                           "uniform better" if -diff > pooled else "inconclusive at this scale"}
        return out

    def _plot_search(self, run: MethodRun, found: Mapping[str, Any], control: Mapping[str, Any] | None) -> None:
        hist = found["history"]
        x = [h["evaluated"] for h in hist]
        ys = {"search: best": [h["best"] for h in hist], "search: population mean": [h["mean"] for h in hist]}
        if control is not None:
            bsf = control["best_so_far"]
            ys["random: best"] = [bsf[min(len(bsf), int(n)) - 1] for n in x]
        run.plot_trajectory("search.png", x, ys, title="MetaPruning search (validation top-1 of generated weights)",
                            xlabel="candidates evaluated", ylabel="top-1 (%)")

    def _plot_widths(self, run: MethodRun, graph: DependencyGraph, arms: Mapping[str, Mapping[str, int]]) -> None:
        from prunekit.report.plots import plot_width_configs

        configs = {"full": {g.name: g.size for g in graph.prunable_groups}}
        configs.update({a: dict(w) for a, w in arms.items()})
        path = plot_width_configs(configs, run.out / "arms.png", title="MetaPruning: channels per group")
        run.artifacts["arms_png"] = str(path)
