"""Gate Decorator reproduction on CIFAR-10 (GPU), side by side with Torch-Pruning's GroupTaylorImportance.

    # 1. the baseline (benchmarks/train_baseline.py); 2. this script. Every part resumes when re-run after a
    #    timeout (the device allows 10 minutes per command), so repeat the same command until it prints the records:
    timeout -s TERM 570 python benchmarks/gate_decorator_cifar.py \\
        --recipe recipes/gate_decorator/resnet56_cifar10_flops60.yaml --data-dir ~/cifar10 \\
        --baseline ~/runs/base-resnet56/last.ckpt --output ~/runs/gd-resnet56-60 --torch-pruning

What it does, in order (parts already finished are skipped on a re-run):

1. ``overhead``: training-step time of the baseline with plain BN vs with gated BN (GBN, as in the tocks: γ
   frozen, gates trained), same loader, steps, precision and memory format; alternating repeats, medians; the
   result is reported per full epoch and as a percentage (goal: <= 5%).
2. ``gate_decorator``: the recipe's Tick-Tock run from the baseline checkpoint (prunekit.methods.GateDecorator),
   a resumable Pipeline under ``OUTPUT/prunekit``.
3. ``torch_pruning`` (with ``--torch-pruning``): Torch-Pruning 1.6 from the same checkpoint, same run:
   ``MetaPruner`` with ``GroupTaylorImportance``, global pruning, the final classifier ignored. It prunes in as many
   iterative steps as our run had tocks (each step reaches MACs target^(s/S) by fine-grained pruner steps, Taylor
   gradients recomputed on a few training batches before every one), fine-tunes ``tock.epochs`` after each step,
   then runs the same final fine-tune: the same total fine-tuning epochs as ours (our ticks' few gate-only
   batches aside). Resumable Pipeline under ``OUTPUT/torch-pruning``.

Records (RESULTS-SCHEMA, via ``PruneResult.write_record``): ``benchmarks/results/gate_decorator-<model>-cifar10-
<tag>.json`` and ``torch_pruning-group_taylor-<model>-cifar10-<tag>.json`` (tag: ``flops60`` for target_macs 0.4).
``gpu_minutes``: wall time of the part summed over invocations (kept in ``OUTPUT/timing.json``). A record is
``reduced`` unless the data is the full CIFAR-10, the baseline checkpoint finished >= 160 epochs and the final
fine-tune is >= the recipe's ``paper_epochs``.

``--smoke`` shrinks every phase (CPU check of the script: a 512-image subset, 1-2 steps per phase); its records go
to ``OUTPUT/records/`` unless ``--result-dir`` says otherwise, and are marked reduced — never commit them as GPU
records. ``--set key=value`` overrides a ``gate_decorator:`` option (e.g. ``--set gate_init=one``, an ablation).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from prunekit.data import build_data
from prunekit.graph import DependencyGraph
from prunekit.app import method_config
from prunekit.methods.gate_decorator import GateDecorator
from prunekit.methods.gates import add_gates
from prunekit.train.pipeline import Pipeline
from prunekit.methods.result import PruneResult
from prunekit.report import summarize
from prunekit.train import TrainConfig, Trainer, TrainingInterrupted, evaluate, load_checkpoint, seed_everything
from prunekit.app.training import model_from_checkpoint


# ----------------------------------------------------------------------------- bookkeeping
@contextmanager
def timed(out: Path, part: str):
    """Add this invocation's wall seconds of ``part`` to ``OUTPUT/timing.json`` (even when interrupted)."""
    path = out / "timing.json"
    t0 = time.perf_counter()
    try:
        yield
    finally:
        data = json.loads(path.read_text()) if path.exists() else {}
        data[part] = data.get(part, 0.0) + time.perf_counter() - t0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))


def minutes(out: Path, part: str) -> float:
    path = out / "timing.json"
    return round(json.loads(path.read_text()).get(part, 0.0) / 60, 2) if path.exists() else 0.0


