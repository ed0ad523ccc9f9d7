"""``prunekit lut build|check``: NetAdapt's latency look-up table for a model on a target, and its error report.

``build`` measures every entry the on-disk cache lacks (progress bar) and optionally writes the table as JSON;
``check`` prints predicted vs directly measured latency on random width configurations and on one-group changes,
beside the machine's own noise. Both share the cache, so ``check`` after ``build`` measures only the networks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prunekit.cli.common import console, err_console, model_from_arg

lut_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="Latency look-up tables (NetAdapt): build one for a model and target, check its error.")

_TARGET = "cpu (torch eager, pinned threads) | onnxruntime (ONNX Runtime CPU) | cuda (CUDA graphs)."


def _table(model: str, num_classes: int, input_size: str | None, device: str, batch_size: int | None,
           dtype: str | None, threads: int, clock: str, round_to: int, min_channels: int, repeats: int, warmup: int,
           cache_dir: Path | None, progress: bool, build: bool = True):
    import torch

    from prunekit.cost.lut import LatencyTable, make_backend
    from prunekit.graph import DependencyGraph

    net, size = model_from_arg(model, num_classes, input_size)
    backend = make_backend(device, batch_size=batch_size, dtype=dtype, threads=threads, warmup=warmup,
                           repeats=repeats, clock=clock)
    graph = DependencyGraph(net, torch.zeros(2, *size))
    return LatencyTable(graph, backend, round_to=round_to, min_channels=min_channels, cache_dir=cache_dir,
                        progress=progress, log=err_console.print, build=build)


_MODEL = typer.Option(..., help="Zoo model name (see `prunekit models`), a Trainer checkpoint or a model file.")
_NUM_CLASSES = typer.Option(10, help="Classes of a zoo model.")
_INPUT = typer.Option(None, help="C,H,W [default: the model's own, e.g. 3,32,32].")
_DEVICE = typer.Option("cpu", help=f"Target: {_TARGET}")
_BATCH = typer.Option(None, help="Batch size of the measurements [default: 1 on the CPU targets, 128 on cuda].")
_DTYPE = typer.Option(None, help="float32 | bfloat16 | float16 [default: float32 on CPU, bfloat16 on cuda].")
_THREADS = typer.Option(1, help="CPU threads to pin.")
_CLOCK = typer.Option("wall", help="wall | cpu (process CPU time: steadier on a loaded machine; cpu target only).")
_ROUND = typer.Option(8, help="Width grid step: entries for every multiple of it below a group's width.")
_MIN = typer.Option(1, help="Smallest group width on the grid.")
_REPEATS = typer.Option(50, help="Timed forwards per entry (the median is kept).")
_WARMUP = typer.Option(10, help="Warm-up forwards per entry.")
_CACHE = typer.Option(None, help="Cache folder [default: $PRUNEKIT_CACHE/lut or ~/.cache/prunekit/lut].")


@lut_app.command("build")
def build_cmd(model: str = _MODEL, num_classes: int = _NUM_CLASSES, input_size: Optional[str] = _INPUT,
              device: str = _DEVICE, batch_size: Optional[int] = _BATCH, dtype: Optional[str] = _DTYPE,
              threads: int = _THREADS, clock: str = _CLOCK, round_to: int = _ROUND, min_channels: int = _MIN,
              repeats: int = _REPEATS, warmup: int = _WARMUP, cache_dir: Optional[Path] = _CACHE,
              check: int = typer.Option(0, help="Also run the error report on this many random configurations."),
              output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the table (and report) "
                                                                                 "as JSON."),
              progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
    """Measure the table of MODEL on the target (entries the cache lacks) and print a summary."""
    table = _table(model, num_classes, input_size, device, batch_size, dtype, threads, clock, round_to,
                   min_channels, repeats, warmup, cache_dir, progress)
    s = table.stats
    console.print(f"{s['unique']} entries for {s['signatures']} layer calls ({s['measured']} measured, "
                  f"{s['cached']} from the cache {table.cache_path}); full network "
                  f"{table.full_measured.median_ms:.4f} ms, constant {table.constant:+.4f} ms")
    if table.unmeasured:
        console.print("left to the constant: " + ", ".join(f"{k} ({v})" for k, v in table.unmeasured.items()))
    out = {"table": table.to_dict()}
    if check:
        report = table.check(check)
        console.print(str(report))
        out["check"] = report.to_dict()
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(out, indent=1, default=str))
        err_console.print(f"table: {output}")


@lut_app.command("check")
def check_cmd(model: str = _MODEL, num_classes: int = _NUM_CLASSES, input_size: Optional[str] = _INPUT,
              device: str = _DEVICE, batch_size: Optional[int] = _BATCH, dtype: Optional[str] = _DTYPE,
              threads: int = _THREADS, clock: str = _CLOCK, round_to: int = _ROUND, min_channels: int = _MIN,
              repeats: int = _REPEATS, warmup: int = _WARMUP, cache_dir: Optional[Path] = _CACHE,
              configs: int = typer.Option(20, help="Random width configurations to measure."),
              seed: int = typer.Option(0, help="Seed of the configurations."),
              json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON."),
              progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
    """Predicted vs directly measured latency of MODEL (builds what the cache lacks first)."""
    table = _table(model, num_classes, input_size, device, batch_size, dtype, threads, clock, round_to,
                   min_channels, repeats, warmup, cache_dir, progress)
    report = table.check(configs, seed=seed)
    console.print(str(report))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=1, default=str))


__all__ = ["lut_app"]
