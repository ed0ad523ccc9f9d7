"""The importance class hierarchy and its registry."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn

from prunekit.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from prunekit.graph import ChannelGroup, DependencyGraph

_REGISTRY: dict[str, Callable[..., "Importance"]] = {}


def register_importance(name: str) -> Callable[[type["Importance"]], type["Importance"]]:
    """Class decorator: ``get_importance(name, **kwargs)`` builds ``cls(**kwargs)``."""
    def wrap(cls: type[Importance]) -> type[Importance]:
        if name in _REGISTRY:
            raise ValueError(f"importance {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.name = name
        return cls
    return wrap


def list_importances() -> list[str]:
    return list(_REGISTRY)


def get_importance(spec: "str | Importance", **kwargs) -> "Importance":
    """An importance from its registry name (or the instance itself). Unknown names list the valid ones."""
    if isinstance(spec, Importance):
        return spec
    if spec not in _REGISTRY:
        close = difflib.get_close_matches(str(spec), _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown importance {spec!r}.{hint} Valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[spec](**kwargs)


class Importance:
    """Scores the channels of one group: ``__call__(graph, group) -> Tensor[group.size]`` (float32, CPU)."""

    name = "base"

    def __call__(self, graph: "DependencyGraph", group: "ChannelGroup") -> torch.Tensor:
        raise NotImplementedError

    def scores(self, graph: "DependencyGraph", groups: list["ChannelGroup"] | None = None) -> dict[str, torch.Tensor]:
        """Scores of several groups (default: the prunable ones), by group name."""
        groups = graph.prunable_groups if groups is None else groups
        return {g.name: self(graph, g) for g in groups}


def _producer_weight(gm) -> tuple[torch.Tensor, int] | None:
    m = gm.member
    if m.kind == "param":
        t = getattr(m.module, m.attr)
        return t, m.dim
    from prunekit.graph.surgery import surgery_for
    h = surgery_for(m.module)
    if h is None:
        return None
    for attr, dim in h.params(m.module, m.role):
        t = getattr(m.module, attr, None)
        if isinstance(t, torch.Tensor) and attr == "weight":
            return t, dim
    return None


@register_importance("l1")
class MagnitudeImportance(Importance):
    """``p``-norm of each channel's weights in the layers that produce it (conv/linear output rows), summed
    over the group's producers: ``(sum_producers sum_weights |w|^p)^(1/p)``. ``l2`` is ``p=2``."""

    def __init__(self, p: float = 1.0):
        self.p = p

    def __call__(self, graph, group):
        total = torch.zeros(group.size, dtype=torch.float64)
        for gm in group.producers:
            found = _producer_weight(gm)
            if found is None:
                continue
            w, dim = found
            w = w.detach()
            other = [d for d in range(w.ndim) if d != dim]
            per = torch.linalg.vector_norm(w, ord=self.p, dim=other) if other else w.abs()
            if self.p != 1:
                per = per.pow(self.p)
            total += gm.reduce(per.double().cpu(), group.size)
        return (total if self.p == 1 else total.pow(1.0 / self.p)).float()


@register_importance("l2")
class L2Importance(MagnitudeImportance):
    def __init__(self):
        super().__init__(p=2.0)


@register_importance("bn_scale")
class BNScaleImportance(Importance):
    """``|gamma|`` of the group's BatchNorm layers (Network Slimming), per group channel: summed over the BNs
    that normalise it (``reduction="sum"``, default) or their mean (``"mean"``: every channel of a residual
    group is on the scale of one BN). Groups without a BatchNorm fall back to ``fallback`` (default L1
    magnitude); ``fallback=None`` raises instead (see ``has_bn``)."""

    def __init__(self, reduction: str = "sum", fallback: "Importance | None" = MagnitudeImportance(1.0)):
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction={reduction!r} must be 'mean' or 'sum'")
        self.reduction, self.fallback = reduction, fallback

    @staticmethod
    def bns(group: "ChannelGroup") -> list:
        return [gm for gm in group.bn_layers if isinstance(gm.module, nn.modules.batchnorm._BatchNorm)
                and gm.module.weight is not None]

    @classmethod
    def has_bn(cls, group: "ChannelGroup") -> bool:
        return bool(cls.bns(group))

    def __call__(self, graph, group):
        bns = self.bns(group)
        if not bns:
            if self.fallback is None:
                raise ConfigError(f"group {group.name!r} has no BatchNorm to score by |gamma|")
            return self.fallback(graph, group)
        total = torch.zeros(group.size, dtype=torch.float32)
        n = torch.zeros(group.size, dtype=torch.float32)
        for gm in bns:
            gamma = gm.module.weight.detach().abs().float().cpu()
            total += gm.reduce(gamma, group.size)
            n += gm.reduce(torch.ones_like(gamma), group.size)
        return total / n.clamp(min=1) if self.reduction == "mean" else total


@register_importance("random")
class RandomImportance(Importance):
    """Uniform random scores (a baseline); ``seed`` makes them reproducible (per group name)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, graph, group):
        import zlib
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(group.name.encode()))
        return torch.rand(group.size, generator=gen)
