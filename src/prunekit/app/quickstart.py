"""The README's main job: a small CNN on the real offline digits, pruned to half its MACs two ways, side by side.

1. train ``smallcnn`` (the baseline, 10% of the train set held out for validation);
2. **Network Slimming** from it: sparsity fine-tuning (L1 on BN γ), one global γ threshold chosen so the network
   keeps ``target_macs`` of its MACs, fine-tuning;
3. **uniform L1** from the same baseline to the same MACs, fine-tuned for as many epochs as Slimming trained
   after the baseline (the comparison every pruning paper owes its reader);
4. one table: test top-1, MACs, params and CPU latency of the three networks, the latencies timed interleaved
   (the same moments of the machine), and a line on what to try next.

Every step is a resumable stage under ``output`` (re-running reuses what is done).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.table import Table

from prunekit.app.training import TrainJob, run_training
from prunekit.methods import MagnitudeConfig, NetworkSlimming, PruneResult, RunInfo, SlimmingConfig, UniformL1
from prunekit.train import TrainConfig


@dataclass
class QuickstartResult:
    """The two pruned runs and the table comparing them with the baseline."""

    slimming: PruneResult
    uniform: PruneResult
    table: Table
    advice: str

    def tables(self) -> list[Table]:
        return [*self.slimming.tables()[:1], self.table]


def run_quickstart(output: Path, *, epochs: int = 30, sparsity_epochs: int = 10, finetune_epochs: int = 10,
                   target_macs: float = 0.5, sparsity: float = 1e-3, seed: int = 0, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> QuickstartResult:
    """Run the demo under ``output`` (see the module docstring); returns both results and the comparison."""
    from prunekit.cost import compare_latency, count, speedup

    output = Path(output)
    train = dict(lr=0.1, schedule="onecycle", nesterov=True, weight_decay=5e-4, seed=seed, progress=progress)
    job = TrainJob(model="smallcnn", data="digits", batch_size=64, val_split=0.1,
                   config=TrainConfig(epochs=epochs, checkpoint_dir=output / "baseline", resume=True, **train))
    base = run_training(job, log=log)
    data, baseline = base.loaders, base.model.cpu().eval()
    tune = {**train, "lr": 0.02, "schedule": "cosine"}
    slim_cfg = SlimmingConfig(sparsity=sparsity, target_macs=target_macs, min_keep=0.25,
                              sparsity_train=TrainConfig(epochs=sparsity_epochs, **tune),
                              finetune=TrainConfig(epochs=finetune_epochs, **tune))
    slim = NetworkSlimming(slim_cfg).run(copy.deepcopy(baseline), data, output / "slimming", log=log,
                                         latency=False, info=RunInfo(name="quickstart-slimming-smallcnn-digits",
                                                                     model_name="smallcnn", settings={"seed": seed}))
    l1_cfg = MagnitudeConfig(target_macs=target_macs,
                             finetune=TrainConfig(epochs=sparsity_epochs + finetune_epochs, **tune))
    uni = UniformL1(l1_cfg).run(copy.deepcopy(baseline), data, output / "uniform-l1", log=log, latency=False,
                                info=RunInfo(name="quickstart-l1-smallcnn-digits", model_name="smallcnn",
                                             settings={"seed": seed}))
    x = next(iter(data.test))[0][:1].cpu()
    nets = {"baseline": baseline, "Network Slimming": slim.model.cpu().eval(), "uniform L1": uni.model.cpu().eval()}
    top1 = {"baseline": base.test.top1, "Network Slimming": slim.pruned.top1["test"],
            "uniform L1": uni.pruned.top1["test"]}
    lat = compare_latency(nets, x, threads=1)  # interleaved: all three see the same machine
    cost = {k: count(m, x) for k, m in nets.items()}
    t = Table(title=f"smallcnn on digits: baseline vs {100 * target_macs:.0f}% of the MACs")
    for col in ("network", "test top-1", "MACs", "params", "CPU latency bs1 (p10–p90)", "speed-up"):
        t.add_column(col, justify="right" if col != "network" else "left")
    for name in nets:
        r, c = lat[name], cost[name]
        up = speedup(lat["baseline"], r) if name != "baseline" else None
        t.add_row(name, f"{top1[name]:.2f}%", f"{c.macs / 1e6:.3f} M ({100 * c.macs / cost['baseline'].macs:.0f}%)",
                  f"{c.params / 1e3:.1f} K", f"{r.median_ms:.3f} ms ({r.p10_ms:.3f}–{r.p90_ms:.3f})",
                  "" if name == "baseline" else (f"{up:.2f}×" if up is not None else "n/a (noisy)"))
    gap = slim.pruned.top1["test"] - uni.pruned.top1["test"]
    advice = (f"Slimming {'beats' if gap > 0 else 'trails'} uniform L1 by {abs(gap):.2f} pt at equal MACs. Next: "
              "`prunekit prune --list`, then `prunekit prune slimming --checkpoint YOUR.ckpt --target-macs 0.5` "
              "on your own model (or `--recipe recipes/...` for a paper's protocol).")
    return QuickstartResult(slim, uni, t, advice)
