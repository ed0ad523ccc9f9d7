"""``prunekit.save`` / ``prunekit.load``: a pruned model as one file, in one of two formats.

- ``architecture="graph"`` (default, ``prunekit.model/1``, see :mod:`prunekit.io`): the architecture as data (an fx
  graph) plus the weights; ``load(path)`` needs nothing else. Only for models torch.fx can trace symbolically.
- ``architecture="widths"`` (``prunekit.widths/1``): the width of every channel group plus the weights (timm's
  pruned-architecture idea). ``load(path, model=constructor())`` prunes the *unpruned* model to those widths and
  loads the weights into it: any model whose class the user can import, including those only the concrete tracer
  follows (a YOLOv8 ``DetectionModel``). The model comes back as the user's own class, not a GraphModule.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from prunekit.errors import CheckpointError, ConfigError, PrunekitError
from prunekit.graph import DependencyGraph
from prunekit.io import read_widths_file, write_widths_file
from prunekit.io import load as load_graph_file
from prunekit.io import save as save_graph_file
from prunekit.io.artifact import ExampleInputs
from prunekit.io.tracing import TraceError
from prunekit.planning.prune import apply_widths

ARCHITECTURES = ("graph", "widths")


def save(model: nn.Module, path: str | os.PathLike[str], *, example_inputs: ExampleInputs | None = None,
         metadata: Mapping[str, Any] | None = None, architecture: str = "graph", tracer: str = "auto") -> Path:
    """Write ``model`` to the single file ``path`` (atomically); returns the path.

    ``architecture="graph"``: self-contained (see ``prunekit.io.save``; ``example_inputs``, if given, check that
    the stored graph reproduces the output). ``architecture="widths"``: group widths + weights; needs
    ``example_inputs`` (the graph of the model is built with them, ``tracer`` as in ``DependencyGraph``) and is
    loaded with ``load(path, model=<the unpruned model>)``. ``metadata``: JSON-serializable, returned by
    ``prunekit.io.read_metadata`` (graph files) or in the header (widths files).
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    if architecture == "graph":
        try:
            return save_graph_file(model, path, example_inputs=example_inputs, metadata=metadata)
        except TraceError as exc:
            raise TraceError(f"{exc} Or save its widths and weights: prunekit.save(model, path, "
                             "architecture='widths', example_inputs=x), and load them into the unpruned model "
                             "with prunekit.load(path, model=<the unpruned model>).") from exc
    if example_inputs is None:
        raise ConfigError("architecture='widths' needs example_inputs= (the graph of the model is built with them)")
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    graph = DependencyGraph(model, inputs, tracer=tracer, pin_outputs=False)
    cls = type(model)
    return write_widths_file(path, model.state_dict(keep_vars=True), {g.name: g.size for g in graph.groups}, inputs,
                             class_name=f"{cls.__module__}.{cls.__qualname__}", tracing={"tracer": graph.tracer},
                             metadata=metadata)


def load(path: str | os.PathLike[str], *, model: nn.Module | None = None,
         device: str | torch.device = "cpu") -> nn.Module:
    """Read a file written by :func:`save`.

    A graph file (``model`` omitted) comes back as a ``torch.fx.GraphModule``. A widths file needs ``model``: the
    *unpruned* model (e.g. ``DetectionModel("yolov8n.yaml")``), which is pruned in place to the saved widths,
    given the saved weights, moved to ``device`` and returned. Raises CheckpointError naming the file and the
    problem (missing/corrupt file, a widths file without ``model``, a model that does not match the file).
    """
    if model is None:
        return load_graph_file(path, device=device)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (the unpruned model), got {type(model).__name__}")
    header, tensors = read_widths_file(path, "cpu")  # missing/corrupt/foreign/graph-format file: CheckpointError
    cls = type(model)
    if header.get("class_name") != f"{cls.__module__}.{cls.__qualname__}":
        raise CheckpointError(f"{path}: saved from a {header.get('class_name')}, but model= is a "
                              f"{cls.__module__}.{cls.__qualname__}")
    inputs = tuple(torch.zeros(spec["shape"], dtype=getattr(torch, spec["dtype"])) for spec in header["inputs"])
    try:
        graph = DependencyGraph(model, inputs, tracer=header.get("tracing", {}).get("tracer", "auto"),
                                pin_outputs=False)
        widths = dict(header["widths"])
        unknown = sorted(set(widths) - {g.name for g in graph.groups})
        if unknown:
            raise CheckpointError(f"{path}: model= has no channel group {unknown[0]!r} (it is not the model these "
                                  "widths were saved from)")
        changed = {n: w for n, w in widths.items() if w != graph.group(n).size}
        if changed:
            apply_widths(graph, changed, importance="prefix")
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except PrunekitError:
        raise
    except RuntimeError as exc:  # load_state_dict: a shape mismatch
        raise CheckpointError(f"{path}: the weights do not fit model= pruned to the saved widths: "
                              f"{str(exc).splitlines()[-1].strip()}") from exc
    if missing or unexpected:
        raise CheckpointError(f"{path}: model= does not match the saved weights: "
                              f"{'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]}"
                              f"{_more(len(missing) + len(unexpected) - 1)}")
    return model.to(device)


def _more(n: int) -> str:
    return f" and {n} more" if n > 0 else ""
