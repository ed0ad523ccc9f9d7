"""The main typer app: models · train · eval · profile · quickstart, plus the prune and export commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from prunekit.cli.common import (console, err_console, load_recipe, model_from_arg, parse_kv, resolve_device,
                                 results_table)
from prunekit.cli.condense import condense_app
from prunekit.cli.export import export_cmd
from prunekit.cli.lut import lut_app
from prunekit.cli.prune import prune_app, register_commands
from prunekit.errors import ConfigError, PrunekitError

app = typer.Typer(name="prunekit", no_args_is_help=True, rich_markup_mode=None, add_completion=False,
                  help="Structured channel pruning for PyTorch CNNs: train, prune, profile, export.")
if len(sys.argv) > 1 and sys.argv[1] == "prune":  # the method commands import torch: only when asked for
    register_commands()
app.add_typer(prune_app, name="prune")
app.add_typer(condense_app, name="condense")
app.add_typer(lut_app, name="lut")
app.command("export")(export_cmd)


# ---------------------------------------------------------------------------- models
@app.command("models")
def models_cmd(all_: bool = typer.Option(False, "--all", help="Also list torchvision models (tv:<name>).")):
    """List the model names `--model` accepts (one per line when piped)."""
    from prunekit.models import get_entry, list_models

    names = list_models(include_external=all_)
    if not sys.stdout.isatty():
        print("\n".join(names))
        return
    t = Table("name", "input", "description")
    for n in names:
        if n.startswith("tv:"):
            t.add_row(n, "3x224x224", "torchvision")
        else:
            e = get_entry(n)
            t.add_row(n, "x".join(map(str, e.input_size)), e.description)
    console.print(t)


# ---------------------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    model: Optional[str] = typer.Option(None, help="Model name (see `prunekit models`), e.g. resnet56."),
    data: Optional[str] = typer.Option(None, help="Dataset: digits (offline default), cifar10, cifar100, "
                                                  "imagefolder, synthetic."),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset folder (CIFAR: npz layout or torchvision's)."),
    download: bool = typer.Option(False, help="Download the dataset into --data-dir (needs internet)."),
    output: Path = typer.Option(Path("runs/train"), "--output", "-o", help="Run folder: checkpoint + logs."),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe (model, data, batch_size, train: {...}); "
                                                     "command-line options override it."),
    epochs: Optional[int] = typer.Option(None, help="Epochs [default: 160]."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per process [default: 128]."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate [default: 0.1]."),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum [default: 0.9]."),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov", help="Nesterov momentum [default: off]."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", "--wd",
                                                 help="L2 weight decay [default: 5e-4]."),
    schedule: Optional[str] = typer.Option(None, help="constant | step | cosine | onecycle | triangular."),
    milestones: Optional[str] = typer.Option(None, help="Epochs where the step schedule divides the lr, "
                                                        "e.g. 80,120 [default: 50%,75%]."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear lr warm-up epochs (fractional ok) [default: 0]."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the loss [default: 0]."),
    precision: Optional[str] = typer.Option(None, help="auto (bf16 on CUDA) | fp32 | bf16 | fp16."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last"),
    val_split: Optional[float] = typer.Option(None, help="Fraction of the TRAIN set held out for validation "
                                                         "[default: 0]."),
    train_subset: Optional[int] = typer.Option(None, help="Use only N training images (quick runs)."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Cap batches per epoch (quick runs)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimizer steps in all (the epoch it falls in "
                                                       "ends there; the lr schedule stays that of --epochs, so the "
                                                       "run is the prefix of the longer one) [default: no limit]."),
    seed: Optional[int] = typer.Option(None, help="Seed of weights, data order and augmentation [default: 0]."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    resume: bool = typer.Option(False, help="Continue from OUTPUT/last.ckpt."),
    tensorboard: bool = typer.Option(False, help="Also write TensorBoard logs to OUTPUT/tb."),
    model_arg: Optional[list[str]] = typer.Option(None, help="Model keyword argument key=value (repeatable)."),
    init: Optional[Path] = typer.Option(None, help="Start from this model file or checkpoint (architecture and "
                                                   "weights), e.g. fine-tune a pruned model.safetensors."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for training [default: torch's]."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar (epoch lines are always "
                                                                         "printed)."),
):
    """Train a model (torchrun-ready: `torchrun --nproc_per_node N -m prunekit train ...`)."""
    from prunekit.train import distributed
    from prunekit.app.training import TrainJob, run_training

    import torch

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads {threads} must be >= 1")
        torch.set_num_threads(threads)
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps {max_steps} must be >= 1")
    if init is not None and not init.is_file():
        raise ConfigError(f"--init {str(init)!r} does not exist")
    if resume and not (output / "last.ckpt").is_file():
        raise ConfigError(f"--resume: there is no checkpoint {output / 'last.ckpt'} to resume from (drop --resume "
                          "to start a new run)")
    rc = load_recipe(recipe)
    train_over = dict(epochs=epochs, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                      schedule=schedule, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
                      precision=precision, channels_last=channels_last, steps_per_epoch=steps_per_epoch,
                      max_steps=max_steps, seed=seed, tensorboard=tensorboard or None, progress=progress,
                      milestones=_int_list(milestones, "--milestones"),
                      checkpoint_dir=output, resume=resume)
    model_args = {**rc.get("model_args", {}), **parse_kv(model_arg, "--model-arg")}
    job = TrainJob.from_recipe(rc, model=model, data=data, data_dir=str(data_dir) if data_dir else None,
                               batch_size=batch_size, val_split=val_split, train_subset=train_subset,
                               download=download or None, model_args=model_args, train=train_over,
                               init=str(init) if init else None)
    dev = resolve_device(device)
    out = run_training(job, device=dev, extra_meta={"command": " ".join(sys.argv)}, log=err_console.print)
    if distributed.current().is_main:
        final = out.fit.final
        summary = {"model": job.model, "data": job.data, "epochs": job.config.epochs, "test_top1": out.test.top1,
                   "test_loss": out.test.loss, "final": final, "wall_seconds": out.wall_seconds,
                   "checkpoint": str(out.trainer.checkpoint_path)}
        _write_text(output / "summary.json", json.dumps(summary, indent=2))
        rows = [("model", job.model), ("dataset", job.data), ("epochs", str(job.config.epochs)),
                ("train top-1", f"{final.get('train_top1', float('nan')):.2f}%")]
        if "val_top1" in final:
            rows.append(("val top-1", f"{final['val_top1']:.2f}%"))
        rows += [("test top-1", f"{out.test.top1:.2f}%"), ("checkpoint", str(out.trainer.checkpoint_path))]
        console.print(results_table("training done", rows))


def _int_list(text: str | None, option: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} {text!r} must be integers separated by commas, e.g. 80,120") from None


# ---------------------------------------------------------------------------- eval
@app.command("eval")
def eval_cmd(
    source: Path = typer.Argument(..., help="A checkpoint written by `prunekit train` (last.ckpt) or a prunekit model "
                                            "file (.safetensors, e.g. a pruned model)."),
    data: Optional[str] = typer.Option(None, help="Dataset [default: the one the file records]."),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset folder [default: the one the file records]."),
    split: str = typer.Option("test", help="test | val."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
):
    """Evaluate a checkpoint or model file on its dataset's test (or validation) split."""
    import torch

    from prunekit.app.training import load_trained_model
    from prunekit.data import build_data
    from prunekit.train import evaluate

    if split not in ("test", "val"):
        raise ConfigError(f"--split {split!r} must be test or val")
    net, meta = load_trained_model(source)
    dev = resolve_device(device)
    d = dict(meta.get("data") or {})
    name = data or d.get("name")
    if not name:
        raise ConfigError(f"{source} does not record its dataset: give --data (and --data-dir)")
    args = d.get("args", {}) if name == d.get("name") else {}
    loaders = build_data(name, data_dir=str(data_dir) if data_dir else (d.get("data_dir") or None),
                         batch_size=d.get("batch_size", 128), val_split=d.get("val_split", 0.0),
                         seed=d.get("seed", 0), device=dev, **args)
    loader = loaders.test if split == "test" else loaders.val
    if loader is None:
        raise ConfigError("--split val: this run had no validation split (val_split=0)")
    res = evaluate(net.to(dev), loader, device=torch.device(dev))
    rows = [("model", meta.get("model", {}).get("name", "model")), ("dataset", name)]
    if "epoch" in meta:
        rows.append(("epoch", str(meta["epoch"])))
    rows += [("samples", str(res.samples)), ("top-1", f"{res.top1:.2f}%"), ("top-5", f"{res.top5:.2f}%"),
             ("loss", f"{res.loss:.4f}")]
    console.print(results_table(f"{source} · {split}", rows))


