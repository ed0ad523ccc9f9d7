"""Measured latency speed-up vs MAC reduction of 50%-pruned torchvision resnet50 and mobilenet_v2.

For each model, in one process and with interleaved measurements, this times

- the dense model, eager and as prunekit's inference export (BN folded into the convs, channels_last);
- prunekit's L1 pruning, ratio 0.5 (uniform per channel group), with round_to 1 and 8, eager and exported;
- Torch-Pruning 1.6.1's model of the same ratio (``BasePruner`` + ``GroupMagnitudeImportance(p=1)``, the
  final classifier ignored), with round_to None and 8, eager and exported,

and reports for each variant ``speedup`` (dense eager latency / its latency), ``mac_reduction`` (dense MACs / its
MACs) and ``efficiency`` = speedup / mac_reduction (1.0: latency falls exactly as MACs do). Exported variants
also carry the same ratios against the *exported* dense model (``*_same_form``): the speed-up pruning buys
once both are deployed the same way.

    python benchmarks/latency_speedup.py                  # CPU, batch 1, 224 px, 2 threads, fp32
    python benchmarks/latency_speedup.py --device cuda    # GPU, batch 256, bf16, channels_last everywhere

Timing: ``prunekit.cost.measure_latency`` (CPU wall clock with pinned threads; CUDA events on GPU, optionally
``--cuda-graph``). Every round times every variant once (``--repeats`` forwards after ``--warmup``) in a
shuffled order; a variant's latency is the median of its per-round medians, so load from other processes on a
shared machine hits all variants alike. Results: ``benchmarks/results/latency-speedup-{cpu,gpu}.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from prunekit.cost import count, measure_latency  # noqa: E402
from prunekit.io import for_inference  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2")
CLOCK_NAMES = {"wall": "wall_clock", "cpu": "cpu_time_1_thread"}
CLOCK_DOC = {"wall": "prunekit.cost.measure_latency: wall clock (CPU: --threads threads; GPU: CUDA events)",
             "cpu": "time.thread_time of the calling thread around each forward, torch.set_num_threads(1)"}
GOALS = {"cpu": {"resnet50": 0.85}, "cuda": {"resnet50": 0.55, "mobilenet_v2": 0.55}}


@dataclass
class Variant:
    """One model to time: how it was made, its cost and its per-round latencies."""

    model: str
    method: str  # "baseline", "l1" (prunekit) or "torch_pruning:group_magnitude_l1"
    round_to: int | None
    inference_export: bool
    module: nn.Module
    params: int = 0
    macs: int = 0
    build_s: float = 0.0
    rounds_ms: dict[str, list[float]] = field(default_factory=dict)  # clock -> per-round medians

    @property
    def label(self) -> str:
        base = {"baseline": "dense", "l1": "prunekit", "torch_pruning:group_magnitude_l1": "torch_pruning"}[self.method]
        if self.method != "baseline":
            base += f" r{self.round_to or 1}"
        return base + (" +export" if self.inference_export else "")


# ------------------------------------------------------------------------------------------- building
def build_dense(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=1000).eval()


def classifier(model: nn.Module) -> nn.Module:
    """The final classifier layer (the last Linear), which neither library may prune."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def prune_prunekit(model: nn.Module, x: torch.Tensor, ratio: float, round_to: int) -> nn.Module:
    from prunekit.planning import prune

    return prune(model, x, ratio=ratio, importance="l1", round_to=round_to)


def prune_torch_pruning(model: nn.Module, x: torch.Tensor, ratio: float, round_to: int | None) -> nn.Module:
    import torch_pruning as tp

    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[classifier(model)], round_to=round_to)
    pruner.step()
    return model


def torch_pruning_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch-pruning")
    except Exception:
        return None


def build_variants(name: str, x_cost: torch.Tensor, ratio: float, with_tp: bool) -> list[Variant]:
    dense = build_dense(name)
    makers: list[tuple[str, int | None, Callable[[], nn.Module]]] = [("baseline", None, lambda: copy.deepcopy(dense))]
    for r in (1, 8):
        makers.append(("l1", r, lambda r=r: prune_prunekit(copy.deepcopy(dense), x_cost, ratio, r)))
    if with_tp:
        for r in (None, 8):
            makers.append(("torch_pruning:group_magnitude_l1", r,
                           lambda r=r: prune_torch_pruning(copy.deepcopy(dense), x_cost, ratio, r)))
    variants = []
    for method, round_to, make in makers:
        t0 = time.perf_counter()
        module = make().eval()
        build_s = time.perf_counter() - t0
        cost = count(module, x_cost)
        for export in (False, True):
            v = Variant(name, method, round_to, export,
                        for_inference(module, x_cost) if export else module, build_s=build_s)
            v.params, v.macs = cost.params, cost.macs
            variants.append(v)
    return variants


