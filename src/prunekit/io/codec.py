"""JSON encoding of torch.fx graphs: node arguments, and the allow-list of functions a graph may call.

Every value a traced graph carries in a node's ``args``/``kwargs`` is written as JSON: plain JSON for
``None``/bools/ints/finite floats/strings/lists, and one-key tagged objects for everything else
(``{"$node": name}``, ``{"$tuple": [...]}``, ``{"$slice": [start, stop, step]}``, ``{"$dtype": "float32"}``, ...).
Functions are written by qualified name (``"torch.flatten"``, ``"operator.add"``) and resolved on load from an
allow-list only, so a file cannot make ``load`` call anything but tensor ops.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import keyword
import math
import operator
import re
import sys
import types
from functools import lru_cache
from typing import Any, Callable

import torch
import torch.fx

from prunekit.errors import PrunekitError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Attribute paths: module names may hold more than identifiers (RegNet's "block1-0"), but never a character that
# could end the string literal fx's code generator puts them in (``getattr(self.x, "block1-0")``).
_QUALNAME = re.compile(r"[\w\-+:@]+(\.[\w\-+:@]+)*")

# Pure arithmetic/comparison/indexing functions of the ``operator`` module that traced graphs use.
_OPERATOR_NAMES = (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "abs", "invert",
    "and_", "or_", "xor", "lshift", "rshift", "not_", "truth", "eq", "ne", "lt", "le", "gt", "ge",
    "getitem", "contains", "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul",
    "iand", "ior", "ixor", "ilshift", "irshift", "index", "concat",
)
# Namespaces whose ``__torch_function__``-overridable functions (= exactly what fx can record) are allowed.
_TORCH_NAMESPACES = ("torch", "torch.nn.functional", "torch.linalg", "torch.fft", "torch.special", "torch.functional")
# Tensor factories: not ``__torch_function__``-overridable (they take no tensor), so absent from the list above,
# yet fx records them when their sizes come from the traced input (``torch.arange(x.shape[-1])``: a positional
# encoding). Each only creates a tensor from numbers: no file, buffer, global setting or code object.
_TORCH_FACTORIES = (
    "zeros", "ones", "empty", "full", "arange", "range", "linspace", "logspace", "eye", "tensor", "as_tensor",
    "scalar_tensor", "empty_strided", "tril_indices", "triu_indices", "hann_window", "hamming_window",
    "bartlett_window", "blackman_window", "kaiser_window", "rand", "randn", "randint", "randperm", "normal",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
)
# Pure helpers that torchvision marks with ``torch.fx.wrap`` (so they appear as call_function targets).
_TORCHVISION_WRAPPED = (
    "torchvision.models.swin_transformer._patch_merging_pad",
    "torchvision.models.swin_transformer._get_relative_position_bias",
    "torchvision.models.swin_transformer.shifted_window_attention",
)
_EXTRA_FUNCTIONS: dict[str, Callable[..., Any]] = {}


class CodecError(PrunekitError):
    """A value or function of a traced graph that the prunekit file format cannot represent."""


def register_function(fn: Callable[..., Any], name: str | None = None) -> None:
    """Allow ``fn`` as a ``call_function`` target in saved models (e.g. a function wrapped with ``torch.fx.wrap``).

    It is stored under ``name`` (default: ``module.qualname``); the process that loads the file must register
    the same function under the same name before calling ``prunekit.load``.
    """
    key = name or f"{fn.__module__}.{fn.__qualname__}"
    if not _QUALNAME.fullmatch(key):
        raise CodecError(f"invalid function name {key!r}: expected a dotted Python name")
    _EXTRA_FUNCTIONS[key] = fn


@lru_cache(maxsize=1)
def _base_tables() -> tuple[dict[str, Callable[..., Any]], dict[int, str]]:
    """(name → function, id(function) → name) for torch's overridable functions, operator, math, getattr."""
    by_name: dict[str, Callable[..., Any]] = {}
    overridable = torch.overrides.get_overridable_functions()
    modules = {ns.__name__: ns for ns in overridable if isinstance(ns, types.ModuleType)}
    for ns_name in _TORCH_NAMESPACES:
        ns = modules.get(ns_name)
        for fn in overridable.get(ns, ()) if ns is not None else ():
            fname = getattr(fn, "__name__", None)
            if fname and not fname.startswith("_") and getattr(ns, fname, None) is fn:
                by_name.setdefault(f"{ns_name}.{fname}", fn)
    ignored = torch.overrides.get_ignored_functions()
    for fname in _TORCH_FACTORIES:
        fn = getattr(torch, fname, None)
        if callable(fn) and (fn in ignored or f"torch.{fname}" in by_name):
            by_name.setdefault(f"torch.{fname}", fn)
    by_name["torch._assert"] = torch._assert
    for fname in _OPERATOR_NAMES:
        by_name[f"operator.{fname}"] = getattr(operator, fname)
    for fname in dir(math):
        if not fname.startswith("_") and callable(getattr(math, fname)):
            by_name[f"math.{fname}"] = getattr(math, fname)
    by_name["builtins.getattr"] = builtins.getattr
    return by_name, _ids(by_name)


