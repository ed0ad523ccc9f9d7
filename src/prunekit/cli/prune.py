"""``prunekit prune <method>``: one command per registered method, generated from its config dataclass.

Every command takes the same run options (recipe, model/checkpoint, data, output, device, ``--restart``) plus
one typed option per method option (``--ratio``, ``--target-macs``, ...), ``--<phase>-epochs`` per training
phase, and ``--set key=value`` for anything else (``--set finetune.lr=0.01``). ``prunekit prune --list`` lists
the methods. A method added to the registry gets its command without CLI code.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Optional

import typer

from prunekit.cli.common import console, err_console, resolve_device

prune_app = typer.Typer(rich_markup_mode=None, invoke_without_command=True,
                        help="Prune a model with a registered method (`prunekit prune --list`).")

# registered with their CLI spelling; kept in one place so the generated commands stay uniform
_RUN_OPTIONS: list[tuple[str, Any, Any]] = [
    ("recipe", Optional[Path], typer.Option(None, help="YAML recipe (see recipes/<method>/); options override it.")),
    ("model", Optional[str], typer.Option(None, help="Zoo model name (see `prunekit models`); ignored with "
                                                     "--checkpoint.")),
    ("checkpoint", Optional[Path], typer.Option(None, help="The trained model to prune: a Trainer last.ckpt or a "
                                                           "prunekit model file (.safetensors).")),
    ("data", Optional[str], typer.Option(None, help="digits | cifar10 | cifar100 | synthetic | imagefolder "
                                                    "(default: the recipe's, else the checkpoint's, else digits).")),
    ("data_dir", Optional[str], typer.Option(None, help="Dataset folder.")),
    ("batch_size", Optional[int], typer.Option(None, help="Batch size (default: the recipe's, else 128).")),
    ("val_split", Optional[float], typer.Option(None, help="Fraction of the train set held out for the method's "
                                                           "decisions (default 0.1).")),
    ("train_subset", Optional[int], typer.Option(None, help="Use only N training images (quick runs).")),
    ("set_", Optional[list[str]], typer.Option(None, "--set", help="Method option key=value, repeatable "
                                                                   "(finetune.epochs=3, tick.lr=0.01).")),
    ("device", str, typer.Option("auto", help="auto | cpu | cuda | cuda:N.")),
    ("output", Optional[Path], typer.Option(None, "--output", "-o", help="Run folder (default runs/<method>); "
                                                                         "re-running the same command resumes.")),
    ("restart", bool, typer.Option(False, "--restart", help="Discard an earlier run in the output folder.")),
    ("progress", bool, typer.Option(True, "--progress/--no-progress", help="Progress bars.")),
]


@prune_app.callback()
def prune_main(ctx: typer.Context,
               list_: bool = typer.Option(False, "--list", help="List the registered methods and exit.")) -> None:
    """Prune a model with a registered method."""
    if list_:
        from prunekit.methods import get_method, list_methods

        for name in list_methods():
            m = get_method(name)
            print(f"{name.replace('_', '-'):16s} {m.summary}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit()


def _field_help(doc: str, name: str) -> str:
    """The sentence of a config docstring that describes ``name`` (``name``: ... up to the next option)."""
    flat = " ".join(doc.split())
    m = re.search(rf"``{re.escape(name)}``[^.]*?:\s*(.+?)(?=\s``[a-z0-9_]+``\s*[:(/]|$)", flat)
    text = (m.group(1) if m else "").strip()
    return (text[:200] + "…") if len(text) > 200 else text


def _option_type(annotation: str) -> Any:
    """The CLI type of a config field's (string) annotation; None for fields set only through --set."""
    t = annotation.replace(" ", "")
    if "TrainConfig" in t:
        return None
    if t.startswith("bool"):
        return Optional[bool]
    if "Literal" in t or t.startswith("str"):
        return Optional[str]
    if t.startswith("tuple"):
        return Optional[list[str]]
    has_int, has_float = "int" in t, "float" in t
    if has_int and has_float:
        return Optional[str]  # a fraction or a count: parsed as YAML
    if has_int:
        return Optional[int]
    if has_float:
        return Optional[float]
    return None


