"""Measured inference cost: latency (CPU wall clock or CUDA events, optionally under a CUDA graph) and peak memory.

Both functions run the model in eval mode under ``torch.inference_mode`` and leave the caller's model as it was:
when a device, dtype or memory-format conversion is asked for, a deep copy is converted and measured.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from prunekit.cost.count import Inputs, as_tuple, eval_mode
from prunekit.errors import ConfigError, check_range


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward of a batch, in milliseconds (median and 10th/90th percentiles of ``repeats``)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    batch_size: int
    device: str
    threads: int | None  # CPU threads used (None on GPU)
    method: str  # how it was timed, e.g. "cpu eager 2 threads", "cuda events eager", "cuda graph"
    repeats: int

    def __str__(self) -> str:
        return (f"{self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}) "
                f"batch {self.batch_size}, {self.method}")


def _resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for 'cpu' or 'cuda[:i]' (index filled in); ConfigError for others or missing CUDA."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={str(device)!r} but CUDA is not available on this machine")
        return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cpu":
        raise ConfigError(f"device={str(device)!r}: only 'cpu' and 'cuda[:i]' are supported")
    return dev


def _prepare(model: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device,
             dtype: torch.dtype | None, channels_last: bool) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return (model, inputs) on ``device``/``dtype``/memory format; the model is copied if it must change."""
    params = list(model.parameters())
    needs_copy = channels_last or any(p.device != device or (dtype is not None and p.dtype != dtype)
                                      for p in params)
    if needs_copy:
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

    def convert(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    return model, tuple(convert(t) for t in inputs)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 1] of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _summarise(times_ms: list[float], **info) -> LatencyResult:
    s = sorted(times_ms)
    return LatencyResult(median_ms=statistics.median(s), p10_ms=_percentile(s, 0.1), p90_ms=_percentile(s, 0.9),
                         repeats=len(s), **info)


def _time_cpu(run: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _time_cuda(run: Callable[[], object], warmup: int, repeats: int, device: torch.device,
               cuda_graph: bool) -> list[float]:
    # Warm up on a side stream: required before graph capture, harmless otherwise.
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, 3 if cuda_graph else 0)):
            run()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    if cuda_graph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        torch.cuda.synchronize(device)
        run = graph.replay
        for _ in range(max(1, warmup // 2)):
            run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def measure_latency(model: nn.Module, example_inputs: Inputs, *, device: str | torch.device = "cpu",
                    warmup: int = 10, repeats: int = 50, threads: int | None = None, cuda_graph: bool = False,
                    channels_last: bool = False, dtype: torch.dtype | None = None) -> LatencyResult:
    """Median latency of ``model(*example_inputs)`` (one batch, eval mode, inference mode) after ``warmup`` runs.

    CPU: ``time.perf_counter`` per forward, with ``torch.set_num_threads(threads)`` pinned during the measurement
    and restored afterwards (``threads=None``: the current setting). GPU (``device="cuda[:i]"``): CUDA events
    around each forward; ``cuda_graph=True`` captures one forward in a CUDA graph and times its replays, which
    removes the kernel-launch overhead that dominates small CIFAR nets in eager mode. ``dtype`` (e.g.
    ``torch.bfloat16``) converts the model and the floating inputs; ``channels_last`` converts the model and 4-D
    inputs. The caller's model is never modified (a converted copy is measured).
    """
    check_range("warmup", warmup, 0)
    check_range("repeats", repeats, 1)
    dev = _resolve_device(device)
    inputs = as_tuple(example_inputs)
    if cuda_graph and dev.type != "cuda":
        raise ConfigError("cuda_graph=True needs device='cuda'")
    if threads is not None:
        check_range("threads", threads, 1)

    model, inputs = _prepare(model, inputs, dev, dtype, channels_last)

    def run() -> object:
        return model(*inputs)

    with eval_mode(model), torch.inference_mode():
        if dev.type == "cpu":
            previous = torch.get_num_threads()
            used = threads or previous
            torch.set_num_threads(used)
            try:
                times = _time_cpu(run, warmup, repeats)
            finally:
                torch.set_num_threads(previous)
            method = f"cpu eager {used} thread{'s' if used > 1 else ''}"
            return _summarise(times, batch_size=inputs[0].shape[0], device="cpu", threads=used, method=method)
        times = _time_cuda(run, warmup, repeats, dev, cuda_graph)
        method = "cuda graph" if cuda_graph else "cuda events eager"
        return _summarise(times, batch_size=inputs[0].shape[0], device=str(dev), threads=None, method=method)


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``; no-op elsewhere),
    so that memory freed by earlier work does not hide the next allocations from the RSS."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _max_rss_bytes() -> int:
    """Peak RSS of the process so far (``ru_maxrss``: bytes on macOS, kilobytes elsewhere)."""
    import resource  # Unix only

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class _RssSampler(threading.Thread):
    """Samples the RSS every ``interval`` seconds until stopped; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 5e-4):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, _rss_bytes())
        return self.peak


def peak_memory(model: nn.Module, example_inputs: Inputs, device: str | torch.device = "cpu") -> int:
    """Extra memory (bytes) one eval-mode inference forward of ``example_inputs`` needs at its peak.

    CUDA: ``torch.cuda.max_memory_allocated`` during the forward minus the memory allocated before it (model
    and inputs already on the device) — exact for the caching allocator's tensors.
    CPU: the peak resident set size (RSS), sampled every 0.5 ms by a background thread from ``/proc/self/statm``
    (``ru_maxrss`` where ``/proc`` is missing), minus the RSS before the forward; free heap memory is first
    returned to the OS (glibc ``malloc_trim``). This is **approximate**: memory the allocator still holds is
    reused without raising the RSS (small inputs may read 0), short peaks between samples can be missed, and
    other threads of the process count too. Compare values measured the same way, for inputs large enough
    (tens of MB of activations) to dominate.
    """
    dev = _resolve_device(device)
    model, inputs = _prepare(model, as_tuple(example_inputs), dev, None, False)
    with eval_mode(model), torch.inference_mode():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            out = model(*inputs)
            torch.cuda.synchronize(dev)
            peak = torch.cuda.max_memory_allocated(dev)
            del out
            return max(0, peak - base)
        if not os.path.exists("/proc/self/statm"):
            base = _max_rss_bytes()
            out = model(*inputs)
            del out
            return max(0, _max_rss_bytes() - base)
        _release_free_memory()
        sampler = _RssSampler()
        base = sampler.peak
        sampler.start()
        try:
            out = model(*inputs)
        finally:
            peak = sampler.stop()
        del out
        return max(0, peak - base)
