"""The start of every method run: the recipe's data loaders and the model to prune, sized for the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from prunekit.errors import ConfigError


def prepare_run(recipe: Mapping[str, Any], *, model: str | None = None, checkpoint: str | Path | None = None,
                data: str | None = None, data_dir: str | None = None, batch_size: int | None = None,
                val_split: float | None = None, train_subset: int | None = None,
                device: str = "cpu") -> tuple[nn.Module, Any, str, dict[str, Any]]:
    """(model, loaders, model name, data settings) for a method recipe; explicit arguments override the
    recipe's keys, which override what ``checkpoint`` records about its data.

    Recipe keys used: ``model``, ``model_args``, ``data`` (default: the checkpoint's dataset, else ``digits``),
    ``data_dir``, ``batch_size`` (128), ``val_split`` (0.1: methods choose on a split held out of the train
    set), ``train_subset``, ``seed`` (0), ``data_args``. ``checkpoint`` (a Trainer ``last.ckpt`` or a prunekit
    model file) is the trained model to prune; without it a freshly initialised zoo model is built (methods
    that train from scratch, smoke tests). The data settings returned are part of the run's fingerprint.
    """
    from prunekit.app.training import load_trained_model
    from prunekit.data import build_data
    from prunekit.models import create
    from prunekit.train import seed_everything

    net, meta = (load_trained_model(checkpoint) if checkpoint is not None else (None, {}))
    recorded = meta.get("data") or {}
    seed = int(recipe.get("seed", 0))
    settings = {
        "data": data or recipe.get("data") or recorded.get("name") or "digits",
        "data_dir": data_dir or recipe.get("data_dir") or recorded.get("data_dir") or None,
        "batch_size": int(batch_size or recipe.get("batch_size") or 128),
        "val_split": float(val_split if val_split is not None else recipe.get("val_split", 0.1)),
        "train_subset": train_subset or recipe.get("train_subset"),
        "seed": seed,
        "data_args": dict(recipe.get("data_args") or recorded.get("args") or {}),
    }
    loaders = build_data(settings["data"], data_dir=settings["data_dir"], batch_size=settings["batch_size"],
                         val_split=settings["val_split"], device=device, seed=seed,
                         train_subset=settings["train_subset"], **settings["data_args"])
    seed_everything(seed)
    if net is not None:
        name = meta.get("model", {}).get("name") or model or recipe.get("model") or Path(checkpoint).stem
        return net, loaders, name, settings
    name = model or recipe.get("model")
    if not name:
        raise ConfigError("no model: give --model NAME (see `prunekit models`), a recipe with `model:`, "
                          "or --checkpoint FILE")
    kwargs = dict(recipe.get("model_args") or {})
    if not name.startswith(("tv:", "timm:")):
        kwargs.setdefault("in_channels", loaders.spec.in_channels)
    return create(name, num_classes=loaders.spec.num_classes, **kwargs), loaders, name, settings
