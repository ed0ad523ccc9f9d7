"""The application layer: recipes → (model, data, method config) → a run; the only layer that knows them all.

``run_method(name, recipe, output, ...)`` (``prunekit prune``), ``TrainJob``/``run_training``
(``prunekit train``), ``run_quickstart`` (``prunekit quickstart``), ``load_recipe``/``method_config``.
"""

from prunekit.app.recipes import is_full_run, load_recipe, method_config, parse_assignments
from prunekit.app.run import run_method
from prunekit.app.setup import prepare_run
from prunekit.app.training import TrainJob, load_trained_model, model_from_checkpoint, run_training

__all__ = ["TrainJob", "is_full_run", "load_recipe", "load_trained_model", "method_config", "model_from_checkpoint",
           "parse_assignments", "prepare_run", "run_method", "run_training"]
