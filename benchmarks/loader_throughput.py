"""Does the GPU-resident TensorLoader keep up with training? (issue 2, item 3: goal ratio >= 0.90)

Trains ResNet-56 with SGD at batch 512, bf16 autocast, channels_last, in two ways, alternating rounds:
  (a) on one fixed synthetic batch already on the device (the input pipeline costs nothing);
  (b) from ``TensorLoader`` over the real CIFAR-10 (npz layout) on the device, with crop + flip augmentation.
Reports images/s of each (median over rounds) and the ratio b/a, plus the loader alone (no model).
Writes a ``prunekit.result/1`` envelope (../shared/RESULTS-SCHEMA.md).

GPU (the record):
    PYTHONPATH=src python benchmarks/loader_throughput.py --data-dir ../shared/data/cifar10
CPU smoke test (writes a separately named, clearly labelled file):
    python benchmarks/loader_throughput.py --data-dir ../shared/data/cifar10 --device cpu --steps 5 --batch 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

from prunekit.data import build_data  # noqa: E402

GOAL = 0.90


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="CIFAR-10 directory (npz or torchvision layout)")
    p.add_argument("--device", default="cuda", help="cuda (the record) or cpu (smoke test)")
    p.add_argument("--model", default="resnet56")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=200, help="timed training steps per round")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before each mode (default: steps//4, "
                                                           "at least 2)")
    p.add_argument("--rounds", type=int, default=3, help="alternating (a)/(b) rounds; medians are reported")
    p.add_argument("--amp", choices=["bf16", "none"], default=None, help="default: bf16 on cuda, none on cpu")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/"
                                               "loader-throughput-gpu.json on cuda, -cpu-smoke.json on cpu)")
    return p.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: torch.nn.Module, device: torch.device, amp: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One SGD training step (nesterov, wd 5e-4, the CIFAR recipe's optimiser); no host sync inside."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def endless(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of successive epochs, forever (set_epoch each time, as the Trainer does)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def timed(n: int, warmup: int, device: torch.device, fn: Callable[[], None]) -> float:
    """Images/s-ready seconds for ``n`` calls of ``fn`` after ``warmup`` calls (device synchronised around)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return time.perf_counter() - t0


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        # Dirty: the library or this script differs from the commit (uncommitted or untracked files).
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks/loader_throughput.py"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({torch.get_num_threads()} torch threads)"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = (args.amp or ("bf16" if device.type == "cuda" else "none")) == "bf16"
    channels_last = not args.no_channels_last
    warmup = args.warmup if args.warmup is not None else max(2, args.steps // 4)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    from prunekit.models import create  # imported late: the zoo is optional for the loader-only numbers

    t0 = time.perf_counter()
    data = build_data("cifar10", data_dir=args.data_dir, batch_size=args.batch, device=device,
                      channels_last=channels_last, seed=0)
    synchronize(device)
    load_seconds = time.perf_counter() - t0

    model = create(args.model, num_classes=10).to(device, memory_format=memory_format).train()
    step = make_step(model, device, amp)
    gen = torch.Generator(device=device).manual_seed(0)
    fixed_x = torch.randn((args.batch, 3, 32, 32), generator=gen, device=device).contiguous(
        memory_format=memory_format)
    fixed_y = torch.randint(0, 10, (args.batch,), generator=gen, device=device)
    batches = endless(data.train)

    def fixed_step() -> None:
        step(fixed_x, fixed_y)

    def loader_step() -> None:
        step(*next(batches))

    def loader_only() -> None:
        next(batches)

    rates: dict[str, list[float]] = {"fixed": [], "loader": [], "loader_only": []}
    for r in range(args.rounds):
        for key, fn in (("fixed", fixed_step), ("loader", loader_step), ("loader_only", loader_only)):
            seconds = timed(args.steps, warmup, device, fn)
            rates[key].append(args.steps * args.batch / seconds)
        print(f"round {r + 1}/{args.rounds}: fixed {rates['fixed'][-1]:,.0f} img/s, loader "
              f"{rates['loader'][-1]:,.0f} img/s, loader only {rates['loader_only'][-1]:,.0f} img/s", flush=True)
    fixed, loader = statistics.median(rates["fixed"]), statistics.median(rates["loader"])
    ratio = loader / fixed

    is_record = device.type == "cuda"
    name = "loader-throughput-gpu" if is_record else "loader-throughput-cpu-smoke"
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{name}.json"
    result = {
        "schema": "prunekit.result/1",
        "name": name,
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "device": device_name(device),
        "versions": {"prunekit": git_sha(), "torch": torch.__version__, "python": platform.python_version()},
        "date": dt.date.today().isoformat(),
        "note": None if is_record else "CPU smoke test of the script, NOT the GPU record of item 3",
        "model": args.model,
        "dataset": "cifar10",
        "batch_size": args.batch,
        "amp": "bf16" if amp else "fp32",
        "channels_last": channels_last,
        "steps": args.steps,
        "warmup": warmup,
        "rounds": args.rounds,
        "load_seconds": round(load_seconds, 3),
        "fixed_batch_img_s": round(fixed, 1),
        "loader_img_s": round(loader, 1),
        "loader_only_img_s": round(statistics.median(rates["loader_only"]), 1),
        "per_round_img_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
        "ratio": round(ratio, 4),
        "goal": GOAL,
        "meets_goal": ratio >= GOAL if is_record else None,  # only the GPU run answers the question
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"fixed batch {fixed:,.0f} img/s | TensorLoader {loader:,.0f} img/s | ratio {ratio:.3f} "
          f"(goal >= {GOAL}) -> {out}")
    return result


if __name__ == "__main__":
    main()