def _ids(by_name: dict[str, Callable[..., Any]]) -> dict[int, str]:
    by_id: dict[int, str] = {}
    for name, fn in by_name.items():
        by_id.setdefault(id(fn), name)
    return by_id


def _optional_functions(import_missing: bool) -> dict[str, Callable[..., Any]]:
    """torchvision's public ops and fx-wrapped helpers. When saving, a model can only call them if their module
    is already imported, so nothing is imported then (``import_missing=False``): importing torchvision.models
    takes seconds."""
    out: dict[str, Callable[..., Any]] = {}

    def module(name: str) -> types.ModuleType | None:
        if name in sys.modules or import_missing:
            try:
                return importlib.import_module(name)
            except Exception:  # torchvision is optional
                return None
        return None

    tv_ops = module("torchvision.ops")
    for fname in getattr(tv_ops, "__all__", ()):
        obj = getattr(tv_ops, fname, None)
        if inspect.isfunction(obj):
            out[f"torchvision.ops.{fname}"] = obj
    for qualname in _TORCHVISION_WRAPPED:
        module_name, _, fname = qualname.rpartition(".")
        obj = getattr(module(module_name), fname, None)
        if callable(obj):
            out[qualname] = obj
    return out


def function_name(fn: Callable[..., Any]) -> str:
    """The allow-listed qualified name of ``fn``; CodecError naming it if it is not allowed."""
    by_name, by_id = _base_tables()
    name = by_id.get(id(fn))
    if name is None:
        name = _ids({**_optional_functions(False), **_EXTRA_FUNCTIONS}).get(id(fn))
    if name is None:
        shown = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        raise CodecError(
            f"the model calls function {shown}, which prunekit's file format does not allow (only torch, "
            "torch.nn.functional, operator, math and torchvision.ops functions are). Register it with "
            "prunekit.io.register_function, or save the whole module with torch.save instead.")
    return name


def resolve_function(name: str) -> Callable[..., Any]:
    """The function stored as ``name``; CodecError if it is not on the allow-list."""
    fn = _EXTRA_FUNCTIONS.get(name) or _base_tables()[0].get(name)
    if fn is None and isinstance(name, str) and name.startswith("torchvision."):
        fn = _optional_functions(True).get(name)
    if fn is None:
        raise CodecError(f"function {name!r} is not on prunekit's allow-list (a newer prunekit, a function "
                         "registered with prunekit.io.register_function in the saving process, or a tampered file)")
    return fn


def check_method_name(name: Any) -> str:
    """A ``call_method`` target must be a public ``torch.Tensor`` method."""
    if not isinstance(name, str) or name.startswith("_") or not _IDENT.fullmatch(name) \
            or not callable(getattr(torch.Tensor, name, None)):
        raise CodecError(f"method {name!r} is not a public torch.Tensor method")
    return name


