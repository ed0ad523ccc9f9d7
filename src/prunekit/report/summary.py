"""Before/after summaries of a pruned model: size, compute, measured latency, accuracy; as a rich table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
from rich.table import Table


@dataclass
class ModelSummary:
    """``params`` (all), ``macs`` per image, ``latency_ms`` {setting: median ms}, ``top1`` {split: percent}."""

    params: int
    macs: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    top1: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(model: nn.Module, example_input: torch.Tensor, *, latency: bool = True,
              gpu_batch: int = 256, repeats: int = 30) -> ModelSummary:
    """Count params/MACs of ``model`` on one image shaped like ``example_input[0]``, and measure latency:
    CPU batch 1 (2 threads) always, and GPU batch ``gpu_batch`` (bf16, channels_last, CUDA graph) when CUDA is
    available. The model is not modified (latency is measured on copies)."""
    from prunekit.cost import count, measure_latency

    x1 = example_input[:1].detach().cpu()
    dev = next(model.parameters()).device
    cpu_model = model if dev.type == "cpu" else _cpu_copy(model)
    c = count(cpu_model, x1)
    s = ModelSummary(c.params, c.macs)
    if latency:
        s.latency_ms["cpu_bs1"] = measure_latency(cpu_model, x1, threads=2, repeats=repeats).median_ms
        if torch.cuda.is_available():
            xb = x1.expand(gpu_batch, *x1.shape[1:]).contiguous().cuda()
            gm = model if dev.type == "cuda" else model.cuda()
            s.latency_ms[f"gpu_bs{gpu_batch}"] = measure_latency(
                gm, xb, device="cuda", cuda_graph=True, channels_last=True, dtype=torch.bfloat16,
                repeats=repeats).median_ms
            if dev.type != "cuda":
                model.cpu()
    return s


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


def comparison_table(title: str, columns: Mapping[str, ModelSummary]) -> Table:
    """Rows params / MACs / latencies / accuracies; one column per model (e.g. baseline, pruned)."""
    t = Table(title=title)
    t.add_column("")
    for name in columns:
        t.add_column(name, justify="right")
    cols = list(columns.values())
    t.add_row("params", *[f"{c.params / 1e6:.3f} M" for c in cols])
    t.add_row("MACs / image", *[f"{c.macs / 1e6:.2f} M" for c in cols])
    base = cols[0]
    if len(cols) > 1:
        t.add_row("MACs kept", *[f"{100 * c.macs / base.macs:.1f}%" for c in cols])
    for key in _keys(c.latency_ms for c in cols):
        t.add_row(f"latency {key} (ms)", *[f"{c.latency_ms[key]:.3f}" if key in c.latency_ms else "-"
                                            for c in cols])
    for key in _keys(c.top1 for c in cols):
        t.add_row(f"top-1 {key}", *[f"{c.top1[key]:.2f}%" if key in c.top1 else "-" for c in cols])
    return t


def _keys(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for d in dicts:
        out += [k for k in d if k not in out]
    return out


def widths_table(before: Mapping[str, int], after: Mapping[str, int], *, floor_hit: Iterable[str] = (),
                 title: str = "channels per group") -> Table:
    """Per-group channels before → after, the share kept, and a mark where a per-layer floor stopped pruning."""
    floor_hit = set(floor_hit)
    t = Table(title=title)
    for col in ("group", "before", "after", "kept", "floor"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for name, b in before.items():
        a = after.get(name, b)
        t.add_row(name, str(b), str(a), f"{100 * a / b:.0f}%", "hit" if name in floor_hit else "")
    return t
