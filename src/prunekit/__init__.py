"""prunekit: structured channel pruning for PyTorch CNNs.

Public API (stable names)::

    prunekit.models.create(name, num_classes=...)     the model zoo (CIFAR nets, tv:<torchvision>, timm:<timm>)
    prunekit.data.build_data(name, ...)              CIFAR-10/100, ImageFolder, digits (offline), synthetic
    prunekit.count(model, example_inputs)            params and MACs per image
    prunekit.measure_latency(model, example_inputs)  measured latency (CPU pinned threads / CUDA events)
    prunekit.Trainer, prunekit.TrainConfig           the shared training engine
    prunekit.DependencyGraph(model, example_inputs)  channel groups that must be pruned together
    prunekit.prune(model, example_inputs, ratio=)    physical pruning (in place; a real smaller module)
    prunekit.save(model, path) / prunekit.load(path) pruned models as one file (architecture as data)
    prunekit.export_onnx(model, example_inputs, path), prunekit.for_inference(model)
"""

from __future__ import annotations

__version__ = "0.1.0"

from prunekit import models  # noqa: E402
from prunekit.cost import Cost, LatencyResult, count, measure_latency, peak_memory  # noqa: E402
from prunekit.errors import CheckpointError, ConfigError, DataError, PrunekitError, UnknownModelError  # noqa: E402
from prunekit.graph import ChannelGroup, DependencyGraph, PruningPlan  # noqa: E402
from prunekit.planning import Widths, apply_widths, prune  # noqa: E402
from prunekit.io import export_onnx, for_inference, load, save  # noqa: E402
from prunekit.train import Trainer, TrainConfig  # noqa: E402

__all__ = ["__version__", "models", "Cost", "LatencyResult", "count", "measure_latency", "peak_memory",
           "CheckpointError", "ConfigError", "DataError", "PrunekitError", "UnknownModelError",
           "ChannelGroup", "DependencyGraph", "PruningPlan", "Widths", "apply_widths", "prune", "export_onnx",
           "for_inference", "load",
           "save", "Trainer", "TrainConfig"]
