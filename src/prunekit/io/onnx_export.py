"""ONNX export through torch's TorchScript-based exporter (``dynamo=False``: no onnxscript needed)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, PrunekitError
from prunekit.io.artifact import ExampleInputs, _as_tuple, _flat
from prunekit.io.tracing import eval_mode


class ExportError(PrunekitError):
    """The exported model failed to export or does not reproduce the PyTorch outputs."""


def export_onnx(model: nn.Module, example_inputs: ExampleInputs, path: str | os.PathLike[str], *, opset: int = 17,
                dynamic_batch: bool = True, fold_bn: bool = False, verify: bool = False, rtol: float = 1e-4,
                input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None) -> Path:
    """Export ``model`` (in eval mode) to the ONNX file ``path``, written atomically; returns the path.

    ``dynamic_batch`` makes dim 0 of every input and output symbolic. ``fold_bn`` first applies the inference
    export's BN folding (the exporter's constant folding usually fuses BN too). ``verify`` runs the file in
    onnxruntime on ``example_inputs`` and raises ExportError if any output's relative error
    ``‖onnx − torch‖ / ‖torch‖`` exceeds ``rtol``.
    """
    inputs = _as_tuple(example_inputs)
    if not inputs:
        raise ConfigError("export_onnx needs example_inputs (a tensor or a tuple of tensors)")
    path = Path(path)
    if fold_bn:
        from prunekit.io.inference import for_inference

        model = for_inference(model, inputs, channels_last=False)
    with torch.no_grad(), eval_mode(model):
        expected = _flat(model(*inputs))
        in_names = list(input_names or (["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]))
        out_names = list(output_names or (["output"] if len(expected) == 1
                                          else [f"output{i}" for i in range(len(expected))]))
        if len(in_names) != len(inputs) or len(out_names) != len(expected):
            raise ConfigError(f"got {len(in_names)} input names for {len(inputs)} inputs and {len(out_names)} "
                              f"output names for {len(expected)} outputs")
        dynamic_axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=DeprecationWarning)
                warnings.simplefilter("ignore", category=FutureWarning)
                torch.onnx.export(model, inputs, tmp, opset_version=opset, dynamo=False, input_names=in_names,
                                  output_names=out_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
            if verify:
                check_onnx(tmp, inputs, expected, rtol=rtol)
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, (PrunekitError, KeyboardInterrupt)):
                raise
            if isinstance(exc, Exception):
                first_line = (str(exc).strip().splitlines() or [""])[0]  # the exporter appends whole IR dumps
                raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: "
                                  f"{first_line}") from exc
            raise
    return path


def check_onnx(path: str | os.PathLike[str], inputs: Sequence[torch.Tensor], expected: Sequence[torch.Tensor], *,
               rtol: float = 1e-4) -> list[float]:
    """Run ``path`` in onnxruntime (CPU); return each output's relative error, ExportError above ``rtol``."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("verifying an ONNX export needs onnxruntime: pip install 'prunekit[onnx]'") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    outputs = session.run(None, feeds)
    if len(outputs) != len(expected):
        raise ExportError(f"{path}: onnxruntime returned {len(outputs)} outputs, PyTorch {len(expected)}")
    errors = []
    for i, (got, ref) in enumerate(zip(outputs, expected)):
        ref64 = ref.detach().cpu().double()
        got64 = torch.from_numpy(got).double()
        if got64.shape != ref64.shape:
            raise ExportError(f"{path}: output {i} has shape {tuple(got64.shape)}, PyTorch {tuple(ref64.shape)}")
        err = float((got64 - ref64).norm() / ref64.norm().clamp_min(1e-12))
        errors.append(err)
        if not err <= rtol:
            raise ExportError(f"{path}: output {i} differs from PyTorch by relative error {err:.3g} > {rtol:g}")
    return errors
