"""Resource models for methods that budget latency: a :class:`~prunekit.cost.lut.LatencyTable` measured once per
run as a pipeline stage (a resumed run reuses the entries it measured instead of timing again)."""

from __future__ import annotations

import copy
from typing import Any

import torch.nn as nn

from prunekit.cost.lut import LatencyTable, make_backend
from prunekit.methods.base import MethodRun


def latency_backend(run: MethodRun, platform: str, *, batch: int | None, dtype: str | None, threads: int,
                    clock: str, warmup: int = 10, repeats: int = 50):
    """The measuring backend of ``platform`` (cpu | onnxruntime | cuda); CUDA uses the run's device."""
    return make_backend(platform, batch_size=batch, dtype=dtype, threads=threads, warmup=warmup, repeats=repeats,
                        device=str(run.device) if str(run.device).startswith("cuda") else "cuda", clock=clock)


def latency_table(run: MethodRun, model: nn.Module, backend, *, round_to: int, min_channels: int,
                  cache_dir: str | None = None, check: int = 0, progress: bool = False,
                  stage: str = "lut") -> tuple[LatencyTable, dict[str, Any]]:
    """The latency look-up table of ``model``'s groups on ``backend`` (grid ``round_to``, floor ``min_channels``),
    built in the json stage ``stage``; ``check`` random configurations go into its error report. Returns the
    table and the stage metrics (``table``, and ``check`` when asked)."""
    graph = run.graph(copy.deepcopy(model).cpu().eval())

    def build(_m: nn.Module) -> dict[str, Any]:
        table = LatencyTable(graph, backend, round_to=round_to, min_channels=min_channels, cache_dir=cache_dir,
                             progress=progress, log=run.log)
        out: dict[str, Any] = {"table": table.to_dict()}
        if check:
            report = table.check(check, seed=0)
            run.log(str(report))
            out["check"] = report.to_dict()
        return out

    run.transform(stage, model, build, kind="measure", artifact="json",
                  settings={"identity": backend.identity(), "round_to": round_to, "min_channels": min_channels,
                            "check": check})
    metrics = run.last_metrics()
    # the table the stage recorded, on the first run as on a resumed one (never a new measurement)
    table = LatencyTable.from_dict(graph, backend, metrics["table"], min_channels=min_channels, cache_dir=cache_dir,
                                   log=run.log)
    table.graph.model.cpu()
    return table, metrics
