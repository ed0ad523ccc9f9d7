"""Models from other libraries: torchvision (``tv:<name>``) and timm (``timm:<name>``), built without weights.

Both are optional dependencies; a missing one raises a :class:`PrunekitError` saying what to install.
"""

from __future__ import annotations

import difflib
from types import ModuleType
from typing import Any

import torch.nn as nn

from prunekit.errors import ConfigError, PrunekitError, UnknownModelError


def _import_torchvision() -> ModuleType:
    try:
        import torchvision.models
    except (ImportError, RuntimeError, OSError) as e:  # RuntimeError/OSError: C extension not matching torch
        raise PrunekitError(
            f"torchvision models need torchvision ({e}). Install it with torch pinned in the same command, "
            "e.g. `pip install prunekit[vision]` (see the constraints file for the tested torch/torchvision pair)."
        ) from e
    return torchvision


def _unknown(prefix: str, name: str, names: list[str]) -> UnknownModelError:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(prefix + c for c in close)}?" if close else ""
    return UnknownModelError(f"unknown model {prefix}{name!r}.{hint} "
                             f"({len(names)} {prefix[:-1]} models are available.)")


def torchvision_names() -> list[str]:
    """Names of torchvision's image-classification models (``torchvision.models.list_models``), sorted."""
    tv = _import_torchvision()
    return sorted(tv.models.list_models(module=tv.models))


def create_torchvision(name: str, num_classes: int = 1000, weights: Any = None, **kwargs: Any) -> nn.Module:
    """Build torchvision classification model ``name`` (e.g. ``"resnet18"``); kwargs go to its constructor.

    ``weights=None`` (default) gives random init. Pretrained weights (``weights="DEFAULT"``) only exist for
    1000 classes; torchvision's refusal is re-raised as a :class:`ConfigError`.
    """
    names = torchvision_names()
    if name not in names:
        raise _unknown("tv:", name, names)
    tv = _import_torchvision()
    try:
        return tv.models.get_model(name, weights=weights, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"tv:{name}: {e}") from e


def create_timm(name: str, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build timm model ``name`` (``timm.create_model``); raises a clear error if timm is not installed."""
    try:
        import timm
    except ImportError as e:
        raise PrunekitError(f"timm models need timm ({e}): `pip install timm` with your torch version pinned "
                            "in the same command, e.g. `pip install timm torch==<installed version>`.") from e
    if not timm.is_model(name):
        raise _unknown("timm:", name, timm.list_models())
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"timm:{name}: {e}") from e
