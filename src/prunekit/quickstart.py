"""The README's main job: train a small CNN on the real offline digits and report what it costs.

The pruning methods extend this pipeline (train → prune → fine-tune); it stays under ~2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prunekit.cost import count, measure_latency
from prunekit.train import TrainConfig
from prunekit.train.job import TrainJob, run_training


@dataclass
class QuickstartReport:
    model: str
    dataset: str
    epochs: int
    params: int
    macs: int
    val_top1: float
    test_top1: float
    latency_ms_bs1: float
    train_seconds: float

    def rows(self) -> list[tuple[str, str]]:
        return [("model", self.model), ("dataset", self.dataset), ("epochs", str(self.epochs)),
                ("params", f"{self.params:,}"), ("MACs / image", f"{self.macs / 1e6:.3f} M"),
                ("val top-1 (held out of train)", f"{self.val_top1:.2f}%"),
                ("test top-1", f"{self.test_top1:.2f}%"),
                ("CPU latency, batch 1", f"{self.latency_ms_bs1:.3f} ms"),
                ("training time", f"{self.train_seconds:.1f} s")]


def run_quickstart(output: Path, *, epochs: int = 30, seed: int = 0, progress: bool = True) -> QuickstartReport:
    """Train ``smallcnn`` on digits (10% of train held out for validation), evaluate on test, write
    ``output/quickstart.json`` and return the report."""
    output = Path(output)
    config = TrainConfig(epochs=epochs, lr=0.1, schedule="onecycle", nesterov=True, weight_decay=5e-4,
                         seed=seed, checkpoint_dir=output, progress=progress)
    job = TrainJob(model="smallcnn", data="digits", batch_size=64, val_split=0.1, config=config)
    torch.manual_seed(seed)
    out = run_training(job)
    model, spec, result, test, seconds = out.model, out.loaders.spec, out.fit, out.test, out.wall_seconds
    x = torch.randn(1, *spec.input_shape)
    cost = count(model, x)
    lat = measure_latency(model.eval(), x, repeats=50)
    report = QuickstartReport("smallcnn", "digits (scikit-learn, 8x8, real)", epochs, cost.params, cost.macs,
                              result.final.get("val_top1", float("nan")), test.top1, lat.median_ms, seconds)
    (output / "quickstart.json").write_text(json.dumps(asdict(report), indent=2))
    return report
