"""Cost models: counted size and compute (params, MACs per image) and measured latency / peak memory.

A NetAdapt-style per-layer latency look-up table will live here too (``cost/lut.py``).
"""

from prunekit.cost.count import Cost, count, format_count
from prunekit.cost.latency import (LatencyResult, NoisyLatencyWarning, compare_latency, measure_latency, peak_memory,
                                   speedup, why_not_comparable)

__all__ = ["Cost", "count", "format_count", "LatencyResult", "measure_latency", "peak_memory", "compare_latency",
           "speedup", "why_not_comparable", "NoisyLatencyWarning"]
