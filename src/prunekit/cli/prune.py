"""``prunekit prune <method>``: l1 (magnitude, no fine-tuning) and the paper methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from prunekit.cli.common import console, err_console, input_size_option, load_recipe, resolve_device, results_table
from prunekit.errors import ConfigError

prune_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                        help="Prune a model: `l1` (magnitude, no fine-tuning) or a paper method.")


def _source_model(model: str | None, checkpoint: Path | None, num_classes: int, in_channels: int | None):
    """(model, meta) from a checkpoint / prunekit model file, or a freshly built zoo model."""
    from prunekit.models import create
    from prunekit.train.job import load_trained_model

    if checkpoint is not None:
        net, meta = load_trained_model(checkpoint)
        return net, meta
    if model is None:
        raise ConfigError("give --model NAME (see `prunekit models`) or --checkpoint FILE")
    kwargs = {} if model.startswith(("tv:", "timm:")) or in_channels is None else {"in_channels": in_channels}
    return create(model, num_classes=num_classes, **kwargs), {"model": {"name": model, "num_classes": num_classes,
                                                                       "kwargs": kwargs}}


@prune_app.command("l1")
def prune_l1(
    model: Optional[str] = typer.Option(None, help="Zoo model name (ignored with --checkpoint)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Trainer checkpoint (last.ckpt) or prunekit model file."),
    ratio: float = typer.Option(..., help="Fraction of channels removed from every prunable group, in [0, 1)."),
    importance: str = typer.Option("l1", help="l1 | l2 | bn_scale | random."),
    round_to: int = typer.Option(1, help="Round every pruned width to a multiple of this (8 suits GPUs)."),
    min_channels: int = typer.Option(1, help="Never keep fewer channels in a group."),
    num_classes: int = typer.Option(10),
    input_size: Optional[str] = typer.Option(None, help="C,H,W [default: the model's own]."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for model.safetensors and summary.json."),
):
    """Magnitude pruning without fine-tuning: the simplest method and every paper's baseline."""
    import torch

    import prunekit
    from prunekit.graph import DependencyGraph
    from prunekit.report import widths_table

    net, meta = _source_model(model, checkpoint, num_classes, None)
    name = meta.get("model", {}).get("name", model or "model")
    size = _example_size(meta, name, input_size)
    x = torch.randn(1, *size)
    net.eval()
    before = prunekit.count(net, x)
    g0 = DependencyGraph(net, x)
    widths0 = {g.name: g.size for g in g0.prunable_groups}
    prunekit.prune(net, x, ratio=ratio, importance=importance, round_to=round_to, min_channels=min_channels)
    after = prunekit.count(net, x)
    widths1 = DependencyGraph(net, x).widths()
    output.mkdir(parents=True, exist_ok=True)
    prunekit.save(net, output / "model.safetensors", example_inputs=x,
                  metadata={**meta, "pruned": {"method": "l1", "ratio": ratio, "importance": importance,
                                               "round_to": round_to}})
    summary = {"model": name, "ratio": ratio, "importance": importance, "round_to": round_to,
               "params": [before.params, after.params], "macs": [before.macs, after.macs],
               "widths": {"before": widths0, "after": {k: widths1.get(k, v) for k, v in widths0.items()}}}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(widths_table(widths0, summary["widths"]["after"]))
    console.print(results_table(f"prune l1 · {name} · ratio {ratio}", [
        ("params", f"{before.params / 1e6:.3f} M → {after.params / 1e6:.3f} M"),
        ("MACs / image", f"{before.macs / 1e6:.2f} M → {after.macs / 1e6:.2f} M "
                         f"({100 * after.macs / before.macs:.1f}% kept)"),
        ("model file", str(output / "model.safetensors"))]))


def _example_size(meta: dict[str, Any], name: str, text: str | None) -> tuple[int, ...]:
    """Input size: --input-size, else what the checkpoint / model file recorded, else the zoo default."""
    if text or not meta.get("input_shape"):
        return input_size_option(text, name)
    return tuple(meta["input_shape"])


