"""Dependency-graph speed and model support: prunekit vs Torch-Pruning (DepGraph).

1. ``speed``: wall and CPU time of *graph build + 50% L1 pruning* of torchvision resnet50 and densenet121 at
   224x224 (batch 1) on the CPU, prunekit (``prunekit.prune(model, x, ratio=0.5, importance="l1")``) vs
   Torch-Pruning (``BasePruner`` + ``GroupMagnitudeImportance(p=1)``, ``pruning_ratio=0.5``, the classifier
   ignored). Same process, same models (fresh copies with the same seed, built outside the timer), one
   warm-up run each, then interleaved rounds (the order alternates); medians and their ratio.
   -> ``benchmarks/results/graph-speed-cpu.json``
2. ``support``: every torchvision classification model (``torchvision.models.list_models``) at 64 px (or the
   smallest input it accepts): for each library, does *build graph -> prune 30% -> forward* run and give the
   right output shape? Failure reasons, MACs before/after, prunekit's coverage (share of conv output
   channels that can be pruned) and the number of ops it warned about.
   -> ``benchmarks/results/tv-model-support.json`` (written after every model)

    python benchmarks/graph_speed.py speed [--rounds 5]
    python benchmarks/graph_speed.py support [--models resnet18 ...] [--reuse OLD.json]

The CPU machines are shared (2 cores, other jobs running): absolute times are noisy; compare the ratios
measured in one process. The load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.planning import prune
from prunekit.report.records import envelope, write_record

RESULTS = Path(__file__).resolve().parent / "results"
# too large for a 2-core / 24 GiB CPU run next to other jobs (params in millions)
SKIP = {"vit_h_14": "632M params", "regnet_y_128gf": "645M params", "vit_l_16": "304M params",
        "vit_l_32": "306M params"}
INPUT = {"vit_b_16": 224, "vit_b_32": 224, "maxvit_t": 224, "inception_v3": 96}


def _tp():
    import torch_pruning as tp
    return tp


def _tp_version() -> str:
    from importlib.metadata import version
    return version("torch-pruning")


def _tv_version() -> str:
    import torchvision
    return torchvision.__version__


def classifier_layers(model: nn.Module, num_classes: int = 1000) -> list[nn.Module]:
    """The layers producing the class scores (what Torch-Pruning's own benchmarks pass as ignored_layers)."""
    out = [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == num_classes)
           or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    return out


def prune_prunekit(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    return prune(model, x, ratio=ratio, importance="l1")


def prune_tp(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    tp = _tp()
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=classifier_layers(model))
    pruner.step()
    return model


LIBS: dict[str, Callable[[nn.Module, torch.Tensor, float], nn.Module]] = {
    "prunekit": prune_prunekit, "torch_pruning": prune_tp}


def build(name: str) -> nn.Module:
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def base_fields() -> dict:
    return {"threads": torch.get_num_threads(), "load_average_start": load(),
            "versions_extra": {"torch_pruning": _tp_version(), "torchvision": _tv_version()},
            "note": "shared 2-core CPU with other jobs running: absolute times are noisy; the ratios come from "
                    "interleaved runs in one process"}


# ----------------------------------------------------------------------------------------------- speed
def run_speed(models: list[str], rounds: int, out: Path) -> dict:
    fields = base_fields()
    x = torch.randn(1, 3, 224, 224)
    records = {}
    for name in models:
        times: dict[str, list[tuple[float, float]]] = {lib: [] for lib in LIBS}
        sizes = {}
        order = list(LIBS)
        for r in range(rounds + 1):  # round 0: warm-up
            for lib in (order if r % 2 == 0 else order[::-1]):
                model = build(name)
                t0, c0 = time.perf_counter(), time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    LIBS[lib](model, x, 0.5)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if r == 0:
                    cost = prunekit.count(model, x)
                    sizes[lib] = {"params": cost.params, "macs": cost.macs}
                else:
                    times[lib].append((wall, cpu))
                print(f"{name} round {r} {lib}: {wall:.2f}s wall, {cpu:.2f}s cpu", flush=True)
        base = prunekit.count(build(name), x)
        # prunekit's own split: graph build alone
        builds = []
        for _ in range(rounds):
            model = build(name)
            t0 = time.perf_counter()
            DependencyGraph(model, x)
            builds.append(time.perf_counter() - t0)
        med = {lib: {"wall_s": statistics.median(w for w, _ in ts), "cpu_s": statistics.median(c for _, c in ts),
                     "wall_all_s": [round(w, 3) for w, _ in ts]} for lib, ts in times.items()}
        records[name] = {
            "input": [1, 3, 224, 224], "dense": {"params": base.params, "macs": base.macs},
            "prunekit": {**med["prunekit"], "graph_build_wall_s": statistics.median(builds), **sizes["prunekit"]},
            "torch_pruning": {**med["torch_pruning"], **sizes["torch_pruning"]},
            "ratio_wall": med["prunekit"]["wall_s"] / med["torch_pruning"]["wall_s"],
            "ratio_cpu": med["prunekit"]["cpu_s"] / med["torch_pruning"]["cpu_s"],
        }
        print(f"{name}: prunekit/torch_pruning = {records[name]['ratio_wall']:.3f} (wall), "
              f"{records[name]['ratio_cpu']:.3f} (cpu)", flush=True)
    extra = fields.pop("versions_extra")
    rec = envelope("graph-speed-cpu", method="prunekit vs torch_pruning:GroupMagnitudeImportance", **fields,
                   task="graph build + 50% L1 pruning (every prunable group; classifier kept), batch 1, 224 px",
                   rounds=rounds, models=records, load_average_end=load(), goal="prunekit <= 0.5x Torch-Pruning")
    rec["versions"].update(extra)
    write_record(rec, out)
    return rec


# ----------------------------------------------------------------------------------------------- support
def try_lib(lib: str, name: str, x: torch.Tensor) -> dict:
    res: dict = {"ok": False}
    t0 = time.perf_counter()
    try:
        model = build(name)
        before = prunekit.count(model, x).macs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if lib == "prunekit":
                graph = DependencyGraph(model, x)
                res["coverage"] = round(graph.coverage().ratio, 4)
                res["groups"] = len(graph.groups)
                res["prunable_groups"] = len(graph.prunable_groups)
                res["unknown_op_warnings"] = len(graph.warnings)
                if graph.warnings:
                    res["warning_example"] = graph.warnings[0][:300]
            LIBS[lib](model, x, 0.3)
            with torch.no_grad():
                y = model(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if tuple(y.shape) != (1, 1000):
            res["error"] = f"wrong output shape {tuple(y.shape)}"
        else:
            after = prunekit.count(model, x).macs
            res.update(ok=True, macs_before=before, macs_after=after, macs_kept=round(after / before, 4))
            if lib == "prunekit":
                res["other_warnings"] = len(caught) - res["unknown_op_warnings"]
    except Exception as exc:  # noqa: BLE001 - the record is the point
        msg = f"{type(exc).__name__}: {exc}".strip()
        res["error"] = msg.splitlines()[0][:400] if msg else type(exc).__name__
        res["where"] = traceback.format_exc(limit=-1).strip().splitlines()[-3][:300]
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


MEM_LIMIT_MB = 8000   # per run; the machine has 24 GiB shared with other jobs
TIMEOUT_S = 1200


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def try_lib_isolated(lib: str, name: str, size: int) -> dict:
    """``try_lib`` in a child process, killed above MEM_LIMIT_MB of memory or after TIMEOUT_S (a library that
    exhausts memory on one model must not take the sweep down)."""
    import json
    import subprocess
    cmd = [sys.executable, str(Path(__file__).resolve()), "_one", lib, name, str(size)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    t0, peak, killed = time.perf_counter(), 0.0, None
    while proc.poll() is None:
        peak = max(peak, _rss_mb(proc.pid))
        if peak > MEM_LIMIT_MB:
            killed = f"killed: memory above {MEM_LIMIT_MB / 1000:.0f} GB"
        elif time.perf_counter() - t0 > TIMEOUT_S:
            killed = f"killed: slower than {TIMEOUT_S} s"
        if killed:
            proc.kill()
            break
        time.sleep(0.2)
    out = proc.communicate()[0]
    if killed:
        return {"ok": False, "error": killed, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak)}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"child process exited with code {proc.returncode}", "peak_rss_mb": round(peak)}
    res = json.loads(lines[-1])
    res["peak_rss_mb"] = round(peak)
    return res


def run_support(models: list[str] | None, out: Path, reuse: Path | None = None,
                reuse_libs: tuple[str, ...] = ("torch_pruning",)) -> dict:
    """``reuse``: a previous result file whose ``reuse_libs`` entries are copied instead of re-measured (Torch-
    Pruning's results do not depend on prunekit's code; re-running only prunekit saves hours here)."""
    import json

    import torchvision
    names = models or torchvision.models.list_models(module=torchvision.models)
    old = json.loads(reuse.read_text()) if reuse else None
    fields = base_fields()
    extra = fields.pop("versions_extra")
    rec = envelope("tv-model-support", method="prunekit vs torch_pruning:GroupMagnitudeImportance", **fields,
                   task="build graph -> prune 30% of every prunable group (L1) -> eval forward; ok = runs and "
                        "output shape (1, 1000); torchvision default (random) weights; each run in its own process, "
                        f"killed above {MEM_LIMIT_MB} MB or {TIMEOUT_S} s",
                   models={}, skipped={})
    rec["versions"].update(extra)
    if old:
        rec["reused"] = {"libs": list(reuse_libs), "from_versions": old.get("versions"), "from_date": old.get("date")}
    for name in names:
        if name in SKIP:
            rec["skipped"][name] = f"too large for this CPU run ({SKIP[name]})"
            continue
        s = INPUT.get(name, 64)
        entry = {"input": s}
        for lib in LIBS:
            prev = (old or {}).get("models", {}).get(name, {}).get(lib)
            if lib in reuse_libs and prev is not None and (old["models"][name].get("input") == s):
                entry[lib] = prev
            else:
                entry[lib] = try_lib_isolated(lib, name, s)
        rec["models"][name] = entry
        pk, tpr = entry["prunekit"], entry["torch_pruning"]
        print(f"{name:24s} prunekit {'ok' if pk['ok'] else 'FAIL'} cov {pk.get('coverage', '-')} "
              f"({pk['seconds']}s) | torch_pruning {'ok' if tpr['ok'] else 'FAIL: ' + tpr.get('error', '')[:80]} "
              f"({tpr['seconds']}s)", flush=True)
        summarize(rec)
        write_record(rec, out)
    rec["load_average_end"] = load()
    write_record(rec, out)
    return rec


def summarize(rec: dict) -> None:
    models = rec["models"]
    rec["summary"] = {lib: {"ok": sum(m[lib]["ok"] for m in models.values()), "tried": len(models),
                            "failed": sorted(n for n, m in models.items() if not m[lib]["ok"])}
                      for lib in LIBS}
    covs = [m["prunekit"]["coverage"] for m in models.values() if "coverage" in m["prunekit"]]
    rec["summary"]["prunekit"]["coverage_ge_95"] = sum(c >= 0.95 for c in covs)


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_one":  # child of try_lib_isolated
        import json
        lib, name, size = sys.argv[2], sys.argv[3], int(sys.argv[4])
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        print(json.dumps(try_lib(lib, name, torch.randn(1, 3, size, size))), flush=True)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["speed", "support", "all"], nargs="?", default="all")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--speed-models", nargs="*", default=["resnet50", "densenet121"])
    p.add_argument("--models", nargs="*", default=None, help="support sweep: these models only")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--reuse", type=Path, default=None,
                   help="support sweep: copy Torch-Pruning's entries from this earlier result file")
    a = p.parse_args(argv)
    if a.what in ("speed", "all"):
        run_speed(a.speed_models, a.rounds, a.out_dir / "graph-speed-cpu.json")
    if a.what in ("support", "all"):
        run_support(a.models, a.out_dir / "tv-model-support.json", a.reuse)


if __name__ == "__main__":
    sys.exit(main())
