"""Per-layer-type spec functions: a leaf module's constructor arguments, read off the live module.

A saved model stores each leaf module as ``{"type": "torch.nn.Conv2d", "kwargs": {...}}``; ``build_module``
calls the registered class with those keyword arguments (on the meta device: the weights come from the file).
Only registered classes can be built, so the registry is also the loader's allow-list. Pruned modules need
nothing special: their spec is read off their current (smaller) shapes.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from prunekit.errors import PrunekitError
from prunekit.io.codec import decode_value, encode_value

SpecFn = Callable[[nn.Module], dict[str, Any]]


class SpecError(PrunekitError):
    """A leaf module prunekit cannot describe as data."""


@dataclass
class _Entry:
    spec: SpecFn
    cls: type | None = None  # resolved lazily for optional packages (torchvision)
    tried: bool = False      # an import was attempted (do not retry a missing package on every lookup)


_REGISTRY: dict[str, _Entry] = {}
_BY_CLASS: dict[type, str] = {}


def register_module_spec(cls: type[nn.Module] | str, spec: SpecFn, *, name: str | None = None) -> None:
    """Register ``spec(module) -> constructor kwargs`` for leaf modules of exactly type ``cls``.

    ``cls`` may be a class or its dotted import path (resolved when first needed, for optional packages).
    Modules of registered types are kept whole when tracing (fx leaves) and rebuilt by calling the class.
    """
    if isinstance(cls, str):
        _REGISTRY[name or cls] = _Entry(spec)
        return
    key = name or f"{cls.__module__}.{cls.__qualname__}"
    _REGISTRY[key] = _Entry(spec, cls)
    _BY_CLASS[cls] = key


def _resolve(name: str) -> type | None:
    entry = _REGISTRY[name]
    if entry.cls is None and not entry.tried:
        entry.tried = True
        module_name, _, attr = name.rpartition(".")
        try:
            entry.cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            return None
        _BY_CLASS[entry.cls] = name
    return entry.cls


def _resolve_all() -> None:
    """Resolve the types registered by import path whose package is imported (a model can only hold layers of
    an imported package; the loader resolves the others by name, importing them)."""
    for name, entry in list(_REGISTRY.items()):
        if entry.cls is None and not entry.tried and name.partition(".")[0] in sys.modules:
            _resolve(name)


# prunekit's own layer types whose specs are registered by another prunekit module (models/ sits below io/ in
# the package's layers, so its layer types cannot register themselves): defining module -> registering module.
# Imported on demand, when saving meets such a type or loading meets a name from either module; only these.
_SPEC_PROVIDERS = {
    "prunekit.models.layers_lgc": "prunekit.methods.condensenet",
    "prunekit.methods.gates": "prunekit.methods.gates",
    "prunekit.methods.condensenet": "prunekit.methods.condensenet",
}


def _import_provider(module_name: str) -> bool:
    """Import the module that registers the specs of prunekit layer types defined in ``module_name`` (an
    allow-listed prunekit module); True if one was imported."""
    provider = _SPEC_PROVIDERS.get(module_name)
    if provider is None:
        return False
    importlib.import_module(provider)
    return True


def type_name(module: nn.Module) -> str | None:
    """The registered name of ``type(module)`` (exact type), or None if it has no spec."""
    cls = type(module)
    if cls not in _BY_CLASS:
        _resolve_all()
        if cls not in _BY_CLASS and _import_provider(cls.__module__):
            _resolve_all()
    return _BY_CLASS.get(cls)


def is_registered(module: nn.Module) -> bool:
    return type_name(module) is not None


def describe(module: nn.Module, qualname: str) -> dict[str, Any]:
    """``{"type": name, "kwargs": {...}}`` for a leaf module, verified by rebuilding it on the meta device."""
    name = type_name(module)
    if name is None:
        cls = type(module)
        raise SpecError(
            f"module {qualname!r} has type {cls.__module__}.{cls.__qualname__}, which prunekit cannot store as "
            "data. Register a spec with prunekit.io.register_module_spec(cls, spec_fn), or save the whole module "
            "with torch.save instead.")
    try:
        kwargs = _REGISTRY[name].spec(module)
        encoded = {k: encode_value(v, f"argument {k!r} of module {qualname!r}") for k, v in kwargs.items()}
        rebuilt = build_module(name, encoded)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"module {qualname!r} ({name}) could not be described: {exc}") from exc
    problem = _difference(module, rebuilt)
    if problem:
        raise SpecError(f"module {qualname!r} ({name}) cannot be rebuilt from its spec {kwargs}: {problem}. "
                        "Its attributes and its weights' shapes disagree (an incomplete surgery?)")
    out: dict[str, Any] = {"type": name, "kwargs": encoded}
    # Plain attributes set on the module by user code (e.g. an init's ``stddev``) travel along.
    own = _attributes(rebuilt)
    extra = {k: v for k, v in _attributes(module).items() if k not in own and not hasattr(type(module), k)}
    encodable = {}
    for k, v in extra.items():
        try:
            encodable[k] = encode_value(v, f"attribute {k!r} of module {qualname!r}")
        except PrunekitError:
            continue
    if encodable:
        out["extra"] = encodable
    return out


def build_module(name: str, encoded_kwargs: dict[str, Any], extra: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate registered type ``name`` on the meta device (its tensors are placeholders to be assigned).

    ``extra``: plain public attributes to set afterwards (never ones the class defines, e.g. methods).
    """
    if name not in _REGISTRY and re.fullmatch(r"prunekit(\.[A-Za-z_][A-Za-z0-9_]*)+", name):
        # prunekit's own layer types (e.g. gated BN) register when their module (or its allow-listed spec
        # provider) is imported
        module_name = name.rpartition(".")[0]
        if not _import_provider(module_name):
            try:
                importlib.import_module(module_name)
            except ImportError:
                pass
    if name not in _REGISTRY:
        raise SpecError(f"unknown module type {name!r}: not registered with prunekit.io.register_module_spec")
    cls = _resolve(name)
    if cls is None:
        raise SpecError(f"module type {name!r} cannot be imported (is its package installed?)")
    if not isinstance(encoded_kwargs, dict):
        raise SpecError(f"malformed arguments for {name}: {encoded_kwargs!r}")
    kwargs = {str(k): decode_value(v) for k, v in encoded_kwargs.items()}
    with torch.device("meta"):
        module = cls(**kwargs)
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_") or hasattr(cls, key) \
                or hasattr(module, key):
            raise SpecError(f"invalid extra attribute {key!r} for a {name}")
        setattr(module, key, decode_value(value))
    return module


