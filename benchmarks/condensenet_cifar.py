"""CondenseNet on these CPUs: learned group convolution vs a fixed group convolution of the same inference cost,
and the exactness of the conversion (issue 14, "Verification on these CPUs"; a REDUCED run).

Protocol: a small CondenseNet (stages 6-6-6, growth 8-16-32, bottleneck 4, G = C = 4) on real CIFAR-10 resized to
16x16 (train 8,000 / val 1,000 held out of the train set / the full 10,000 test images); two arms:

- ``learned``: learned group convs with the official condensation schedule (stages at 1/6, 1/3, 1/2 of the
  steps), then converted to the inference form (index-select, BN, ReLU, group conv, shuffle);
- ``fixed``: the same net with ``Conv2d(groups=4)`` + channel shuffle in place of every learned group conv, whose
  MACs and params equal the converted learned net's (checked and recorded);

SGD nesterov, lr 0.1 cosine per step, wd 1e-4, batch 64, ``--epochs`` (12) epochs, seeds 0 and 1 (weight init
and the Trainer's RNG; the data split and order are the same for both). Reported: test top-1 per run and mean ±
std per arm, the conversion check (max |Δlogit| on 500 test images, converted model's test top-1), counts of the
three forms (prunekit's convention and the official one) and CPU batch-1 latency of the three forms (interleaved).

Resumable: each run trains in ``--out/<arm>-s<seed>/`` (Trainer checkpoints every epoch; re-running continues)
and writes ``run.json`` when done; every invocation then rewrites the result file from the runs finished so far
(``pending`` lists the others) to ``benchmarks/results/condensenet-cifar10-16px-e<epochs>-reduced.json``, with
the exact commands, the learned - fixed difference against the pooled std, and the equal-cost check. On a busy
2-core machine run one process, one thread (the order is learned/fixed for seed 0, then seed 1); two processes
can share the work on an idle one (``--arms learned`` / ``--arms fixed``).

    nice -n 19 .venv/bin/python benchmarks/condensenet_cifar.py --epochs 3 --seeds 0 1 \
        --out runs/condensenet-bench-e3 --threads 1
    nice -n 19 .venv/bin/python benchmarks/condensenet_cifar.py --epochs 3 --seeds 0 1 \
        --out runs/condensenet-bench-e3 --summarize       # rewrite the record (and time the latencies)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "runs" / "condensenet-bench"
RESULTS = ROOT / "benchmarks" / "results"  # condensenet-cifar10-16px-e<epochs>-reduced.json
ARCH = dict(stages=(6, 6, 6), growth=(8, 16, 32), bottleneck=4, groups_1x1=4, groups_3x3=4)


def _data(args):
    from prunekit.data import build_data

    return build_data("cifar10", data_dir=args.data_dir, batch_size=64, eval_batch_size=500, val_split=0.02,
                      train_subset=8000, image_size=16, seed=0)


def _model(arm: str, seed: int):
    from prunekit.models.condensenet import CondenseNet

    torch.manual_seed(seed)
    return CondenseNet(num_classes=10, one_by_one=arm, **ARCH)


def _config(args, seed: int, run_dir: Path):
    from prunekit.train import TrainConfig

    return TrainConfig(epochs=args.epochs, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
                       schedule="cosine", seed=seed, eval_every=args.epochs, checkpoint_dir=run_dir, resume=True,
                       progress=False, precision="fp32", steps_per_epoch=args.steps_per_epoch)


def _command() -> str:
    """This process's command line as typed from the repository root (with its ``nice`` level)."""
    nice = os.nice(0)
    exe = Path(sys.executable)
    exe = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else str(exe)
    return (f"nice -n {nice} " if nice else "") + shlex.join([exe, *sys.argv])