def _value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ----------------------------------------------------------------------------- 1. GBN overhead
def gbn_overhead(base: nn.Module, data, cfg, device: str, steps: int, repeats: int = 3) -> dict:
    """Seconds per ``steps`` training steps with plain BN and with GBN (alternating, first repeat = warm-up)."""
    plain = copy.deepcopy(base)
    gated = copy.deepcopy(base)
    add_gates(gated, where=cfg.gates, init=cfg.gate_init)
    tc = TrainConfig(epochs=1, steps_per_epoch=steps, lr=1e-3, schedule="constant", precision=cfg.tock.precision,
                     channels_last=cfg.tock.channels_last, progress=False)
    times: dict[str, list[float]] = {"bn": [], "gbn": []}
    for rep in range(repeats + 1):
        for name, m in (("bn", plain), ("gbn", gated)):
            sec = Trainer(m, data.train, None, config=tc, device=device).fit().history[0]["epoch_seconds"]
            if rep > 0:
                times[name].append(sec)
    bn, gbn = statistics.median(times["bn"]), statistics.median(times["gbn"])
    per_epoch = len(data.train) / steps
    return {"steps": steps, "repeats": repeats, "batch_size": getattr(data.train, "batch_size", None),
            "bn_s_per_epoch": round(bn * per_epoch, 3), "gbn_s_per_epoch": round(gbn * per_epoch, 3),
            "overhead_pct": round(100 * (gbn - bn) / bn, 2), "raw_seconds": times,
            "precision": tc.precision, "channels_last": tc.channels_last}


# ----------------------------------------------------------------------------- 3. Torch-Pruning side by side
def _taylor_grads(model: nn.Module, batches, device: str) -> None:
    model.zero_grad(set_to_none=True)
    was = model.training
    model.eval()  # fixed BN statistics: the gradients (and the pruning) are deterministic
    for x, y in batches:
        nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
    model.train(was)


def tp_prune_to(model: nn.Module, loader, budget_macs: float, x1: torch.Tensor, device: str, *, seed_epoch: int,
                grad_batches: int, granularity: int) -> dict:
    """Prune ``model`` in place with Torch-Pruning (GroupTaylor, global) until its MACs <= ``budget_macs``."""
    import torch_pruning as tp

    from prunekit.cost import count

    model.to(device)
    x = x1.to(device)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupTaylorImportance(), global_pruning=True,
                                  pruning_ratio=0.9, iterative_steps=granularity, ignored_layers=[head])
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(seed_epoch)
    it = iter(loader)
    steps = 0
    while count(model, x1.to(device)).macs > budget_macs and pruner.current_step < granularity:
        batches = []
        for _ in range(grad_batches):
            try:
                batches.append(next(it))
            except StopIteration:
                it = iter(loader)
                batches.append(next(it))
        _taylor_grads(model, batches, device)
        pruner.step()
        steps += 1
    model.zero_grad(set_to_none=True)
    return {"pruner_steps": steps, "macs": count(model, x1.to(device)).macs}


def run_torch_pruning(base: nn.Module, data, cfg, rounds: int, out: Path, device: str, smoke: bool, log,
                      baseline_summary) -> PruneResult:
    x = next(iter(data.test))[0][:2].detach().cpu()
    model = copy.deepcopy(base).cpu()
    g0 = DependencyGraph(model, x)
    widths0 = {g.name: g.size for g in g0.prunable_groups}
    macs0 = g0.macs()
    pipe = Pipeline(out, x, device=device, log=log)
    for s in range(1, rounds + 1):
        budget = cfg.target_macs ** (s / rounds) * macs0

        def prune(m: nn.Module, s=s, budget=budget) -> dict:
            return tp_prune_to(m, data.train, budget, x[:1], device, seed_epoch=10**6 + s,
                               grad_batches=1 if smoke else 4, granularity=100 if smoke else 400)

        model = pipe.transform(f"round{s}-prune", model, prune)
        model = pipe.train(f"round{s}-finetune", model, data.train, data.val, cfg.tock)
    if cfg.finetune is not None:
        model = pipe.train("finetune", model, data.train, data.val, cfg.finetune)
    model.eval()
    widths1 = DependencyGraph(model.cpu(), x).widths()
    model.to(device)
    pruned = summarize(model, x)
    pruned.top1["test"] = evaluate(model, data.test).top1
    if data.val is not None:
        pruned.top1["val"] = evaluate(model, data.val).top1
    details = {"importance": "GroupTaylorImportance(group_reduction='mean', normalizer='mean')",
               "global_pruning": True, "iterative_steps": rounds, "finetune_epochs_per_step": cfg.tock.epochs,
               "final_finetune_epochs": cfg.finetune.epochs if cfg.finetune else 0,
               "macs_kept": pruned.macs / baseline_summary.macs}
    return PruneResult("torch_pruning:group_taylor", model, widths0,
                       {k: widths1.get(k, v) for k, v in widths0.items()}, baseline_summary, pruned,
                       list(pipe.records), details)