def _tensors(module: nn.Module) -> dict[str, tuple[int, ...]]:
    found = {n: tuple(t.shape) for n, t in module.named_parameters(recurse=False)}
    found.update({n: tuple(t.shape) for n, t in module.named_buffers(recurse=False)})
    return found


_SCALARS = (int, float, str, bool, tuple, list, type(None))


def _attributes(module: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and isinstance(v, _SCALARS)}


def _difference(live: nn.Module, rebuilt: nn.Module) -> str:
    if type(live) is not type(rebuilt):
        return f"type {type(rebuilt).__name__} instead of {type(live).__name__}"
    if _tensors(live) != _tensors(rebuilt):
        return f"tensors {_tensors(rebuilt)} instead of {_tensors(live)}"
    b = _attributes(rebuilt)
    a = {k: v for k, v in _attributes(live).items() if k in b}
    if a != b:
        diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
        return f"attributes differ (live, rebuilt): {diff}"
    if live.extra_repr() != rebuilt.extra_repr():
        return f"{rebuilt.extra_repr()!r} instead of {live.extra_repr()!r}"
    return ""


# ------------------------------------------------------------------------------------ spec functions
def attrs(*names: str) -> SpecFn:
    """A spec function that reads the constructor arguments ``names`` from same-named attributes."""

    def spec(module: nn.Module) -> dict[str, Any]:
        return {n: getattr(module, n) for n in names}

    return spec


def _with(base: SpecFn, **extra: Callable[[nn.Module], Any]) -> SpecFn:
    def spec(module: nn.Module) -> dict[str, Any]:
        out = base(module)
        out.update({k: fn(module) for k, fn in extra.items()})
        return out

    return spec


def _has_bias(module: nn.Module) -> bool:
    return module.bias is not None


_CONV = attrs("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
              "padding_mode")
_NORM = attrs("num_features", "eps", "momentum", "affine", "track_running_stats")
_POOL_MAX = attrs("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")
_INPLACE = attrs("inplace")
_NONE = attrs()


def _layer_norm(module: nn.Module) -> dict[str, Any]:
    out = attrs("normalized_shape", "eps", "elementwise_affine")(module)
    out["bias"] = module.bias is not None if module.elementwise_affine else True
    return out


def _multihead_attention(module: nn.Module) -> dict[str, Any]:
    out = attrs("embed_dim", "num_heads", "dropout", "add_zero_attn", "kdim", "vdim", "batch_first")(module)
    out["bias"] = module.in_proj_bias is not None
    out["add_bias_kv"] = module.bias_k is not None
    return out


