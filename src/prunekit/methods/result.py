"""What every method returns, and the report it writes (table, JSON record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from prunekit.train.pipeline import StageRecord
from prunekit.report import ModelSummary, comparison_table, envelope, widths_table, write_record


@dataclass
class PruneResult:
    """The pruned ``model`` (a plain nn.Module), the group widths before/after, summaries of the baseline and
    the result (params, MACs, latency, accuracy), the stages run, and method-specific ``details``."""

    method: str
    model: nn.Module
    widths_before: dict[str, int]
    widths_after: dict[str, int]
    baseline: ModelSummary
    pruned: ModelSummary
    stages: list[StageRecord] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path (plots, model file, record)
    extra_tables: list[Any] = field(default_factory=list)  # method-specific rich tables (MethodRun.tables)

    def tables(self):
        """The rich tables of the report: per-group widths, then baseline vs pruned."""
        floor = self.details.get("floor_hit", [])
        return [widths_table(self.widths_before, self.widths_after, floor_hit=floor),
                comparison_table(f"{self.method}: before / after",
                                 {"baseline": self.baseline, "pruned": self.pruned}), *self.extra_tables]

    def record(self, *, name: str, model_name: str, dataset: str, reduced: bool, device: str = "cpu",
               schedule: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """The RESULTS-SCHEMA record of this run (``details["config"]``: the configuration the run used)."""
        def acc(s: ModelSummary) -> dict[str, Any]:
            d: dict[str, Any] = {"params": s.params, "macs": s.macs}
            if "test" in s.top1:
                d["top1"] = round(s.top1["test"], 2)
            d.update({f"top1_{k}": round(v, 2) for k, v in s.top1.items() if k != "test"})
            return d

        latency = {k: {"baseline": self.baseline.latency_ms.get(k), "pruned": v}
                   for k, v in self.pruned.latency_ms.items()}
        return envelope(name, device=device, method=self.method, model=model_name, dataset=dataset,
                        reduced=reduced, schedule=schedule or {}, baseline=acc(self.baseline),
                        pruned=acc(self.pruned), latency_ms=latency,
                        widths={"before": self.widths_before, "after": self.widths_after},
                        stages=[{k: v for k, v in s.__dict__.items() if k != "inputs"} for s in self.stages],
                        details=self.details, **extra)

    def write_record(self, path: str | Path, **kwargs: Any) -> Path:
        p = write_record(self.record(**kwargs), path)
        self.artifacts["record"] = str(p)
        return p
