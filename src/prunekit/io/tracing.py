"""The torch.fx tracer shared by save, ONNX and inference export: keeps registered layer types whole."""

from __future__ import annotations


import torch.fx
import torch.nn as nn

from prunekit.utils import eval_mode  # noqa: F401  (re-exported for io's modules)
from prunekit.errors import PrunekitError
from prunekit.io import specs


class TraceError(PrunekitError):
    """torch.fx could not trace the model."""


class LeafTracer(torch.fx.Tracer):
    """fx tracer whose leaves are torch.nn's default leaves plus every type with a registered spec.

    Everything else (torchvision blocks, user modules) is traced through, down to those leaves and to
    ``get_attr`` reads of their own parameters (e.g. ConvNeXt's ``layer_scale``).
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return specs.is_registered(m) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """Trace ``model`` in eval mode (control flow on ``self.training`` takes its eval branch).

    The result shares its leaf modules and parameters with ``model``.
    """
    tracer = LeafTracer()
    before = set(vars(model))
    with eval_mode(model):
        try:
            graph = tracer.trace(model)
        except Exception as exc:
            raise TraceError(
                f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. prunekit needs an "
                "fx-traceable forward (no data-dependent Python control flow); torch.save still works.") from exc
    name = type(model).__name__
    gm = torch.fx.GraphModule(tracer.root, graph, class_name=name if name.isidentifier() else "GraphModule")
    for attr in set(vars(model)) - before:  # fx parks tensor constants on the traced module: take them back off
        if attr.startswith("_tensor_constant"):
            delattr(model, attr)
    return gm