def _sha() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files differ from it."""
    git = ["git", "-C", str(ROOT)]
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "src", "benchmarks/condensenet_cifar.py"]).returncode
    return sha + ("-dirty" if dirty else "")


def _lock(run_dir: Path) -> None:
    """One process per run folder (two processes resuming the same checkpoint would corrupt it)."""
    lock = run_dir / ".running"
    if lock.exists():
        try:
            os.kill(int(lock.read_text()), 0)
        except (ValueError, ProcessLookupError, PermissionError):
            lock.unlink(missing_ok=True)  # stale
        else:
            raise SystemExit(f"{run_dir} is being trained by process {lock.read_text()}")
    lock.write_text(str(os.getpid()))


def run_one(args, arm: str, seed: int) -> dict:
    import prunekit
    from prunekit.cost import count
    from prunekit.methods.condensenet import Condensation, convert
    from prunekit.models.condensenet import official_count
    from prunekit.train import Trainer, evaluate

    run_dir = args.out / f"{arm}-s{seed}"
    done = run_dir / "run.json"
    if done.exists():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    _lock(run_dir)
    commit = _sha()  # the code this run trains with (read before training: others may commit meanwhile)
    data = _data(args)
    model = _model(arm, seed)
    cbs = [Condensation()] if arm == "learned" else []
    t0 = time.time()
    trainer = Trainer(model, data.train, data.val, config=_config(args, seed, run_dir), callbacks=cbs)
    fit = trainer.fit()
    train_s = time.time() - t0
    model.eval()
    x1 = torch.zeros(1, 3, 16, 16)
    rec: dict = {"arm": arm, "seed": seed, "epochs": args.epochs, "command": _command(), "commit": commit,
                 "train_seconds_this_process": round(train_s, 1),
                 "final_epoch": fit.final, "val_top1": evaluate(model, data.val).top1,
                 "test_top1": evaluate(model, data.test).top1}
    c = count(model, x1)
    rec["counts"] = {"training_form": {"macs": c.macs, "params": c.params}}
    flops, params = official_count(model, (3, 16, 16))
    rec["counts"]["official"] = {"flops": flops, "params": params}
    prunekit.save(model, run_dir / "model.safetensors", example_inputs=x1)
    if arm == "learned":
        rec["condensation"] = cbs[0].events
        xs = next(iter(data.test))[0]  # 500 test images
        with torch.no_grad():
            before = model(xs)
        conv = convert(model)
        with torch.no_grad():
            rec["conversion_max_abs_diff"] = float((conv(xs) - before).abs().max())
        rec["converted_test_top1"] = evaluate(conv, data.test).top1
        cc = count(conv, x1)
        rec["counts"]["converted"] = {"macs": cc.macs, "params": cc.params}
        prunekit.save(conv, run_dir / "converted.safetensors", example_inputs=x1)
        # upstream's optional classifier pruning (half the classifier's inputs, no retraining): changes the function
        cls = convert(copy.deepcopy(conv), prune_classifier=True, classifier_keep=0.5)
        rec["converted_classifier_pruned_test_top1"] = evaluate(cls, data.test).top1
        cp = count(cls, x1)
        rec["counts"]["converted_classifier_pruned"] = {"macs": cp.macs, "params": cp.params}
    done.write_text(json.dumps(rec, indent=2))
    (run_dir / ".running").unlink(missing_ok=True)
    return rec


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _mean_std(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 2), "std": round(statistics.stdev(values), 2) if len(values) > 1
            else None, "n": len(values), "values": values}


def _compare(learned: list[float], fixed: list[float]) -> dict:
    """learned - fixed mean test top-1 against the pooled std of the two arms (the issue's success criterion)."""
    diff = statistics.mean(learned) - statistics.mean(fixed)
    if len(learned) < 2 or len(fixed) < 2:
        return {"learned_minus_fixed": round(diff, 2), "pooled_std": None,
                "verdict": "inconclusive: fewer than 2 seeds per arm"}
    pooled = (((len(learned) - 1) * statistics.variance(learned) + (len(fixed) - 1) * statistics.variance(fixed))
              / (len(learned) + len(fixed) - 2)) ** 0.5
    verdict = ("learned > fixed by more than the pooled std" if diff > pooled else
               "fixed > learned by more than the pooled std" if -diff > pooled else
               "inconclusive at this scale: |difference| <= pooled std")
    return {"learned_minus_fixed": round(diff, 2), "pooled_std": round(pooled, 2), "verdict": verdict}


def summarize(args) -> dict:
    import prunekit
    import prunekit.methods.condensenet  # noqa: F401  (registers the layer specs the loader needs)
    from prunekit.cost import compare_latency

    runs, pending = [], []
    for seed in args.seeds:
        for arm in ("learned", "fixed"):
            f = args.out / f"{arm}-s{seed}" / "run.json"
            (runs.append(json.loads(f.read_text())) if f.exists() else pending.append(f"{arm}-s{seed}"))
    arms = {}
    for arm in ("learned", "fixed"):
        rs = [r for r in runs if r["arm"] == arm]
        if rs:
            arms[arm] = {"test_top1": _mean_std([r["test_top1"] for r in rs]),
                         "val_top1": _mean_std([r["val_top1"] for r in rs])}
            if arm == "learned":
                arms[arm]["converted_test_top1"] = _mean_std([r["converted_test_top1"] for r in rs])
                arms[arm]["conversion_max_abs_diff"] = max(r["conversion_max_abs_diff"] for r in rs)
                if all("converted_classifier_pruned_test_top1" in r for r in rs):
                    arms[arm]["converted_classifier_pruned_test_top1"] = _mean_std(
                        [r["converted_classifier_pruned_test_top1"] for r in rs])
            arms[arm]["counts"] = rs[0]["counts"]
    latency = None
    s0 = {arm: args.out / f"{arm}-s{args.seeds[0]}" for arm in ("learned", "fixed")}
    if not args.no_latency and all((d / "run.json").exists() for d in s0.values()):
        models = {"learned_training_form": prunekit.load(s0["learned"] / "model.safetensors"),
                  "learned_converted": prunekit.load(s0["learned"] / "converted.safetensors"),
                  "fixed": prunekit.load(s0["fixed"] / "model.safetensors")}
        latency = {}
        for bs in (1, 16):  # at 16 px batch 1 is mostly per-op overhead; batch 16 is where widths show
            res = compare_latency(models, torch.randn(bs, 3, 16, 16), threads=1, repeats=60 if bs == 1 else 30,
                                  clock="cpu")
            latency[f"cpu_bs{bs}"] = {
                "device": f"{platform.machine()} CPU, 1 thread, process CPU time, load avg "
                          f"{open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} cores",
                "batch_size": bs, "baseline": round(res["learned_training_form"].median_ms, 3),
                "pruned": round(res["learned_converted"].median_ms, 3),
                **{k: {"median_ms": round(v.median_ms, 3), "p10_ms": round(v.p10_ms, 3),
                       "p90_ms": round(v.p90_ms, 3), "noisy": bool(getattr(v, "noisy", False))}
                   for k, v in res.items()}}
    sha = _sha()
    trained_by = list(dict.fromkeys(r["command"] for r in runs if "command" in r))
    command = " ; ".join(trained_by + ([_command()] if args.summarize or not trained_by else []))
    out = {
        "schema": "prunekit.result/1", "name": f"condensenet-learned-vs-fixed-cifar10-16px-e{args.epochs}",
        "method": "condensenet",
        "model": "condensenet50", "model_args": {"stages": list(ARCH["stages"]), "one_by_one": "learned | fixed",
                                                  "what": "CondenseNet-38: stages 6-6-6, growth 8-16-32, G=C=4"},
        "dataset": "cifar10", "reduced": True,
        "command": command, "recipe": None, "script": "benchmarks/condensenet_cifar.py",
        "schedule": {"train_epochs": args.epochs, "batch_size": 64, "lr": 0.1, "lr_schedule": "cosine per step",
                     "nesterov": True, "weight_decay": 1e-4, "image_size": 16, "train": 8000, "val": 1000,
                     "test": 10000, "condensation": "stages at 1/6, 1/3, 1/2 of the steps (C = 4)",
                     **({"steps_per_epoch": args.steps_per_epoch} if args.steps_per_epoch else {}),
                     "reduced_how": f"{args.epochs} epochs (CondenseNet: 300), 16 px, 8k-image train subset"},
        "device": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), {args.threads} torch thread(s)",
        "versions": {"prunekit": sha, "prunekit_training": sorted({r.get("commit", "unrecorded") for r in runs}),
                     "torch": torch.__version__.split("+")[0], "python": platform.python_version()},
        "date": date.today().isoformat(), "arms": arms, "latency_ms": latency or {},
        "gpu_minutes": 0.0, "runs": runs, "pending": pending, "seeds": args.seeds,
    }
    if "learned" in arms and "fixed" in arms:
        out["baseline"] = {"top1": arms["fixed"]["test_top1"]["mean"], **arms["fixed"]["counts"]["training_form"],
                           "what": "fixed group conv + shuffle"}
        out["pruned"] = {"top1": arms["learned"]["converted_test_top1"]["mean"],
                         **arms["learned"]["counts"]["converted"], "what": "learned group conv, converted"}
        out["equal_inference_cost"] = arms["fixed"]["counts"]["training_form"] == arms["learned"]["counts"]["converted"]
        out["comparison"] = _compare(arms["learned"]["converted_test_top1"]["values"],
                                     arms["fixed"]["test_top1"]["values"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"condensenet-cifar10-16px-e{args.epochs}-reduced.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="/work/shared/data/cifar10")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--arms", nargs="+", default=["learned", "fixed"], choices=["learned", "fixed"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps-per-epoch", type=int, default=None, help="Cap batches per epoch (smoke runs only).")
    p.add_argument("--summarize", action="store_true", help="Only rewrite the result file from finished runs.")
    p.add_argument("--no-latency", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.summarize:
        for seed in args.seeds:
            for arm in args.arms:
                rec = run_one(args, arm, seed)
                print(f"{arm} seed {seed}: test top-1 {rec['test_top1']:.2f}%", flush=True)
    out = summarize(args)
    print(json.dumps({"arms": out["arms"], "pending": out["pending"]}, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
