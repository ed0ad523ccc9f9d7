"""Physical channel removal: one small handler per layer type, plus plain parameter slicing.

A handler knows, for each member role of its layer type, which parameters/buffers to slice along which dim
(``params``), which attributes to update (``resize``), and what to recompute once all roles are done
(``finish``: e.g. a grouped conv's ``groups``). Parameters keep their identity (``param.data`` is replaced),
so optimizers, hooks and tied references stay valid; optimizer state (SGD momentum, Adam moments...) is sliced
along with its parameter. No masks, hooks or wrappers are left behind.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

Slice = tuple[str, int]  # (attribute, dim)


class LayerSurgery:
    """Base handler: subclasses set ``types`` and override what differs."""

    types: tuple[type, ...] = ()

    def params(self, m: nn.Module, role: str) -> list[Slice]:
        return []

    def resize(self, m: nn.Module, role: str, n: int) -> None:
        pass

    def finish(self, m: nn.Module) -> None:
        """Recompute attributes that depend on several roles (called once after all of them)."""

    def sync(self, m: nn.Module) -> None:
        """Update attributes from the parameter shapes after a parameter was sliced directly (functional use)."""


SURGERY: dict[type, LayerSurgery] = {}


def register_surgery(handler: type[LayerSurgery]) -> type[LayerSurgery]:
    inst = handler()
    for t in handler.types:
        SURGERY[t] = inst
    return handler


def surgery_for(m: nn.Module) -> LayerSurgery | None:
    for t in type(m).__mro__:
        h = SURGERY.get(t)
        if h is not None:
            return h
    return None


@register_surgery
class ConvSurgery(LayerSurgery):
    """Conv1d/2d/3d incl. grouped and depthwise. Weight ``[out, in/groups, *k]``: out channels are rows; input
    channels are columns only when ``groups == 1`` (grouped convs lose whole conv groups, the per-group width
    is unchanged and ``groups`` is recomputed)."""

    types = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

    def params(self, m, role):
        if role == "out":
            return [("weight", 0), ("bias", 0)]
        if role == "in_shared":  # the same in-group positions of every conv group
            return [("weight", 1)]
        return [("weight", 1)] if m.groups == 1 else []

    def resize(self, m, role, n):
        if role == "out":
            m.out_channels = n
        elif role == "in_shared":
            m.in_channels = n * m.groups
        else:
            m.in_channels = n

    def finish(self, m):
        m.groups = m.in_channels // m.weight.shape[1]
        if m.in_channels % m.groups or m.out_channels % m.groups:
            raise AssertionError(f"internal error: {m} has channels not divisible by groups={m.groups}")

    def sync(self, m):
        m.out_channels = m.weight.shape[0]
        if m.groups == 1:
            m.in_channels = m.weight.shape[1]


@register_surgery
class ConvTransposeSurgery(LayerSurgery):
    """ConvTranspose1d/2d/3d. Weight ``[in, out/groups, *k]``."""

    types = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

    def params(self, m, role):
        if role == "out":
            return ([("weight", 1)] if m.groups == 1 else []) + [("bias", 0)]
        return [("weight", 0)]

    def resize(self, m, role, n):
        if role == "out":
            m.out_channels = n
        else:
            m.in_channels = n

    def finish(self, m):
        m.groups = m.out_channels // m.weight.shape[1]


@register_surgery
class LinearSurgery(LayerSurgery):
    types = (nn.Linear,)

    def params(self, m, role):
        return [("weight", 0), ("bias", 0)] if role == "out" else [("weight", 1)]

    def resize(self, m, role, n):
        if role == "out":
            m.out_features = n
        else:
            m.in_features = n

    def sync(self, m):
        m.out_features, m.in_features = m.weight.shape


@register_surgery
class BatchNormSurgery(LayerSurgery):
    """BatchNorm / SyncBatchNorm / InstanceNorm: per-channel affine parameters and running statistics."""

    types = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)

    def params(self, m, role):
        return [("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0)]

    def resize(self, m, role, n):
        m.num_features = n

    def sync(self, m):
        t = m.weight if m.weight is not None else m.running_mean
        if t is not None:
            m.num_features = t.shape[0]


@register_surgery
class GroupNormSurgery(LayerSurgery):
    """GroupNorm: role ``out`` removes whole norm groups (``num_groups`` shrinks); ``out_shared`` removes the
    same positions from every norm group (``num_groups`` stays)."""

    types = (nn.GroupNorm,)

    def params(self, m, role):
        return [("weight", 0), ("bias", 0)]

    def resize(self, m, role, n):
        if role == "out":
            per_group = m.num_channels // m.num_groups
            m.num_groups = n // per_group
        m.num_channels = n

    def sync(self, m):  # a subclass calling F.group_norm on its own parameters (one group)
        if m.weight is not None:
            m.num_channels = m.weight.shape[0]


@register_surgery
class LayerNormSurgery(LayerSurgery):
    """LayerNorm over trailing dims; role ``d<i>`` is dim ``i`` of ``normalized_shape``."""

    types = (nn.LayerNorm,)

    def params(self, m, role):
        i = int(role[1:])
        return [("weight", i), ("bias", i)]

    def resize(self, m, role, n):
        shape = list(m.normalized_shape)
        shape[int(role[1:])] = n
        m.normalized_shape = tuple(shape)

    def sync(self, m):
        if m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)


@register_surgery
class PReLUSurgery(LayerSurgery):
    types = (nn.PReLU,)

    def params(self, m, role):
        return [("weight", 0)]

    def resize(self, m, role, n):
        m.num_parameters = n


def slice_tensor(owner: nn.Module, attr: str, dim: int, idx: torch.Tensor,
                 optimizer: torch.optim.Optimizer | None = None, done: set | None = None) -> None:
    """Keep positions ``idx`` of ``owner.<attr>`` along ``dim``: a Parameter keeps its identity (its ``data``,
    ``grad`` and optimizer state are sliced); a buffer or tensor attribute is replaced."""
    t = getattr(owner, attr, None)
    if not isinstance(t, torch.Tensor):
        return
    if done is not None:
        key = (id(t), dim)
        if key in done:  # a tensor shared by several members (tied weights): slice once
            return
        done.add(key)
    idx = idx.to(t.device)
    channels_last = t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if isinstance(t, nn.Parameter):
        old_shape = t.shape
        if optimizer is not None:
            _slice_state(optimizer, t, old_shape, dim, idx)
        t.data = t.data.index_select(dim, idx).contiguous(memory_format=fmt)
        if t.grad is not None:
            t.grad = t.grad.index_select(dim, idx).contiguous(memory_format=fmt)
    else:
        new = t.index_select(dim, idx).contiguous(memory_format=fmt)
        if attr in owner._buffers:
            owner._buffers[attr] = new
        else:
            setattr(owner, attr, new)


def _slice_state(optimizer: torch.optim.Optimizer, p: nn.Parameter, old_shape: torch.Size, dim: int,
                 idx: torch.Tensor) -> None:
    state: dict[str, Any] | None = optimizer.state.get(p)
    if not state:
        return
    sliced = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            sliced[key] = value
        elif value.shape == old_shape:
            sliced[key] = value.index_select(dim, idx.to(value.device))
        else:
            warnings.warn(f"prunekit: optimizer state '{key}' of shape {tuple(value.shape)} does not follow its "
                          f"parameter's shape {tuple(old_shape)}; this parameter's state is reset", stacklevel=4)
            optimizer.state[p] = {}
            return
    optimizer.state[p] = sliced
