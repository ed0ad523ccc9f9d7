"""CondenseNet-86 on CIFAR-10 on one GPU (issue 14, "GPU"): as many epochs as fit, then convert and report.

    python benchmarks/condensenet_gpu.py --data-dir ~/cifar10 --output ~/runs/condensenet86-gpu --budget-s 300

Paper: 5.06 % error, 0.52 M params, 65.8 M FLOPs after 300 epochs. Here: batch 256 with the lr scaled linearly
(0.4), bf16 autocast, channels_last (``recipes/condensenet/condensenet86_cifar10_gpu_bs256.yaml``), the full 50k
training set (upstream holds nothing out on CIFAR). A probe times ``--probe-steps`` training steps of a fresh
network first; the epoch count that fits ``--budget-s`` is fixed from it *before* the cosine schedule starts
(the condensing stages follow any count: 1/6, 1/3, 1/2 of the steps). Then the method trains, condenses, converts
(classifier pruning as upstream), evaluates both forms, counts them (prunekit's and the official convention) and
measures latency. ``reduced: true`` unless 300 epochs ran. Resumable (the method's stages).

Writes ``benchmarks/results/condensenet86-cifar10-gpu.json``. ``--smoke``: a 2-2-2 CondenseNet, 512 images, a
few steps, on any device (mechanics only; writes ``condensenet-gpu-smoke.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from prunekit.app.recipes import load_recipe, method_config
from prunekit.data import build_data
from prunekit.methods import CondenseNetMethod, RunInfo, get_method
from prunekit.models import create
from prunekit.report import envelope, write_record
from prunekit.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "condensenet" / "condensenet86_cifar10_gpu_bs256.yaml"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="~/cifar10")
    ap.add_argument("--output", default="runs/condensenet86-gpu")
    ap.add_argument("--budget-s", type=float, default=300.0, help="training time the epoch count is sized for")
    ap.add_argument("--probe-steps", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=None, help="skip the probe: train this many epochs")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    recipe = load_recipe(RECIPE)
    name, model_kw = recipe["model"], {}
    subset = None
    if args.smoke:
        name, model_kw, subset = "condensenet50", {"stages": (2, 2, 2), "growth": (4, 8, 8)}, 512
    data = build_data("cifar10", data_dir=str(Path(args.data_dir).expanduser()), batch_size=recipe["batch_size"],
                      val_split=0.0, train_subset=subset, seed=0, device=device)
    cfg = method_config(get_method("condensenet"), recipe)
    epochs = args.epochs
    probe = None
    if epochs is None:  # time a few steps of a fresh network, then fix the epoch count
        torch.manual_seed(0)
        m = create(name, num_classes=10, **model_kw)
        steps = 3 if args.smoke else args.probe_steps
        pc = type(cfg.train).from_dict({**cfg.train.to_dict(), "epochs": 1, "steps_per_epoch": steps,
                                        "progress": False, "eval_every": 10 ** 6})
        trainer = Trainer(m, data.train, None, config=pc, device=device)
        trainer.fit()  # the first steps include warm-up: the estimate errs on the slow side
        t0 = time.perf_counter()
        trainer2 = Trainer(m, data.train, None, config=pc, device=device)
        trainer2.fit()
        per_step = (time.perf_counter() - t0) / steps
        per_epoch = per_step * len(data.train)
        epochs = max(1, min(300, math.floor(args.budget_s / per_epoch)))
        probe = {"steps": steps, "seconds_per_step": per_step, "seconds_per_epoch_est": per_epoch}
        log(f"probe: {per_step * 1e3:.1f} ms/step, ~{per_epoch:.1f} s/epoch -> {epochs} epochs in {args.budget_s} s")
    if args.smoke:
        epochs = 1
    cfg.train = type(cfg.train).from_dict({**cfg.train.to_dict(), "epochs": epochs, "progress": False,
                                           **({"steps_per_epoch": 3} if args.smoke else {})})
    torch.manual_seed(0)
    model = create(name, num_classes=10, **model_kw)
    command = "python " + " ".join(sys.argv)
    t0 = time.time()
    info = RunInfo(name="condensenet86-cifar10-gpu", model_name=name, reduced=epochs < 300, command=command,
                   settings={"epochs": epochs})
    result = CondenseNetMethod(cfg).run(model, data, args.output, device=device, log=log, info=info)
    rec = json.loads((Path(args.output) / "result.json").read_text())
    minutes = (time.time() - t0) / 60
    rec.update(envelope(rec.get("name", "condensenet86-cifar10-gpu"), device=device, command=command))
    rec.update(reduced=epochs < 300, schedule={**rec.get("schedule", {}), "train_epochs": epochs,
                                               "paper_epochs": 300, "batch_size": recipe["batch_size"]},
               probe=probe, gpu_minutes=round(minutes, 2) if device == "cuda" else None,
               conversion=result.details.get("conversion"))
    if device == "cuda":
        rec["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    out = ROOT / "benchmarks" / "results" / ("condensenet-gpu-smoke.json" if args.smoke
                                             else "condensenet86-cifar10-gpu.json")
    write_record(rec, out)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
