"""Network Slimming reproduction on CIFAR-10 (GPU), optionally side by side with Torch-Pruning's BNScalePruner.

    # 1. the baseline (benchmarks/train_baseline.py), 2. this script; both resume when re-run after a timeout:
    timeout -s TERM 570 python benchmarks/slimming_cifar.py --recipe recipes/slimming/vgg19_cifar10.yaml \\
        --data-dir ~/cifar10 --baseline ~/runs/base-vgg19/last.ckpt --output ~/runs/slim-vgg19
    timeout -s TERM 570 python benchmarks/slimming_cifar.py --recipe recipes/slimming/resnet56_cifar10.yaml \\
        --data-dir ~/cifar10 --baseline ~/runs/base-resnet56/last.ckpt --from-baseline --torch-pruning \\
        --output ~/runs/slim-resnet56

``--from-baseline`` starts the sparsity phase from the baseline weights (the Torch-Pruning comparison: both
libraries start from the same checkpoint, run a sparsity phase of the same epochs, prune globally to the same MACs
and fine-tune for the same epochs). Without it, sparsity training starts from scratch as in the paper.
The record's ``baseline`` is the plain-trained baseline checkpoint evaluated here; ``pruned`` is the final
fine-tuned network. Records: benchmarks/results/slimming-<model>-cifar10.json (+ ``torch_pruning:bn_scale``).
``--smoke`` shrinks everything (CPU check of the script; the record is marked reduced).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import yaml

from prunekit.data import build_data
from prunekit.methods import NetworkSlimming, SlimmingConfig
from prunekit.models import create
from prunekit.report import summarize, write_record
from prunekit.train import Callback, TrainConfig, TrainingInterrupted, Trainer, evaluate, seed_everything
from prunekit.app.training import load_trained_model


def _phase(d: dict, smoke: bool) -> TrainConfig:
    d = dict(d, progress=sys.stderr.isatty())
    if smoke:
        d.update(epochs=1, steps_per_epoch=3, milestones=None, warmup_epochs=0)
    return TrainConfig.from_dict(d)


class TPRegularize(Callback):
    """Torch-Pruning's sparsity term, applied after backward exactly as its examples do."""

    def __init__(self, pruner):
        self.pruner = pruner

    def on_after_backward(self, trainer):
        self.pruner.regularize(trainer.model)


def run_torch_pruning(base: torch.nn.Module, data, recipe: dict, target_macs: float, out: Path, device: str,
                      smoke: bool) -> dict:
    """Torch-Pruning 1.6.1: BNScaleImportance + BNScalePruner, global pruning; same schedule as ours."""
    import torch_pruning as tp

    model = copy.deepcopy(base).to(device)
    x = torch.randn(1, 3, 32, 32, device=device)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    base_macs, _ = tp.utils.count_ops_and_params(model, x)

    def make(ratio, m):
        return tp.pruner.BNScalePruner(m, x, importance=tp.importance.BNScaleImportance(), global_pruning=True,
                                       pruning_ratio=ratio, reg=recipe["slimming"]["sparsity"],
                                       ignored_layers=[classifier])

    t0 = time.time()
    sp = _phase(recipe["sparsity_train"], smoke)
    sp = TrainConfig.from_dict({**sp.to_dict(), "checkpoint_dir": out / "tp-sparsity", "resume": True})
    Trainer(model, data.train, data.val, config=sp, callbacks=[TPRegularize(make(0.5, model))], device=device).fit()
    lo, hi = 0.0, 0.95  # the global pruning ratio that lands on the same MACs as ours
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        make(mid, trial).step()
        macs, _ = tp.utils.count_ops_and_params(trial, x)
        lo, hi = (lo, mid) if macs <= target_macs * base_macs else (mid, hi)
    make(hi, model).step()
    ft = _phase(recipe["finetune"], smoke)
    ft = TrainConfig.from_dict({**ft.to_dict(), "checkpoint_dir": out / "tp-finetune", "resume": True})
    Trainer(model, data.train, data.val, config=ft, device=device).fit()
    s = summarize(model.eval(), x.cpu())
    s.top1["test"] = evaluate(model, data.test).top1
    return {"summary": s, "ratio": hi, "minutes": (time.time() - t0) / 60}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--baseline", type=Path, required=True, help="baseline Trainer checkpoint (last.ckpt)")
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--from-baseline", action="store_true")
    ap.add_argument("--torch-pruning", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)

    rc = yaml.safe_load(args.recipe.read_text())
    subset = 512 if args.smoke else rc.get("train_subset")
    data = build_data("cifar10", data_dir=args.data_dir, batch_size=rc["batch_size"], val_split=rc["val_split"],
                      device=args.device, train_subset=subset)
    base, base_meta = load_trained_model(args.baseline)
    base = base.to(args.device).eval()
    x = next(iter(data.test))[0][:2].cpu()
    base_sum = summarize(base, x)
    base_sum.top1["test"] = evaluate(base, data.test).top1
    seed_everything(0)
    start = copy.deepcopy(base) if args.from_baseline else create(rc["model"], num_classes=10)
    sp, ft = _phase(rc["sparsity_train"], args.smoke), _phase(rc["finetune"], args.smoke)
    cfg = SlimmingConfig(**rc["slimming"], sparsity_train=sp, finetune=ft)
    t0 = time.time()
    try:
        res = NetworkSlimming(cfg).run(start, data, args.output / "prunekit", device=args.device, log=print)
        tp_res = None
        if args.torch_pruning:
            tp_res = run_torch_pruning(base, data, rc, res.pruned.macs / base_sum.macs, args.output, args.device,
                                       args.smoke)
    except TrainingInterrupted as e:
        print(f"{e}; run the same command again to continue", file=sys.stderr)
        return 3
    minutes = (time.time() - t0) / 60
    reduced = args.smoke or bool(subset) or sp.epochs < rc.get("paper_epochs", {}).get("sparsity_train_epochs", 10**9) \
        or ft.epochs < rc.get("paper_epochs", {}).get("finetune_epochs", 10**9)
    schedule = {"sparsity_epochs": sp.epochs, "finetune_epochs": ft.epochs, "batch_size": rc["batch_size"],
                "from_baseline": args.from_baseline, **rc["slimming"]}
    res.baseline = base_sum
    name = f"slimming-{rc['model']}-cifar10" + ("-smoke" if args.smoke else "")
    records = [res.record(name=name, model_name=rc["model"], dataset="cifar10", reduced=reduced,
                          device=args.device, schedule=schedule, recipe=str(args.recipe),
                          gpu_minutes=round(minutes, 2) if args.device.startswith("cuda") else 0.0, seed=0)]
    if tp_res is not None:
        s = tp_res["summary"]
        rec = dict(records[0], name=name + "-torch-pruning", method="torch_pruning:bn_scale",
                   pruned={"top1": round(s.top1["test"], 2), "params": s.params, "macs": s.macs},
                   latency_ms={k: {"baseline": base_sum.latency_ms.get(k), "pruned": v}
                               for k, v in s.latency_ms.items()},
                   details={"global_pruning_ratio": tp_res["ratio"]}, stages=[],
                   gpu_minutes=round(tp_res["minutes"], 2) if args.device.startswith("cuda") else 0.0)
        rec.pop("widths", None)
        records.append(rec)
    path = write_record(records if len(records) > 1 else records[0], Path("benchmarks/results") / f"{name}.json")
    print(f"ours: {res.pruned.top1['test']:.2f}% at {res.pruned.macs / base_sum.macs:.1%} MACs"
          + (f"; torch-pruning: {tp_res['summary'].top1['test']:.2f}%" if tp_res else "") + f" → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
