"""Saving, loading and exporting (pruned) models: prunekit's file format, ONNX and the inference export."""

from prunekit.io.artifact import (FORMAT, WIDTHS_FORMAT, load, read_metadata, read_widths_file, save,
                                  write_widths_file)
from prunekit.io.codec import register_function
from prunekit.io.inference import drop_noops, fold_batchnorm, for_inference
from prunekit.io.onnx_export import ExportError, check_onnx, export_onnx
from prunekit.io.specs import register_module_spec

__all__ = ["FORMAT", "WIDTHS_FORMAT", "ExportError", "read_widths_file", "write_widths_file",
           "check_onnx", "drop_noops", "export_onnx", "fold_batchnorm", "for_inference",
           "load", "read_metadata", "register_function", "register_module_spec", "save"]
