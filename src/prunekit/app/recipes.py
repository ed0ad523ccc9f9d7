"""Recipes → method configs: one parser for every registered method.

A method recipe (YAML) holds the run's data and model keys (``model``, ``data``, ``data_dir``, ``batch_size``,
``val_split``, ``train_subset``, ``seed``, ``data_args``), the method's options under a section named after the
method (``slimming:``, ``gate_decorator:``, ``l1:``...), and one top-level section per training phase of the
method's config (``sparsity_train:``, ``finetune:``, ``tick:``, ``tock:``...: TrainConfig fields merged over the
method's default for that phase; ``null`` or ``epochs: 0`` disables a phase). ``paper_epochs`` ({phase_epochs:
n}) says how long the paper trains each phase (a shorter run is recorded as ``reduced``).

Overrides (the CLI's typed options and ``--set key=value``) use the same names: ``ratio``, ``finetune.epochs``.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Mapping

from prunekit.errors import ConfigError
from prunekit.methods.base import Method, train_fields
from prunekit.train import TrainConfig

RUN_KEYS = ("method", "description", "model", "model_args", "data", "data_dir", "batch_size", "val_split",
            "train_subset", "seed", "data_args", "paper_epochs")


def load_recipe(path: str | Path | None) -> dict[str, Any]:
    """The recipe at ``path`` as a mapping ({} for None); a missing file or invalid YAML is one clear error."""
    import yaml

    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--recipe {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"--recipe {str(path)!r} is not valid YAML{where}: "
                          f"{getattr(e, 'problem', None) or str(e).splitlines()[0]}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--recipe {str(path)!r} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--recipe {str(path)!r} must be a YAML mapping")
    return data


def parse_assignments(items: list[str] | None, what: str = "--set") -> dict[str, Any]:
    """``["ratio=0.5", "finetune.epochs=3"]`` → ``{"ratio": 0.5, "finetune": {"epochs": 3}}`` (YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like key=value (e.g. ratio=0.5, finetune.epochs=3)")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            raise ConfigError(f"{what} {item!r}: the value is not a valid YAML scalar") from None
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{what} {item!r} conflicts with another assignment of {p!r}")
        node[leaf] = parsed
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _field_default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def _check_type(method: str, name: str, annotation: Any, value: Any) -> Any:
    """``value`` checked against a config field's annotation (string annotations of simple types)."""
    text = str(annotation)
    if value is None:
        if "None" in text or text == "Any":
            return None
        raise ConfigError(f"{method}.{name} cannot be null")
    if "Literal" in text:
        choices = [c.strip().strip("'\"") for c in text.split("Literal[", 1)[1].split("]", 1)[0].split(",")]
        if str(value) not in choices:
            raise ConfigError(f"{method}.{name}={value!r} must be one of {', '.join(choices)}")
        return value
    if text.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{method}.{name}={value!r} must be true or false")
        return value
    if text.startswith("tuple"):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{method}.{name}={value!r} must be a list")
        return tuple(value)
    kinds = [k for k in ("int", "float") if k in text.replace("None", "")]
    if kinds and not text.startswith(("str", "dict", "list")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{method}.{name}={value!r} must be a number")
        if kinds == ["int"] and not float(value).is_integer():
            raise ConfigError(f"{method}.{name}={value!r} must be an integer")
        if kinds == ["int"]:
            return int(value)
        if kinds == ["float"]:
            return float(value)
        return value  # int or float: the config tells them apart (e.g. a fraction or a count)
    if text.startswith("str") and not isinstance(value, str):
        raise ConfigError(f"{method}.{name}={value!r} must be a string")
    return value


def method_config(method: type[Method], recipe: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                  *, progress: bool | None = None) -> Any:
    """The method's config from ``recipe`` and ``overrides`` (nested mapping, same names; see the module
    docstring). Unknown keys raise ConfigError listing the valid ones. ``progress`` sets every training phase's
    progress bar."""
    cls = method.config_class
    section = method.name
    phases = train_fields(cls)
    options = {f.name: f for f in fields(cls)}
    given = recipe.get(section) or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"recipe section {section}: must be a mapping of {method.title} options")
    unknown_top = sorted(set(recipe) - set(RUN_KEYS) - {section} - set(phases))
    if unknown_top:
        raise ConfigError(_unknown("recipe key", unknown_top, [*RUN_KEYS, section, *phases]))
    merged: dict[str, Any] = dict(given)
    for name in phases:
        if name in given:
            raise ConfigError(f"put {name}: at the top level of the recipe, not under {section}:")
        if name in recipe:
            merged[name] = recipe[name]
    merged = _merge(merged, overrides or {})
    unknown = sorted(set(merged) - set(options))
    if unknown:
        raise ConfigError(_unknown(f"{section} option", unknown, list(options)))
    kwargs: dict[str, Any] = {}
    for name, value in merged.items():
        f = options[name]
        if name in phases:
            kwargs[name] = _phase(section, name, _field_default(f), value, progress)
        else:
            kwargs[name] = _check_type(section, name, f.type, value)
    for name in phases:
        if name not in kwargs and progress is not None:
            default = _field_default(options[name])
            if isinstance(default, TrainConfig):
                kwargs[name] = _phase(section, name, default, {}, progress)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without a value
        raise ConfigError(f"{section}: {e}") from None


def _phase(section: str, name: str, default: Any, value: Any, progress: bool | None) -> TrainConfig | None:
    if value is None:
        return None
    if isinstance(value, TrainConfig):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: must be a mapping of training options (epochs, lr, schedule, ...) or null")
    base = default.to_dict() if isinstance(default, TrainConfig) else {}
    d = {**base, **value}
    if d.get("epochs", 1) == 0:
        return None
    if progress is not None:
        d["progress"] = progress
    try:
        return TrainConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None


def _unknown(what: str, names: list[str], valid: list[str]) -> str:
    hints = []
    for n in names:
        close = difflib.get_close_matches(n, valid, n=1)
        hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown {what}{'s' if len(names) > 1 else ''} {', '.join(hints)}; valid: {', '.join(sorted(valid))}"


def is_full_run(recipe: Mapping[str, Any], schedule: Mapping[str, Any], data: str, subset: int | None) -> bool:
    """A full run: real CIFAR, the whole train set, and every phase at least as long as the paper's
    (``paper_epochs`` of the recipe, keyed like the record's schedule: ``finetune_epochs``...)."""
    paper = recipe.get("paper_epochs") or {}
    if data not in ("cifar10", "cifar100") or subset or not paper:
        return False
    return all((schedule.get(k) or 0) >= v for k, v in paper.items())


__all__ = ["load_recipe", "method_config", "parse_assignments", "is_full_run"]
