"""Train a CIFAR baseline from a recipe and write its result record (benchmarks/results/baseline-*.json).

GPU run (the issue's baseline rows; each call stays under the device's 10-minute command limit and resumes):

    timeout -s TERM 570 python benchmarks/train_baseline.py --recipe recipes/baseline/resnet56_cifar10.yaml \\
        --data-dir ~/cifar10 --output ~/runs/base-resnet56   # repeat until it prints the record

SIGTERM makes the Trainer checkpoint and exit; the next call continues from ``OUTPUT/last.ckpt``. The record
holds final-epoch test accuracy (the test set chooses nothing), params, MACs, seconds per epoch, GPU minutes and
latency (GPU batch 256 under a CUDA graph, bf16 channels_last; CPU batch 1). ``--epochs`` shortens a run for a
smoke test; the record is then marked ``reduced``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import yaml

from prunekit.cost import count, measure_latency
from prunekit.report import envelope, write_record
from prunekit.train import TrainingInterrupted
from prunekit.app.training import TrainJob, run_training


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--data-dir", default=None, help="CIFAR folder (npz or torchvision layout)")
    ap.add_argument("--output", type=Path, required=True, help="run folder (checkpoint; keep it between calls)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=None, help="override (marks the record reduced)")
    ap.add_argument("--result", type=Path, default=None, help="default benchmarks/results/baseline-<model>-<data>.json")
    args = ap.parse_args(argv)

    recipe = yaml.safe_load(args.recipe.read_text())
    paper_epochs = recipe["train"]["epochs"]
    job = TrainJob.from_recipe(recipe, data_dir=args.data_dir,
                               train={"epochs": args.epochs, "checkpoint_dir": args.output, "resume": True,
                                      "progress": sys.stderr.isatty()})
    try:
        out = run_training(job, device=args.device, log=print)
    except TrainingInterrupted as e:
        print(f"{e}; run this command again to continue", file=sys.stderr)
        return 3
    hist = out.fit.history
    model = out.model.eval()
    x1 = torch.randn(1, *out.loaders.spec.input_shape)
    cost = count(model, x1)
    latency: dict[str, dict] = {}
    if args.device.startswith("cuda"):
        xb = torch.randn(256, *out.loaders.spec.input_shape, device=args.device)
        lat = measure_latency(model, xb, device=args.device, cuda_graph=True, channels_last=True,
                              dtype=torch.bfloat16)
        latency["gpu_bs256"] = {"baseline": lat.median_ms, "method": lat.method}
    cpu_model = model.to("cpu")
    lat = measure_latency(cpu_model, x1, device="cpu", threads=min(torch.get_num_threads(), 16))
    latency["cpu_bs1"] = {"baseline": lat.median_ms, "method": lat.method}
    reduced = job.config.epochs < paper_epochs or job.data not in ("cifar10", "cifar100")
    name = f"baseline-{job.model}-{job.data}" + ("-reduced" if reduced else "")
    sec_per_epoch = statistics.median(h["epoch_seconds"] for h in hist)
    record = envelope(
        name, device=args.device, method="baseline", model=job.model, dataset=job.data, reduced=reduced,
        recipe=str(args.recipe),
        schedule={"train_epochs": job.config.epochs, "batch_size": job.batch_size, "lr": job.config.lr,
                  "lr_schedule": job.config.schedule, "milestones": job.config.milestones,
                  "warmup_epochs": job.config.warmup_epochs, "weight_decay": job.config.weight_decay,
                  "precision": out.trainer.precision, "channels_last": job.config.channels_last},
        baseline={"top1": round(out.test.top1, 2), "params": cost.params, "macs": cost.macs},
        latency_ms=latency,
        seconds_per_epoch=round(sec_per_epoch, 3),
        gpu_minutes=round(sum(h["epoch_seconds"] for h in hist) / 60, 2) if args.device.startswith("cuda") else 0.0,
        final_train_top1=round(hist[-1]["train_top1"], 2),
        seed=job.config.seed,
    )
    path = args.result or Path("benchmarks/results") / f"{name}.json"
    write_record(record, path)
    print(f"{job.model}: test top-1 {out.test.top1:.2f}% · {sec_per_epoch:.2f} s/epoch → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
