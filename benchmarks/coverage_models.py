"""Coverage sweep over models nobody here wrote (timm families, torchvision's ShuffleNetV2): per model, whether
the graph builds, its coverage (share of conv output channels prunable), the share of MACs kept and removed at
``ratio=0.3`` (``macs_kept_at_ratio`` / ``macs_removed_at_<ratio>``: analytic, from the graph;
``macs_kept_measured`` / ``macs_removed_measured``: counted on the pruned model), and whether the model pruned at
that ratio still runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coverage_models.py -o benchmarks/results/coverage-timm-after.json

Random weights, nothing downloaded; one thread; 64-px inputs (enough for every stride here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import warnings
from pathlib import Path

import torch

MODELS = ["timm:convnextv2_atto", "timm:mixnet_s", "timm:resnest14d", "timm:res2net50_14w_8s", "timm:cspresnet50",
          "timm:cspdarknet53", "timm:poolformer_s12", "timm:mobilenetv4_conv_small", "timm:tf_efficientnet_b0",
          "tv:shufflenet_v2_x0_5", "tv:shufflenet_v2_x1_0"]


def build(name: str) -> torch.nn.Module:
    kind, _, arch = name.partition(":")
    torch.manual_seed(0)
    if kind == "timm":
        import timm
        return timm.create_model(arch, num_classes=10).eval()
    import torchvision
    return torchvision.models.get_model(arch, num_classes=10).eval()


def measure(name: str, ratio: float, size: int) -> dict:
    import prunekit
    from prunekit.graph import DependencyGraph
    from prunekit.planning.prune import uniform_widths

    x = torch.randn(1, 3, size, size)
    row: dict = {"model": name}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = DependencyGraph(build(name), x)
    except Exception as exc:  # noqa: BLE001 - a sweep records failures
        row.update(graph_ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        return row
    row["graph_s"] = round(time.perf_counter() - t0, 2)
    cov = graph.coverage()
    widths = uniform_widths(graph, ratio)
    row.update(graph_ok=True, coverage=round(cov.ratio, 4), prunable_channels=cov.prunable, channels=cov.total,
               groups=len(graph.groups), prunable_groups=len(graph.prunable_groups),
               macs=graph.macs(), macs_kept_at_ratio=round(graph.macs(widths) / graph.macs(), 4),
               **{f"macs_removed_at_{ratio:g}": round(1 - graph.macs(widths) / graph.macs(), 4)},
               warnings=sorted({str(w.message)[:160] for w in caught})[:8],
               unprunable=dict(list(cov.unprunable.items())[:8]))
    model = build(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prunekit.prune(model, x, ratio=ratio)
            with torch.no_grad():
                model(x)
        row["pruned_runs"] = True
        row["macs_kept_measured"] = round(prunekit.count(model, x).macs / row["macs"], 4)
        row["macs_removed_measured"] = round(1 - row["macs_kept_measured"], 4)
    except Exception as exc:  # noqa: BLE001
        row.update(pruned_runs=False, prune_error=f"{type(exc).__name__}: {str(exc)[:300]}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--models", nargs="*", default=MODELS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        row = measure(name, args.ratio, args.size)
        print(json.dumps({k: row.get(k) for k in ("model", "graph_ok", "coverage", "macs_kept_at_ratio",
                                                 f"macs_removed_at_{args.ratio:g}", "macs_removed_measured",
                                                 "pruned_runs", "error")}), flush=True)
        rows.append(row)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "src/prunekit"], capture_output=True, text=True,
                          check=True).stdout.strip():
            commit += "-dirty"
    except Exception:  # noqa: BLE001
        commit = "unknown"
    import timm
    out = {"command": "benchmarks/coverage_models.py " + " ".join(f"--{k} {v}" for k, v in
                                                                 (("ratio", args.ratio), ("size", args.size))),
           "commit": commit, "torch": torch.__version__, "timm": timm.__version__, "ratio": args.ratio,
           "input": [1, 3, args.size, args.size], "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
