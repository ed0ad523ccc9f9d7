"""The README's main job: train → slim → fine-tune a small CNN on the real offline digits, and report.

Network Slimming end to end on 2 CPU cores in about a minute: sparsity training of ``smallcnn`` from scratch
(L1 on BN γ), a global γ threshold removing 40% of the prunable channels (every layer keeps at least 25%: a
net this small has little redundancy), fine-tuning; then the per-layer
widths and the before/after table (params, MACs, CPU latency, test accuracy). Re-running resumes/reuses the
stages already done in ``output``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prunekit.data import build_data
from prunekit.methods import NetworkSlimming, PruneResult, RunInfo, SlimmingConfig
from prunekit.models import create
from prunekit.train import TrainConfig


def run_quickstart(output: Path, *, epochs: int = 20, finetune_epochs: int = 10, ratio: float = 0.4,
                   sparsity: float = 5e-4, min_keep: float = 0.25,
                   seed: int = 0, progress: bool = True, log=None) -> PruneResult:
    """Slim ``smallcnn`` on digits (10% of the train set held out for validation) under ``output``; writes
    ``output/result.json``, ``widths.png``, ``gamma_hist.png`` and ``model.safetensors``."""
    output = Path(output)
    data = build_data("digits", batch_size=64, val_split=0.1, seed=seed)
    torch.manual_seed(seed)
    model = create("smallcnn", num_classes=data.spec.num_classes, in_channels=data.spec.in_channels)
    train = dict(lr=0.1, schedule="onecycle", nesterov=True, weight_decay=5e-4, seed=seed, progress=progress)
    config = SlimmingConfig(sparsity=sparsity, ratio=ratio, min_keep=min_keep,
                            sparsity_train=TrainConfig(epochs=epochs, **train),
                            finetune=TrainConfig(**{**train, "epochs": finetune_epochs, "lr": 0.02}))
    info = RunInfo(name="quickstart-slimming-smallcnn-digits", model_name="smallcnn", settings={"seed": seed})
    return NetworkSlimming(config).run(model, data, output, log=log, info=info)
