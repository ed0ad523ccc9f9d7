"""NetAdapt (Yang et al., ECCV 2018): platform-aware adaptation — shrink one group per iteration, guided by a latency
look-up table measured on the target, keeping the proposal that loses the least accuracy.

- **Resource.** Latency predicted by a :class:`~prunekit.cost.lut.LatencyTable` measured on the target
  (``platform``: torch eager CPU with pinned threads, ONNX Runtime CPU, or CUDA graphs), or MACs / params (the
  same loop with an analytic cost model). R0 = the input network's measured latency (the table's constant makes
  its prediction equal to it).
- **Iteration i** (1-based) targets ``R_{i-1} - init_reduction · R0 · decay^(i-1)`` (official defaults 0.025 and
  0.96; R_{i-1} is the resource the previous iteration achieved). For every prunable group (one proposal per
  ``ChannelGroup``: channels tied across residual adds shrink together — the official code ties only the filter
  *counts* of such layers and picks each layer's filters from its own norms), the largest width on the grid
  (multiples of ``round_to``, at least the group's floor) whose predicted resource meets the target; if none
  does, the floor (the official code's fallback). Filters kept: largest group L2 norm (over all producing layers).
- **Short-term fine-tune** of every proposal (``short_term_steps``, official 500; a fresh SGD, lr 1e-3), then
  top-1 on the **validation split held out of training** (the official code evaluates on the training set).
- **Selection** among proposals that lower the resource: ``accuracy`` (the paper: highest accuracy) or
  ``accuracy_per_latency`` (the official code: smallest accuracy drop per unit of resource saved,
  ``(A - a + 1e-6) / (R - r + 1e-5)``). A per-group floor (``min_channels``, ``min_keep``) stops the collapse
  to one filter that ports of the official code show; groups that reach it are reported.
- **Stop** when the resource is at most ``target_* · R0`` or after ``max_iters`` iterations, then the
  **long-term fine-tune**. Every iteration's network is kept (``<run>/iterNN/model.safetensors``, with its
  predicted and measured latency and validation accuracy in ``details["family"]``): any point of the
  accuracy/latency curve can be taken afterwards. Each proposal and each iteration is a pipeline stage
  (proposals branch from their iteration's network and store only their weights), so a killed run resumes
  mid-iteration.
- **Processes.** Under ``torchrun --nproc_per_node N -m prunekit prune netadapt ...`` (or ``NetAdapt.run`` in
  every process of a torchrun launch; NetAdapt joins the process group, gloo) the proposals of an iteration are
  shared: proposal ``j`` (in group order) is fine-tuned and evaluated by rank ``j % N`` alone — a plain
  single-process fine-tune (``prunekit.train.distributed.local``: no DDP, no reduction with the other ranks) on
  ``cuda:LOCAL_RANK`` (GPUs shared round-robin when there are fewer than N) or the CPU. The proposal stages in the
  run folder are the exchange (the folder must be shared by all ranks: one machine or a shared file system):
  each rank loads the others' once written, every rank selects alike (checked with ``all_gather_object``), and
  the family and widths are those of a one-process run with the same seed. Rank 0 alone runs everything else —
  the LUT, each iteration's network (and its measurement, while the others wait), the uniform points, the
  long-term fine-tune (single-process: to fine-tune the result with DDP, ``torchrun ... prunekit train --init
  <run>/model.safetensors``) — and writes the report; ranks > 0 return the same model and details with summaries
  of counts. Every rank needs the full (unsharded) loaders, as ``prunekit prune`` builds them. Stages do not
  depend on N: a killed parallel run resumes (finished proposals are loaded, an interrupted one continues from
  its checkpoint) with any number of processes, one included.

Report: ``family.png`` (validation accuracy vs measured latency of every iteration, with uniformly pruned
networks of the same predicted latencies, each given one short-term fine-tune), ``lut_error_hist.png``,
``details["lut"]`` (the table's error report) and ``lut.json`` in the run folder.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar

import torch
import torch.distributed as torch_dist
import torch.nn as nn

from prunekit.cost import MacsCost, ParamsCost
from prunekit.cost.lut import LatencyTable
from prunekit.errors import ConfigError, check_range
from prunekit.graph import resolve_width
from prunekit.methods.base import Method, MethodRun, RunInfo, config_settings, register_method
from prunekit.methods.resources import latency_backend, latency_table
from prunekit.methods.result import PruneResult
from prunekit.planning import apply_widths, channel_floors, largest_width
from prunekit.train import Callback, TrainConfig, distributed

Rule = Literal["accuracy", "accuracy_per_latency"]


def _short_term_default() -> TrainConfig:
    return TrainConfig(epochs=1, lr=1e-3, momentum=0.9, weight_decay=1e-4, schedule="constant")


def _long_term_default() -> TrainConfig:  # official train.py: 150 epochs, lr x0.1 at 50 and 100 (here 50 %, 75 %)
    return TrainConfig(epochs=150, lr=1e-3, momentum=0.9, weight_decay=1e-4, schedule="step")


@dataclass
class NetAdaptConfig:
    """NetAdapt options (official defaults).

    ``target_latency``: stop once the predicted latency is at most this fraction of R0 (the measured latency of
    the input network), or ``target_macs`` / ``target_params``: the same with MACs / parameters as the resource
    (exactly one). ``platform``: where latency is measured: cpu (torch eager, pinned threads) | onnxruntime (ONNX
    Runtime CPU) | cuda (CUDA graphs). ``latency_batch``: batch size of the latency measurements (default 1 on
    the CPU targets, 128 on cuda). ``latency_dtype``: float32 | bfloat16 | float16 (default float32 on the CPU
    targets, bfloat16 on cuda). ``threads``: CPU threads of the measurements. ``clock``: wall or cpu (process
    CPU time: steadier on a loaded machine, CPU targets only). ``lut_repeats`` / ``lut_warmup``: timed and
    warm-up forwards per entry. ``lut_cache``: folder of the on-disk table cache (default
    ~/.cache/prunekit/lut). ``lut_check``: random width configurations in the table's error report (0: none).
    ``init_reduction``: the first iteration's reduction as a fraction of R0. ``decay``: its factor per
    iteration. ``clip_to_budget``: no iteration targets less than the budget (the last one lands on it, as
    methods solved to a budget do; off by default: the official loop may overshoot it on the last iteration).
    ``max_iters``: iteration limit. ``round_to``: the width grid step. ``min_channels`` /
    ``min_keep``: the per-group floor (a channel count; a fraction of the original width kept). ``selection``:
    accuracy (the paper) or accuracy_per_latency (the official code: least accuracy lost per resource saved).
    ``short_term_steps``: SGD steps of each proposal's short-term fine-tune. ``short_term``: its optimiser
    settings (its epochs are derived from ``short_term_steps``; 0 epochs: no short-term fine-tune).
    ``long_term``: the final fine-tune (None: none). ``uniform_points``: uniformly pruned networks evaluated for
    the report's curve (0: none). ``measure_family``: measure every iteration's network directly on the
    target. ``protected``: groups never pruned. ``keep_checkpoints``: keep the trainer checkpoints of finished
    proposals.
    """

    target_latency: float | None = None
    target_macs: float | None = None
    target_params: float | None = None
    platform: Literal["cpu", "onnxruntime", "cuda"] = "cpu"
    latency_batch: int | None = None
    latency_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    threads: int = 1
    clock: Literal["wall", "cpu"] = "wall"
    lut_repeats: int = 50
    lut_warmup: int = 10
    lut_cache: str | None = None
    lut_check: int = 20
    init_reduction: float = 0.025
    decay: float = 0.96
    max_iters: int = 30
    clip_to_budget: bool = False
    round_to: int = 8
    min_channels: int = 8
    min_keep: float = 0.0
    selection: Rule = "accuracy_per_latency"
    short_term_steps: int = 500
    short_term: TrainConfig | None = field(default_factory=_short_term_default)
    long_term: TrainConfig | None = field(default_factory=_long_term_default)
    uniform_points: int = 3
    measure_family: bool = True
    protected: tuple[str, ...] = ()
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        given = [k for k in ("target_latency", "target_macs", "target_params") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError("NetAdapt needs exactly one of target_latency= / target_macs= / target_params= "
                              "(the fraction of the input network's resource kept at the end)")
        check_range(given[0], getattr(self, given[0]), 0, 1, low_open=True, high_open=True)
        if self.platform not in ("cpu", "onnxruntime", "cuda"):
            raise ConfigError(f"platform={self.platform!r} must be cpu, onnxruntime or cuda")
        if self.selection not in ("accuracy", "accuracy_per_latency"):
            raise ConfigError(f"selection={self.selection!r} must be 'accuracy' or 'accuracy_per_latency'")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"clock={self.clock!r} must be 'wall' or 'cpu'")
        if self.clock == "cpu" and self.platform != "cpu":
            raise ConfigError("clock='cpu' times torch on the CPU only (platform=cpu)")
        check_range("init_reduction", self.init_reduction, 0, 1, low_open=True, high_open=True)
        check_range("decay", self.decay, 0, 1, low_open=True)
        check_range("min_keep", self.min_keep, 0, 1, high_open=True)
        for name, low in (("max_iters", 1), ("round_to", 1), ("min_channels", 1), ("short_term_steps", 1),
                          ("threads", 1), ("lut_repeats", 1), ("lut_warmup", 0), ("lut_check", 0),
                          ("uniform_points", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name}={v!r} must be an integer >= {low}")
        if self.latency_batch is not None and (not isinstance(self.latency_batch, int) or self.latency_batch < 1):
            raise ConfigError(f"latency_batch={self.latency_batch!r} must be an integer >= 1")
        self.protected = tuple(self.protected or ())

    @property
    def resource(self) -> str:
        return "latency" if self.target_latency is not None else "macs" if self.target_macs is not None else "params"

    @property
    def budget(self) -> float:
        return float(self.target_latency or self.target_macs or self.target_params)


def iteration_target(resource: float, r0: float, i: int, init_reduction: float = 0.025, decay: float = 0.96) -> float:
    """The resource iteration ``i`` (1-based) must reach: ``resource - init_reduction · r0 · decay^(i-1)``."""
    return resource - init_reduction * r0 * decay ** (i - 1)


def proposal_score(rule: Rule, accuracy: float, resource: float, acc_current: float, res_current: float) -> float:
    """Higher is better: the accuracy (``accuracy``) or minus the accuracy lost per resource saved
    (``accuracy_per_latency``, the official ``(A - a + 1e-6) / (R - r + 1e-5)``)."""
    if rule == "accuracy":
        return accuracy
    return -(acc_current - accuracy + 1e-6) / (res_current - resource + 1e-5)


def select_proposal(proposals: list[Mapping[str, Any]], rule: Rule, acc_current: float,
                    res_current: float) -> int | None:
    """Index of the best proposal (``{"val_top1", "resource"}`` each) among those whose resource is below
    ``res_current``, by ``rule``; ties go to the lower resource, then the earlier proposal. None: none is valid."""
    best, key = None, None
    for i, p in enumerate(proposals):
        if p["resource"] >= res_current:
            continue
        k = (proposal_score(rule, p["val_top1"], p["resource"], acc_current, res_current), -p["resource"])
        if key is None or k > key:
            best, key = i, k
    return best


def grid_floor(size: int, floor: int, step: int) -> int:
    """The smallest grid width (a multiple of ``step``) a group of ``size`` may take given its floor."""
    return min(size, max(step, math.ceil(floor / step) * step))


@register_method("netadapt", config=NetAdaptConfig, title="NetAdapt")
class NetAdapt(Method):
    """``NetAdapt(config).run(model, data, output_dir)`` → PruneResult (see the module docstring)."""

    def check(self, run: MethodRun, model: nn.Module) -> None:
        if run.data.val is None:
            raise ConfigError("NetAdapt chooses among proposals on a validation split held out of training: "
                              "set val_split > 0 (e.g. --val-split 0.1)")
        graph = run.graph(model)
        for n in self.config.protected:
            graph.group(n)
        if not [g for g in graph.prunable_groups if g.name not in self.config.protected]:
            raise ConfigError("the model has no prunable channel group")
        run.to_device(model)

    # ---- the resource ---------------------------------------------------------------------------------------
    def backend(self, run: MethodRun):
        c = self.config
        return latency_backend(run, c.platform, batch=c.latency_batch, dtype=c.latency_dtype, threads=c.threads,
                               clock=c.clock, warmup=c.lut_warmup, repeats=c.lut_repeats)

    def cost_model(self, run: MethodRun, model: nn.Module):
        """(cost model over the input network's groups, stage metrics for the record)."""
        c = self.config
        if c.resource in ("macs", "params"):
            graph0 = run.graph(copy.deepcopy(model).cpu().eval())
            return (MacsCost(graph0) if c.resource == "macs" else ParamsCost(graph0)), {}
        return latency_table(run, model, self.backend(run), round_to=c.round_to, min_channels=c.min_channels,
                             cache_dir=c.lut_cache, check=c.lut_check,
                             progress=bool(c.short_term and c.short_term.progress))

    # ---- processes ----------------------------------------------------------------------------------------
    def run(self, model: nn.Module, data: Any, output_dir: str | Path, *, device: str = "cpu",
            log: Callable[[str], None] | None = None, latency: bool = True, callbacks: Iterable[Callback] = (),
            restart: bool = False, info: RunInfo | None = None, leaf_modules: Iterable[type | str] = (),
            tracer: str = "auto", approximate_statistics: bool = False) -> PruneResult:
        """As :meth:`Method.run`; launched by torchrun (``WORLD_SIZE`` > 1, or a process group already joined),
        the proposals are shared among the processes (see the module docstring). Every rank returns the same
        model and details; rank 0 alone writes the report and measures (ranks > 0 return summaries of counts)."""
        distributed.init_from_env(device, backend="gloo")
        ranks = _Ranks(distributed.group())
        if ranks.parallel and torch.device(device).type == "cuda":
            device = f"cuda:{ranks.local_rank % max(1, torch.cuda.device_count())}"
        self._ranks = ranks
        try:
            with distributed.local():  # every rank trains and evaluates alone; _Ranks exchanges the results
                trace = {"leaf_modules": tuple(leaf_modules), "tracer": tracer,
                         "approximate_statistics": approximate_statistics}
                if ranks.is_main:
                    return super().run(model, data, output_dir, device=device, log=log, latency=latency,
                                       callbacks=callbacks, restart=restart, info=info, **trace)
                return self._run_worker(model, data, output_dir, device=device, log=log, callbacks=callbacks,
                                        info=info, trace_options=trace)
        finally:
            self._ranks = _Ranks(distributed.DistInfo())

    def _run_worker(self, model: nn.Module, data: Any, output_dir: str | Path, *, device: str,
                    log: Callable[[str], None] | None, callbacks: Iterable[Callback],
                    info: RunInfo | None, trace_options: Mapping[str, Any]) -> PruneResult:
        """A rank > 0: the same loop (it trains its share of the proposals and loads every other stage from the
        run folder once rank 0 has written it); no report, no measurement, nothing written but its proposals."""
        from prunekit.report import summarize

        r = self._ranks.rank
        run = MethodRun(self, model, data, output_dir, device=device, callbacks=callbacks, restart=False,
                        log=(lambda m: log(f"(rank {r}) {m}")) if log else None, latency=False, info=info,
                        trace_options=trace_options)
        self.check(run, run.model)
        final = self.execute(run, run.model).eval()
        widths1 = run.graph(final).widths()
        run.to_device(final)
        baseline = summarize(run.model, run.x, latency=False)
        baseline.top1.update({k: v for k, v in run.baseline_top1.items() if v is not None})
        run.details.setdefault("floor_hit", sorted(set(run.floor_hit)))
        run.details["config"] = config_settings(self.config)
        return PruneResult(self.name, final, dict(run.widths0), {k: widths1.get(k, v) for k, v in run.widths0.items()},
                           baseline, summarize(final, run.x, latency=False), list(run.records), run.details)

    # ---- the loop -------------------------------------------------------------------------------------------
    def execute(self, run: MethodRun, model: nn.Module) -> nn.Module:
        c = self.config
        ranks = getattr(self, "_ranks", None) or _Ranks(distributed.DistInfo())
        ranks.barrier()  # rank 0 has discarded an earlier run (restart) before any rank reads the folder
        run.set_baseline(model)
        cost, lut_metrics = ranks.main(run, ["lut"] if c.resource == "latency" else [],
                                       lambda: self.cost_model(run, model))
        graph0 = cost.graph
        backend = self.backend(run) if c.measure_family and ranks.is_main else None
        names = [g.name for g in graph0.prunable_groups if g.name not in c.protected]
        step = {n: graph0.group(n).round_to(c.round_to) for n in names}
        floors = channel_floors(graph0, min_keep=c.min_keep, min_channels=c.min_channels, names=names)
        low = {n: grid_floor(graph0.group(n).size, floors[n], step[n]) for n in names}
        widths = dict(run.widths0)
        r0 = cost(widths)
        budget = c.budget * r0

        def measured(m: nn.Module) -> float | None:
            if backend is None:
                return None
            t = backend.measure(copy.deepcopy(m).cpu().eval(), _example(run, backend))
            return t.median_ms

        def record(i: int, m: nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
            out = {"iteration": i, "widths": dict(widths), "resource": cost(widths),
                   "resource_fraction": cost(widths) / r0, "val_top1": run.evaluate(m, "val"),
                   "measured_ms": measured(m), **extra}
            if c.resource != "latency":
                out["macs"] = graph0.macs(widths)
            return out

        model = ranks.main(run, ["iter00"], lambda: run.transform(
            "iter00", model, lambda m: record(0, m, {}), kind="iteration",
            parent="lut" if c.resource == "latency" else None, settings={"resource": c.resource, "r0": r0}))
        family = [run.last_metrics()]
        parent = "iter00"
        res, acc = cost(widths), family[0]["val_top1"]
        steps_cfg = self._short_term(run, ranks)
        run.details.update(resource=c.resource, r0=r0, budget=budget, selection=c.selection, stopped="budget")
        i = 0
        while res > budget:
            i += 1
            if i > c.max_iters:
                run.details["stopped"] = f"max_iters={c.max_iters}"
                break
            target = iteration_target(res, r0, i, c.init_reduction, c.decay)
            if c.clip_to_budget:
                target = max(target, budget)
            todo = []  # (proposal, widths, stage): one per group that can shrink, in group order
            for k, n in enumerate(names):
                if widths[n] <= low[n]:
                    continue  # at its floor
                w = largest_width(cost, widths, n, target, low=low[n], step=step[n])
                meets = w is not None
                w = low[n] if w is None else w
                if w < widths[n]:
                    new = {**widths, n: w}
                    todo.append(({"group": n, "width": w, "resource": cost(new), "meets_target": meets}, new,
                                 f"iter{i:02d}-p{k:02d}"))
            # this rank's share first (all of them in one process), then the others' once they are on disk
            order = [j for j in range(len(todo)) if ranks.owns(j)] + [j for j in range(len(todo)) if not ranks.owns(j)]
            best = None  # (key, index, model): the first proposal with the highest key
            for j in order:
                p, new, stage = todo[j]
                if not ranks.owns(j):
                    ranks.wait(run, [stage])
                pm = self._proposal(run, model, stage, parent, p["group"], p["width"], new, steps_cfg, i)
                p.update(val_top1=run.last_metrics()["val_top1"], stage=stage)
                if select_proposal([p], c.selection, acc, res) is not None:
                    key = (proposal_score(c.selection, p["val_top1"], p["resource"], acc, res), -p["resource"], -j)
                    if best is None or key > best[0]:
                        best = (key, j, pm)
                del pm
            proposals = [p for p, _, _ in todo]
            ranks.agree(f"iteration {i}", [proposals, best[1] if best else None])
            if best is None:
                run.details["stopped"] = f"iteration {i}: no group can shrink further (all at their floors)"
                run.log(f"NetAdapt: {run.details['stopped']}")
                break
            chosen = proposals[best[1]]
            if not chosen["meets_target"]:
                run.log(f"NetAdapt iteration {i}: the chosen proposal misses the target {target:.4g} "
                        f"({chosen['resource']:.4g}): no group reaches it alone above its floor, the best floor "
                        "proposal was taken (the official fallback)")
            widths = {**widths, chosen["group"]: chosen["width"]}
            extra = {"group": chosen["group"], "width": chosen["width"], "target": target,
                     "proposals": proposals}
            model = ranks.main(run, [f"iter{i:02d}"], lambda: run.transform(
                f"iter{i:02d}", best[2], lambda m: record(i, m, extra), kind="iteration", parent=chosen["stage"],
                settings={"chosen": chosen["stage"]}))
            family.append(run.last_metrics())
            parent = f"iter{i:02d}"
            res, acc = cost(widths), family[-1]["val_top1"]
            run.log(f"NetAdapt iteration {i}: {chosen['group']} → {chosen['width']}, {c.resource} "
                    f"{res:.4g} ({res / r0:.1%} of R0), val top-1 {acc:.2f}%")
        run.floor_hit += [n for n in names if widths[n] <= low[n] and widths[n] < run.widths0[n]]
        run.details["family"] = [{k: v for k, v in f.items() if k != "proposals"} | {
            "proposals": len(f.get("proposals", [])), "model": str(run.pipe.stage_dir(f"iter{f['iteration']:02d}") /
                                                                    "model.safetensors")} for f in family]
        run.details["iterations"] = len(family) - 1
        run.details["proposals"] = [f.get("proposals", []) for f in family[1:]]
        if isinstance(cost, LatencyTable):
            run.details["lut"] = {"stats": lut_metrics["table"]["stats"],
                                  "constant_ms": lut_metrics["table"]["constant_ms"],
                                  "identity": lut_metrics["table"]["identity"],
                                  "check": lut_metrics.get("check")}
            check = lut_metrics.get("check")
            if ranks.is_main:
                (run.out / "lut.json").write_text(_json(lut_metrics))
                if check and check["configs"]:
                    errs = [100 * (x["predicted"] - x["measured"]) / x["measured"] for x in check["configs"]]
                    run.plot_histograms("lut_error_hist.png", {"random width configurations": errs},
                                        title="LUT prediction error vs direct measurement", xlabel="error (%)")
        uniform = []
        if c.uniform_points and len(family) >= 2:
            uniform = ranks.main(run, [f"uniform{j}" for j in range(1, c.uniform_points + 1)],
                                 lambda: self._uniform(run, graph0, cost, r0, family, steps_cfg, measured))
        run.details["uniform"] = uniform
        if ranks.is_main:
            self._plot(run, family, uniform)
        if c.long_term is not None:
            model = ranks.main(run, ["long-term"], lambda: run.train(
                "long-term", model, c.long_term, parent=parent, data_offset=1000 * (c.max_iters + 1)))
        return model

    # ---- pieces ---------------------------------------------------------------------------------------------
    def _short_term(self, run: MethodRun, ranks: _Ranks) -> TrainConfig | None:
        c = self.config
        if c.short_term is None:
            return None
        n = max(1, len(run.data.train))
        return TrainConfig.from_dict({**c.short_term.to_dict(), "epochs": math.ceil(c.short_term_steps / n),
                                      "milestones": None, "max_steps": c.short_term_steps,
                                      "progress": c.short_term.progress and ranks.is_main})

    def _prune(self, run: MethodRun, parent: nn.Module, widths: Mapping[str, int]) -> nn.Module:
        m = copy.deepcopy(parent).cpu()
        apply_widths(run.graph(m), dict(widths), importance="l2")
        return run.to_device(m)

    def _proposal(self, run: MethodRun, parent: nn.Module, stage: str, parent_stage: str, group: str, width: int,
                  widths: Mapping[str, int], cfg: TrainConfig | None, i: int) -> nn.Module:
        m = self._prune(run, parent, {group: width})
        settings = {"group": group, "width": width, "widths": dict(widths), "steps": self.config.short_term_steps}
        if cfg is None:
            return run.transform(stage, m, lambda x: {"val_top1": run.evaluate(x, "val")}, kind="evaluate",
                                 parent=parent_stage, artifact="json", settings=settings)
        return run.train(stage, m, cfg, validate=False, parent=parent_stage, artifact="state", settings=settings,
                         data_offset=1000 * i, after=lambda x, _t: {"val_top1": run.evaluate(x, "val")})

    def _uniform(self, run: MethodRun, graph0, cost, r0: float, family: list[dict], cfg: TrainConfig | None,
                 measured) -> list[dict[str, Any]]:
        """Uniformly pruned networks at evenly spaced predicted resources down to the family's last one."""
        c = self.config
        names = [g.name for g in graph0.prunable_groups if g.name not in c.protected]
        end = family[-1]["resource"]
        if len(family) < 2:
            return []

        def at(ratio: float) -> dict[str, int]:
            out = {}
            for n in names:
                g = graph0.group(n)
                out[n] = resolve_width(g.size, g.size - math.floor(ratio * g.size + 1e-9), min_channels=c.min_channels,
                                       round_to=g.round_to(c.round_to), min_width=g.min_width)
            return out

        points = []
        base = run.pipe.load_stage("iter00")
        for j in range(1, c.uniform_points + 1):
            goal = r0 - j / c.uniform_points * (r0 - end)
            lo, hi = 0.0, 0.99
            for _ in range(30):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if cost(at(mid)) <= goal else (mid, hi)
            widths = at(hi)
            stage = f"uniform{j}"
            m = self._prune(run, base, widths)
            settings = {"widths": widths, "steps": c.short_term_steps}

            def after(x, _t=None, widths=widths):
                return {"val_top1": run.evaluate(x, "val"), "measured_ms": measured(x), "resource": cost(widths)}

            if cfg is None:
                run.transform(stage, m, after, kind="evaluate", parent="iter00", artifact="json", settings=settings)
            else:
                run.train(stage, m, cfg, validate=False, parent="iter00", artifact="json", settings=settings,
                          data_offset=1000 * (c.max_iters + 1 + j), after=after)
            points.append({"widths": widths, **run.last_metrics()})
        return points

    def _plot(self, run: MethodRun, family: list[dict], uniform: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        use_ms = all(f.get("measured_ms") is not None for f in family)
        xkey = "measured_ms" if use_ms else "resource"
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([f[xkey] for f in family], [f["val_top1"] for f in family], marker="o", ms=3,
                label="NetAdapt family (each iteration)")
        if self.config.resource == "latency" and use_ms:
            ax.plot([f["resource"] for f in family], [f["val_top1"] for f in family], ls=":", marker=".",
                    alpha=0.6, label="same, LUT-predicted latency")
        if uniform:
            ax.scatter([u.get(xkey) if u.get(xkey) is not None else u["resource"] for u in uniform],
                       [u["val_top1"] for u in uniform], marker="s", color="C3",
                       label="uniform L2 (+ one short-term fine-tune)")
        unit = "ms" if use_ms else self.config.resource
        ax.set_xlabel(f"{'measured latency' if use_ms else self.config.resource} ({unit})")
        ax.set_ylabel("validation top-1 (%)")
        ax.set_title("NetAdapt: accuracy vs latency (before long-term fine-tune)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = run.out / "family.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        run.artifacts["family_png"] = str(path)


T = TypeVar("T")


class _Ranks:
    """How the processes of a torchrun launch share one run (one process: it is rank 0 and owns everything).

    Proposal ``j`` of an iteration (in group order) is trained by rank ``j % N``; every other stage (the LUT,
    each iteration's network, the uniform points, the long-term fine-tune) by rank 0. The run folder is the
    exchange: a rank waits for a stage it does not run until the stage's ``record.json`` exists, then makes
    the same pipeline call, which finds the stage done and loads it — so every rank holds the same records and
    fingerprints. Waiting polls the folder: no time limit (a stage may take hours; torchrun stops every rank
    when one fails), unlike a collective. After each iteration the ranks check that they chose alike."""

    POLL_S = 0.1

    def __init__(self, info: distributed.DistInfo):
        self.rank, self.world, self.local_rank = info.rank, info.world_size, info.local_rank

    @property
    def parallel(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, j: int) -> bool:
        return j % self.world == self.rank

    def wait(self, run: MethodRun, stages: Iterable[str]) -> None:
        pending = [s for s in stages if not run.pipe.is_done(s)]
        t0 = last = time.monotonic()
        while pending:
            time.sleep(self.POLL_S)
            pending = [s for s in pending if not run.pipe.is_done(s)]
            if pending and time.monotonic() - last > 600:
                last = time.monotonic()
                run.log(f"waiting for stage(s) {', '.join(pending)} ({(last - t0) / 60:.0f} min)")

    def main(self, run: MethodRun, stages: list[str], fn: Callable[[], T]) -> T:
        """``fn()`` (pipeline stages named ``stages``) on rank 0; on the others once rank 0 has done them."""
        if not self.is_main:
            self.wait(run, stages)
        return fn()

    def barrier(self) -> None:
        if self.parallel:
            torch_dist.barrier()

    def agree(self, what: str, value: Any) -> None:
        """Raise unless every rank holds the same ``value`` (one all_gather_object)."""
        if not self.parallel:
            return
        got: list[Any] = [None] * self.world
        torch_dist.all_gather_object(got, value)
        if any(g != got[0] for g in got[1:]):
            raise RuntimeError(f"NetAdapt ranks disagree on {what}: {got} (the ranks must see the same data "
                               "and settings: the full, unsharded loaders on every rank)")


def _example(run: MethodRun, backend) -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(backend.batch_size, *run.x.shape[1:], generator=g)


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=1, default=str)