def _method_options(method) -> list[inspect.Parameter]:
    from prunekit.methods.base import train_fields

    cls = method.config_class
    doc = inspect.getdoc(cls) or ""
    params = []
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.name in train_fields(cls):
            default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
            shown = f" [default: {default.epochs}]" if default is not None else " [default: off]"
            params.append(inspect.Parameter(f"phase__{f.name}", inspect.Parameter.KEYWORD_ONLY,
                                            annotation=Optional[int],
                                            default=typer.Option(None, f"{flag}-epochs", help=f"Epochs of the "
                                                                 f"{f.name} phase (0 disables it).{shown}")))
            continue
        kind = _option_type(str(f.type))
        if kind is None:
            continue
        default = f.default if f.default is not MISSING else None
        shown = f" [default: {default}]" if default not in (None, ()) else ""
        opt = (typer.Option(None, f"{flag}/--no-{flag[2:]}", help=_field_help(doc, f.name) + shown)
               if kind is Optional[bool] else typer.Option(None, flag, help=_field_help(doc, f.name) + shown))
        params.append(inspect.Parameter(f"opt__{f.name}", inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                        default=opt))
    return params


def _make_command(name: str):
    from prunekit.methods import get_method

    method = get_method(name)

    def command(**kwargs: Any) -> None:
        _run(method, kwargs)

    run_params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=d)
                  for n, t, d in _RUN_OPTIONS]
    command.__signature__ = inspect.Signature(run_params + _method_options(method))  # type: ignore[attr-defined]
    command.__doc__ = f"{method.title}: {method.summary} Options override the --recipe; see `prunekit prune --list`."
    command.__name__ = f"prune_{name}"
    return command


def _run(method, kwargs: dict[str, Any]) -> None:
    import yaml

    from prunekit.app import load_recipe, parse_assignments, run_method

    overrides = parse_assignments(kwargs.pop("set_"))
    for k in list(kwargs):
        v = kwargs[k]
        if k.startswith("opt__"):
            kwargs.pop(k)
            if v is not None:
                if isinstance(v, str) and _option_type(_field_type(method, k[5:])) is Optional[str] \
                        and "int" in _field_type(method, k[5:]):
                    v = yaml.safe_load(v)
                overrides[k[5:]] = list(v) if isinstance(v, list) else v
        elif k.startswith("phase__"):
            kwargs.pop(k)
            if v is not None:
                phase = overrides.setdefault(k[7:], {})
                if not isinstance(phase, dict):
                    from prunekit.errors import ConfigError
                    raise ConfigError(f"--{k[7:].replace('_', '-')}-epochs conflicts with --set {k[7:]}=...")
                phase["epochs"] = v
    dev = resolve_device(kwargs.pop("device"))
    output = kwargs.pop("output") or Path("runs") / method.name.replace("_", "-")
    recipe = load_recipe(kwargs.pop("recipe"))
    result, _ = run_method(method.name, recipe, output, overrides=overrides, device=dev,
                           progress=kwargs.pop("progress"), log=err_console.print,
                           command=" ".join(["prunekit", *sys.argv[1:]]), **kwargs)
    from prunekit.train import distributed

    if not distributed.group().is_main:  # under torchrun: rank 0 alone reports
        return
    for t in result.tables():
        console.print(t)
    for k, v in result.artifacts.items():
        err_console.print(f"{k}: {v}")


def _field_type(method, name: str) -> str:
    return str({f.name: f.type for f in fields(method.config_class)}[name])


def register_commands() -> None:
    """One ``prunekit prune <method>`` command per registered method (kebab-case names)."""
    from prunekit.methods import list_methods

    for name in list_methods():
        prune_app.command(name.replace("_", "-"))(_make_command(name))