# ----------------------------------------------------------------------------- main
def _smoke(cfg_recipe: dict) -> dict:
    """The recipe shrunk for a CPU check of the script: batch 64, 2 steps per phase, 10% of channels per tick."""
    rc = copy.deepcopy(cfg_recipe)
    rc["batch_size"] = 64
    rc["gate_decorator"] = {**rc.get("gate_decorator", {}), "prune_per_tick": 0.1, "ticks_per_round": 2}
    rc["tick"] = {**rc.get("tick", {}), "steps_per_epoch": 2}
    rc["tock"] = {**rc.get("tock", {}), "epochs": 1, "steps_per_epoch": 2}
    rc["finetune"] = {**rc.get("finetune", {}), "epochs": 1, "steps_per_epoch": 2}
    return rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--baseline", type=Path, required=True, help="baseline Trainer checkpoint (last.ckpt)")
    ap.add_argument("--output", type=Path, required=True, help="run folder (keep it between calls)")
    ap.add_argument("--torch-pruning", action="store_true", help="also run the Torch-Pruning side-by-side")
    ap.add_argument("--overhead-steps", type=int, default=50, help="training steps per GBN/BN timing (0: skip)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a gate_decorator: option of the recipe (repeatable)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--result-dir", type=Path, default=None, help="default benchmarks/results (smoke: OUTPUT/records)")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU check of the script (reduced records)")
    args = ap.parse_args(argv)
    rc = yaml.safe_load(args.recipe.read_text())
    if args.torch_pruning and "target_macs" not in (rc.get("gate_decorator") or {}):
        ap.error("--torch-pruning needs a recipe with target_macs (the comparison is at equal MACs)")
    if args.smoke:
        rc = _smoke(rc)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = method_config(GateDecorator, rc, {k: _value(v) for k, v in overrides.items()})
    progress = sys.stderr.isatty()
    for phase in (cfg.tock, cfg.finetune):
        if phase is not None:
            phase.progress = progress
    subset = 512 if args.smoke else rc.get("train_subset")
    seed = int(rc.get("seed", 0))
    data = build_data("cifar10", data_dir=args.data_dir, batch_size=rc["batch_size"],
                      val_split=rc.get("val_split", 0.05), device=args.device, seed=seed, train_subset=subset)
    ckpt = load_checkpoint(args.baseline)
    base = model_from_checkpoint(ckpt).eval()
    base_model_name = ckpt.get("meta", {}).get("model", {}).get("name", rc["model"])
    base_epochs = min(int(ckpt.get("epoch", 0)), int(ckpt.get("config", {}).get("epochs", 0)))
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    tag = f"flops{round(100 * (1 - cfg.target_macs))}" if cfg.target_macs else "params"
    tag += "".join(f"-{k}-{v}" for k, v in overrides.items())
    log = print

    try:
        overhead = None
        ov_path = out / "gbn_overhead.json"
        if args.overhead_steps > 0:
            if ov_path.exists():
                overhead = json.loads(ov_path.read_text())
            else:
                with timed(out, "overhead"):
                    overhead = gbn_overhead(base, data, cfg, args.device, 2 if args.smoke else args.overhead_steps,
                                            repeats=1 if args.smoke else 3)
                ov_path.write_text(json.dumps(overhead, indent=2))
            log(f"GBN vs BN: {overhead['gbn_s_per_epoch']} vs {overhead['bn_s_per_epoch']} s/epoch "
                f"({overhead['overhead_pct']:+.1f}%)")
        seed_everything(seed)
        with timed(out, "gate_decorator"):
            res = GateDecorator(cfg).run(copy.deepcopy(base), data, out / "prunekit", device=args.device, log=log)
        tp_res = None
        if args.torch_pruning:
            rounds = max(1, res.details["stages"]["tocks"])
            seed_everything(seed)
            with timed(out, "torch_pruning"):
                tp_res = run_torch_pruning(base, data, cfg, rounds, out / "torch-pruning", args.device, args.smoke,
                                           log, res.baseline)
    except TrainingInterrupted as e:
        print(f"{e}; run the same command again to continue", file=sys.stderr)
        return 3

    paper_ft = rc.get("paper_epochs", {}).get("finetune_epochs", 0)
    full = (not args.smoke and not subset and base_epochs >= 160
            and cfg.finetune is not None and cfg.finetune.epochs >= paper_ft)
    gpu = args.device.startswith("cuda")
    schedule = {"batch_size": rc["batch_size"], "val_split": rc.get("val_split"), "baseline_epochs": base_epochs,
                "ticks": res.details["ticks"], "tocks": res.details["stages"]["tocks"],
                "tick_steps": cfg.tick.steps_per_epoch, "tock_epochs": cfg.tock.epochs,
                "finetune_epochs": cfg.finetune.epochs if cfg.finetune else 0,
                "prune_per_tick": cfg.prune_per_tick, "ticks_per_round": cfg.ticks_per_round,
                "sparsity": cfg.sparsity, "gate_init": cfg.gate_init, "score": cfg.score,
                "group_pruning": cfg.group_pruning}
    result_dir = args.result_dir or (out / "records" if args.smoke else Path("benchmarks/results"))
    common = dict(model_name=base_model_name, dataset="cifar10", reduced=not full, device=args.device,
                  schedule=schedule, recipe=str(args.recipe), seed=seed,
                  baseline_checkpoint={"path": str(args.baseline), "epochs": base_epochs},
                  target={"macs_kept": cfg.target_macs, "params_kept": cfg.target_params})
    suffix = "-smoke" if args.smoke else ""
    name = f"gate_decorator-{base_model_name}-cifar10-{tag}{suffix}"
    extra = {"gbn_overhead": overhead, "gpu_minutes": minutes(out, "gate_decorator") if gpu else 0.0,
             "wall_minutes": minutes(out, "gate_decorator")}
    if tp_res is not None:
        extra["torch_pruning_top1"] = tp_res.pruned.top1.get("test")
    path = res.write_record(result_dir / f"{name}.json", name=name, **common, **extra)
    line = (f"gate_decorator: baseline {res.baseline.top1['test']:.2f}% -> {res.pruned.top1['test']:.2f}% at "
            f"{res.pruned.macs / res.baseline.macs:.1%} MACs, {minutes(out, 'gate_decorator'):.1f} min -> {path}")
    if tp_res is not None:
        tp_name = f"torch_pruning-group_taylor-{base_model_name}-cifar10-{tag}{suffix}"
        tp_path = tp_res.write_record(result_dir / f"{tp_name}.json", name=tp_name, **common,
                                      gpu_minutes=minutes(out, "torch_pruning") if gpu else 0.0,
                                      wall_minutes=minutes(out, "torch_pruning"),
                                      gate_decorator_top1=res.pruned.top1["test"])
        line += (f"\ntorch-pruning GroupTaylor: {tp_res.pruned.top1['test']:.2f}% at "
                 f"{tp_res.pruned.macs / tp_res.baseline.macs:.1%} MACs -> {tp_path}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
