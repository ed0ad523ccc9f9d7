"""Reductions and normalisations along a dim (sum/mean/max..., softmax, F.normalize)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prunekit.graph.builder import Builder
from prunekit.graph.rules.elementwise import _register_names
from prunekit.graph.rules.registry import (Call, Labels, broadcast, function_rule, is_tensor, method_rule, norm_dim,
                                           shift_labels)


_SUMLIKE = {"sum", "nansum", "norm"}
# statistics that, kept as a size-1 dim (keepdim=True), can only be broadcast back over the channels they
# summarise (ConvNeXt-V2's global response norm divides by a mean over channels): any width works, but removing
# channels shifts the statistic, so the pruned model only approximates the masked one. Opt-in
# (``approximate_statistics=True``: the channels are marked inexact, as for LayerNorm); else they are pinned.
_STATISTICS = {"mean", "nanmean", "var", "std"}


def _reduce_dims(arg, ndim: int) -> list[int]:
    if arg is None:
        return list(range(ndim))
    if isinstance(arg, int):
        return [norm_dim(arg, ndim)]
    return [norm_dim(int(d), ndim) for d in arg]


def _reduction(kind: str):
    def rule(b: Builder, call: Call):
        x, lab = call.arg(0, "input"), call.lab(0, "input")
        if kind in ("max", "min") and is_tensor(call.arg(1, "other")):
            return broadcast(b, call)
        if not lab or not is_tensor(x):
            return None
        dim = call.arg(2, "dim") if kind == "norm" else call.arg(1, "dim", call.kwargs.get("axis"))
        if isinstance(dim, bool):
            dim = None
        first = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
        keepdim = is_tensor(first) and first.ndim == x.ndim
        dims = _reduce_dims(dim, x.ndim)
        for d in dims:
            if d in lab and kind not in _SUMLIKE:
                if keepdim and kind in _STATISTICS and b.approximate_statistics:
                    b.mark_inexact(lab[d])
                elif keepdim and kind in _STATISTICS:
                    b.pin(lab[d], f"{kind} over a channel dim in '{call.where}' (a statistic over the channels: "
                          "approximate_statistics=True prunes them anyway, shifting the statistic)")
                else:
                    b.pin(lab[d], f"{kind} over a channel dim in '{call.where}'")
        if keepdim:
            out = {d: ids for d, ids in lab.items() if d not in dims}
        else:
            keep = [d for d in range(x.ndim) if d not in dims]
            out = shift_labels(lab, {d: i for i, d in enumerate(keep)}) or {}
        out = out or None
        if isinstance(call.out, (tuple, list)):
            return tuple(out for _ in call.out)
        return out
    return rule


for _name in ("sum", "nansum", "mean", "nanmean", "amax", "amin", "max", "min", "std", "var", "prod", "logsumexp",
              "all", "any", "argmax", "argmin", "median", "norm", "count_nonzero"):
    _register_names([_name], _reduction(_name), namespaces=(torch, torch.Tensor))


def softmax_labels(b: Builder, call: Call, x, lab: Labels | None, dim: int):
    if not lab:
        return None
    d = norm_dim(dim, x.ndim)
    if d in lab:
        b.pin(lab[d], f"softmax over a channel dim in '{call.where}'")
    return lab


@function_rule(F.softmax, F.log_softmax, F.softmin, torch.softmax, torch.log_softmax)
@method_rule("softmax", "log_softmax")
def softmax(b: Builder, call: Call):
    x = call.arg(0, "input")
    dim = call.arg(1, "dim")
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    return softmax_labels(b, call, x, call.lab(0, "input"), dim)


@function_rule(F.normalize)
def normalize(b: Builder, call: Call):
    """``x / ||x||_p`` along a dim: zero channels do not change the norm, so removing them is exact."""
    return call.lab(0, "input")
