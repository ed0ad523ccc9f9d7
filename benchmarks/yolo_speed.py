"""YOLOv8n: graph build + 30 % L1 pruning time on the CPU, prunekit vs Torch-Pruning (issue 10, item 5).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/yolo_speed.py [--rounds 5] [--size 640]

The ultralytics ``DetectionModel("yolov8n.yaml")`` (80 classes, random weights, nothing downloaded) at 640x640,
batch 1, 1 torch thread. prunekit: ``prunekit.prune(model, x, ratio=0.3, protected=<Detect output convs>,
pin_outputs=False)`` (the concrete tracer: fx cannot trace YOLOv8). Torch-Pruning 1.6.1: ``MetaPruner`` with
``GroupMagnitudeImportance(p=1)``, ``pruning_ratio=0.3``, the same Detect output convs in ``ignored_layers``;
its failure, if any, is recorded with the error. ``torch_export_only``: ``torch.export.export(model, (x,),
strict=False)`` alone (no pruning: the ATen-level front-end prunekit does not use, timed for comparison).
Fresh models (same seed) are built outside the timer; the first
call in the process is reported apart (``cold``: it pays one-time imports, e.g. torch's meta kernels), then
``--rounds`` interleaved warm calls, medians of wall and process CPU time; MACs before/after and output shapes.
-> ``benchmarks/results/yolov8-speed-cpu.json``. Goal: prunekit < 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn as nn

import prunekit
from prunekit.report.records import envelope, write_record

RESULTS = Path(__file__).resolve().parent / "results"


def build() -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DetectionModel("yolov8n.yaml", verbose=False).eval()


def head_output_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The Detect head's last convolution of every box and class branch, and its DFL conv."""
    head = model.model[-1]
    return [*(seq[-1] for seq in head.cv2), *(seq[-1] for seq in head.cv3), head.dfl.conv]


def prune_prunekit(model: nn.Module, x: torch.Tensor, ratio: float) -> None:
    names = {id(m): n for n, m in model.named_modules()}
    protected = [names[id(m)] for m in head_output_convs(model)]
    prunekit.prune(model, x, ratio=ratio, importance="l1", protected=protected, pin_outputs=False)


def prune_tp(model: nn.Module, x: torch.Tensor, ratio: float) -> None:
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=head_output_convs(model))
    pruner.step()


def export_only(model: nn.Module, x: torch.Tensor, ratio: float) -> None:
    """Not a pruner: ``torch.export.export(strict=False)`` alone, the front-end the issue proposed (timed to
    compare with prunekit's whole graph build + pruning)."""
    torch.export.export(model, (x,), strict=False)


LIBS = {"prunekit": prune_prunekit, "torch_pruning": prune_tp, "torch_export_only": export_only}


def shapes(model: nn.Module, x: torch.Tensor) -> list[list[int]]:
    with torch.no_grad():
        y, preds = model(x)
    return [list(y.shape), list(preds["boxes"].shape), list(preds["scores"].shape)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("-o", "--output", type=Path, default=RESULTS / "yolov8-speed-cpu.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x = torch.randn(1, 3, args.size, args.size)
    dense = build()
    base = prunekit.count(dense, x)
    base_shapes = shapes(dense, x)
    rows: dict = {lib: {"times": []} for lib in LIBS}
    load_start = os.getloadavg()
    for r in range(args.rounds + 1):
        for lib in (list(LIBS) if r % 2 == 0 else list(LIBS)[::-1]):
            row = rows[lib]
            if "error" in row:
                continue
            model = build()
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    LIBS[lib](model, x, args.ratio)
            except Exception as exc:  # noqa: BLE001 - a failure is a result
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                row["traceback_tail"] = traceback.format_exc().strip().splitlines()[-4:]
                print(f"{lib}: FAILED {row['error']}", flush=True)
                continue
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r == 0 and lib == "torch_export_only":
                row.update(cold_wall_s=round(wall, 3), cold_cpu_s=round(cpu, 3))
            elif r == 0:
                cost = prunekit.count(model, x)
                row.update(cold_wall_s=round(wall, 3), cold_cpu_s=round(cpu, 3), params=cost.params, macs=cost.macs,
                           macs_removed=round(1 - cost.macs / base.macs, 4), output_shapes=shapes(model, x),
                           same_output_shapes=shapes(model, x) == base_shapes)
            else:
                row["times"].append((wall, cpu))
            print(f"round {r} {lib}: {wall:.2f} s wall, {cpu:.2f} s cpu", flush=True)
    for row in rows.values():
        times = row.pop("times")
        if times:
            row.update(wall_s=round(statistics.median(w for w, _ in times), 3),
                       cpu_s=round(statistics.median(c for _, c in times), 3),
                       wall_all_s=[round(w, 3) for w, _ in times])
    from importlib.metadata import version

    rec = envelope("yolov8-speed-cpu", method="prunekit vs torch_pruning:MetaPruner+GroupMagnitudeImportance",
                   task=f"graph build + {args.ratio:.0%} L1 pruning of YOLOv8n (Detect output convs protected), "
                        f"batch 1, {args.size} px, 1 thread", rounds=args.rounds, threads=1,
                   dense={"params": base.params, "macs": base.macs, "output_shapes": base_shapes},
                   results=rows, load_average=[list(load_start), list(os.getloadavg())], goal="prunekit < 2 s",
                   note="cold = first call in the process (one-time imports); wall_s/cpu_s = medians of the warm "
                        "rounds, interleaved")
    rec["versions"].update({"ultralytics": version("ultralytics"), "torch_pruning": version("torch-pruning")})
    write_record(rec, args.output)
    print(f"wrote {args.output}")
    return rec


if __name__ == "__main__":
    main()
