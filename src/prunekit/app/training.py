"""A training job as data (model + data + TrainConfig), loadable from a YAML recipe, and its one-call runner.

Both ``prunekit train`` and the benchmark scripts run jobs through :func:`run_training`, so a recipe means the
same thing everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.train.checkpoint import seed_everything
from prunekit.train.config import TrainConfig
from prunekit.train.trainer import EvalResult, FitResult, Trainer


@dataclass
class TrainJob:
    """What to train: ``model`` (zoo name) on ``data`` with ``config``; ``*_args`` are passed through."""

    model: str
    data: str = "digits"
    data_dir: str | None = None
    batch_size: int = 128
    val_split: float = 0.0
    train_subset: int | None = None
    download: bool = False
    model_args: dict[str, Any] = field(default_factory=dict)
    data_args: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig = field(default_factory=TrainConfig)
    init: str | None = None  # start from this model file / checkpoint (e.g. fine-tune a pruned model)

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any], **overrides: Any) -> "TrainJob":
        """Build from a recipe mapping (keys: model, data, data_dir, batch_size, val_split, model_args, data_args,
        train: {TrainConfig fields}); ``overrides`` (None values ignored) win; ``train`` overrides are merged."""
        known = {"model", "data", "data_dir", "batch_size", "val_split", "train_subset", "download",
                 "model_args", "data_args", "train", "init"}
        unknown = sorted(set(recipe) - known - {"method", "prune", "description"})
        if unknown:
            raise ConfigError(f"unknown recipe key(s) {unknown}; valid: {sorted(known)}")
        train = dict(recipe.get("train", {}))
        train.update({k: v for k, v in overrides.pop("train", {}).items() if v is not None})
        fields_ = {k: v for k, v in recipe.items() if k in known - {"train"}}
        fields_.update({k: v for k, v in overrides.items() if v is not None})
        if fields_.get("init") and not fields_.get("model"):
            fields_["model"] = _recorded_name(Path(str(fields_["init"])))
        if not fields_.get("model"):
            raise ConfigError("no model given: pass --model (see `prunekit models`), --init FILE, or a recipe with "
                              "`model:`")
        return cls(**fields_, config=TrainConfig.from_dict(train))

    def meta(self, num_classes: int, model_kwargs: dict[str, Any], input_shape: tuple[int, ...]) -> dict[str, Any]:
        """What a checkpoint stores so ``prunekit eval`` can rebuild the model and the data."""
        return {"model": {"name": self.model, "num_classes": num_classes, "kwargs": model_kwargs},
                "input_shape": list(input_shape),
                "data": {"name": self.data, "data_dir": self.data_dir or "", "val_split": self.val_split,
                         "seed": self.config.seed, "batch_size": self.batch_size, "args": self.data_args}}


def _recorded_name(path: Path) -> str:
    """The model name a model file records (its file stem when it records none)."""
    if path.suffix == ".safetensors":
        from prunekit.io import read_metadata

        return (read_metadata(path).get("meta") or {}).get("model", {}).get("name") or path.stem
    return path.stem


@dataclass
class TrainOutcome:
    model: nn.Module
    trainer: Trainer
    fit: FitResult
    test: EvalResult
    loaders: Any
    wall_seconds: float


def build_model_for(job: TrainJob, spec) -> tuple[nn.Module, dict[str, Any]]:
    """The job's model sized for the dataset ``spec`` (classes, input channels); returns (model, kwargs used).
    With ``job.init`` the model (architecture and weights) comes from that file instead."""
    from prunekit.models import create

    if job.init:
        net, meta = load_trained_model(job.init)
        return net, dict(meta.get("model", {}).get("kwargs", {}))

    kwargs = dict(job.model_args)
    if not job.model.startswith(("tv:", "timm:")):
        kwargs.setdefault("in_channels", spec.in_channels)
    return create(job.model, num_classes=spec.num_classes, **kwargs), kwargs


def run_training(job: TrainJob, *, device: str = "cpu", extra_meta: dict[str, Any] | None = None,
                 log=None) -> TrainOutcome:
    """Build data and model, train (resuming if ``job.config.resume``), evaluate once on the test set.

    Under torchrun every process calls this; data are sharded by rank and DDP averages the gradients.
    """
    from prunekit.data import build_data
    from prunekit.train import distributed

    info = distributed.init_from_env(device)
    t0 = time.time()
    loaders = build_data(job.data, data_dir=job.data_dir, batch_size=job.batch_size, val_split=job.val_split,
                         device=device, seed=job.config.seed, download=job.download,
                         train_subset=job.train_subset, rank=info.rank, world_size=info.world_size,
                         **job.data_args)
    seed_everything(job.config.seed)  # the same seed gives the same initial weights on every rank
    model, kwargs = build_model_for(job, loaders.spec)
    if log is not None and info.is_main:
        log(f"{job.model} on {loaders.summary()} · {device} · {info.world_size} process(es)")
    meta = job.meta(loaders.spec.num_classes, kwargs, loaders.spec.input_shape) | (extra_meta or {})
    trainer = Trainer(model, loaders.train, loaders.val, config=job.config, device=device, meta=meta)
    fit = trainer.fit()
    test = trainer.evaluate(loaders.test)
    return TrainOutcome(model, trainer, fit, test, loaders, time.time() - t0)


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the model a Trainer checkpoint was written for (``meta.model``) and load its weights."""
    from prunekit.errors import CheckpointError
    from prunekit.models import create

    spec = ckpt.get("meta", {}).get("model")
    if not spec:
        raise CheckpointError("checkpoint has no model description (meta.model); was it written by "
                              "`prunekit train`?")
    net = create(spec["name"], num_classes=spec["num_classes"], **spec.get("kwargs", {}))
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit {spec['name']}: "
                              f"{str(e).splitlines()[0][:300]}") from None
    return net


def load_trained_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model from ``path``: a prunekit model file (``.safetensors``, e.g. a pruned model) or a Trainer
    checkpoint (``last.ckpt``). Returns (model, meta) where meta holds what the file says about model and data."""
    from prunekit.train.checkpoint import load_checkpoint

    path = Path(path)
    if path.suffix == ".safetensors":
        from prunekit.io import load, read_metadata

        header = read_metadata(path)
        meta = dict(header.get("meta") or {})
        if header.get("inputs"):
            meta.setdefault("input_shape", header["inputs"][0]["shape"][1:])
        return load(path), meta
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt), dict(ckpt.get("meta", {}))
