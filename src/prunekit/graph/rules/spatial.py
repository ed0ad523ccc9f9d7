"""Spatial ops over the trailing dims: pooling, interpolation, F.pad."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import FUNCTION_RULES, Call, Labels, function_rule


def spatial_labels(b: Builder, call: Call, x, lab: Labels | None, k: int):
    """Ops over the last ``k`` dims (pooling, interpolation): channels pass, channel ids on those dims pin."""
    if not lab:
        return None
    out = {}
    for d, ids in lab.items():
        if d >= x.ndim - k:
            b.pin(ids, f"spatial op {call.op_name()} over a channel dim in '{call.where}'")
        else:
            out[d] = ids
    out = out or None
    if isinstance(call.out, (tuple, list)):
        return tuple(out for _ in call.out)
    return out


def _spatial_fn(k: int | None):
    def rule(b: Builder, call: Call):
        x = call.arg(0, "input")
        return spatial_labels(b, call, x, call.lab(0, "input"), k if k is not None else x.ndim - 2)
    return rule


for _name in dir(F):
    if _name.startswith(("avg_pool", "max_pool", "adaptive_avg_pool", "adaptive_max_pool", "lp_pool",
                         "fractional_max_pool")):
        _digits = [c for c in _name if c.isdigit()]
        if _digits and callable(getattr(F, _name)):
            FUNCTION_RULES[getattr(F, _name)] = _spatial_fn(int(_digits[0]))
for _name in ("avg_pool1d", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool1d"):
    if hasattr(torch, _name):
        FUNCTION_RULES[getattr(torch, _name)] = _spatial_fn(int(_name[-2]))
FUNCTION_RULES[F.interpolate] = _spatial_fn(None)
FUNCTION_RULES[F.upsample] = _spatial_fn(None)


def pad_labels(b: Builder, call: Call, x, lab: Labels | None, pad: tuple, mode: str):
    """``F.pad``: padding the channel dim with constants adds slots that map to no producer. The pad amounts are
    literals, so those slots are pinned (kept) and the padded tensor's other channels stay prunable: an option-A
    ResNet shortcut then prunes correctly. Non-constant padding of a channel dim pins it."""
    if not lab:
        return None
    out = dict(lab)
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        before, after = int(pad[2 * i]), int(pad[2 * i + 1])
        if d not in lab or (before == 0 and after == 0):
            continue
        if mode != "constant" or before < 0 or after < 0:
            b.pin(lab[d], f"{mode} padding of a channel dim in '{call.where}'")
            out.pop(d)
            continue
        reason = f"zero-padded channel slots (F.pad) in '{call.where}': the pad amounts are fixed in the code"
        pre = b.new_ids(before, call.where)
        post = b.new_ids(after, call.where)
        b.pin(pre, reason)
        b.pin(post, reason)
        out[d] = np.concatenate([pre, lab[d], post])
    return out


@function_rule(F.pad)
def pad(b: Builder, call: Call):
    mode = call.arg(2, "mode", "constant") or "constant"
    return pad_labels(b, call, call.arg(0, "input"), call.lab(0, "input"), tuple(call.arg(1, "pad")), mode)
