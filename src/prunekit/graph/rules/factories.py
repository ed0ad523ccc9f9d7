"""Tensor factories (``torch.zeros((n, c, h, w))``, ``torch.arange(x.shape[-1])``...): their sizes may come from
tensors' sizes (``SizeRef``). A constant-valued factory (zeros, ones, empty, full, random) sized by a channel count
gets that count's channel ids (it follows the pruning); one whose values depend on the count (arange, linspace,
eye...) pins those channels. Sizes from fixed dims or literals give a fixed tensor."""

from __future__ import annotations

import torch

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import SIZE_AWARE, Call, SizeRef, function_rule


def _sizes(call: Call) -> list:
    """The labels of the size arguments, flattened (``zeros((a, b))``, ``zeros(a, b)``, ``full((a,), v)``)."""
    out = []

    def visit(x):
        if isinstance(x, (tuple, list)):
            for v in x:
                visit(v)
        else:
            out.append(x)
    name = getattr(call.node.target, "__name__", "")
    largs = call.largs[:1] if name == "full" else call.largs
    visit(list(largs) + ([call.lkwargs["size"]] if "size" in call.lkwargs else []))
    return out


@function_rule(torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn)
def constant_factory(b: Builder, call: Call):
    out = call.out
    if not isinstance(out, torch.Tensor):
        return None
    refs = _sizes(call)
    if len(refs) != out.ndim:
        refs = [None] * out.ndim
    lab = {}
    for j, ref in enumerate(refs):
        if isinstance(ref, SizeRef) and ref.ids is not None:
            if ref.derived or len(ref.ids) != out.shape[j]:
                b.pin(ref.ids, f"channel count used by {call.op_name()} in '{call.where}'")
            else:
                lab[j] = ref.ids
    return lab or None


@function_rule(torch.arange, torch.linspace, torch.logspace, torch.eye)
def counting_factory(b: Builder, call: Call):
    for ref in _sizes(call):
        if isinstance(ref, SizeRef) and ref.ids is not None:
            b.pin(ref.ids, f"channel count sets the values of {call.op_name()} in '{call.where}'")
    return None


SIZE_AWARE.update({constant_factory, counting_factory})
