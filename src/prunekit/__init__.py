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

from prunekit.errors import CheckpointError, ConfigError, DataError, PrunekitError, UnknownModelError  # noqa: E402

# Everything else loads on first use (PEP 562), so `import prunekit` and the CLI's --help do not import torch.
_LAZY = {
    "models": ("prunekit.models", None),
    "Cost": ("prunekit.cost", "Cost"), "LatencyResult": ("prunekit.cost", "LatencyResult"),
    "count": ("prunekit.cost", "count"), "measure_latency": ("prunekit.cost", "measure_latency"),
    "peak_memory": ("prunekit.cost", "peak_memory"),
    "ChannelGroup": ("prunekit.graph", "ChannelGroup"), "DependencyGraph": ("prunekit.graph", "DependencyGraph"),
    "PruningPlan": ("prunekit.graph", "PruningPlan"),
    "Widths": ("prunekit.planning", "Widths"), "apply_widths": ("prunekit.planning", "apply_widths"),
    "prune": ("prunekit.planning", "prune"),
    "export_onnx": ("prunekit.io", "export_onnx"), "for_inference": ("prunekit.io", "for_inference"),
    "load": ("prunekit.planning.archive", "load"), "save": ("prunekit.planning.archive", "save"),
    "Trainer": ("prunekit.train", "Trainer"), "TrainConfig": ("prunekit.train", "TrainConfig"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        value = getattr(value, attr) if attr else value
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "CheckpointError", "ConfigError", "DataError", "PrunekitError", "UnknownModelError",
           *_LAZY]
