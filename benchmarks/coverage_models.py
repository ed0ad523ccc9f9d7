"""Coverage sweep over models nobody here wrote (timm families, torchvision's ShuffleNetV2): per model, whether
the graph builds, its coverage (share of conv output channels prunable), the share of MACs kept and removed at
``ratio=0.3`` (``macs_kept_at_ratio`` / ``macs_removed_at_<ratio>``: analytic, from the graph;
``macs_kept_measured`` / ``macs_removed_measured``: counted on the pruned model), and whether the model pruned at
that ratio still runs. Per model also (``checks``): ``identity`` (pruning nothing leaves the output
bit-identical), ``prune`` (the pruned model runs, output shapes unchanged), ``save_load`` (the pruned model
saved and loaded gives the same output: the graph format where fx traces it, else the widths format rebuilt from
a fresh constructor) and ``onnx`` (exported and checked against onnxruntime). Every row names the tracer used.
Ultralytics YOLOv8n (detector, 320 px, ``pin_outputs=False`` with the Detect output convs protected, see the
README) and YOLOv8n-cls (64 px) are in the sweep too.

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
          "tv:shufflenet_v2_x0_5", "tv:shufflenet_v2_x1_0", "ultralytics:yolov8n", "ultralytics:yolov8n-cls"]
# per-model prune options and input size (a detector's head returns its input maps: see the README)
OPTIONS = {"ultralytics:yolov8n": {"pin_outputs": False},
           "timm:convnextv2_atto": {"approximate_statistics": True}}  # its global response norm: a mean over channels
SIZES = {"ultralytics:yolov8n": 320}
# the outputs whose shapes must not change (default: all); the detector's feature maps may shrink
KEPT_OUTPUTS = {"ultralytics:yolov8n": lambda y: [y[0], y[1]["boxes"], y[1]["scores"]]}


def build(name: str) -> torch.nn.Module:
    kind, _, arch = name.partition(":")
    torch.manual_seed(0)
    if kind == "ultralytics":
        from ultralytics.nn import tasks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if arch.endswith("-cls"):
                return tasks.ClassificationModel(f"{arch}.yaml", nc=10, verbose=False).eval()
            return tasks.DetectionModel(f"{arch}.yaml", verbose=False).eval()
    if kind == "timm":
        import timm
        return timm.create_model(arch, num_classes=10).eval()
    import torchvision
    return torchvision.models.get_model(arch, num_classes=10).eval()


def measure(name: str, ratio: float, size: int) -> dict:
    import prunekit
    from prunekit.graph import DependencyGraph
    from prunekit.planning.prune import uniform_widths

    size = SIZES.get(name, size)
    options = OPTIONS.get(name, {})
    x = torch.randn(1, 3, size, size)
    row: dict = {"model": name, "input": [1, 3, size, size], "options": options}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = DependencyGraph(build(name), x, **options)
    except Exception as exc:  # noqa: BLE001 - a sweep records failures
        row.update(graph_ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        return row
    row["graph_s"] = round(time.perf_counter() - t0, 2)
    cov = graph.coverage()
    protected = _protected(graph.model)
    widths = uniform_widths(graph, ratio, protected)
    row.update(graph_ok=True, tracer=graph.tracer, coverage=round(cov.ratio, 4), prunable_channels=cov.prunable,
               channels=cov.total, groups=len(graph.groups), prunable_groups=len(graph.prunable_groups),
               macs=graph.macs(), macs_kept_at_ratio=round(graph.macs(widths) / graph.macs(), 4),
               **{f"macs_removed_at_{ratio:g}": round(1 - graph.macs(widths) / graph.macs(), 4)},
               warnings=sorted({str(w.message)[:160] for w in caught})[:8],
               unprunable=dict(list(cov.unprunable.items())[:8]))
    checks: dict = {}
    row["checks"] = checks
    checks["identity"] = _check(lambda: _identity(name, x, options))
    model = build(name)
    kept = KEPT_OUTPUTS.get(name, lambda y: y)
    with torch.no_grad():
        before = [t.shape for t in _flat(kept(model(x)))]

    def prune_and_run():
        prunekit.prune(model, x, ratio=ratio, protected=protected, **options)
        with torch.no_grad():
            assert [t.shape for t in _flat(kept(model(x)))] == before, "output shapes changed"
    checks["prune"] = _check(prune_and_run)
    if checks["prune"] is True:
        row["pruned_runs"] = True
        row["macs_kept_measured"] = round(prunekit.count(model, x).macs / row["macs"], 4)
        row["macs_removed_measured"] = round(1 - row["macs_kept_measured"], 4)
        checks["save_load"] = _check(lambda: _save_load(name, model, x, row))
        checks["onnx"] = _check(lambda: _onnx(model, x))
    else:
        row["pruned_runs"] = False
    return row


def _flat(y) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _flat(v)]
    if isinstance(y, (tuple, list)):
        return [t for v in y for t in _flat(v)]
    return []


def _protected(model: torch.nn.Module) -> list[str]:
    """A detector's output convolutions (the Detect head's last conv of every box/class branch)."""
    head = getattr(model, "model", [None])[-1] if hasattr(model, "model") else None
    if head is None or not hasattr(head, "cv2") or not hasattr(head, "cv3"):
        return []
    last = {id(seq[-1]) for seq in [*head.cv2, *head.cv3]}
    return [n for n, m in model.named_modules() if id(m) in last]


def _check(fn) -> bool | str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
        return True
    except Exception as exc:  # noqa: BLE001 - a sweep records failures
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def _identity(name: str, x: torch.Tensor, options: dict) -> None:
    from prunekit.graph import DependencyGraph

    model = build(name)
    with torch.no_grad():
        y0 = _flat(model(x))
    graph = DependencyGraph(model, x, **options)
    graph.prune_groups({g.name: torch.arange(g.size) for g in graph.groups})
    with torch.no_grad():
        y1 = _flat(model(x))
    assert all(torch.equal(a, b) for a, b in zip(y0, y1)), "outputs changed"


def _save_load(name: str, model: torch.nn.Module, x: torch.Tensor, row: dict) -> None:
    import tempfile

    import prunekit

    with tempfile.TemporaryDirectory() as d:
        try:
            path = prunekit.save(model, f"{d}/m.safetensors", example_inputs=x)
            row["saved_as"] = "graph"
            rebuilt = prunekit.load(path)
        except prunekit.PrunekitError:
            path = prunekit.save(model, f"{d}/m.safetensors", architecture="widths", example_inputs=x)
            row["saved_as"] = "widths"
            rebuilt = prunekit.load(path, model=build(name))
    rebuilt.eval()
    with torch.no_grad():
        a, b = _flat(model(x)), _flat(rebuilt(x))
    assert all(torch.equal(u, v) for u, v in zip(a, b)), "loaded model's output differs"


def _onnx(model: torch.nn.Module, x: torch.Tensor) -> None:
    import tempfile

    import prunekit

    with tempfile.TemporaryDirectory() as d:
        prunekit.export_onnx(model, x, f"{d}/m.onnx", verify=True)


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
        print(json.dumps({k: row.get(k) for k in ("model", "graph_ok", "tracer", "coverage", "macs_kept_at_ratio",
                                                 f"macs_removed_at_{args.ratio:g}", "macs_removed_measured",
                                                 "checks", "error")}), flush=True)
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
