"""The start of every method run: the recipe's data loaders and the model to prune, sized for the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from prunekit.errors import ConfigError


def prepare_run(recipe: Mapping[str, Any], *, model: str | None = None, checkpoint: str | Path | None = None,
                data: str | None = None, data_dir: str | None = None, batch_size: int | None = None,
                val_split: float | None = None, train_subset: int | None = None,
                device: str = "cpu") -> tuple[nn.Module, Any, str]:
    """(model, loaders, model name) for a method recipe; explicit arguments override the recipe's keys.

    Recipe keys used: ``model``, ``data`` (default ``digits``), ``data_dir``, ``batch_size`` (128),
    ``val_split`` (0.1: methods choose on a split held out of the train set), ``train_subset``, ``seed`` (0),
    ``data_args``. ``checkpoint`` (a Trainer ``last.ckpt`` or a prunekit model file) is the trained model to
    prune; without it a freshly initialised zoo model is built (methods that train from scratch, smoke tests).
    """
    from prunekit.data import build_data
    from prunekit.models import create
    from prunekit.train import seed_everything
    from prunekit.train.job import load_trained_model

    seed = int(recipe.get("seed", 0))
    loaders = build_data(data or recipe.get("data", "digits"), data_dir=data_dir or recipe.get("data_dir"),
                         batch_size=batch_size or recipe.get("batch_size", 128),
                         val_split=val_split if val_split is not None else recipe.get("val_split", 0.1),
                         device=device, seed=seed, train_subset=train_subset or recipe.get("train_subset"),
                         **recipe.get("data_args", {}))
    seed_everything(seed)
    if checkpoint is not None:
        net, meta = load_trained_model(checkpoint)
        return net, loaders, meta.get("model", {}).get("name") or model or recipe.get("model") or "model"
    name = model or recipe.get("model")
    if not name:
        raise ConfigError("no model: give --model NAME (see `prunekit models`), a recipe with `model:`, "
                          "or --checkpoint FILE")
    kwargs = {} if name.startswith(("tv:", "timm:")) else {"in_channels": loaders.spec.in_channels}
    return create(name, num_classes=loaders.spec.num_classes, **kwargs), loaders, name
