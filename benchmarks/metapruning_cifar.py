"""MetaPruning: do searched widths, retrained from scratch, beat a uniform width multiplier at <= equal MACs?

CPU protocol (issue 12, "Verification on these CPUs"; a REDUCED run)::

    nice -n 19 python benchmarks/metapruning_cifar.py --data-dir ../shared/data/cifar10 --output runs/metapruning-cpu

Real CIFAR-10 downsampled to 16×16 at load (train 10k, val 2k held out of the training set, the full 10k test set),
``resnet20`` from scratch, budget 30 % of the MACs (candidates in [27.5 %, 30 %]); PruningNet 30 epochs (batch 128,
lr 0.1 cosine, wd 1e-4, label smoothing 0.1); a reduced search: population 32 (top 32 kept, 8 parents, 12
mutations, 12 crossovers), 8 iterations, 10 recalibration batches per candidate, fitness on the validation split;
the random control scores as many random candidates of the window. Retrained from scratch, same recipe and data
order (30 epochs, lr 0.1 cosine, nesterov, wd 5e-4, label smoothing 0.1): the winner and the uniform multiplier at
equal or higher MACs, ``--seeds`` seeds each (the random control's best with ``--retrain-random``).
``--pruningnet-epochs`` / ``--retrain-epochs`` shorten the two trainings (the committed CPU record used 24 and 16:
the machine was shared with three other jobs). Success =
winner − uniform > pooled std of the test top-1; else the record says "inconclusive at this scale".

``--gpu``: the GPU protocol (CIFAR-10 32 px, 45k/5k, ``resnet56``, 30 % MACs, PruningNet 40 epochs at batch 512 in
bf16, search 10 iterations × 50, winner and uniform retrained 30 epochs); records wall time per stage and the peak
GPU memory. Every stage is resumable: re-run the same command after a timeout.

Writes ``benchmarks/results/metapruning-resnet20-cifar10-16px-cpu.json`` (``-gpu``: ``metapruning-resnet56-cifar10-
gpu.json``) and copies the run's ``search.png`` / ``arms.png`` beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from prunekit.data import build_data
from prunekit.methods import MetaPruning, MetaPruningConfig, RunInfo
from prunekit.models import create
from prunekit.report import envelope, write_record
from prunekit.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def protocol(args) -> dict:
    if args.gpu:
        return dict(model="resnet56", device="cuda", image_size=None, train_subset=None, val_split=0.1, batch=512,
                    precision="bf16", pn_epochs=40, pn_lr=0.4, population=50, select=50, parents=10, mutations=25,
                    crossovers=25, iterations=10, recal_batches=20, retrain_epochs=30, retrain_lr=0.4,
                    name="metapruning-resnet56-cifar10-gpu")
    p = dict(model="resnet20", device="cpu", image_size=16, train_subset=10_000, val_split=0.04, batch=128,
             precision="auto", pn_epochs=30, pn_lr=0.1, population=32, select=32, parents=8, mutations=12,
             crossovers=12, iterations=8, recal_batches=10, retrain_epochs=30, retrain_lr=0.1,
             name="metapruning-resnet20-cifar10-16px-cpu")
    if args.smoke:
        p.update(train_subset=1000, pn_epochs=1, population=6, select=6, parents=3, mutations=2, crossovers=2,
                 iterations=2, recal_batches=2, retrain_epochs=1, name="metapruning-smoke")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="../shared/data/cifar10")
    ap.add_argument("--output", default="runs/metapruning-cpu")
    ap.add_argument("--target-macs", type=float, default=0.30)
    ap.add_argument("--seeds", type=int, default=2, help="retraining seeds per arm")
    ap.add_argument("--retrain-random", action="store_true", help="also retrain the random control's best")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pruningnet-epochs", type=int, default=None, help="override the protocol's (30 CPU, 40 GPU)")
    ap.add_argument("--retrain-epochs", type=int, default=None, help="override the protocol's (30)")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny settings (mechanics only): metapruning-smoke.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P = protocol(args)
    if args.pruningnet_epochs:
        P["pn_epochs"] = args.pruningnet_epochs
    if args.retrain_epochs:
        P["retrain_epochs"] = args.retrain_epochs
    command = "python " + " ".join(sys.argv)
    t0 = time.time()
    data = build_data("cifar10", data_dir=args.data_dir, batch_size=P["batch"], eval_batch_size=1000,
                      val_split=P["val_split"], train_subset=P["train_subset"], image_size=P["image_size"], seed=0,
                      device=P["device"])
    log(f"data: train {data.train.num_samples}, val {data.val.num_samples}, test {data.test.num_samples}")
    torch.manual_seed(0)
    model = create(P["model"], num_classes=10)
    pn = TrainConfig(epochs=P["pn_epochs"], lr=P["pn_lr"], momentum=0.9, weight_decay=1e-4, schedule="cosine",
                     label_smoothing=0.1, precision=P["precision"], progress=False)
    retrain = TrainConfig(epochs=P["retrain_epochs"], lr=P["retrain_lr"], momentum=0.9, nesterov=True,
                          weight_decay=5e-4, schedule="cosine", label_smoothing=0.1, precision=P["precision"],
                          progress=False)
    cfg = MetaPruningConfig(target_macs=args.target_macs, window=0.025, pruningnet=pn, population=P["population"],
                            select=P["select"], parents=P["parents"], mutations=P["mutations"],
                            crossovers=P["crossovers"], iterations=P["iterations"],
                            recal_batches=P["recal_batches"], retrain=retrain, retrain_seeds=args.seeds,
                            controls=("uniform", "random") if args.retrain_random else ("uniform",),
                            gate=not args.smoke)
    # the run's own settings: what every stage depends on (data, model); each stage fingerprints its own options
    info = RunInfo(name=P["name"], model_name=P["model"], reduced=True, command=command,
                   settings={"benchmark": {k: P[k] for k in ("model", "image_size", "train_subset", "val_split",
                                                              "batch")}})
    result = MetaPruning(cfg).run(model, data, args.output, device=P["device"], log=log, latency=not args.gpu,
                                  info=info)
    d = result.details
    stages = {r.name: round(r.seconds, 1) for r in result.stages}
    arms = d.get("arms", {})
    rec = envelope(
        P["name"], device=P["device"], command=command, method="metapruning", model=P["model"], dataset="cifar10",
        reduced=True,
        schedule={"image_size": P["image_size"] or 32, "train_images": data.train.num_samples,
                  "val_images": data.val.num_samples, "test_images": data.test.num_samples,
                  "pruningnet_epochs": P["pn_epochs"], "retrain_epochs": P["retrain_epochs"],
                  "batch_size": P["batch"], "search": {k: P[k] for k in ("population", "select", "parents",
                                                                         "mutations", "crossovers", "iterations",
                                                                         "recal_batches")},
                  "target_macs": args.target_macs, "window": [args.target_macs - 0.025, args.target_macs],
                  "retrain_seeds": args.seeds},
        baseline={"top1": None, "params": result.baseline.params, "macs": result.baseline.macs,
                  "note": "trained from scratch (the paper's protocol): no trained full-width baseline in this run"},
        pruned={"top1": arms.get("winner", {}).get("test_top1_mean"), "params": arms.get("winner", {}).get("params"),
                "macs": arms.get("winner", {}).get("macs"), "widths": d["search"]["widths"]},
        arms=arms, gate=d.get("gate"), search={k: d["search"][k] for k in ("fitness", "evaluated", "history")},
        random_control={k: d["random_control"][k] for k in ("fitness", "evaluated", "widths")}
        if "random_control" in d else None,
        generated=d.get("generated"), uniform_multiplier=d.get("uniform_multiplier"),
        pruningnet=d.get("pruningnet"), stage_seconds=stages, wall_minutes=round((time.time() - t0) / 60, 1),
        seed=0)
    if P["device"] == "cuda":
        rec["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        rec["gpu_minutes"] = round(sum(stages.values()) / 60, 2)
    path = write_record(rec, RESULTS / f"{P['name']}.json")
    for png in ("search.png", "arms.png"):
        src = Path(args.output) / png
        if src.exists():
            shutil.copy(src, RESULTS / f"{P['name']}-{png}")
    log(f"wrote {path}")
    print(json.dumps({a: {k: v for k, v in arms[a].items() if k != "widths"} for a in arms if a in
                      ("winner", "uniform", "random")}, indent=1))
    print(json.dumps(arms.get("winner_minus_uniform"), indent=1))


if __name__ == "__main__":
    main()
