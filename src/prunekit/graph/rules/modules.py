"""Channel rules for layers (``call_module`` nodes), keyed by layer class."""

from __future__ import annotations

import math

import numpy as np
import torch.nn as nn

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import (Call, Labels, module_rule, passthrough, reshape_labels)
from prunekit.graph.rules.reductions import softmax_labels
from prunekit.graph.rules.spatial import pad_labels, spatial_labels

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _tie_conv_groups(b: Builder, in_ids, out_ids, groups: int) -> None:
    """Grouped conv with a prunable input: conv group ``j``'s input and output channels form one channel, so
    only whole conv groups are removed (``groups`` shrinks, channels per group stay)."""
    ins = in_ids.reshape(groups, -1)
    outs = out_ids.reshape(groups, -1)
    anchor = ins[:, 0]
    if ins.shape[1] > 1:
        b.tie(np.repeat(anchor, ins.shape[1] - 1), ins[:, 1:].reshape(-1))
    b.tie(np.repeat(anchor, outs.shape[1]), outs.reshape(-1))


@module_rule(*_CONV, *_CONV_T)
def conv(b: Builder, call: Call) -> Labels:
    """Conv / ConvTranspose: input channels end here (consumer), output channels start here (producer).

    A grouped conv with a prunable input loses whole conv groups when it has at least as many groups as
    channels per group (depthwise, ResNeXt); with fewer, wider groups it keeps its groups and removes the same
    in-group positions from each (role ``in_shared``: the per-group input width shrinks)."""
    m, name = call.module, call.name
    x, lab = call.arg(0, "input"), call.lab(0, "input") or {}
    transposed = isinstance(m, _CONV_T)
    k = len(m.kernel_size)
    cdim = x.ndim - k - 1
    for d in range(cdim + 1, x.ndim):
        if d in lab:
            b.pin(lab[d], f"spatial dim of {type(m).__name__} '{name}'")
    b.called_leaves.add(name)
    out_ids = b.module_out_ids(name, m.out_channels)
    b.add_member(("module", name, "out"), out_ids, module=m, dim=1 if transposed else 0, name=name, role="out",
                 producer=True)
    in_key = ("module", name, "in")
    in_ids = lab.get(cdim)
    g = m.groups
    shared = in_ids is not None and g > 1 and not transposed and g < in_ids.shape[0] // g
    if shared:  # few wide conv groups (ResNeSt's radix groups): keep them, shrink every one alike
        ins, outs = in_ids.reshape(g, -1), out_ids.reshape(g, -1)
        b.tie(np.tile(ins[0], g - 1), ins[1:].reshape(-1))
        b.tie(np.tile(outs[0], g - 1), outs[1:].reshape(-1))
        in_key = ("module", name, "in_shared")
        b.add_member(in_key, np.ascontiguousarray(ins[0]), module=m, dim=1, name=name, role="in_shared")
    elif in_ids is not None:
        b.add_member(in_key, in_ids, module=m, dim=0 if transposed else 1, name=name, role="in")
        if g > 1:
            _tie_conv_groups(b, in_ids, out_ids, g)
    else:
        b.fixed_member(in_key, f"input of '{name}' is also fixed")
        if g > 1:
            if transposed:
                b.pin(out_ids, f"grouped {type(m).__name__} '{name}' reads a fixed input")
            else:  # keep the conv groups: remove the same output index from every group
                outs = out_ids.reshape(g, -1)
                b.tie(np.tile(outs[0], g - 1), outs[1:].reshape(-1))
    n = b.batch_size
    kk = math.prod(m.kernel_size)
    in_f = in_key if in_ids is not None else None
    if not transposed:
        rows = call.out.numel() // (n * m.out_channels)
        if shared:
            b.add_layer(name, rows * kk, ("module", name, "out"), in_key)
        elif g == 1:
            b.add_layer(name, rows * kk * (1 if in_f else m.in_channels), ("module", name, "out"), in_f)
        else:
            b.add_layer(name, rows * kk * (m.in_channels // g), ("module", name, "out"), None)
    else:
        rows = x.numel() // (n * m.in_channels)
        coef = rows * kk * (1 if in_f else m.in_channels)
        if g == 1:
            b.add_layer(name, coef, in_f, ("module", name, "out"))
        else:
            b.add_layer(name, coef * (m.out_channels // g), in_f, None)
    result = {d: ids for d, ids in lab.items() if d < cdim}
    result[cdim] = out_ids
    return result


@module_rule(nn.Linear)
def linear(b: Builder, call: Call) -> Labels:
    """Linear over the last dim: input features end here, output features start here."""
    m, name = call.module, call.name
    x, lab = call.arg(0, "input"), call.lab(0, "input") or {}
    last = x.ndim - 1
    b.called_leaves.add(name)
    out_ids = b.module_out_ids(name, m.out_features)
    b.add_member(("module", name, "out"), out_ids, module=m, dim=0, name=name, role="out", producer=True)
    in_ids = lab.get(last)
    in_key = ("module", name, "in")
    if in_ids is not None:
        b.add_member(in_key, in_ids, module=m, dim=1, name=name, role="in")
    else:
        b.fixed_member(in_key, f"input of '{name}' is also fixed")
    rows = call.out.numel() // (b.batch_size * m.out_features)
    b.add_layer(name, rows * (1 if in_ids is not None else m.in_features), ("module", name, "out"),
                in_key if in_ids is not None else None)
    result = {d: ids for d, ids in lab.items() if d < last}
    result[last] = out_ids
    return result


def _channel_norm(b: Builder, call: Call, cdim: int, *, role: str = "out") -> Labels | None:
    m, name = call.module, call.name
    lab = call.lab(0, "input")
    key = ("module", name, role)
    ids = lab.get(cdim) if lab else None
    b.called_leaves.add(name)
    if ids is None:
        b.fixed_member(key, f"'{name}' is also applied to a fixed tensor")
        return lab
    b.add_member(key, ids, module=m, dim=0, name=name, role=role)
    return lab


@module_rule(nn.modules.batchnorm._BatchNorm)
def batch_norm(b: Builder, call: Call) -> Labels | None:
    x = call.arg(0, "input")
    return _channel_norm(b, call, 1 if x.ndim >= 2 else 0)


@module_rule(nn.modules.instancenorm._InstanceNorm)
def instance_norm(b: Builder, call: Call) -> Labels | None:
    x = call.arg(0, "input")
    k = {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}
    sd = next((v for t, v in k.items() if isinstance(call.module, t)), x.ndim - 2)
    return _channel_norm(b, call, x.ndim - sd - 1)


@module_rule(nn.GroupNorm)
def group_norm(b: Builder, call: Call) -> Labels | None:
    """GroupNorm with G groups of C/G channels. If G >= C/G, whole norm groups are removed (exact: the other
    groups' statistics do not change; role "out"). Otherwise (e.g. GroupNorm(1, C)) the same in-group positions
    are removed from every norm group (``num_groups`` stays; role "out_shared"), and the channels are marked
    inexact because the statistics run across them."""
    lab = call.lab(0, "input")
    ids = lab.get(1) if lab else None
    groups = call.module.num_groups
    whole = ids is not None and groups >= ids.shape[0] // groups
    out = _channel_norm(b, call, 1, role="out" if whole else "out_shared")
    if ids is None:
        return out
    per = ids.reshape(groups, -1)
    if whole and per.shape[1] > 1:
        b.tie(np.repeat(per[:, 0], per.shape[1] - 1), per[:, 1:].reshape(-1))
    elif not whole:
        if groups > 1:
            b.tie(np.tile(per[0], groups - 1), per[1:].reshape(-1))
        b.mark_inexact(ids)
    return out


@module_rule(nn.PReLU)
def prelu(b: Builder, call: Call) -> Labels | None:
    if call.module.num_parameters == 1:
        return passthrough(b, call)
    x = call.arg(0, "input")
    return _channel_norm(b, call, 1 if x.ndim >= 2 else 0)


@module_rule(nn.LayerNorm)
def layer_norm(b: Builder, call: Call) -> Labels | None:
    """LayerNorm over the trailing dims (channels-last blocks): each normalised dim that carries channels is a
    member; its channels are marked inexact (the statistics run across them)."""
    m, name = call.module, call.name
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    k = len(m.normalized_shape)
    b.called_leaves.add(name)
    for i, d in enumerate(range(x.ndim - k, x.ndim)):
        key = ("module", name, f"d{i}")
        ids = lab.get(d) if lab else None
        if ids is None:
            b.fixed_member(key, f"'{name}' is also applied to a fixed tensor")
            continue
        b.add_member(key, ids, module=m, dim=i, name=name, role=f"d{i}")
        b.mark_inexact(ids)
    return lab


@module_rule(nn.LocalResponseNorm, nn.CrossMapLRN2d)
def local_response_norm(b: Builder, call: Call) -> Labels | None:
    lab = call.lab(0, "input")
    if lab and 1 in lab:
        b.mark_inexact(lab[1])
    return lab


_PASS = [nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
         nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Softshrink,
         nn.Hardshrink, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.RReLU, nn.Dropout, nn.Dropout1d,
         nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout]
module_rule(*_PASS)(passthrough)

_SPATIAL = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
            nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3, nn.AdaptiveMaxPool1d: 1,
            nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3, nn.LPPool1d: 1, nn.LPPool2d: 2,
            nn.FractionalMaxPool2d: 2, nn.FractionalMaxPool3d: 3}


@module_rule(*_SPATIAL, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def spatial_module(b: Builder, call: Call):
    x = call.arg(0, "input")
    k = next((v for t, v in _SPATIAL.items() if isinstance(call.module, t)), x.ndim - 2)
    return spatial_labels(b, call, x, call.lab(0, "input"), k)


@module_rule(nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
             nn.modules.padding._ReplicationPadNd, nn.ZeroPad2d, nn.modules.padding._CircularPadNd)
def pad_module(b: Builder, call: Call):
    m = call.module
    mode = "constant" if isinstance(m, (nn.modules.padding._ConstantPadNd, nn.ZeroPad2d)) else "other"
    return pad_labels(b, call, call.arg(0, "input"), call.lab(0, "input"), tuple(m.padding), mode)


@module_rule(nn.Flatten)
def flatten_module(b: Builder, call: Call):
    x = call.arg(0, "input")
    return reshape_labels(b, call, x, call.lab(0, "input"), tuple(call.out.shape), ["free"] * call.out.ndim)


@module_rule(nn.Unflatten)
def unflatten_module(b: Builder, call: Call):
    m = call.module
    x = call.arg(0, "input")
    d = m.dim if isinstance(m.dim, int) and m.dim >= 0 else x.ndim + m.dim
    spec = ["free"] * call.out.ndim
    for i, s in enumerate(m.unflattened_size):
        spec[d + i] = "free" if s == -1 else "lit"
    return reshape_labels(b, call, x, call.lab(0, "input"), tuple(call.out.shape), spec)


@module_rule(nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)
def softmax_module(b: Builder, call: Call):
    x = call.arg(0, "input")
    dim = -3 if isinstance(call.module, nn.Softmax2d) else call.module.dim
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    return softmax_labels(b, call, x, call.lab(0, "input"), dim)


@module_rule(nn.ChannelShuffle)
def channel_shuffle(b: Builder, call: Call):
    """``view(N, g, C/g, ...) -> transpose -> view(N, C, ...)``: channel ``j`` of every one of the ``g`` groups
    forms one channel, so each group keeps the same count and the shuffle stays a valid permutation."""
    lab = call.lab(0, "input")
    if not lab or 1 not in lab:
        return lab
    g = call.module.groups
    arr = lab[1].reshape(g, -1)
    if g > 1:
        b.tie(np.tile(arr[0], g - 1), arr[1:].reshape(-1))
    out = dict(lab)
    out[1] = np.ascontiguousarray(arr.T).reshape(-1)
    return out


@module_rule(nn.PixelShuffle)
def pixel_shuffle(b: Builder, call: Call):
    lab = call.lab(0, "input")
    x = call.arg(0, "input")
    if not lab:
        return None
    cd = x.ndim - 3
    out = spatial_labels(b, call, x, lab, 2) or {}
    if cd in lab:
        r2 = call.module.upscale_factor ** 2
        arr = lab[cd].reshape(-1, r2)
        if r2 > 1:
            b.tie(np.repeat(arr[:, 0], r2 - 1), arr[:, 1:].reshape(-1))
        out[cd] = np.ascontiguousarray(arr[:, 0])
    return out or None


@module_rule(nn.PixelUnshuffle)
def pixel_unshuffle(b: Builder, call: Call):
    lab = call.lab(0, "input")
    x = call.arg(0, "input")
    if not lab:
        return None
    cd = x.ndim - 3
    out = spatial_labels(b, call, x, lab, 2) or {}
    if cd in lab:
        out[cd] = np.repeat(lab[cd], call.module.downscale_factor ** 2)
    return out or None


@module_rule(nn.GLU)
def glu(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    if not lab:
        return None
    d = call.module.dim % x.ndim
    out = dict(lab)
    if d in lab:
        h = x.shape[d] // 2
        b.tie(lab[d][:h], lab[d][h:])
        out[d] = lab[d][:h]
    return out
