"""Before/after summaries of a pruned model: size, compute, measured latency, accuracy; as a rich table.

Compare a baseline with its pruned model through ``summarize_pair``, which times both together (interleaved),
so that the table's speed-up is never computed from latencies measured at different times."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch
import torch.nn as nn
from rich.table import Table

if TYPE_CHECKING:
    from prunekit.cost import LatencyResult


@dataclass
class ModelSummary:
    """``params`` (all), ``macs`` per image, ``latency_ms`` {setting: median ms}, ``top1`` {split: percent};
    ``latency`` {setting: LatencyResult}: the full measurements behind ``latency_ms`` (p10/p90, load, time
    window, noise flags), empty for summaries built by hand."""

    params: int
    macs: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    top1: dict[str, float] = field(default_factory=dict)
    latency: dict[str, LatencyResult] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _set_latency(self, key: str, result: LatencyResult) -> None:
        self.latency[key] = result
        self.latency_ms[key] = result.median_ms


def _settings(x1: torch.Tensor, *, gpu_batch: int, repeats: int, threads: int, clock: str,
              budget_s: float | None) -> list[tuple[str, torch.Tensor, dict[str, Any]]]:
    """The latency settings of a summary: (key, input, options of measure/compare_latency)."""
    out: list[tuple[str, torch.Tensor, dict[str, Any]]] = [
        ("cpu_bs1", x1, dict(threads=threads, clock=clock, repeats=repeats, budget_s=budget_s))]
    if torch.cuda.is_available():
        xb = x1.expand(gpu_batch, *x1.shape[1:]).contiguous()
        out.append((f"gpu_bs{gpu_batch}", xb, dict(device="cuda", cuda_graph=True, channels_last=True,
                                                    dtype=torch.bfloat16, repeats=repeats, budget_s=budget_s)))
    return out


def _counted(model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, torch.Tensor, ModelSummary]:
    """(CPU model — a copy if ``model`` is elsewhere —, one CPU image, the summary with params/MACs)."""
    from prunekit.cost import count

    x1 = example_input[:1].detach().cpu()
    dev = next(model.parameters()).device
    cpu_model = model if dev.type == "cpu" else _cpu_copy(model)
    c = count(cpu_model, x1)
    return cpu_model, x1, ModelSummary(c.params, c.macs)


def summarize(model: nn.Module, example_input: torch.Tensor, *, latency: bool = True,
              gpu_batch: int = 256, repeats: int = 30, threads: int = 1, clock: str = "wall",
              budget_s: float | None = 20.0) -> ModelSummary:
    """Count params/MACs of ``model`` on one image shaped like ``example_input[0]``, and measure latency:
    CPU batch 1 (``threads`` threads, ``clock`` "wall" or "cpu", see ``measure_latency``) always, and GPU batch
    ``gpu_batch`` (bf16, channels_last, CUDA graph, CUDA events) when CUDA is available; each setting at most
    ``budget_s`` seconds. The model is not modified (latency is measured on copies where it must move).

    To compare a baseline with a pruned model use :func:`summarize_pair`: latencies of two separate
    ``summarize`` calls were taken at different times and are never shown as a speed-up."""
    from prunekit.cost import measure_latency

    cpu_model, x1, s = _counted(model, example_input)
    if latency:
        for key, x, options in _settings(x1, gpu_batch=gpu_batch, repeats=repeats, threads=threads,
                                         clock=clock, budget_s=budget_s):
            s._set_latency(key, measure_latency(cpu_model if key.startswith("cpu") else model, x, **options))
    return s


def summarize_pair(baseline_model: nn.Module, pruned_model: nn.Module, example_input: torch.Tensor, *,
                   latency: bool = True, gpu_batch: int = 256, repeats: int = 30, threads: int = 1,
                   clock: str = "wall", budget_s: float | None = 20.0) -> tuple[ModelSummary, ModelSummary]:
    """``(summary of baseline_model, summary of pruned_model)`` as :func:`summarize` gives, but with each latency
    setting timed for both models together (``compare_latency``: interleaved rounds, same machine state), so
    that ``comparison_table`` can show the speed-up. Neither model is modified."""
    from prunekit.cost import compare_latency

    cpu_a, x1, a = _counted(baseline_model, example_input)
    cpu_b, _, b = _counted(pruned_model, example_input)
    if latency:
        for key, x, options in _settings(x1, gpu_batch=gpu_batch, repeats=repeats,
                                         threads=threads, clock=clock, budget_s=budget_s):
            on_cpu = key.startswith("cpu")
            r = compare_latency({"baseline": cpu_a if on_cpu else baseline_model,
                                 "pruned": cpu_b if on_cpu else pruned_model}, x, **options)
            a._set_latency(key, r["baseline"])
            b._set_latency(key, r["pruned"])
    return a, b


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


def _latency_cell(s: ModelSummary, key: str) -> str:
    r = s.latency.get(key)
    if r is not None:
        return f"{r.median_ms:.3f} ({r.p10_ms:.3f}–{r.p90_ms:.3f})" + (" noisy" if r.noisy else "")
    return f"{s.latency_ms[key]:.3f}" if key in s.latency_ms else "-"


def _speedup_cell(base: ModelSummary, s: ModelSummary, key: str) -> str:
    from prunekit.cost import speedup

    if key not in s.latency_ms:
        return "-"
    a, b = base.latency.get(key), s.latency.get(key)
    x = speedup(a, b) if a is not None and b is not None else None
    return "n/a (noisy)" if x is None else f"{x:.2f}×"


def comparison_table(title: str, columns: Mapping[str, ModelSummary]) -> Table:
    """Rows params / MACs / latencies / accuracies; one column per model (e.g. baseline, pruned).

    Latency cells: median (p10–p90) ms, marked "noisy" when the measurement was. With several columns, a
    "speed-up" row per latency setting gives first column's median / this column's, but only where
    ``cost.speedup`` finds the two comparable (measured together, e.g. by ``summarize_pair``, with p90/p10 at
    most 2); elsewhere it reads "n/a (noisy)" (``cost.why_not_comparable`` tells why)."""
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
    notes = []
    for key in _keys(c.latency_ms for c in cols):
        t.add_row(f"latency {key} (ms)", *[_latency_cell(c, key) for c in cols])
        if len(cols) > 1:
            t.add_row(f"speed-up {key}", "", *[_speedup_cell(base, c, key) for c in cols[1:]])
        r = next((c.latency[key] for c in cols if key in c.latency), None)
        if r is not None:
            load = r.load_per_core
            notes.append(f"{key}: {r.method}" + ("" if load is None else f", load {load:.2f}/core"))
    for key in _keys(c.top1 for c in cols):
        t.add_row(f"top-1 {key}", *[f"{c.top1[key]:.2f}%" if key in c.top1 else "-" for c in cols])
    if notes:
        t.caption = "latency: median (p10–p90) · " + " · ".join(notes)
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
    if floor_hit:
        t.caption = ("floor hit: the method wanted to cut these groups further, but their floor (min_keep / "
                     "min_channels) stopped it; the budget was met by cutting the other groups more")
    return t


def arms_table(title: str, arms: Mapping[str, Mapping[str, Any]], *, full_macs: float | None = None) -> Table:
    """One row per arm of a comparison (e.g. searched winner vs uniform multiplier): MACs (share of
    ``full_macs``), params, measured latency and test top-1 over seeds (mean ± std). ``arms[name]`` holds
    ``macs``, ``params``, ``test_top1`` (list, %) and optionally ``latency_ms_cpu_bs1`` ({median, noisy})."""
    t = Table(title=title)
    for col in ("arm", "MACs", "params", "CPU bs1 latency (ms)", "test top-1", "seeds"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for name, a in arms.items():
        macs = f"{a['macs'] / 1e6:.2f} M" + (f" ({100 * a['macs'] / full_macs:.1f}%)" if full_macs else "")
        lat = a.get("latency_ms_cpu_bs1") or {}
        lat_cell = "-" if not lat else f"{lat['median']:.3f}" + (" noisy" if lat.get("noisy") else "")
        tops = list(a.get("test_top1") or [])
        mean = sum(tops) / len(tops) if tops else float("nan")
        std = (sum((v - mean) ** 2 for v in tops) / (len(tops) - 1)) ** 0.5 if len(tops) > 1 else 0.0
        t.add_row(name, macs, f"{a['params'] / 1e3:.1f} K", lat_cell, f"{mean:.2f} ± {std:.2f}%" if tops else "-",
                  str(len(tops)))
    return t