def _register_torch_nn() -> None:
    table: dict[str, SpecFn] = {
        # convolution and linear layers
        **{f"Conv{d}d": _with(_CONV, bias=_has_bias) for d in (1, 2, 3)},
        **{f"ConvTranspose{d}d": _with(attrs("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                             "output_padding", "groups", "dilation", "padding_mode"),
                                       bias=_has_bias) for d in (1, 2, 3)},
        "Linear": _with(attrs("in_features", "out_features"), bias=_has_bias),
        "Bilinear": _with(attrs("in1_features", "in2_features", "out_features"), bias=_has_bias),
        "Identity": _NONE,
        # normalization
        **{f"BatchNorm{d}d": _NORM for d in (1, 2, 3)},
        **{f"InstanceNorm{d}d": _NORM for d in (1, 2, 3)},
        "SyncBatchNorm": _NORM,
        "GroupNorm": attrs("num_groups", "num_channels", "eps", "affine"),
        "LayerNorm": _layer_norm,
        "RMSNorm": attrs("normalized_shape", "eps", "elementwise_affine"),
        "LocalResponseNorm": attrs("size", "alpha", "beta", "k"),
        "MultiheadAttention": _multihead_attention,
        # activations
        **{n: _INPLACE for n in ("ReLU", "ReLU6", "SiLU", "Hardswish", "Hardsigmoid", "Mish", "SELU")},
        **{n: _NONE for n in ("Sigmoid", "Tanh", "LogSigmoid", "Softsign", "Tanhshrink", "Softmax2d")},
        "GELU": attrs("approximate"),
        "Hardtanh": attrs("min_val", "max_val", "inplace"),
        "LeakyReLU": attrs("negative_slope", "inplace"),
        "ELU": attrs("alpha", "inplace"),
        "CELU": attrs("alpha", "inplace"),
        "RReLU": attrs("lower", "upper", "inplace"),
        "Threshold": attrs("threshold", "value", "inplace"),
        "PReLU": attrs("num_parameters"),
        "Softplus": attrs("beta", "threshold"),
        "Hardshrink": attrs("lambd"),
        "Softshrink": attrs("lambd"),
        **{n: attrs("dim") for n in ("Softmax", "LogSoftmax", "Softmin", "GLU")},
        # pooling
        **{f"MaxPool{d}d": _POOL_MAX for d in (1, 2, 3)},
        "AvgPool1d": attrs("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
        **{f"AvgPool{d}d": attrs("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                 "divisor_override") for d in (2, 3)},
        **{f"AdaptiveAvgPool{d}d": attrs("output_size") for d in (1, 2, 3)},
        **{f"AdaptiveMaxPool{d}d": attrs("output_size", "return_indices") for d in (1, 2, 3)},
        **{f"LPPool{d}d": attrs("norm_type", "kernel_size", "stride", "ceil_mode") for d in (1, 2, 3)},
        # regularization and shape
        **{n: attrs("p", "inplace") for n in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                                               "FeatureAlphaDropout")},
        "Flatten": attrs("start_dim", "end_dim"),
        "Unflatten": attrs("dim", "unflattened_size"),
        "Upsample": attrs("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"),
        "UpsamplingNearest2d": attrs("size", "scale_factor"),
        "UpsamplingBilinear2d": attrs("size", "scale_factor"),
        "PixelShuffle": attrs("upscale_factor"),
        "PixelUnshuffle": attrs("downscale_factor"),
        "ChannelShuffle": attrs("groups"),
        **{f"{kind}Pad{d}d": attrs("padding") for kind in ("Zero", "Reflection", "Replication", "Circular")
           for d in (1, 2, 3)},
        **{f"ConstantPad{d}d": attrs("padding", "value") for d in (1, 2, 3)},
    }
    for cls_name, spec in table.items():
        cls = getattr(nn, cls_name, None)
        if cls is not None:  # every name exists in torch >= 2.4 except a few newer ones
            register_module_spec(cls, spec, name=f"torch.nn.{cls_name}")


def _register_torchvision() -> None:
    register_module_spec("torchvision.ops.StochasticDepth", attrs("p", "mode"))
    register_module_spec("torchvision.ops.FrozenBatchNorm2d", attrs("num_features", "eps"))
    register_module_spec("torchvision.models.convnext.LayerNorm2d", _layer_norm)


def _register_timm() -> None:
    # TensorFlow "same" padding computed in forward from the input's size (fx cannot trace it): kept whole
    register_module_spec("timm.layers.conv2d_same.Conv2dSame",
                         _with(attrs("in_channels", "out_channels", "kernel_size", "stride", "dilation", "groups"),
                               bias=_has_bias))


_register_torch_nn()
_register_torchvision()
_register_timm()
