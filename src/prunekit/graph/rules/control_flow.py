"""Comparisons of sizes (``self.shape != x.shape``, ``x.size(1) == 64``): their Python bool only steers control
flow, which the concrete tracer specialised on the example inputs. Such a comparison constrains the channel counts
it reads only if its result would change when those counts change: it is evaluated again with each channel count
moved by one either way; if the answer never changes (``None != shape``), nothing is pinned. If it changes
(``self.shape != x.shape`` once a first call has cached the shape), the concrete tracer traces the model again
with that decision flipped and both branches are analysed together (the comparison then pins nothing); where the
other branch cannot be traced, the counts are pinned (pruning would send the forward down an unanalysed path)."""

from __future__ import annotations

import operator
from typing import Any

import torch

from prunekit.graph.builder import Builder
from prunekit.graph.rules.registry import Call, SizeRef
from prunekit.graph.rules.sizes import SIZE_RULES

_COMPARISONS = (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge)


def _moved(value: Any, label: Any, delta: int) -> Any:
    """``value`` with every int that measures channels (``SizeRef`` with ids in ``label``) moved by ``delta``."""
    if isinstance(label, SizeRef):
        return value + delta if label.ids is not None and isinstance(value, int) else value
    if isinstance(value, (tuple, list)) and isinstance(label, (tuple, list)) and len(value) == len(label):
        moved = [_moved(v, lab, delta) for v, lab in zip(value, label)]
        return torch.Size(moved) if isinstance(value, torch.Size) else type(value)(moved)
    return value


def _channel_ids(label: Any) -> list:
    if isinstance(label, SizeRef):
        return [label.ids] if label.ids is not None else []
    if isinstance(label, (tuple, list)):
        return [ids for lab in label for ids in _channel_ids(lab)]
    return []


def size_comparison(b: Builder, call: Call):
    """A comparison whose operands carry channel counts: pin them only where the result depends on them."""
    ids = [i for lab in call.largs for i in _channel_ids(lab)]
    if not ids:
        return None
    try:
        depends = any(bool(call.node.target(*(_moved(v, lab, d) for v, lab in zip(call.args, call.largs))))
                      != bool(call.out) for d in (-1, 1))
    except Exception:  # noqa: BLE001 - cannot tell: keep the counts
        depends = True
    if depends and call.node.name not in b.analysed_branches:
        b.branches.append(call.node.name)
        for i in ids:
            b.pin(i, f"channel count decides a branch ({call.op_name()}) in '{call.where}'")
    return None


for _op in _COMPARISONS:
    SIZE_RULES[_op] = size_comparison