# ---------------------------------------------------------------------------- profile
@app.command("profile")
def profile_cmd(
    model: str = typer.Option(..., help="Model name (see `prunekit models`), a checkpoint or a model file."),
    num_classes: int = typer.Option(10, help="Classes of a zoo model."),
    input_size: Optional[str] = typer.Option(None, help="C,H,W [default: the model's own or the file's, e.g. "
                                                        "3,32,32]."),
    batch: list[int] = typer.Option([1, 64], help="Batch sizes to time (repeatable)."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    threads: int = typer.Option(1, help="CPU threads to pin (1: comparable across a loaded machine)."),
    clock: str = typer.Option("wall", help="wall | cpu (this process's CPU time: steadier on a loaded machine)."),
    repeats: int = typer.Option(30, help="Timed forward passes per batch size."),
    budget: float = typer.Option(20.0, help="At most this many seconds of timing per batch size."),
    cuda_graph: bool = typer.Option(False, help="Time CUDA under a captured graph (small nets)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers as JSON."),
    groups: bool = typer.Option(False, "--groups", help="Also list the channel groups and the coverage: the "
                                                        "share of conv output channels that can be pruned."),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Time the model (off: counts only)."),
):
    """Params, MACs (per image), latency (median, p10–p90, machine load) and peak memory; `--groups`: the
    channel groups."""
    import torch

    from prunekit.cost import count, measure_latency, peak_memory

    if any(b < 1 for b in batch):
        raise ConfigError(f"--batch {min(batch)}: batch sizes must be >= 1")
    if threads < 1:
        raise ConfigError(f"--threads {threads} must be >= 1")
    if clock not in ("wall", "cpu"):
        raise ConfigError(f"--clock {clock!r} must be wall or cpu")
    net, size = model_from_arg(model, num_classes, input_size)
    dev = resolve_device(device)
    cost = count(net, torch.randn(1, *size))
    rows = [("input", "x".join(map(str, size))), ("params", f"{cost.params / 1e6:.3f} M"),
            ("MACs / image", f"{cost.macs / 1e6:.2f} M")]
    record: dict[str, Any] = {"model": model, "input_size": list(size), "params": cost.params,
                              "macs": cost.macs, "device": dev, "latency_ms": {}, "peak_memory_bytes": {}}
    if groups:  # structure first: it is instant, timing is not
        record["coverage"] = _print_groups(net, torch.randn(1, *size))
    net = net.to(dev)
    for b in batch if latency else []:
        x = torch.randn(b, *size, device=dev)
        lat = measure_latency(net, x, device=dev, threads=threads, repeats=repeats, cuda_graph=cuda_graph,
                              clock=clock if dev == "cpu" else "wall", budget_s=budget)
        mem = peak_memory(net, x, device=dev)
        rows.append((f"latency bs{b}", str(lat)))
        rows.append((f"peak memory bs{b}", f"{mem / 2**20:.1f} MiB"))
        record["latency_ms"][f"bs{b}"] = {"median": lat.median_ms, "p10": lat.p10_ms, "p90": lat.p90_ms,
                                          "noisy": lat.noisy, "loadavg": lat.loadavg}
        record["peak_memory_bytes"][f"bs{b}"] = mem
    console.print(results_table(f"profile · {model}", rows))
    if json_out:
        _write_text(json_out, json.dumps(record, indent=2))


def _write_text(path: Path, text: str) -> None:
    """Write a small output file; a directory or an unwritable place is one clear error."""
    try:
        path.write_text(text)
    except OSError as e:
        raise ConfigError(f"cannot write {str(path)!r}: {e.strerror or e}") from None


def _print_groups(net, x) -> dict[str, Any]:
    """Table of ChannelGroups (name, channels, members, BNs, prunable / why not) and the coverage line."""
    from prunekit.graph import DependencyGraph

    graph = DependencyGraph(net, x)
    t = Table("group", "channels", "members", "BNs", "prunable")
    for g in graph.groups:
        t.add_row(g.name, str(g.size), str(len(g.members)), str(len(g.bn_layers)),
                  "yes" if g.prunable else f"no: {g.reason}")
    console.print(t)
    cov = graph.coverage()
    console.print(str(cov))
    return {"ratio": cov.ratio, "prunable": cov.prunable, "total": cov.total, "unprunable": cov.unprunable}


# ---------------------------------------------------------------------------- quickstart
@app.command("quickstart")
def quickstart_cmd(
    output: Path = typer.Option(Path("runs/quickstart"), "--output", "-o", help="Run folder (re-running reuses it)."),
    epochs: int = typer.Option(30, help="Baseline training epochs."),
    sparsity_epochs: int = typer.Option(10, help="Network Slimming's sparsity fine-tuning epochs."),
    finetune_epochs: int = typer.Option(10, help="Fine-tuning epochs after pruning (uniform L1 gets both)."),
    target_macs: float = typer.Option(0.5, help="Fraction of the MACs both pruned networks keep."),
    seed: int = typer.Option(0, help="Seed of data order and initial weights."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
):
    """The offline demo: a small CNN on scikit-learn's real 8x8 digits pruned to half its MACs by Network
    Slimming and by uniform L1, side by side (CPU, about 2 minutes)."""
    from prunekit.app.quickstart import run_quickstart

    result = run_quickstart(output, epochs=epochs, sparsity_epochs=sparsity_epochs, finetune_epochs=finetune_epochs,
                            target_macs=target_macs, seed=seed, progress=progress, log=err_console.print)
    for t in result.tables():
        console.print(t)
    console.print(result.advice)


def main() -> None:
    """Console entry point: user errors print one clear line (no traceback) and exit with status 2; an
    interrupted run exits 130 (Ctrl-C) or 143 (SIGTERM) after saving its checkpoint."""
    import signal

    try:
        app()
    except PrunekitError as e:
        err_console.print(f"[bold red]error:[/] {e}")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise SystemExit(130) from None
    except OSError as e:  # unwritable output, a file where a folder should be, disk full...
        where = f" {e.filename!r}" if getattr(e, "filename", None) else ""
        err_console.print(f"[bold red]error:[/] cannot use{where}: {e.strerror or e}")
        raise SystemExit(2) from None
    except Exception as e:  # noqa: BLE001
        from prunekit.train import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            err_console.print(f"[yellow]{e}[/]")
            raise SystemExit(130 if e.signum == signal.SIGINT else 143) from None
        raise
