"""A resumable sequence of stages (train, prune, fine-tune, ...) under one run folder.

Every method is a pipeline: Network Slimming is sparsity-train → prune → fine-tune (× passes), Gate Decorator is
tick/tock rounds, NetAdapt is iterations of proposals. A completed stage leaves ``<run>/<stage>/model.safetensors``
(prunekit's architecture-as-data format, so a pruned model reloads without its constructor) and ``record.json``;
a training stage in progress keeps the Trainer's ``last.ckpt`` there. Re-running the same pipeline skips completed
stages and continues the one that was running, so a killed run loses at most the batches since its checkpoint.

After each stage the model is reloaded from its saved file: the uninterrupted and the resumed run then continue
from the very same module, which keeps resumed runs bit-identical.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.train import Callback, TrainConfig, Trainer

MODEL_FILE = "model.safetensors"
RECORD_FILE = "record.json"


@dataclass
class StageRecord:
    """What one stage did: its name, kind (``train``/``prune``/...), seconds, and any metrics it reports."""

    name: str
    kind: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


class Pipeline:
    """Runs named stages in order under ``run_dir``; see the module docstring for the resume contract.

    ``example_inputs``: one batch shaped like the model's input (for tracing and saving). ``device``: where
    models train. Stage names must be unique within a run (letters, digits, ``-``, ``_``, ``.``).
    """

    def __init__(self, run_dir: str | Path, example_inputs: torch.Tensor, *, device: str | torch.device = "cpu",
                 log: Callable[[str], None] | None = None):
        self.run_dir = Path(run_dir)
        self.example_inputs = example_inputs
        self.device = torch.device(device)
        self.log = log or (lambda msg: None)
        self.records: list[StageRecord] = []
        self._names: set[str] = set()

    # ------------------------------------------------------------------ stages
    def train(self, name: str, model: nn.Module, train_loader: Iterable, val_loader: Iterable | None,
              config: TrainConfig, callbacks: Iterable[Callback] = (), *,
              after: Callable[[nn.Module, Trainer], dict[str, Any]] | None = None) -> nn.Module:
        """Train ``model`` (resuming from this stage's checkpoint if one exists); returns the trained model.

        ``config.checkpoint_dir``/``resume`` are set by the pipeline. ``after(model, trainer)`` may return extra
        metrics for the record (it runs once, when the stage completes).
        """
        def run(m: nn.Module, stage_dir: Path) -> dict[str, Any]:
            cfg = TrainConfig.from_dict({**config.to_dict(), "checkpoint_dir": stage_dir, "resume": True})
            trainer = Trainer(m, train_loader, val_loader, config=cfg, callbacks=callbacks, device=self.device)
            fit = trainer.fit()
            metrics = {k: v for k, v in fit.final.items() if isinstance(v, (int, float))}
            metrics["epochs"] = cfg.epochs
            if after is not None:
                metrics.update(after(m, trainer))
            return metrics

        return self._stage(name, "train", model, run)

    def transform(self, name: str, model: nn.Module, fn: Callable[[nn.Module], dict[str, Any] | None],
                  kind: str = "prune") -> nn.Module:
        """Apply ``fn(model)`` (in place, e.g. pruning; deterministic) as a stage; ``fn`` may return metrics."""
        return self._stage(name, kind, model, lambda m, d: fn(m) or {})

    # ------------------------------------------------------------------ mechanics
    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def is_done(self, name: str) -> bool:
        d = self.stage_dir(name)
        return (d / RECORD_FILE).exists() and (d / MODEL_FILE).exists()

    def _stage(self, name: str, kind: str, model: nn.Module,
               run: Callable[[nn.Module, Path], dict[str, Any]]) -> nn.Module:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ConfigError(f"stage name {name!r} may only contain letters, digits, '-', '_' and '.'")
        if name in self._names:
            raise ConfigError(f"stage name {name!r} is used twice in one pipeline")
        self._names.add(name)
        d = self.stage_dir(name)
        if self.is_done(name):
            rec = json.loads((d / RECORD_FILE).read_text())
            self.records.append(StageRecord(**rec))
            self.log(f"stage {name}: done earlier, loaded from {d}")
            return self.load_stage(name)
        d.mkdir(parents=True, exist_ok=True)
        self.log(f"stage {name} ({kind}) ...")
        t0 = time.perf_counter()
        metrics = run(model, d)
        rec = StageRecord(name, kind, time.perf_counter() - t0, metrics)
        self.save_stage(name, model)
        _write_json(d / RECORD_FILE, rec.__dict__)  # written last: marks the stage complete
        self.records.append(rec)
        return self.load_stage(name)

    def save_stage(self, name: str, model: nn.Module) -> None:
        from prunekit.io import save

        was_training = model.training
        save(model.cpu().eval(), self.stage_dir(name) / MODEL_FILE, example_inputs=self.example_inputs.cpu())
        model.to(self.device).train(was_training)

    def load_stage(self, name: str) -> nn.Module:
        from prunekit.io import load

        return load(self.stage_dir(name) / MODEL_FILE).to(self.device)
