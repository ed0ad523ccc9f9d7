"""Functional layers whose parameters are read by ``get_attr`` (custom modules that call F.conv2d /
F.linear / F.*_norm / F.prelu in their forward)."""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import FUNCTION_RULES, Call, broadcast, function_rule, unknown_rule, where_of


def _param_name(call: Call, i: int, key: str) -> str | None:
    raw = call.raw(i, key)
    if isinstance(raw, torch.fx.Node) and raw.op == "get_attr":
        return raw.target
    return None


def _owner(b: Builder, param: str) -> tuple[str, nn.Module]:
    owner = b.param_owners[param][0]
    return owner, b.module(owner)


@function_rule(F.linear)
def f_linear(b: Builder, call: Call):
    x, lab = call.arg(0, "input"), call.lab(0, "input") or {}
    wname = _param_name(call, 1, "weight")
    if wname is None:
        return unknown_rule(b, call)
    w, wl = call.arg(1, "weight"), call.lab(1, "weight") or {}
    owner, _ = _owner(b, wname)
    last = x.ndim - 1
    out_ids = wl.get(0)
    if out_ids is not None:
        b.mark_producer(wname, 0, owner)
    _tie_in(b, call, lab.get(last), wl.get(1))
    bl = call.lab(2, "bias") or {}
    if out_ids is not None and 0 in bl:
        b.tie(out_ids, bl[0])
    rows = call.out.numel() // (b.batch_size * w.shape[0])
    b.add_layer(owner, rows * (1 if 1 in wl else w.shape[1]), ("param", wname, 0) if out_ids is not None else None,
                ("param", wname, 1) if 1 in wl else None)
    result = {d: ids for d, ids in lab.items() if d < last}
    if out_ids is not None:
        result[last] = out_ids
    return result or None


def _tie_in(b: Builder, call: Call, in_ids, w_in) -> None:
    if in_ids is not None and w_in is not None:
        b.tie(in_ids, w_in)
    elif w_in is not None:
        b.pin(w_in, f"input of {call.op_name()} in '{call.where}' is fixed")
    elif in_ids is not None:
        b.pin(in_ids, f"{call.op_name()} in '{call.where}' reads them with a fixed weight")


def _f_conv(k: int):
    def rule(b: Builder, call: Call):
        x, lab = call.arg(0, "input"), call.lab(0, "input") or {}
        wname = _param_name(call, 1, "weight")
        groups = call.arg(6, "groups", 1)
        if wname is None:
            return unknown_rule(b, call)
        w, wl = call.arg(1, "weight"), call.lab(1, "weight") or {}
        owner, mod = _owner(b, wname)
        if groups > 1 and not isinstance(mod, nn.modules.conv._ConvNd):
            return unknown_rule(b, call)
        cdim = x.ndim - k - 1
        out_ids = wl.get(0)
        if out_ids is None:
            return unknown_rule(b, call)
        b.mark_producer(wname, 0, owner)
        in_ids = lab.get(cdim)
        if groups == 1:
            _tie_in(b, call, in_ids, wl.get(1))
        elif in_ids is not None:
            from prunekit.graph.rules.modules import _tie_conv_groups
            _tie_conv_groups(b, in_ids, out_ids, groups)
        else:
            b.pin(out_ids, f"grouped conv in '{call.where}' reads a fixed input")
        bl = call.lab(2, "bias") or {}
        if 0 in bl:
            b.tie(out_ids, bl[0])
        rows = call.out.numel() // (b.batch_size * w.shape[0])
        kk = math.prod(w.shape[2:])
        in_f = ("param", wname, 1) if (groups == 1 and 1 in wl) else None
        b.add_layer(owner, rows * kk * (1 if in_f else w.shape[1]), ("param", wname, 0), in_f)
        result = {d: ids for d, ids in lab.items() if d < cdim}
        result[cdim] = out_ids
        return result
    return rule


FUNCTION_RULES[F.conv1d] = _f_conv(1)
FUNCTION_RULES[F.conv2d] = _f_conv(2)
FUNCTION_RULES[F.conv3d] = _f_conv(3)


def _tie_params(b: Builder, call: Call, ids, params: list[tuple[int, str]]) -> None:
    """Tie dim 0 of the per-channel parameter arguments ``params`` (position, keyword) with ``ids``."""
    for i, key in params:
        pl = call.lab(i, key)
        if pl and 0 in pl:
            if ids is not None:
                b.tie(ids, pl[0])
            else:
                b.pin(pl[0], f"{call.op_name()} in '{call.where}' normalises a fixed tensor")


@function_rule(F.batch_norm, F.instance_norm)
def f_batch_norm(b: Builder, call: Call):
    lab = call.lab(0, "input")
    ids = lab.get(1) if lab else None
    _tie_params(b, call, ids, [(1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")])
    return lab


@function_rule(F.prelu)
def f_prelu(b: Builder, call: Call):
    lab = call.lab(0, "input")
    w = call.arg(1, "weight")
    if w.numel() == 1:
        return lab
    _tie_params(b, call, lab.get(1) if lab else None, [(1, "weight")])
    return lab


@function_rule(F.layer_norm)
def f_layer_norm(b: Builder, call: Call):
    """``F.layer_norm`` inside a LayerNorm subclass (e.g. a channels-first LayerNorm2d that permutes around it):
    its ``normalized_shape`` literal is the owner's attribute, which surgery updates; elsewhere it is a literal
    and channel dims it covers are pinned."""
    x, lab = call.arg(0, "input"), call.lab(0, "input")
    shape = tuple(call.arg(1, "normalized_shape"))
    k = len(shape)
    wname = _param_name(call, 2, "weight")
    owner_name = where_of(call.node)
    try:
        owner = b.module(owner_name) if owner_name != "(root)" else b.model
    except KeyError:
        owner = None
    updatable = isinstance(owner, nn.LayerNorm) and (
        wname is None or b.param_owners.get(wname, ("",))[0] == owner_name)
    operands = [(x, lab)] + [(call.arg(i, key), call.lab(i, key)) for i, key in ((2, "weight"), (3, "bias"))]
    if lab:
        for d in range(x.ndim - k, x.ndim):
            if d in lab:
                if updatable:
                    b.mark_inexact(lab[d])
                else:
                    b.pin(lab[d], f"layer_norm with a literal normalized_shape in '{call.where}'")
    return broadcast(b, call, operands)


@function_rule(F.group_norm)
def f_group_norm(b: Builder, call: Call):
    """``F.group_norm`` outside ``nn.GroupNorm`` (a custom forward, e.g. a GroupNorm subclass): ``num_groups``
    is a literal. With one group the statistics run over all channels whatever their number, so any width
    works (inexact, as LayerNorm); with more groups the channels pin."""
    lab = call.lab(0, "input")
    ids = lab.get(1) if lab else None
    if call.arg(1, "num_groups") == 1:
        if ids is not None:
            b.mark_inexact(ids)
        _tie_params(b, call, ids, [(2, "weight"), (3, "bias")])
        return lab
    if ids is not None:
        b.pin(ids, f"group_norm with a literal num_groups in '{call.where}'")
    _tie_params(b, call, None, [(2, "weight"), (3, "bias")])
    return lab