# ----------------------------------------------------------------------------- paper methods
def _phase_config(recipe: dict[str, Any], key: str, epochs: int | None, lr: float | None, progress: bool):
    from prunekit.train import TrainConfig

    d = dict(recipe.get(key, {}))
    if epochs is not None:
        d["epochs"] = epochs
    if lr is not None:
        d["lr"] = lr
    d["progress"] = progress
    if d.get("epochs", 1) == 0:
        return None
    return TrainConfig.from_dict(d)


def _report(result, output: Path, *, name: str, data: str, recipe: dict[str, Any], device: str,
            schedule: dict[str, Any], full: bool) -> None:
    for t in result.tables():
        console.print(t)
    result.write_record(output / "result.json", name=f"{result.method}-{name}-{data}", model_name=name,
                              dataset=data, reduced=not full, device=device, schedule=schedule)
    for k, v in result.artifacts.items():
        err_console.print(f"{k}: {v}")


def _is_full_run(recipe: dict[str, Any], data: str, subset: int | None, phases: dict[str, Any]) -> bool:
    """A full run: real CIFAR, the whole train set, and every phase at least as long as the paper's
    (``paper_epochs`` in the recipe)."""
    paper = recipe.get("paper_epochs") or {}
    if data not in ("cifar10", "cifar100") or subset or not paper:
        return False
    return all((phases.get(k) or 0) >= v for k, v in paper.items())