# ------------------------------------------------------------------------------------------- timing
def prepare(v: Variant, x: torch.Tensor, device: torch.device, dtype: torch.dtype,
            channels_last: bool) -> tuple[nn.Module, torch.Tensor]:
    """Move a variant to the timing device/dtype/layout once, so measure_latency never copies it."""
    cl = channels_last or v.inference_export
    module = v.module.to(device=device, dtype=dtype)
    if cl:
        module = module.to(memory_format=torch.channels_last)
    xi = x.to(device=device, dtype=dtype)
    return module, (xi.contiguous(memory_format=torch.channels_last) if cl else xi)


def cpu_time_ms(module: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    """Median CPU time of the calling thread per forward, on one thread: immune to other processes' load."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                module(x)
            times = []
            for _ in range(repeats):
                t0 = time.thread_time()
                module(x)
                times.append((time.thread_time() - t0) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def time_all(variants: list[Variant], x: torch.Tensor, args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    prepared = [prepare(v, x, device, dtype, args.channels_last) for v in variants]
    order = list(range(len(variants)))
    rng = random.Random(0)
    for r in range(args.rounds):
        rng.shuffle(order)
        for i in order:
            module, xi = prepared[i]
            for clock in args.clocks:
                if clock == "cpu":
                    ms = cpu_time_ms(module, xi, args.warmup, args.repeats)
                else:
                    ms = measure_latency(module, xi, device=device, warmup=args.warmup, repeats=args.repeats,
                                         threads=args.threads if device.type == "cpu" else None,
                                         cuda_graph=args.cuda_graph).median_ms
                variants[i].rounds_ms.setdefault(clock, []).append(ms)
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
            f"{v.label} " + "/".join(f"{v.rounds_ms[c][-1]:.1f}" for c in args.clocks) for v in variants), flush=True)


# ------------------------------------------------------------------------------------------- report
def records(variants: list[Variant], clocks: list[str]) -> list[dict[str, Any]]:
    by_key = {(v.method, v.round_to, v.inference_export): v for v in variants}
    dense, dense_export = by_key[("baseline", None, False)], by_key[("baseline", None, True)]
    out = []
    for v in variants:
        mac_red = dense.macs / v.macs
        rec: dict[str, Any] = {
            "model": f"tv:{v.model}", "method": v.method, "variant": v.label, "round_to": v.round_to,
            "inference_export": v.inference_export, "params": v.params, "macs": v.macs,
            "mac_reduction": round(mac_red, 4), "prune_s": round(v.build_s, 3), "timing": {},
        }
        for clock in clocks:
            lat = statistics.median(v.rounds_ms[clock])
            speedup = statistics.median(dense.rounds_ms[clock]) / lat
            t: dict[str, Any] = {"latency_ms": round(lat, 3), "speedup": round(speedup, 4),
                                 "efficiency": round(speedup / mac_red, 4),
                                 "rounds_ms": [round(ms, 3) for ms in v.rounds_ms[clock]]}
            if v.inference_export:
                same = statistics.median(dense_export.rounds_ms[clock]) / lat
                t["speedup_same_form"] = round(same, 4)
                t["efficiency_same_form"] = round(same / mac_red, 4)
            rec["timing"][clock] = t
        out.append(rec)
    return out


def summary(recs: list[dict[str, Any]], device_type: str, clocks: list[str]) -> dict[str, Any]:
    """Per clock and model: every pruned variant's efficiency (prunekit and Torch-Pruning) and the issue's goal."""
    out: dict[str, Any] = {}
    for clock in clocks:
        per_model: dict[str, Any] = {}
        for model in sorted({r["model"] for r in recs}):
            rows = [r for r in recs if r["model"] == model and r["method"] != "baseline"]
            entry: dict[str, Any] = {}
            for r in rows:
                t = r["timing"][clock]
                entry[r["variant"]] = {k: t[k] for k in ("efficiency", "speedup", "efficiency_same_form",
                                                         "speedup_same_form") if k in t}
                entry[r["variant"]]["mac_reduction"] = r["mac_reduction"]
            goal = GOALS.get(device_type, {}).get(model.removeprefix("tv:"))
            pk = [r for r in rows if r["method"] == "l1"]
            if goal is not None and pk:
                best = max(pk, key=lambda r: r["timing"][clock]["efficiency"])
                eff = best["timing"][clock]["efficiency"]
                entry["goal"] = {"efficiency_at_least": goal, "best_prunekit_variant": best["variant"],
                                 "best_prunekit_efficiency": eff, "met": eff >= goal}
            per_model[model] = entry
        out[CLOCK_NAMES[clock]] = per_model
    return out


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src",
                                "benchmarks/latency_speedup.py"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=None, help="default: 1 on CPU, 256 on GPU")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the wall clock (ignored on GPU)")
    p.add_argument("--clock", default="wall", help="comma list: wall (measure_latency; CUDA events on GPU), "
                   "cpu (CPU time of one thread: robust on a shared machine; CPU only)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: fp32 on CPU, bf16 on GPU")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="time every variant channels_last (default: on GPU only; exports always are)")
    p.add_argument("--cuda-graph", action="store_true", help="GPU: time CUDA-graph replays instead of eager")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 9 CPU, 15 GPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed forwards per round (default 5 CPU, 20 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="forwards before each round's timing (2 CPU, 5 GPU)")
    p.add_argument("--no-torch-pruning", action="store_true", help="skip the Torch-Pruning side")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine")
    args.batch = args.batch or (256 if gpu else 1)
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.channels_last = gpu if args.channels_last is None else args.channels_last
    args.rounds = args.rounds or (15 if gpu else 9)
    args.repeats = args.repeats or (20 if gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 2)
    device_type = "cuda" if gpu else "cpu"
    args.clocks = args.clock.split(",")
    if any(c not in CLOCK_NAMES for c in args.clocks) or (gpu and "cpu" in args.clocks):
        p.error(f"--clock {args.clock!r}: choose from wall,cpu (cpu only with --device cpu)")
    args.output = args.output or ROOT / "benchmarks" / "results" / f"latency-speedup-{'gpu' if gpu else 'cpu'}.json"
    with_tp = not args.no_torch_pruning and torch_pruning_version() is not None
    if not with_tp and not args.no_torch_pruning:
        print("torch_pruning is not installed: timing prunekit only", flush=True)

    load_before = os.getloadavg()
    x_cost = torch.randn(1, 3, args.size, args.size)
    x = torch.randn(args.batch, 3, args.size, args.size)
    all_recs: list[dict[str, Any]] = []
    for name in args.models.split(","):
        print(f"{name}: building variants", flush=True)
        variants = build_variants(name, x_cost, args.ratio, with_tp)
        print(f"{name}: timing {len(variants)} variants x {args.rounds} rounds", flush=True)
        time_all(variants, x, args)
        all_recs += records(variants, args.clocks)
        del variants
        if gpu:
            torch.cuda.empty_cache()

    result = {
        "schema": "prunekit.result/1",
        "name": f"latency-speedup-{'gpu' if gpu else 'cpu'}",
        "method": "l1",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)]
                                        + (argv if argv is not None else sys.argv[1:])),
        "device": device_name(torch.device(args.device)),
        "versions": {"prunekit": git_sha(), "torch": torch.__version__, "python": platform.python_version(),
                     "torch_pruning": torch_pruning_version() if with_tp else None,
                     "torchvision": __import__("torchvision").__version__},
        "date": dt.date.today().isoformat(),
        "settings": {"ratio": args.ratio, "batch_size": args.batch, "image_size": args.size,
                     "clocks": {CLOCK_NAMES[c]: CLOCK_DOC[c] for c in args.clocks},
                     "threads": args.threads if not gpu and "wall" in args.clocks else None,
                     "dtype": args.dtype,
                     "channels_last": args.channels_last, "cuda_graph": args.cuda_graph, "rounds": args.rounds,
                     "repeats_per_round": args.repeats, "warmup_per_round": args.warmup,
                     "latency": "median over rounds of each round's median (ms per batch)",
                     "importance": "L1 magnitude; Torch-Pruning: GroupMagnitudeImportance(p=1), classifier ignored",
                     "macs": "prunekit.cost.count, one 224 px image",
                     "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "summary": summary(all_recs, device_type, args.clocks),
        "records": all_recs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
