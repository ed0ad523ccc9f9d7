"""``save``/``load``: one safetensors file holding a model's architecture as JSON data and its tensors.

File layout (format ``prunekit.model/1``): a standard ``.safetensors`` file. Its tensors are the model's
parameters and buffers under their ``state_dict`` names (plus non-persistent buffers and fx tensor constants).
Its string metadata holds one key, ``"prunekit"``: a JSON document with ``"format": "prunekit.model/1"`` and

- ``graph``: the torch.fx graph, one object per node (``name``, ``op``, ``target``, ``args``, ``kwargs``;
  see :mod:`prunekit.io.codec`);
- ``modules``: ``{qualname: {"type": "torch.nn.Conv2d", "kwargs": {...}}}`` for every leaf module;
- ``attrs``: ``{name: "parameter" | "buffer" | "buffer_np" | "constant"}`` for tensors owned by non-leaf modules
  (e.g. ConvNeXt's ``layer_scale``); ``aliases`` (tied tensors), ``frozen`` (``requires_grad=False``),
  ``channels_last`` (4-D tensors to restore in that memory layout);
- ``class_name``, ``training``, ``inputs`` (example input shapes/dtypes, if given), ``versions``, ``meta``.

Loading reads JSON and raw tensors only: no pickle, no code from the file; functions and module types are
resolved from allow-lists.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.fx
import torch.nn as nn

from prunekit.errors import CheckpointError, ConfigError, PrunekitError
from prunekit.io import specs
from prunekit.io.codec import CodecError, check_qualname, decode_graph, encode_graph
from prunekit.io.tracing import eval_mode, trace
from prunekit.utils import umask_mode

FORMAT_NAME = "prunekit.model"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
_KINDS = ("parameter", "buffer", "buffer_np", "constant")

ExampleInputs = torch.Tensor | Sequence[torch.Tensor]

WIDTHS_FORMAT_NAME = "prunekit.widths"
WIDTHS_FORMAT = f"{WIDTHS_FORMAT_NAME}/1"


class OtherFormatError(CodecError):
    """The file is in prunekit's other format (a widths file where the architecture was expected, or the
    reverse): the message says how to load it."""


def save(model: nn.Module, path: str | os.PathLike[str], *, example_inputs: ExampleInputs | None = None,
         metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (architecture as data + weights) to the single file ``path``; returns the path.

    ``example_inputs`` (a tensor or a tuple of tensors), if given, are recorded (shapes and dtypes) and used to
    check, before anything is written, that the stored description reproduces the model's output.
    ``metadata``: any JSON-serializable mapping, returned by :func:`read_metadata`. Raises PrunekitError naming
    the layer or function the format cannot represent (``torch.save`` remains available for those models).
    The file is written atomically (temporary file + ``os.replace``).
    """
    path = Path(path)
    inputs = _as_tuple(example_inputs)
    header, tensors = describe_model(model, inputs)
    if metadata is not None:
        try:
            header["meta"] = json.loads(json.dumps(dict(metadata), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"metadata must be JSON-serializable: {exc}") from exc
    if inputs is not None:
        _check_reproduces(model, build_model(header, tensors), inputs)
    # One metadata key only: safetensors writes its metadata map in hash order, and one key keeps files
    # byte-identical for identical models. The format version is the header's first field.
    _write_atomic(path, tensors, {"prunekit": json.dumps(header, sort_keys=True)})
    return path


def load(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> torch.fx.GraphModule:
    """Rebuild the model saved by :func:`save` as a ``torch.fx.GraphModule`` (same function, same state_dict keys).

    Needs neither the original class nor its constructor arguments, and executes no pickled code. Raises
    CheckpointError naming the file and the problem for a missing, corrupt, foreign or newer-format file.
    """
    path = Path(path)
    header, tensors = _read(path, device)
    try:
        return build_model(header, tensors)
    except (PrunekitError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of a saved model without building it: ``meta`` (user metadata), ``inputs``, ``versions``..."""
    path = Path(path)
    header = _read_header(path)
    return {k: header.get(k) for k in ("format", "class_name", "training", "inputs", "versions", "meta")}


# ------------------------------------------------------------------------------------------ describing
def describe_model(model: nn.Module, inputs: tuple[torch.Tensor, ...] | None = None
                   ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The (JSON header, tensors) pair that :func:`save` writes."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    gm = trace(model)
    graph = encode_graph(gm.graph)
    leaves: dict[str, nn.Module] = {n.target: gm.get_submodule(n.target)
                                    for n in gm.graph.nodes if n.op == "call_module"}
    attrs: dict[str, str] = {}
    named: dict[str, torch.Tensor] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and _leaf_prefix(node.target, leaves) is None:
            try:
                attrs[node.target] = _kind(model, node.target)
            except AttributeError:  # a tensor constant fx created while tracing
                attrs[node.target] = "constant"
            named[node.target] = _get_tensor(gm, node.target)
    _add_unused(model, leaves, attrs, named)
    modules = {}
    for qualname, module in leaves.items():
        modules[qualname] = specs.describe(module, qualname)
        for tname, t in _own_tensors(module):
            named[f"{qualname}.{tname}"] = t
    tensors, aliases = _dedupe(named)
    header: dict[str, Any] = {
        "format": FORMAT,
        "class_name": gm.__class__.__name__,
        "training": bool(model.training),
        "graph": graph,
        "modules": modules,
        "attrs": attrs,
        "aliases": aliases,
        "frozen": sorted(n for n, t in named.items() if isinstance(t, nn.Parameter) and not t.requires_grad),
        "channels_last": sorted(n for n, t in named.items() if n in tensors and _is_channels_last(t)),
        "inputs": None if inputs is None else [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                                               for t in inputs],
        "versions": {"prunekit": _prunekit_version(), "torch": torch.__version__.split("+")[0]},
        "meta": {},
    }
    return header, tensors


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _leaf_prefix(name: str, leaves: Mapping[str, nn.Module]) -> str | None:
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in leaves:
            return prefix
    return None


def _own_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    found = [(n, t) for n, t in module.named_parameters(remove_duplicate=False)]
    found += [(n, t) for n, t in module.named_buffers(remove_duplicate=False)]
    return found


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner_path, _, attr = name.rpartition(".")
    return (root.get_submodule(owner_path) if owner_path else root), attr


def _kind(root: nn.Module, name: str) -> str:
    """How ``name`` is registered on its owner in the user's model (fx constants live on the model too)."""
    owner, attr = _owner(root, name)
    if attr in owner._parameters:
        return "parameter"
    if attr in owner._buffers:
        return "buffer_np" if attr in owner._non_persistent_buffers_set else "buffer"
    return "constant"


def _get_tensor(root: nn.Module, name: str) -> torch.Tensor:
    owner, attr = _owner(root, name)
    value = getattr(owner, attr)
    if not isinstance(value, torch.Tensor):
        raise PrunekitError(f"attribute {name!r} read by the model is a {type(value).__name__}, not a tensor; "
                            "prunekit cannot store it (torch.save can)")
    return value


def _add_unused(model: nn.Module, leaves: dict[str, nn.Module], attrs: dict[str, str],
                named: dict[str, torch.Tensor]) -> None:
    """Keep state_dict entries the eval-mode graph does not use (e.g. auxiliary heads) under their names.

    A tensor inside a module with a registered spec brings that whole module along; any other tensor is stored
    as a plain attribute of its owner (the loaded model then holds it in a plain ``nn.Module`` container).
    """
    covered = set(named)
    for qualname, module in leaves.items():
        covered.update(f"{qualname}.{n}" for n, _ in _own_tensors(module))
    modules = dict(model.named_modules())
    for key in model.state_dict(keep_vars=True):
        if key in covered:
            continue
        parts = key.split(".")
        leaf = next((".".join(parts[:i]) for i in range(1, len(parts))
                     if specs.is_registered(modules[".".join(parts[:i])])), None)
        if leaf is not None:
            leaves[leaf] = modules[leaf]
            covered.update(f"{leaf}.{n}" for n, _ in _own_tensors(modules[leaf]))
        else:
            attrs[key] = _kind(model, key)
            named[key] = _get_tensor(model, key)
            covered.add(key)


def _dedupe(named: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU copies-or-views of each distinct tensor, and {alias: first name} for tied tensors."""
    first: dict[int, str] = {}
    storages: set[tuple[int, int]] = set()
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in named.items():
        if id(t) in first:
            aliases[name] = first[id(t)]
            continue
        if t.is_meta:
            raise PrunekitError(f"tensor {name!r} is on the meta device: it holds no data to save")
        first[id(t)] = name
        data = t.detach().to("cpu").contiguous()
        key = (data.untyped_storage().data_ptr(), data.untyped_storage().nbytes())
        if data.numel() and key in storages:  # a view sharing memory with another tensor: store a copy
            data = data.clone()
        storages.add((data.untyped_storage().data_ptr(), data.untyped_storage().nbytes()))
        tensors[name] = data
    return tensors, aliases


# --------------------------------------------------------------------------------------------- building
def build_model(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.fx.GraphModule:
    """Rebuild the GraphModule described by ``header`` with the given tensors (raises PrunekitError)."""
    _check_format(header.get("format"))
    tensors = dict(tensors)
    for name in header.get("channels_last", []):  # the file stores row-major data; restore the layout
        if name in tensors and tensors[name].dim() == 4:
            tensors[name] = tensors[name].contiguous(memory_format=torch.channels_last)
    modules = header.get("modules", {})
    attrs = header.get("attrs", {})
    frozen = set(header.get("frozen", []))
    if not isinstance(modules, dict) or not isinstance(attrs, dict):
        raise CodecError("'modules' and 'attrs' must be objects")
    root = nn.Module()
    for qualname, desc in modules.items():
        _check_path(qualname)
        if not isinstance(desc, dict) or "type" not in desc:
            raise CodecError(f"malformed module entry {qualname!r}")
        _set_module(root, qualname, specs.build_module(desc["type"], desc.get("kwargs", {}), desc.get("extra")))
    for name, tensor in tensors.items():
        _check_path(name)
        leaf = _leaf_prefix(name, modules)
        if leaf is not None:
            _assign_leaf_tensor(root.get_submodule(leaf), name[len(leaf) + 1:], tensor, name, name not in frozen)
        elif name in attrs:
            _assign_attr(root, name, tensor, attrs[name], name not in frozen)
        else:
            raise CodecError(f"tensor {name!r} belongs to no module of the architecture")
    for alias, target in header.get("aliases", {}).items():
        _check_path(alias)
        owner, attr = _owner(root, target)
        value = getattr(owner, attr)
        if alias in attrs:
            _assign_attr(root, alias, value, attrs[alias], True)
        else:
            leaf = _leaf_prefix(alias, modules)
            if leaf is None:
                raise CodecError(f"alias {alias!r} belongs to no module")
            _assign_leaf_tensor(root.get_submodule(leaf), alias[len(leaf) + 1:], value, alias, True, share=True)
    missing = [f"{m}.{n}" if m else n for m, mod in root.named_modules()
               for n, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
               if t.is_meta]
    if missing:
        raise CodecError(f"the file lacks tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    graph = decode_graph(header.get("graph"))
    class_name = header.get("class_name") or "GraphModule"
    gm = torch.fx.GraphModule(root, graph, class_name=class_name if str(class_name).isidentifier() else "GraphModule")
    _copy_unreferenced(root, gm, modules, attrs)
    for name, kind in attrs.items():  # GraphModule registered every tensor it copied as a persistent buffer
        if kind != "parameter":
            owner, attr = _owner(gm, name)
            _assign_attr(gm, name, getattr(owner, attr), kind, True)
    gm.train(bool(header.get("training", False)))
    return gm


def _check_format(fmt: Any, expected: str = FORMAT) -> None:
    name, _, version = expected.partition("/")
    match = re.fullmatch(rf"{re.escape(name)}/(\d+)", fmt) if isinstance(fmt, str) else None
    if match is None:
        if expected == FORMAT and isinstance(fmt, str) and fmt.startswith(WIDTHS_FORMAT_NAME + "/"):
            raise OtherFormatError("it holds widths and weights, not the architecture: rebuild it from its "
                                   "unpruned model with prunekit.load(path, model=<the unpruned model>)")
        if expected == WIDTHS_FORMAT and isinstance(fmt, str) and fmt.startswith(FORMAT_NAME + "/"):
            raise OtherFormatError("it holds the architecture itself: load it with prunekit.load(path), without "
                                   "model=")
        raise CodecError(f"unknown format {fmt!r} (expected {expected!r})")
    if int(match.group(1)) > int(version):
        raise CodecError(f"written in format {fmt}, newer than this prunekit reads ({expected}): upgrade prunekit")


def _check_path(name: Any) -> None:
    check_qualname(name, "attribute path")


def _set_module(root: nn.Module, qualname: str, module: nn.Module) -> None:
    parent_path, _, attr = qualname.rpartition(".")
    _container(root, parent_path).add_module(attr, module)


def _container(root: nn.Module, path: str) -> nn.Module:
    node = root
    for part in path.split(".") if path else []:
        child = node._modules.get(part)
        if child is None:
            child = nn.Module()
            node.add_module(part, child)
        node = child
    return node


def _assign_leaf_tensor(module: nn.Module, attr: str, tensor: torch.Tensor, name: str, requires_grad: bool,
                        share: bool = False) -> None:
    if "." in attr:
        sub, _, attr = attr.rpartition(".")
        module = module.get_submodule(sub)
    if attr in module._parameters and module._parameters[attr] is not None:
        expected = module._parameters[attr]
        value = tensor if share else nn.Parameter(tensor, requires_grad=requires_grad)
        slot = module._parameters
    elif attr in module._buffers and module._buffers[attr] is not None:
        expected, value, slot = module._buffers[attr], tensor, module._buffers
    else:
        raise CodecError(f"tensor {name!r} does not match any parameter or buffer of its module")
    if tuple(expected.shape) != tuple(tensor.shape):
        raise CodecError(f"tensor {name!r} has shape {tuple(tensor.shape)}, its module expects "
                         f"{tuple(expected.shape)}")
    slot[attr] = value


def _assign_attr(root: nn.Module, name: str, tensor: torch.Tensor, kind: str, requires_grad: bool) -> None:
    if kind not in _KINDS:
        raise CodecError(f"unknown kind {kind!r} for tensor {name!r}")
    parent_path, _, attr = name.rpartition(".")
    owner = _container(root, parent_path)
    if kind == "parameter":
        owner.register_parameter(attr, tensor if isinstance(tensor, nn.Parameter)
                                 else nn.Parameter(tensor, requires_grad=requires_grad))
    else:  # fx tensor constants become non-persistent buffers: they follow .to() but stay out of state_dict
        if attr in owner._buffers:
            del owner._buffers[attr]
        elif hasattr(owner, attr):
            delattr(owner, attr)
        owner.register_buffer(attr, tensor, persistent=kind == "buffer")


def _copy_unreferenced(root: nn.Module, gm: torch.fx.GraphModule, modules: Mapping[str, Any],
                       attrs: Mapping[str, str]) -> None:
    """GraphModule copies only what its graph uses: add the rest (unused heads) back under the same names."""
    for qualname in modules:
        try:
            gm.get_submodule(qualname)
        except AttributeError:
            gm.add_submodule(qualname, root.get_submodule(qualname))
    for name, kind in attrs.items():
        parent_path, _, attr = name.rpartition(".")
        owner = _container(gm, parent_path)
        if not hasattr(owner, attr):
            source, _ = _owner(root, name)
            _assign_attr(gm, name, getattr(source, attr), kind, True)


# ------------------------------------------------------------------------------------------------ files
def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600; the user's file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _foreign_hint(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return ""
    if head.startswith(b"PK\x03\x04"):
        return " It looks like a torch.save file: read it with torch.load (weights_only=False only if you trust it)."
    if head[:1] == b"\x80":
        return " It looks like a pickle file."
    return ""


def _open(path: Path, device: str | torch.device):
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return safe_open(str(path), framework="pt", device=str(torch.device(device)))
    except Exception as exc:  # safetensors raises SafetensorError (no common base besides Exception)
        raise CheckpointError(f"{path} is not a readable prunekit model file ({exc}).{_foreign_hint(path)}") from exc


def _parse_header(path: Path, metadata: Mapping[str, str] | None, expected: str = FORMAT) -> dict[str, Any]:
    metadata = metadata or {}
    if "prunekit" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file without prunekit architecture metadata (a plain "
                              "state_dict?): read it with safetensors.torch.load_file")
    try:
        header = json.loads(metadata["prunekit"])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        _check_format(header.get("format"), expected)
    except OtherFormatError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except (ValueError, CodecError) as exc:
        raise CheckpointError(f"{path}: invalid prunekit header: {exc}") from exc
    return header


def _read_header(path: Path) -> dict[str, Any]:
    with _open(path, "cpu") as f:
        return _parse_header(path, f.metadata())


def _read(path: Path, device: str | torch.device, expected: str = FORMAT
          ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    handle = _open(path, device)
    try:
        with handle as f:
            header = _parse_header(path, f.metadata(), expected)
            tensors = {k: _aligned(f.get_tensor(k)) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the tensors ({exc})") from exc
    return header, tensors


def write_widths_file(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], widths: Mapping[str, int],
                      inputs: Sequence[torch.Tensor], *, class_name: str, tracing: Mapping[str, Any],
                      metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a pruned model as format ``prunekit.widths/1``: its ``state`` (state_dict tensors) and, in the
    header, the width of every channel group (``widths``: {group name: channels}), the example input shapes and
    the tracing options its graph was built with. The architecture is not stored: the unpruned model, pruned to
    these widths, rebuilds it (see ``prunekit.load(path, model=...)``). Atomic, like :func:`save`."""
    path = Path(path)
    header: dict[str, Any] = {
        "format": WIDTHS_FORMAT, "class_name": class_name,
        "widths": {str(k): int(v) for k, v in widths.items()},
        "inputs": [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for t in inputs],
        "tracing": dict(tracing),
        "versions": {"prunekit": _prunekit_version(), "torch": torch.__version__.split("+")[0]},
        "meta": {},
    }
    if metadata is not None:
        try:
            header["meta"] = json.loads(json.dumps(dict(metadata), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"metadata must be JSON-serializable: {exc}") from exc
    tensors, aliases = _dedupe(dict(state))
    header["aliases"] = aliases
    _write_atomic(path, {k: t.detach().contiguous() for k, t in tensors.items()},
                  {"prunekit": json.dumps(header, sort_keys=True)})
    return path


def read_widths_file(path: str | os.PathLike[str], device: str | torch.device = "cpu"
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, state_dict tensors) of a file written by :func:`write_widths_file`; aliased tensors restored.
    Raises CheckpointError for a missing, corrupt or foreign file, or one in the architecture format."""
    path = Path(path)
    header, tensors = _read(path, device, WIDTHS_FORMAT)
    for alias, name in (header.get("aliases") or {}).items():
        if name in tensors:
            tensors[alias] = tensors[name]
    return header, tensors


# ------------------------------------------------------------------------------------------------ misc
def _aligned(t: torch.Tensor) -> torch.Tensor:
    """safetensors aligns data to 8 bytes only; CPU GEMM kernels pick other code paths (other rounding) for
    tensors not aligned to 64 bytes, so copy those: outputs are then bit-identical to the saved model's."""
    return t.clone() if t.device.type == "cpu" and t.data_ptr() % 64 else t


def _as_tuple(example_inputs: ExampleInputs | None) -> tuple[torch.Tensor, ...] | None:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _flat(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    return []


def _check_reproduces(model: nn.Module, rebuilt: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    device = inputs[0].device
    rebuilt.to(device)
    with torch.no_grad(), eval_mode(model), eval_mode(rebuilt):
        expected, got = _flat(model(*inputs)), _flat(rebuilt(*inputs))
    if len(expected) != len(got) or any(a.shape != b.shape for a, b in zip(expected, got)):
        raise PrunekitError("the traced architecture does not reproduce the model's outputs (different shapes): "
                            "its forward has control flow fx cannot record; use torch.save")
    for a, b in zip(expected, got):
        if not a.is_floating_point():
            if not torch.equal(a, b):
                raise PrunekitError("the traced architecture does not reproduce the model's integer outputs; "
                                    "use torch.save")
            continue
        # Same ops in the same order: on CPU the outputs are bit-identical. The tolerance only absorbs GPU
        # algorithm choice (cuDNN autotuning), scaled to the precision; a structural mismatch is far larger.
        tol = 1e-4 if a.dtype in (torch.float32, torch.float64) else 2e-2
        err = (a.double() - b.double()).norm() / a.double().norm().clamp_min(1e-12)
        if not torch.isfinite(err) or err > tol:
            raise PrunekitError(f"the traced architecture does not reproduce the model's output (relative error "
                                f"{float(err):.3g}): its forward has control flow fx cannot record; use torch.save")


def _prunekit_version() -> str:
    try:
        from importlib.metadata import version

        return version("prunekit")
    except Exception:
        return "unknown"
