"""A resumable sequence of stages (train, prune, fine-tune, ...) under one run folder.

Every method is a pipeline: Network Slimming is sparsity-train → prune → fine-tune (× passes), Gate Decorator is
tick/tock rounds, NetAdapt is iterations of K proposals branching from one parent. A completed stage leaves
its *artifact* in ``<run>/<stage>/`` — ``model.safetensors`` (``artifact="model"``: prunekit's
architecture-as-data file, so a pruned model reloads without its constructor), ``state.pt`` (``"state"``: the
state dict only, for stages that keep the architecture: cheap) or nothing (``"json"``) — and ``record.json``; a
training stage in progress keeps the Trainer's ``last.ckpt`` there.

**A ``"json"`` stage's product is its record alone.** Nothing of the model is saved, so nothing of what the stage
did to it could be replayed: the stage runs on a copy, and the caller gets its own model back unchanged — on the
first run exactly as on a resumed one (a training stage with ``artifact="json"`` is a probe: train, measure in
``after``, discard). Likewise every stage's metrics reach the caller as read back from ``record.json`` (tuples
become lists, keys strings), on the first run as on a resumed one.

**Fingerprints.** Each stage stores a fingerprint of everything that determines it: its kind, its settings
(the TrainConfig, the method's options), its data-order offset, its parent stage's fingerprint, and the run's
own settings (data spec, seed, format version). Re-running a pipeline skips a completed stage only when its
fingerprint matches, and continues an interrupted one only then; otherwise it stops with one line naming the
differing settings and the ways out (``restart=True`` / ``--restart``, or another output folder). So a resumed
run is the same run, never a stale one.

After each stage the model is reloaded from its artifact: the uninterrupted and the resumed run then continue
from the very same module, which keeps resumed runs bit-identical.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.train.callbacks import Callback
from prunekit.train.config import TrainConfig
from prunekit.train.trainer import Trainer

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
RECORD_FILE = "record.json"
STARTED_FILE = "stage.json"
FORMAT = "prunekit.pipeline/2"
Artifact = Literal["model", "state", "json"]
# TrainConfig fields that do not change what a stage computes
_NEUTRAL = ("checkpoint_dir", "resume", "progress", "tensorboard", "eval_every")


@dataclass
class StageRecord:
    """What one stage did: its name, kind (``train``/``prune``/...), seconds, and any metrics it reports."""

    name: str
    kind: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return float(v) if isinstance(v, (int, float)) else str(v)


def _canonical(v: Any) -> Any:
    return json.loads(json.dumps(v, default=_jsonable, sort_keys=True))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def diff_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["key: old → new", ...]`` for the leaves that differ between two nested settings mappings."""
    a, b = _flat(old), _flat(new)
    return [f"{k}: {a.get(k, '(unset)')!r} → {b.get(k, '(unset)')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "(unset)") != b.get(k, "(unset)")]


def train_settings(config: TrainConfig) -> dict[str, Any]:
    """The TrainConfig fields that determine what a training stage computes (``max_steps`` only when set, so
    runs written before it existed keep their fingerprints)."""
    return {k: v for k, v in config.to_dict().items()
            if k not in _NEUTRAL and not (k == "max_steps" and v is None)}


class EpochOffset:
    """A loader view whose epoch ``e`` is the underlying loader's epoch ``offset + e``: every stage of a run then
    sees its own shuffle/augmentation (each stage's Trainer starts at epoch 0) and resumes exactly."""

    def __init__(self, loader: Any, offset: int):
        self.loader, self.offset = loader, int(offset)
        if hasattr(loader, "iter_from"):
            self.iter_from = loader.iter_from
        if hasattr(loader, "batch_size"):
            self.batch_size = loader.batch_size

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self.offset + int(epoch))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


