"""Trainer step speed on the CPU: the Trainer of an earlier commit vs the current one, in the same process.

The old ``prunekit/train/trainer.py`` is read from git (``--old-ref``) into a temporary module next to the current
one (both use the current callbacks, config and checkpoint modules). Each run trains a fresh copy of the same
ResNet-20 (same init) for ``--steps`` steps of batch ``--batch-size`` on the same synthetic 32x32 batches with
one torch thread, default config (SGD + cross-entropy, cosine, nesterov) and no progress bar. Steps/s is timed
from the end of step ``--warmup`` to the end of the last step (wall clock and this thread's CPU time). Runs
interleave (old, new, new, old, ...) over ``--rounds`` rounds after one untimed warm-up run each; medians and the
ratio new/old are reported. Every run's final weights are hashed: old and new must train identical weights.

    .venv/bin/python benchmarks/trainer_speed.py                  # 4 rounds x 50 steps: ~4 minutes on one core
    .venv/bin/python benchmarks/trainer_speed.py --rounds 2 --steps 20   # a quick look

-> ``benchmarks/results/trainer-speed-cpu.json``. The CPU machines are shared: compare the ratio (the thread
CPU-time ratio is the one least disturbed by other processes), not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from prunekit.models import create
from prunekit.report.records import envelope, git_sha, write_record
from prunekit.train import Callback, TrainConfig
from prunekit.train import trainer as new_trainer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TRAINER = "src/prunekit/train/trainer.py"
BEFORE = "7d825d0"  # the last commit before the Method-layer hooks (on_step_start, factories, no per-step sync)
GOAL = 0.03  # no slowdown above 3%


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def load_old_trainer(ref: str, tmp: Path):
    """``prunekit.train.trainer`` as of ``ref``, imported as a separate module."""
    path = tmp / "old_trainer.py"
    path.write_text(_git("show", f"{ref}:{TRAINER}"))
    spec = importlib.util.spec_from_file_location("prunekit_old_trainer", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


class Batches:
    """The same pre-made batches every epoch (no augmentation, no copies)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.batches = [(torch.randn(batch_size, 3, 32, 32, generator=g),
                         torch.randint(0, 10, (batch_size,), generator=g)) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class StepClock(Callback):
    """Wall and thread-CPU timestamps at the end of every step."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, trainer) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.thread_time())


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_once(module, proto: torch.nn.Module, data: Batches, steps: int, warmup: int) -> dict:
    model = copy.deepcopy(proto)
    clock = StepClock()
    cfg = TrainConfig(epochs=1, lr=0.05, schedule="cosine", nesterov=True, steps_per_epoch=steps,
                      progress=False, seed=0)
    module.Trainer(model, data, config=cfg, callbacks=[clock], device="cpu").fit()
    n = steps - warmup
    return {"wall_steps_per_s": n / (clock.wall[-1] - clock.wall[warmup - 1]),
            "cpu_steps_per_s": n / (clock.cpu[-1] - clock.cpu[warmup - 1]), "digest": digest(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-ref", default=BEFORE)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5, help="steps of each run not timed")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=RESULTS / "trainer-speed-cpu.json")
    args = ap.parse_args()
    if not 0 < args.warmup < args.steps:
        ap.error("need 0 < --warmup < --steps")

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    head, head_short = _git("rev-parse", "HEAD").strip(), git_sha()  # at the start: others may commit meanwhile
    new_is_head = not _git("status", "--porcelain", "--", TRAINER).strip()
    with tempfile.TemporaryDirectory() as tmp:
        old_trainer = load_old_trainer(args.old_ref, Path(tmp))
    impls = {"old": old_trainer, "new": new_trainer}

    torch.manual_seed(0)
    proto = create(args.model, num_classes=10)
    data = Batches(args.steps, args.batch_size)
    for name, mod in impls.items():  # untimed warm-up (allocator, kernels, first-call costs)
        run_once(mod, proto, data, args.warmup + 2, args.warmup)

    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in order:
            res = run_once(impls[name], proto, data, args.steps, args.warmup)
            runs[name].append(res)
            print(f"round {r} {name}: {res['wall_steps_per_s']:.3f} steps/s wall, "
                  f"{res['cpu_steps_per_s']:.3f} steps/s cpu", flush=True)

    digests = {d["digest"] for v in runs.values() for d in v}
    med = {name: {k: statistics.median(d[k] for d in v) for k in ("wall_steps_per_s", "cpu_steps_per_s")}
           for name, v in runs.items()}
    ratio = {k: med["new"][k] / med["old"][k] for k in ("wall_steps_per_s", "cpu_steps_per_s")}
    regression = 1 - ratio["cpu_steps_per_s"]
    rec = envelope(
        "trainer-speed-cpu", method="baseline", model=args.model, dataset="synthetic", reduced=True,
        task=f"Trainer steps/s, {args.model}, batch {args.batch_size} of random 32x32x3 images, SGD + cross-entropy "
             f"(cosine, nesterov), fp32, {args.threads} torch thread(s), no progress bar",
        schedule={"steps": args.steps, "timed_steps": args.steps - args.warmup, "batch_size": args.batch_size,
                  "rounds": args.rounds},
        threads=args.threads, seed=0,
        old={"ref": _git("rev-parse", args.old_ref).strip(), "file": TRAINER},
        new={"ref": head, "file": TRAINER, "working_tree_equals_ref": new_is_head},
        runs={k: [{kk: vv for kk, vv in d.items() if kk != "digest"} for d in v] for k, v in runs.items()},
        median=med, ratio_new_over_old=ratio,
        regression_pct=100 * regression, goal=f"no regression > {100 * GOAL:.0f}% (thread CPU-time steps/s)",
        goal_met=regression <= GOAL, identical_weights=len(digests) == 1,
        load_average_start=list(load_start), load_average_end=list(os.getloadavg()),
        note="shared CPU: absolute figures are noisy; the ratio comes from interleaved runs in one process; "
             "the thread CPU-time ratio is robust to other processes' load",
    )
    rec["versions"]["prunekit"] = head_short
    write_record(rec, args.output)
    print(f"median steps/s old {med['old']['wall_steps_per_s']:.3f} new {med['new']['wall_steps_per_s']:.3f} "
          f"(wall, ratio {ratio['wall_steps_per_s']:.4f}); cpu ratio {ratio['cpu_steps_per_s']:.4f}; "
          f"identical weights: {len(digests) == 1} -> {args.output}")
    if len(digests) != 1:
        sys.exit("old and new Trainer trained different weights")


if __name__ == "__main__":
    main()
