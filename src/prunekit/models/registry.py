"""The model registry: ``@register_model`` adds a constructor; ``create(name)`` builds one.

Names without a prefix are prunekit's own zoo (CIFAR-style nets). ``tv:<name>`` builds a torchvision
classification model and ``timm:<name>`` a timm model (if timm is installed); keyword arguments are passed through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from prunekit.errors import UnknownModelError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    input_size: tuple[int, int, int]  # (C, H, W) of the images it was designed for
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, input_size: tuple[int, int, int] = (3, 32, 32), description: str = ""):
    """Decorator adding ``fn(num_classes=..., **kwargs) -> nn.Module`` to the zoo under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().splitlines()[0] if (description or fn.__doc__) else ""
        _REGISTRY[name] = ModelEntry(name, fn, input_size, doc)
        return fn

    return wrap


def list_models(*, include_external: bool = False) -> list[str]:
    """Names of the zoo models, in registration order (optionally followed by ``tv:`` names)."""
    names = list(_REGISTRY)
    if include_external:
        from prunekit.models.external import torchvision_names

        names += [f"tv:{n}" for n in torchvision_names()]
    return names


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}. Valid names: {', '.join(_REGISTRY)}; "
            "or 'tv:<torchvision model>' (e.g. tv:resnet50) or 'timm:<timm model>'.")
    return _REGISTRY[name]


def default_input_size(name: str) -> tuple[int, int, int]:
    """(C, H, W) the model expects by default: 3x32x32 for the CIFAR zoo, 3x224x224 for tv:/timm: models."""
    if name.startswith(("tv:", "timm:")):
        return (3, 224, 224)
    return get_entry(name).input_size


def create(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs. Raises UnknownModelError listing the valid names."""
    if name.startswith("tv:"):
        from prunekit.models.external import create_torchvision

        return create_torchvision(name[3:], num_classes=num_classes, **kwargs)
    if name.startswith("timm:"):
        from prunekit.models.external import create_timm

        return create_timm(name[5:], num_classes=num_classes, **kwargs)
    return get_entry(name).fn(num_classes=num_classes, **kwargs)
