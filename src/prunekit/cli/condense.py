"""``prunekit condense convert``: a trained CondenseNet (learned group convs) to its inference form.

The training form's masked 1x1 convs compute densely; the converted model reads only the connections that
condensation kept (index-select → BN → ReLU → group conv → channel shuffle) and computes the same function,
checked on a random batch before the file is written. ``--prune-classifier`` also drops half of each Linear's
inputs (upstream's CondensingLinear, no retraining: the function changes; the difference is printed).
``--latency-batch N`` times both forms on the CPU (interleaved, one thread, process CPU time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prunekit.cli.common import console, input_size_option, results_table
from prunekit.errors import ConfigError

condense_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                           help="CondenseNet tools: convert a trained learned-group-conv model for inference.")


@condense_app.callback()
def condense_main() -> None:
    """CondenseNet tools: convert a trained learned-group-conv model for inference."""


@condense_app.command("convert")
def convert_cmd(
    source: Path = typer.Argument(..., help="A trained model with learned group convs: a prunekit model file "
                                            "(.safetensors) or a Trainer checkpoint (last.ckpt)."),
    output: Path = typer.Option(..., "--output", "-o", help="The converted prunekit model file to write."),
    prune_classifier: bool = typer.Option(False, "--prune-classifier/--no-prune-classifier",
                                          help="Also keep only --classifier-keep of each Linear's inputs (largest "
                                               "weight-column L1 norm; upstream does it; changes the function)."),
    classifier_keep: float = typer.Option(0.5, help="Fraction of the classifier's inputs kept."),
    onnx: Optional[Path] = typer.Option(None, help="Also export the converted model to this ONNX file (verified "
                                                   "with onnxruntime)."),
    input_size: Optional[str] = typer.Option(None, help="C,H,W [default: recorded in the source file]."),
    atol: float = typer.Option(1e-4, help="Largest |difference| of the outputs accepted (without "
                                          "--prune-classifier)."),
    latency_batch: int = typer.Option(0, min=0, help="Also time the training and the converted form on the CPU at "
                                                     "this batch size (0: do not)."),
):
    """Convert learned group convolutions to index-select + group conv + shuffle (same function)."""
    import copy

    import torch

    from prunekit.app.training import load_trained_model
    from prunekit.cost import count, format_count
    from prunekit.io import export_onnx, save
    from prunekit.methods.condensenet import convert, learned_group_convs

    net, meta = load_trained_model(source)
    layers = learned_group_convs(net)
    if not layers:
        raise ConfigError(f"{source}: the model has no LearnedGroupConv layer (nothing to convert)")
    name = meta.get("model", {}).get("name", "model")
    size = input_size_option(input_size, name) if input_size or not meta.get("input_shape") \
        else tuple(meta["input_shape"])
    net.eval()
    x = torch.randn(2, *size)
    partial = sum(int(m.stage) < m.final_stage for _, m in layers)
    before = count(net, x)
    source_net = copy.deepcopy(net) if latency_batch else None
    with torch.no_grad():
        y0 = net(x)
    net = convert(net)
    with torch.no_grad():
        diff = float((net(x) - y0).abs().max())
    if diff > atol:
        raise ConfigError(f"the converted model differs from the source by {diff:.3g} > --atol {atol:g}")
    if prune_classifier:
        net = convert(net, prune_classifier=True, classifier_keep=classifier_keep)
        with torch.no_grad():
            diff_cls = float((net(x) - y0).abs().max())
    after = count(net, x)
    meta = {**meta, "condensed": {"source": str(source), "prune_classifier": prune_classifier,
                                  "classifier_keep": classifier_keep if prune_classifier else None}}
    path = save(net, output, example_inputs=x, metadata=meta)
    rows = [("source", str(source)), ("learned group convs", f"{len(layers)}" + (f" ({partial} not fully condensed)"
                                                                               if partial else "")),
            ("MACs", f"{format_count(before.macs)} → {format_count(after.macs)}"),
            ("params", f"{format_count(before.params)} → {format_count(after.params)}"),
            ("max |Δ output| (conversion)", f"{diff:.2g}")]
    if prune_classifier:
        rows.append(("max |Δ output| (classifier pruned)", f"{diff_cls:.3g}"))
    if source_net is not None:
        from prunekit.cost import compare_latency, speedup

        lat = compare_latency({"training": source_net, "converted": net}, torch.randn(latency_batch, *size),
                              threads=1, clock="cpu")
        sp = speedup(lat["training"], lat["converted"])
        rows.append((f"CPU latency bs{latency_batch} (1 thread, CPU time)",
                     f"{lat['training'].median_ms:.3g} ms → {lat['converted'].median_ms:.3g} ms"
                     + (f" ({sp:.2f}×)" if sp else " (noisy: not compared)")))
    rows.append(("written", str(path)))
    if onnx is not None:
        rows.append(("onnx (verified)", str(export_onnx(net, x, onnx, verify=True))))
    console.print(results_table("condense · convert", rows))


__all__ = ["condense_app", "convert_cmd"]