class Pipeline:
    """Runs named stages in order under ``run_dir``; see the module docstring for the resume contract.

    ``example_inputs``: one batch shaped like the model's input (for tracing and saving). ``device``: where
    models train. ``settings``: what determines the whole run (data spec, seed, method name...), part of every
    stage's fingerprint. ``restart``: delete ``run_dir``'s stages and start over. ``keep_checkpoints``: keep a
    finished training stage's ``last.ckpt`` (default) or delete it (its artifact is kept). Stage names must be
    unique within a run (letters, digits, ``-``, ``_``, ``.``).
    """

    def __init__(self, run_dir: str | Path, example_inputs: torch.Tensor, *, device: str | torch.device = "cpu",
                 log: Callable[[str], None] | None = None, settings: Mapping[str, Any] | None = None,
                 restart: bool = False, keep_checkpoints: bool = True):
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"output {str(self.run_dir)!r} is a file, not a folder: choose another -o")
        self.example_inputs = example_inputs
        self.device = torch.device(device)
        self.log = log or (lambda msg: None)
        self.settings = _canonical({"format": FORMAT, **(settings or {})})
        self.keep_checkpoints = keep_checkpoints
        self.records: list[StageRecord] = []
        self._names: set[str] = set()
        self._fingerprints: dict[str, str] = {}
        self._train_stages = 0
        if restart and self.run_dir.exists():
            for d in self.run_dir.iterdir():
                if d.is_dir() and ((d / RECORD_FILE).exists() or (d / STARTED_FILE).exists()):
                    shutil.rmtree(d)

    # ------------------------------------------------------------------ stages
    def train(self, name: str, model: nn.Module, train_loader: Iterable, val_loader: Iterable | None,
              config: TrainConfig, callbacks: Iterable[Callback] = (), *,
              after: Callable[[nn.Module, Trainer], dict[str, Any]] | None = None,
              settings: Mapping[str, Any] | None = None, data_offset: int | None = None,
              parent: str | None = None, artifact: Artifact = "model") -> nn.Module:
        """Train ``model`` (resuming from this stage's checkpoint if one exists); returns the trained model.

        ``config.checkpoint_dir``/``resume`` are set by the pipeline. ``data_offset``: the epoch offset of the
        data order (default: distinct per training stage, 1000 × its index, so no two stages replay the same
        batches). ``after(model, trainer)`` may return extra metrics for the record (it runs once, when the
        stage completes). ``settings``: anything else that determines the stage (e.g. a tick's pruning amount).
        """
        offset = 1000 * self._train_stages if data_offset is None else int(data_offset)
        self._train_stages += 1
        loader = EpochOffset(train_loader, offset) if offset else train_loader

        def run(m: nn.Module, stage_dir: Path) -> dict[str, Any]:
            cfg = TrainConfig.from_dict({**config.to_dict(), "checkpoint_dir": stage_dir, "resume": True})
            trainer = Trainer(m, loader, val_loader, config=cfg, callbacks=callbacks, device=self.device)
            fit = trainer.fit()
            metrics = {k: v for k, v in fit.final.items() if isinstance(v, (int, float))}
            metrics["epochs"] = cfg.epochs
            if after is not None:
                metrics.update(after(m, trainer))
            return metrics

        inputs = {"train": train_settings(config), "data_offset": offset, **(settings or {})}
        return self._stage(name, "train", model, run, inputs, parent, artifact)

    def transform(self, name: str, model: nn.Module, fn: Callable[[nn.Module], dict[str, Any] | None],
                  kind: str = "prune", *, settings: Mapping[str, Any] | None = None, parent: str | None = None,
                  artifact: Artifact = "model") -> nn.Module:
        """Apply ``fn(model)`` (in place, e.g. pruning; deterministic) as a stage; ``fn`` may return metrics.
        ``settings``: what determines ``fn``'s result (part of the fingerprint)."""
        return self._stage(name, kind, model, lambda m, d: fn(m) or {}, dict(settings or {}), parent, artifact)

    # ------------------------------------------------------------------ mechanics
    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def is_done(self, name: str) -> bool:
        return (self.stage_dir(name) / RECORD_FILE).exists()

    def fingerprint(self, name: str) -> str:
        """The fingerprint of a stage run (or skipped) in this pipeline."""
        return self._fingerprints[name]

    def _inputs(self, kind: str, inputs: Mapping[str, Any], parent: str | None) -> dict[str, Any]:
        if parent is not None and parent not in self._fingerprints:
            raise ConfigError(f"parent stage {parent!r} has not run in this pipeline")
        up = (self._fingerprints[parent] if parent is not None
              else self.records[-1].fingerprint if self.records else "")
        return _canonical({"kind": kind, "stage": dict(inputs), "parent": up, "run": self.settings})

    def _check(self, name: str, path: Path, inputs: dict[str, Any], fp: str) -> None:
        stored = json.loads(path.read_text())
        if stored.get("fingerprint") == fp:
            return
        old = stored.get("inputs", {})
        diffs = diff_settings({"stage": old.get("stage", {}), "run": old.get("run", {})},
                              {"stage": inputs["stage"], "run": inputs["run"]})
        what = "; ".join(diffs[:6]) + (f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else "") if diffs else \
            "an earlier stage differs"
        raise ConfigError(f"{self.run_dir} holds a run with other settings (stage {name}: {what}); re-run with "
                          "--restart (restart=True) to discard it, or write to another output folder (-o)")

    def _stage(self, name: str, kind: str, model: nn.Module, run: Callable[[nn.Module, Path], dict[str, Any]],
               inputs: Mapping[str, Any], parent: str | None, artifact: Artifact) -> nn.Module:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ConfigError(f"stage name {name!r} may only contain letters, digits, '-', '_' and '.'")
        if name in self._names:
            raise ConfigError(f"stage name {name!r} is used twice in one pipeline")
        if artifact not in ("model", "state", "json"):
            raise ConfigError(f"artifact={artifact!r} must be 'model', 'state' or 'json'")
        self._names.add(name)
        full = self._inputs(kind, inputs, parent)
        fp = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:16]
        d = self.stage_dir(name)
        if self.is_done(name):
            self._check(name, d / RECORD_FILE, full, fp)
            rec = StageRecord(**json.loads((d / RECORD_FILE).read_text()))
            self.records.append(rec)
            self._fingerprints[name] = fp
            self.log(f"stage {name}: done earlier, loaded from {d}")
            return self._load(name, model, artifact)
        if (d / STARTED_FILE).exists():
            self._check(name, d / STARTED_FILE, full, fp)
            self.log(f"stage {name} ({kind}): resuming in {d}")
        else:
            d.mkdir(parents=True, exist_ok=True)
            _write_json(d / STARTED_FILE, {"fingerprint": fp, "inputs": full})
            self.log(f"stage {name} ({kind}) ...")
        t0 = time.perf_counter()
        work = copy.deepcopy(model) if artifact == "json" else model  # nothing of it is saved: leave the caller's
        metrics = run(work, d)
        # the metrics as a resumed run reads them back (the same object on the first run and on a replay)
        metrics = json.loads(json.dumps(metrics, default=_jsonable))
        rec = StageRecord(name, kind, time.perf_counter() - t0, metrics, fp, full)
        self._save(name, work, artifact)
        del work
        _write_json(d / RECORD_FILE, rec.__dict__)  # written last: marks the stage complete
        if not self.keep_checkpoints:
            (d / "last.ckpt").unlink(missing_ok=True)
        self.records.append(rec)
        self._fingerprints[name] = fp
        return self._load(name, model, artifact)

    def _save(self, name: str, model: nn.Module, artifact: Artifact) -> None:
        if artifact == "model":
            self.save_stage(name, model)
        elif artifact == "state":
            tmp = self.stage_dir(name) / (STATE_FILE + ".tmp")
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
            os.replace(tmp, self.stage_dir(name) / STATE_FILE)

    def _load(self, name: str, model: nn.Module, artifact: Artifact) -> nn.Module:
        if artifact == "model":
            return self.load_stage(name)
        if artifact == "state":
            state = torch.load(self.stage_dir(name) / STATE_FILE, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        return model.to(self.device)

    def save_stage(self, name: str, model: nn.Module) -> None:
        from prunekit.io import save

        was_training = model.training
        save(model.cpu().eval(), self.stage_dir(name) / MODEL_FILE, example_inputs=self.example_inputs.cpu())
        model.to(self.device).train(was_training)

    def load_stage(self, name: str) -> nn.Module:
        """The model a completed ``artifact="model"`` stage saved."""
        from prunekit.io import load

        return load(self.stage_dir(name) / MODEL_FILE).to(self.device)