@prune_app.command("slimming")
def prune_slimming(
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe (see recipes/slimming/); options override it."),
    model: Optional[str] = typer.Option(None, help="Zoo model to train from scratch with sparsity."),
    checkpoint: Optional[Path] = typer.Option(None, help="Start from this trained checkpoint / model file."),
    data: Optional[str] = typer.Option(None, help="digits (default) | cifar10 | cifar100 | synthetic | imagefolder."),
    data_dir: Optional[str] = typer.Option(None),
    sparsity: Optional[float] = typer.Option(None, help="L1 strength s on BN γ (paper: 1e-4 VGG, 1e-5 ResNet)."),
    ratio: Optional[float] = typer.Option(None, help="Fraction of prunable channels removed (global threshold)."),
    target_macs: Optional[float] = typer.Option(None, help="Instead of --ratio: fraction of MACs kept."),
    passes: Optional[int] = typer.Option(None, help="Sparsity → prune → fine-tune passes."),
    sparsity_epochs: Optional[int] = typer.Option(None, help="0 skips sparsity training."),
    finetune_epochs: Optional[int] = typer.Option(None, help="0 skips fine-tuning."),
    lr: Optional[float] = typer.Option(None, help="Peak lr of both training phases."),
    batch_size: Optional[int] = typer.Option(None),
    val_split: Optional[float] = typer.Option(None, help="Held out of the train set [default: 0.1]."),
    train_subset: Optional[int] = typer.Option(None),
    min_channels: Optional[int] = typer.Option(None),
    max_layer_ratio: Optional[float] = typer.Option(None, help="At most this fraction of a group is removed."),
    round_to: Optional[int] = typer.Option(None),
    device: str = typer.Option("auto"),
    output: Path = typer.Option(Path("runs/slimming"), "--output", "-o",
                                help="Run folder; re-running the same command resumes it."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Network Slimming: L1 on BN γ, global threshold, physical removal, fine-tune (resumable)."""
    from prunekit.methods import NetworkSlimming, SlimmingConfig

    rc = load_recipe(recipe)
    from prunekit.methods.setup import prepare_run

    dev = resolve_device(device)
    net, loaders, name = prepare_run(rc, model=model, checkpoint=checkpoint, data=data, data_dir=data_dir,
                                     batch_size=batch_size, val_split=val_split, train_subset=train_subset,
                                     device=dev)
    data = loaders.spec.name
    opts = dict(rc.get("slimming", {}))
    given = dict(sparsity=sparsity, passes=passes, min_channels=min_channels, max_layer_ratio=max_layer_ratio,
                 round_to=round_to)
    opts.update({k: v for k, v in given.items() if v is not None})
    if ratio is not None or target_macs is not None:
        opts["ratio"], opts["target_macs"] = ratio, target_macs
    sp = _phase_config(rc, "sparsity_train", sparsity_epochs, lr, progress)
    ft = _phase_config(rc, "finetune", finetune_epochs, lr, progress)
    config = SlimmingConfig(**opts, sparsity_train=sp, finetune=ft)
    result = NetworkSlimming(config).run(net, loaders, output, device=dev, log=err_console.print)
    phases = {"sparsity_epochs": sp.epochs if sp else 0, "finetune_epochs": ft.epochs if ft else 0}
    schedule = {**phases, "passes": config.passes, "batch_size": loaders.train.batch_size,
                "sparsity": config.sparsity, "ratio": config.ratio, "target_macs": config.target_macs}
    _report(result, output, name=name, data=data, recipe=rc, device=dev, schedule=schedule,
            full=_is_full_run(rc, data, train_subset or rc.get("train_subset"), phases))


@prune_app.command("gate-decorator")
def prune_gate_decorator(
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe (see recipes/gate_decorator/); options override it."),
    model: Optional[str] = typer.Option(None, help="Zoo model (only sensible for smoke tests without --checkpoint)."),
    checkpoint: Optional[Path] = typer.Option(None, help="The trained baseline: last.ckpt or a prunekit model file."),
    data: Optional[str] = typer.Option(None, help="digits (default) | cifar10 | cifar100 | synthetic | imagefolder."),
    data_dir: Optional[str] = typer.Option(None),
    target_macs: Optional[float] = typer.Option(None, help="Fraction of MACs kept (e.g. 0.4 = -60% FLOPs)."),
    target_params: Optional[float] = typer.Option(None, help="Fraction of parameters kept."),
    prune_per_tick: Optional[float] = typer.Option(None, help="Fraction (<1) of remaining channels, or a count."),
    ticks_per_round: Optional[int] = typer.Option(None, help="T: ticks between tocks."),
    sparsity: Optional[float] = typer.Option(None, help="λ of the L1 penalty on the gates during tocks."),
    floor_ratio: Optional[float] = typer.Option(None, help="Every group keeps at least this fraction."),
    batch_size: Optional[int] = typer.Option(None),
    val_split: Optional[float] = typer.Option(None, help="Held out of the train set [default: 0.1]."),
    train_subset: Optional[int] = typer.Option(None),
    device: str = typer.Option("auto"),
    output: Path = typer.Option(Path("runs/gate-decorator"), "--output", "-o",
                                help="Run folder; re-running the same command resumes it."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Gate Decorator: gated BN, global Taylor ranking, Tick-Tock to a MACs/params target (resumable)."""
    from prunekit.methods.gate_decorator import run_recipe

    rc = dict(load_recipe(recipe))
    rc.setdefault("method", "gate_decorator")
    for key, value in (("model", model), ("data", data), ("batch_size", batch_size), ("val_split", val_split)):
        if value is not None:
            rc[key] = value
    if target_macs is None and target_params is None and "gate_decorator" not in rc:
        raise ConfigError("give --target-macs or --target-params (or a --recipe)")
    per_tick = int(prune_per_tick) if prune_per_tick is not None and prune_per_tick >= 1 else prune_per_tick
    dev = resolve_device(device)
    quiet = {"progress": progress}
    result, loaders = run_recipe(rc, output, checkpoint=checkpoint, data_dir=data_dir, device=dev,
                                 train_subset=train_subset, log=err_console.print, target_macs=target_macs,
                                 target_params=target_params, prune_per_tick=per_tick,
                                 ticks_per_round=ticks_per_round, sparsity=sparsity, floor_ratio=floor_ratio,
                                 tick=quiet, tock=quiet, finetune=quiet if rc.get("finetune", {}) is not None else None)
    name = rc.get("model") or (_checkpoint_model_name(checkpoint) if checkpoint else "model")
    data_name = rc.get("data", "digits")
    stages = result.details["stages"]
    schedule = {"batch_size": loaders.train.batch_size, **stages, **rc.get("gate_decorator", {})}
    _report(result, output, name=name, data=data_name, recipe=rc, device=dev, schedule=schedule,
            full=_is_full_run(rc, data_name, train_subset or rc.get("train_subset"),
                              {"finetune_epochs": stages["finetune_epochs"]}))


def _checkpoint_model_name(path: Path) -> str:
    """The zoo name a checkpoint or model file records (``model`` if it records none)."""
    from prunekit.train.job import load_trained_model

    return load_trained_model(path)[1].get("model", {}).get("name", "model")
