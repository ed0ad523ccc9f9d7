"""Helpers shared by the CLI commands: consoles, option parsing, device resolution, result tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prunekit.errors import ConfigError

console = Console()
err_console = Console(stderr=True)


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["depth=20", "shortcut=A"]`` → ``{"depth": 20, "shortcut": "A"}`` (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def load_recipe(path: Path | None) -> dict[str, Any]:
    """``prunekit.app.load_recipe``: a missing file or invalid YAML is one clear error."""
    from prunekit.app.recipes import load_recipe as load

    return load(path)


def resolve_device(device: str) -> str:
    import torch

    from prunekit.train import distributed

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r}: CUDA is not available on this machine")
    info = distributed.current()
    if device == "cuda" and info.enabled:
        device = f"cuda:{info.local_rank}"
    return device


def input_size_option(text: str | None, model: str) -> tuple[int, ...]:
    from prunekit.models import default_input_size

    if not text:
        return default_input_size(model)
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input-size {text!r} must look like 3,32,32") from None
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"--input-size {text!r} must be three positive integers C,H,W")
    return size


def model_from_arg(model: str, num_classes: int, input_size: str | None) -> tuple[Any, tuple[int, ...]]:
    """(eval-mode model, input C,H,W) from a zoo name, a Trainer checkpoint or a prunekit model file."""
    from prunekit.models import create

    path = Path(model)
    if path.suffix in (".safetensors", ".ckpt", ".pt") or path.is_file():
        from prunekit.app.training import load_trained_model

        net, meta = load_trained_model(path)
        name = meta.get("model", {}).get("name", "model")
        size = input_size_option(input_size, name) if input_size or not meta.get("input_shape") \
            else tuple(meta["input_shape"])
        return net.eval(), size
    size = input_size_option(input_size, model)
    kwargs = {} if model.startswith(("tv:", "timm:")) else {"in_channels": size[0]}
    return create(model, num_classes=num_classes, **kwargs).eval(), size


def results_table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t
