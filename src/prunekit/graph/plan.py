"""``PruningPlan``: which channels of which tensors a pruning keeps, as plain data.

A plan is made by ``DependencyGraph.plan(widths, keep=...)`` (or ``plan_keep(keep)``) and never holds the model.
The same plan can then be

- ``apply(model, optimizer=None)``-ed: physical surgery in place (one handler per layer type, ``surgery``);
- ``materialize(model)``-d: a pruned deep copy, the original untouched, without re-tracing;
- used as an ``index_map()`` ({tensor name: [(dim, kept indices)]}) for weight-sharing forwards:
  ``forward(model, x)`` runs the *unpruned* module as the pruned network (sliced views of its tensors, layer
  attributes resized for the call), so gradients flow into the full tensors (MetaPruning's PruningNet);
- turned into ``masks()`` ({tensor name: bool mask of the full shape}) for masked evaluation.

Modules are addressed by qualified name, so a plan made on one model applies to any copy of it.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.graph.surgery import slice_tensor, surgery_for


@dataclass(frozen=True)
class TensorSlice:
    """Keep positions ``index`` of tensor ``module.attr`` along ``dim``."""

    module: str
    attr: str
    dim: int
    index: torch.Tensor

    @property
    def tensor_name(self) -> str:
        return f"{self.module}.{self.attr}" if self.module else self.attr


@dataclass(frozen=True)
class LayerResize:
    """Set the channel attributes of layer ``module`` for ``role`` to ``size`` (``LayerSurgery.resize``)."""

    module: str
    role: str
    size: int


@dataclass(frozen=True)
class SetAttr:
    """Set attribute ``module.attr`` to ``value`` (split sizes: a list of ints; a renumbered index buffer)."""

    module: str
    attr: str
    value: Any


@dataclass
class PruningPlan:
    """What one pruning step keeps. ``widths``: every group's width after the step; ``keep``: kept channel
    indices (group numbering) of each changed group; ``ops``: the slices, resizes and syncs in surgery order;
    ``finish``: layers whose derived attributes are recomputed at the end (e.g. a conv's ``groups``)."""

    widths: dict[str, int]
    keep: dict[str, torch.Tensor]
    ops: list[TensorSlice | LayerResize | SetAttr | str] = field(default_factory=list)
    finish: list[str] = field(default_factory=list)
    kept_classes: np.ndarray | None = field(default=None, repr=False)  # the source graph's class mask

    @property
    def is_identity(self) -> bool:
        """True when the plan removes nothing."""
        return not self.keep

    # ---- views of the plan ---------------------------------------------------------------------------------
    def index_map(self) -> dict[str, list[tuple[int, torch.Tensor]]]:
        """{tensor qualified name: [(dim, kept indices), ...]} for every parameter/buffer the plan slices."""
        out: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for op in self.ops:
            if isinstance(op, TensorSlice):
                out.setdefault(op.tensor_name, []).append((op.dim, op.index))
        return out

    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """{tensor name: bool tensor of the full shape, True where the pruned network keeps the entry}."""
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        out: dict[str, torch.Tensor] = {}
        for name, dims in self.index_map().items():
            t = tensors.get(name)
            if t is None:
                continue
            mask = torch.ones(t.shape, dtype=torch.bool, device=t.device)
            for dim, idx in dims:
                keep = torch.zeros(t.shape[dim], dtype=torch.bool, device=t.device)
                keep[idx.to(t.device)] = True
                shape = [1] * t.ndim
                shape[dim] = -1
                mask = mask & keep.view(shape)
            out[name] = mask
        return out

    # ---- surgery ---------------------------------------------------------------------------------------------
    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
        """Physically prune ``model`` in place (optimizer state sliced along); returns it. A DependencyGraph of
        ``model`` is stale afterwards: ``graph.apply_plan(plan)`` prunes its model and updates the graph."""
        modules = _modules(model)
        done: set = set()
        for op in self.ops:
            if isinstance(op, TensorSlice):
                slice_tensor(modules(op.module), op.attr, op.dim, op.index, optimizer, done)
            elif isinstance(op, LayerResize):
                m = modules(op.module)
                surgery_for(m).resize(m, op.role, op.size)
            elif isinstance(op, SetAttr):
                setattr(modules(op.module), op.attr, copy.copy(op.value))
            else:
                m = modules(op)
                h = surgery_for(m)
                if h is not None:
                    h.sync(m)
        for name in self.finish:
            m = modules(name)
            surgery_for(m).finish(m)
        return model

    def materialize(self, model: nn.Module) -> nn.Module:
        """A pruned deep copy of ``model`` (``model`` itself is left untouched; nothing is re-traced)."""
        return self.apply(copy.deepcopy(model))

    @contextmanager
    def view(self, model: nn.Module, tensors: Mapping[str, torch.Tensor] | None = None,
             sliced: Mapping[str, torch.Tensor | None] | None = None) -> Iterator[nn.Module]:
        """Within the block ``model`` *is* the pruned network: each sliced parameter/buffer is replaced by its
        slice (``index_select``: differentiable, gradients reach the full tensor) and layer attributes are
        resized; everything is restored on exit. ``tensors`` ({name: full-size tensor}) replaces model tensors
        before slicing (e.g. weights generated by a hypernetwork). ``sliced`` ({name: tensor of the *pruned*
        shape, or None}) puts tensors in place after slicing, which the plan then leaves alone (weights a
        hypernetwork generated only for the kept entries; per-configuration BatchNorm statistics, which the
        block's BatchNorms then update in place). BatchNorm running statistics updated inside the block are
        otherwise those of the slices (copies): the full buffers are not changed."""
        modules = _modules(model)
        saved_tensors: list[tuple[nn.Module, str, str, Any]] = []
        saved_attrs: dict[int, tuple[nn.Module, dict[str, Any]]] = {}

        def remember(m: nn.Module) -> None:
            if id(m) not in saved_attrs:
                saved_attrs[id(m)] = (m, {k: v for k, v in vars(m).items() if not k.startswith("_")})

        def current(m: nn.Module, attr: str) -> tuple[str, Any]:
            if attr in m._parameters:
                return "_parameters", m._parameters[attr]
            if attr in m._buffers:
                return "_buffers", m._buffers[attr]
            return "", getattr(m, attr, None)

        def put(m: nn.Module, attr: str, where: str, value: Any) -> None:
            if where:
                getattr(m, where)[attr] = value
            else:
                object.__setattr__(m, attr, value)

        try:
            for name, value in (tensors or {}).items():
                mod, _, attr = name.rpartition(".")
                m = modules(mod)
                where, old = current(m, attr)
                saved_tensors.append((m, attr, where, old))
                put(m, attr, where, value)
            done: set = set()
            given = dict(sliced or {})
            for name, value in given.items():
                mod, _, attr = name.rpartition(".")
                m = modules(mod)
                where, old = current(m, attr)
                saved_tensors.append((m, attr, where, old))
                put(m, attr, where, value)
            for op in self.ops:
                if isinstance(op, TensorSlice):
                    if op.tensor_name in given:
                        continue
                    m = modules(op.module)
                    where, old = current(m, op.attr)
                    if not isinstance(old, torch.Tensor) or (id(old), op.dim) in done:
                        continue
                    saved_tensors.append((m, op.attr, where, old))
                    new = old.index_select(op.dim, op.index.to(old.device))
                    done.add((id(new), op.dim))
                    done.add((id(old), op.dim))
                    put(m, op.attr, where, new)
                elif isinstance(op, LayerResize):
                    m = modules(op.module)
                    remember(m)
                    surgery_for(m).resize(m, op.role, op.size)
                elif isinstance(op, SetAttr):
                    m = modules(op.module)
                    where, old = current(m, op.attr)
                    saved_tensors.append((m, op.attr, where, old))
                    put(m, op.attr, where, copy.copy(op.value))
                else:
                    m = modules(op)
                    remember(m)
                    h = surgery_for(m)
                    if h is not None:
                        h.sync(m)
            for name in self.finish:
                m = modules(name)
                remember(m)
                surgery_for(m).finish(m)
            yield model
        finally:
            for m, attrs in saved_attrs.values():
                for k, v in attrs.items():
                    object.__setattr__(m, k, v)
            for m, attr, where, old in reversed(saved_tensors):
                put(m, attr, where, old)

    def forward(self, model: nn.Module, *inputs: Any, tensors: Mapping[str, torch.Tensor] | None = None,
                sliced: Mapping[str, torch.Tensor | None] | None = None) -> Any:
        """``model(*inputs)`` computed as the pruned network (see :meth:`view`)."""
        with self.view(model, tensors, sliced) as m:
            return m(*inputs)


def _modules(model: nn.Module):
    table = dict(model.named_modules(remove_duplicate=False))

    def get(name: str) -> nn.Module:
        m = table.get(name)
        if m is None:
            raise ConfigError(f"the plan names layer {name!r}, which this model does not have (a plan applies to "
                              "the model it was made for, or a copy of it)")
        return m
    return get