def check_identifier(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or keyword.iskeyword(name):
        raise CodecError(f"invalid {what} {name!r}: expected a Python identifier")
    return name


def check_qualname(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _QUALNAME.fullmatch(name):
        raise CodecError(f"invalid {what} {name!r}: expected a dotted attribute path")
    return name


# ----------------------------------------------------------------------------------------------- values
_ENUM_TYPES: dict[str, type] = {"$dtype": torch.dtype, "$memory_format": torch.memory_format, "$layout": torch.layout}


def encode_value(value: Any, where: str = "value") -> Any:
    """``value`` as JSON-compatible data (see the module docstring); CodecError naming ``where`` otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, torch.fx.Node):
        return {"$node": value.name}
    if isinstance(value, torch.Size):
        return {"$size": [int(v) for v in value]}
    if isinstance(value, tuple):
        if hasattr(value, "_fields"):
            raise CodecError(f"{where}: named tuples ({type(value).__name__}) are not supported")
        return {"$tuple": [encode_value(v, where) for v in value]}
    if isinstance(value, list):
        return [encode_value(v, where) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[encode_value(k, where), encode_value(v, where)] for k, v in value.items()]}
    if isinstance(value, slice):
        return {"$slice": [encode_value(value.start, where), encode_value(value.stop, where),
                           encode_value(value.step, where)]}
    if value is Ellipsis:
        return {"$ellipsis": None}
    if isinstance(value, complex):
        return {"$complex": [encode_value(value.real, where), encode_value(value.imag, where)]}
    if isinstance(value, torch.device):
        return {"$device": str(value)}
    for tag, typ in _ENUM_TYPES.items():
        if isinstance(value, typ):
            return {tag: str(value).removeprefix("torch.")}
    raise CodecError(f"{where}: cannot store a value of type {type(value).__module__}.{type(value).__qualname__} "
                     "in a prunekit file; save the module with torch.save instead")


def decode_value(data: Any, nodes: dict[str, torch.fx.Node] | None = None) -> Any:
    """Inverse of :func:`encode_value`; node references are looked up in ``nodes``."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode_value(v, nodes) for v in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise CodecError(f"malformed value {data!r}")
    (tag, payload), = data.items()
    if tag == "$node":
        if nodes is None or payload not in nodes:
            raise CodecError(f"reference to unknown node {payload!r}")
        return nodes[payload]
    if tag == "$tuple":
        return tuple(decode_value(v, nodes) for v in _list(payload, tag))
    if tag == "$size":
        return torch.Size([_int(v) for v in _list(payload, tag)])
    if tag == "$dict":
        return {decode_value(k, nodes): decode_value(v, nodes) for k, v in _pairs(payload)}
    if tag == "$slice":
        start, stop, step = (decode_value(v, nodes) for v in _list(payload, tag, 3))
        return slice(start, stop, step)
    if tag == "$ellipsis":
        return Ellipsis
    if tag == "$float":
        if payload not in ("inf", "-inf", "nan"):
            raise CodecError(f"malformed float {payload!r}")
        return float(payload)
    if tag == "$complex":
        re_, im = (decode_value(v) for v in _list(payload, tag, 2))
        return complex(re_, im)
    if tag == "$device":
        return torch.device(str(payload))
    if tag in _ENUM_TYPES:
        obj = getattr(torch, str(payload), None) if isinstance(payload, str) and _IDENT.fullmatch(payload) else None
        if not isinstance(obj, _ENUM_TYPES[tag]):
            raise CodecError(f"unknown {tag[1:]} {payload!r}")
        return obj
    raise CodecError(f"unknown value tag {tag!r}")


def _list(payload: Any, tag: str, n: int | None = None) -> list:
    if not isinstance(payload, list) or (n is not None and len(payload) != n):
        raise CodecError(f"malformed {tag} payload {payload!r}")
    return payload


def _pairs(payload: Any) -> list:
    if not isinstance(payload, list) or not all(isinstance(p, list) and len(p) == 2 for p in payload):
        raise CodecError(f"malformed $dict payload {payload!r}")
    return payload


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise CodecError(f"expected an int, got {v!r}")
    return v


# ------------------------------------------------------------------------------------------------ graph
def encode_graph(graph: torch.fx.Graph) -> list[dict[str, Any]]:
    """Every node of ``graph`` as ``{"name", "op", "target", "args", "kwargs"}`` (JSON-compatible)."""
    out = []
    for node in graph.nodes:
        where = f"node {node.name!r} ({node.op} {node.target})"
        target: Any = node.target
        if node.op == "call_function":
            target = function_name(node.target)
        elif node.op == "call_method":
            check_method_name(node.target)
        entry: dict[str, Any] = {"name": node.name, "op": node.op, "target": target,
                                 "args": encode_value(list(node.args), where)}
        if node.kwargs:
            entry["kwargs"] = {k: encode_value(v, where) for k, v in node.kwargs.items()}
        out.append(entry)
    return out


_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")


def decode_graph(entries: Any) -> torch.fx.Graph:
    """Rebuild a ``torch.fx.Graph`` from :func:`encode_graph` output, validating every name and target."""
    if not isinstance(entries, list):
        raise CodecError("the graph must be a list of nodes")
    graph = torch.fx.Graph()
    nodes: dict[str, torch.fx.Node] = {}
    n_outputs = 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise CodecError(f"malformed node {entry!r}")
        name = check_identifier(entry.get("name"), "node name")
        op = entry.get("op")
        if op not in _OPS:
            raise CodecError(f"node {name!r}: unknown op {op!r}")
        if name in nodes:
            raise CodecError(f"node {name!r} appears twice")
        raw_target = entry.get("target")
        if op == "call_function":
            target: Any = resolve_function(raw_target)
        elif op == "call_method":
            target = check_method_name(raw_target)
        elif op in ("get_attr", "call_module"):
            target = check_qualname(raw_target, f"{op} target of node {name!r}")
        else:  # placeholder (``x``, ``*args``, ``**kwargs``) / output
            stars = len(raw_target) - len(raw_target.lstrip("*")) if isinstance(raw_target, str) else 0
            target = "*" * stars + check_identifier(raw_target[stars:] if stars <= 2 else raw_target,
                                                    f"{op} target of node {name!r}")
        args = decode_value(entry.get("args", []), nodes)
        kwargs_raw = entry.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs_raw, dict):
            raise CodecError(f"node {name!r}: malformed args/kwargs")
        kwargs = {check_identifier(k, f"keyword of node {name!r}"): decode_value(v, nodes)
                  for k, v in kwargs_raw.items()}
        if op == "call_function" and target is builtins.getattr:
            if len(args) != 2 or not isinstance(args[1], str) or args[1].startswith("_"):
                raise CodecError(f"node {name!r}: getattr may only read public attributes")
        n_outputs += op == "output"
        nodes[name] = graph.create_node(op, target, tuple(args), kwargs, name=name)
    if n_outputs != 1:
        raise CodecError(f"the graph must have exactly one output node, found {n_outputs}")
    try:
        graph.lint()
    except Exception as exc:  # fx raises RuntimeError for ill-formed graphs
        raise CodecError(f"invalid graph: {exc}") from exc
    return graph
