"""``prunekit export``: a trained or pruned model to ONNX, or to an inference-ready prunekit file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prunekit.cli.common import console, input_size_option, results_table
from prunekit.errors import ConfigError


def export_cmd(
    source: Path = typer.Argument(..., help="A prunekit model file (.safetensors) or Trainer checkpoint."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write (e.g. model.onnx)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx | inference (BN folded, channels_last)."),
    input_size: Optional[str] = typer.Option(None, help="C,H,W [default: recorded in the source file]."),
    opset: int = typer.Option(17),
    fold_bn: bool = typer.Option(True, "--fold-bn/--no-fold-bn", help="Fold BatchNorm into the convolutions."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare onnxruntime's output with torch's."),
):
    """Export a model: ONNX (checked with onnxruntime) or prunekit's inference form."""
    import torch

    from prunekit.io import export_onnx, for_inference, save
    from prunekit.app.training import load_trained_model

    if format not in ("onnx", "inference"):
        raise ConfigError(f"--format {format!r} must be onnx or inference")
    net, meta = load_trained_model(source)
    name = meta.get("model", {}).get("name", "model")
    size = input_size_option(input_size, name) if input_size or not meta.get("input_shape") \
        else tuple(meta["input_shape"])
    x = torch.randn(2, *size)
    net.eval()
    if format == "onnx":
        path = export_onnx(net, x, output, opset=opset, fold_bn=fold_bn, verify=verify)
    else:
        path = save(for_inference(net, x, fold_bn=fold_bn), output, example_inputs=x, metadata=meta)
    console.print(results_table(f"export · {format}", [("source", str(source)), ("input", "x".join(map(str, size))),
                                                       ("written", str(path)),
                                                       ("verified", "yes" if verify and format == "onnx" else "-")]))
