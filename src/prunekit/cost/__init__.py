"""Cost models: counted size and compute (params, MACs per image) and measured latency / peak memory.

``CostModel`` (``models``): one interface ``cost(widths) -> float`` for every budget — ``MacsCost`` and
``ParamsCost`` (analytic, from the graph); NetAdapt's per-layer latency look-up table joins them (``LatencyTable``).
"""

from prunekit.cost.count import Cost, count, format_count
from prunekit.cost.models import CostModel, MacsCost, ParamsCost, cost_model
from prunekit.cost.latency import (LatencyResult, NoisyLatencyWarning, compare_latency, measure_latency, peak_memory,
                                   speedup, why_not_comparable)
from prunekit.cost.lut import LatencyTable

__all__ = ["Cost", "count", "format_count", "CostModel", "MacsCost", "ParamsCost", "cost_model", "LatencyResult",
           "measure_latency", "peak_memory", "compare_latency", "speedup", "why_not_comparable", "NoisyLatencyWarning",
           "LatencyTable"]
