"""``run_method``: a registered method from a recipe and overrides, end to end (what ``prunekit prune`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from prunekit.app.recipes import is_full_run, method_config
from prunekit.app.setup import prepare_run
from prunekit.errors import ConfigError
from prunekit.methods import PruneResult, RunInfo, get_method
from prunekit.methods.base import phase_epochs


def run_method(name: str, recipe: Mapping[str, Any], output: str | Path, *,
               overrides: Mapping[str, Any] | None = None, model: str | None = None,
               checkpoint: str | Path | None = None, data: str | None = None, data_dir: str | None = None,
               batch_size: int | None = None, val_split: float | None = None, train_subset: int | None = None,
               device: str = "cpu", progress: bool | None = None, restart: bool = False, latency: bool = True,
               log: Callable[[str], None] | None = None, command: str | None = None) -> tuple[PruneResult, Any]:
    """Build the method's config (recipe + ``overrides``), the data and the model (``prepare_run``), run the
    method under ``output`` (resumable; ``restart`` discards an earlier run there) and write its report.
    Returns ``(result, loaders)``."""
    method = get_method(name)
    if recipe.get("method") not in (None, method.name, method.name.replace("_", "-")):
        raise ConfigError(f"the recipe is for method {recipe.get('method')!r}, not {method.name.replace('_', '-')}")
    config = method_config(method, recipe, overrides, progress=progress)
    net, loaders, model_name, data_settings = prepare_run(
        recipe, model=model, checkpoint=checkpoint, data=data, data_dir=data_dir, batch_size=batch_size,
        val_split=val_split, train_subset=train_subset, device=device)
    data_dir_used = data_settings.pop("data_dir", None) or ""  # where the files are does not change the run
    instance = method(config)
    info = RunInfo(model_name=model_name, settings={"data_options": data_settings}, command=command,
                   metadata={"model": {"name": model_name, "num_classes": loaders.spec.num_classes},
                             "data": {"name": data_settings["data"], "data_dir": data_dir_used,
                                      "val_split": data_settings["val_split"], "seed": data_settings["seed"],
                                      "batch_size": data_settings["batch_size"],
                                      "args": data_settings["data_args"]}})
    info.reduced = not is_full_run(recipe, phase_epochs(config), data_settings["data"], data_settings["train_subset"])
    result = instance.run(net, loaders, output, device=device, log=log, latency=latency, restart=restart, info=info)
    return result, loaders

