"""Measured inference cost: latency (CPU wall or CPU-time clock, or CUDA events, optionally under a CUDA graph)
and peak memory.

Both functions run the model in eval mode under ``torch.inference_mode`` and leave the caller's model as it was:
when a device, dtype or memory-format conversion is asked for, a deep copy is converted and measured.

Latency is noisy on a shared machine, so every :class:`LatencyResult` carries its spread (p10/p90 beside the
median), the machine's load average while it was measured, and the time window (``time.perf_counter``) it was
measured in. The rules (constants below, each overridable per call):

- **noisy**: a measurement is noisy when its spread ``p90 / p10`` exceeds ``max_spread`` (2.0) or the machine's
  load from *other* work, ``(1-min load average - threads this measurement runs) / available cores``, exceeds
  ``max_load`` (1.0), or when the time budget cut it to fewer than 5 samples. A noisy measurement is re-measured
  up to ``retries`` (2) times, doubling ``repeats`` each time; if it is still noisy the last result is returned
  with ``noisy=True`` and a :class:`NoisyLatencyWarning` naming the spread and the load.
- **budget**: ``budget_s`` (20 s per model) caps the wall time of one call (warm-up, timing and re-measurements;
  warm-up is cut after a quarter of it). When it is spent, measuring stops after the current round, what was
  measured is returned with ``truncated=True`` and a warning (at least one timed forward per model is always
  made).
- **comparable** (:func:`speedup`, :func:`why_not_comparable`): two results may be divided only when they were
  taken on the same device, clock, threads and batch size, their time windows overlap by at least half of the
  shorter one (i.e. they were measured together, as :func:`compare_latency` does by interleaving), each has at
  least 3 samples and each spread ``p90 / p10`` is at most ``max_spread`` (2.0).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import math
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from prunekit.cost.count import Inputs, as_tuple, eval_mode
from prunekit.errors import ConfigError, check_range

MAX_SPREAD = 2.0  # p90 / p10 above this: noisy, and not comparable
MAX_LOAD = 1.0  # other work's load average per available core above this: noisy
MIN_OVERLAP = 0.5  # two windows must overlap by this share of the shorter one to be comparable
MIN_SAMPLES = 3  # fewer timed forwards than this: not comparable
BUDGET_S = 20.0  # default wall-time cap per model and call
_MIN_TRUNCATED_SAMPLES = 5  # a budget-truncated result with fewer samples is noisy
_WARMUP_SHARE = 0.25  # warm-up stops once it has used this share of the budget
CLOCKS = ("wall", "cpu")


class NoisyLatencyWarning(UserWarning):
    """A latency measurement stayed noisy after its re-measurements, or its time budget ran out."""


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward of a batch, in milliseconds (median and 10th/90th percentiles of ``repeats``).

    ``clock``: "wall" (``time.perf_counter``; CUDA events on GPU) or "cpu" (``time.process_time``: this process's
    CPU time, summed over its threads). ``start_s``/``end_s``: ``time.perf_counter()`` at the start of the first
    and the end of the last timed forward. ``loadavg``: ``os.getloadavg()`` while measuring (the larger of the
    readings at the start and the end of the window; None where unavailable), ``cpus``: the cores available to
    this process. ``noisy``: the noise rule (module docstring) still held after ``attempts`` measurements;
    ``truncated``: the time budget stopped the measurement early; ``notes``: why, in words.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    batch_size: int
    device: str
    threads: int | None  # CPU threads used (None on GPU)
    method: str  # how it was timed, e.g. "cpu eager 2 threads", "cuda events eager", "cuda graph"
    repeats: int  # timed forwards behind the percentiles
    clock: str = "wall"
    start_s: float | None = None
    end_s: float | None = None
    loadavg: tuple[float, float, float] | None = None
    cpus: int | None = None
    noisy: bool = False
    truncated: bool = False
    attempts: int = 1
    notes: tuple[str, ...] = field(default=())

    @property
    def spread(self) -> float:
        """``p90 / p10`` (1.0 = no spread; ``inf`` when p10 is 0)."""
        return self.p90_ms / self.p10_ms if self.p10_ms > 0 else math.inf

    @property
    def load_per_core(self) -> float | None:
        """Load from other work per available core: ``max(0, 1-min load - own threads) / cpus`` (None if unknown).

        The measurement's own running threads (``threads``, or 1 on GPU) are subtracted so that a measurement
        does not count itself; the 1-minute average lags, so this is approximate."""
        if self.loadavg is None or not self.cpus:
            return None
        return max(0.0, self.loadavg[0] - (self.threads or 1)) / self.cpus

    def __str__(self) -> str:
        load = self.load_per_core
        extra = "" if load is None else f", load {load:.2f}/core"
        flag = " [noisy]" if self.noisy else ""
        flag += " [truncated]" if self.truncated else ""
        return (f"{self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}) "
                f"batch {self.batch_size}, {self.method}{extra}{flag}")


def why_not_comparable(a: LatencyResult, b: LatencyResult, *, max_spread: float = MAX_SPREAD,
                       min_overlap: float = MIN_OVERLAP, min_samples: int = MIN_SAMPLES) -> str | None:
    """Why ``a`` and ``b`` cannot be compared, in words; None when they can (rules in the module docstring)."""
    for attr in ("device", "clock", "threads", "batch_size"):
        if getattr(a, attr) != getattr(b, attr):
            return f"different {attr}: {getattr(a, attr)!r} vs {getattr(b, attr)!r}"
    if None in (a.start_s, a.end_s, b.start_s, b.end_s):
        return "no time window recorded"
    overlap = min(a.end_s, b.end_s) - max(a.start_s, b.start_s)
    shorter = min(a.end_s - a.start_s, b.end_s - b.start_s)
    if overlap <= 0 or overlap < min_overlap * shorter:
        return "not measured at the same time (time windows do not overlap; use compare_latency)"
    for side, r in (("first", a), ("second", b)):
        if r.repeats < min_samples:
            return f"{side} has {r.repeats} samples (< {min_samples})"
        if r.spread > max_spread:
            return f"{side} is noisy: p90/p10 = {r.spread:.2f} (> {max_spread:g})"
    return None


def speedup(a: LatencyResult, b: LatencyResult, *, max_spread: float = MAX_SPREAD,
            min_overlap: float = MIN_OVERLAP, min_samples: int = MIN_SAMPLES) -> float | None:
    """``a.median_ms / b.median_ms`` (how many times faster ``b`` is than ``a``, e.g. a = baseline, b = pruned),
    or None when the two are not comparable (see :func:`why_not_comparable`)."""
    if why_not_comparable(a, b, max_spread=max_spread, min_overlap=min_overlap, min_samples=min_samples):
        return None
    return a.median_ms / b.median_ms if b.median_ms > 0 else None


# Clocks and machine state, looked up at call time (tests replace them).
def _wall_clock() -> float:
    return time.perf_counter()


def _cpu_clock() -> float:
    return time.process_time()


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return tuple(os.getloadavg())  # type: ignore[return-value]
    except (OSError, AttributeError):
        return None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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


def _cuda_graph_replay(run: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """Warm ``run`` up on a side stream (required before capture), capture it in a CUDA graph, return its replay."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            run()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    torch.cuda.synchronize(device)
    return graph.replay


def _time_one(run: Callable[[], object], clock: str, cuda: torch.device | None) -> tuple[float, float, float]:
    """One timed forward: (ms, wall start, wall end)."""
    if cuda is not None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        w0 = _wall_clock()
        start.record()
        run()
        end.record()
        end.synchronize()
        w1 = _wall_clock()
        return start.elapsed_time(end), w0, w1
    if clock == "cpu":
        w0 = _wall_clock()
        c0 = _cpu_clock()
        run()
        c1 = _cpu_clock()
        w1 = _wall_clock()
        return (c1 - c0) * 1e3, w0, w1
    w0 = _wall_clock()
    run()
    w1 = _wall_clock()
    return (w1 - w0) * 1e3, w0, w1


@dataclass
class _Round:
    """The samples of one measurement attempt, per model."""

    times: dict[str, list[float]]
    start: dict[str, float]
    end: dict[str, float]
    loadavg: tuple[float, float, float] | None

    @property
    def samples(self) -> int:
        return min(len(t) for t in self.times.values())

    def result(self, name: str, **info: object) -> LatencyResult:
        return _summarise(self.times[name], start_s=self.start[name], end_s=self.end[name], loadavg=self.loadavg,
                          **info)


def _max_load(a: tuple[float, float, float] | None,
              b: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    if a is None or b is None:
        return a or b
    return tuple(max(x, y) for x, y in zip(a, b))  # type: ignore[return-value]


def _noise(r: LatencyResult, max_spread: float, max_load: float) -> list[str]:
    """The noise rule's findings for ``r`` (empty: not noisy)."""
    out = []
    if r.spread > max_spread:
        out.append(f"spread p90/p10 = {r.spread:.2f} (> {max_spread:g})")
    load = r.load_per_core
    if load is not None and load > max_load:
        out.append(f"machine load {load:.2f} per core from other work (> {max_load:g}; load average "
                   f"{r.loadavg[0]:.2f} on {r.cpus} cores)")
    if r.truncated and r.repeats < _MIN_TRUNCATED_SAMPLES:
        out.append(f"only {r.repeats} samples before the time budget ran out")
    return out


def _interleaved(runs: Mapping[str, Callable[[], object]], *, warmup: int, repeats: int, clock: str,
                 cuda: torch.device | None, retries: int, budget_s: float | None, max_spread: float,
                 max_load: float, info: Mapping[str, object]) -> tuple[dict[str, LatencyResult], str | None]:
    """Time ``runs`` in interleaved rounds (each round: one forward of each, in order), apply the noise rule,
    re-measure and cap the time as the module docstring says. Returns the results and the warning to give."""
    begin = _wall_clock()
    deadline = math.inf if budget_s is None else begin + budget_s
    warm_deadline = math.inf if budget_s is None else begin + _WARMUP_SHARE * budget_s
    for _ in range(warmup):
        if _wall_clock() >= warm_deadline:
            break
        for run in runs.values():
            run()
    if cuda is not None:
        torch.cuda.synchronize(cuda)

    common = dict(info, clock=clock, cpus=_cpus())
    chosen: _Round | None = None
    truncated = False
    reps, attempt = repeats, 0
    while True:
        attempt += 1
        load0 = _loadavg()
        cur = _Round({n: [] for n in runs}, {}, {}, None)
        for i in range(reps):
            if i > 0 and _wall_clock() >= deadline:
                truncated = True
                break
            for name, run in runs.items():
                ms, w0, w1 = _time_one(run, clock, cuda)
                cur.times[name].append(ms)
                cur.start.setdefault(name, w0)
                cur.end[name] = w1
        cur.loadavg = _max_load(load0, _loadavg())
        if chosen is None or cur.samples >= chosen.samples:
            chosen = cur  # a re-measurement cut short by the budget keeps the fuller earlier one
        findings = {n: _noise(chosen.result(n, truncated=truncated, **common), max_spread, max_load) for n in runs}
        if truncated or attempt > retries or not any(findings.values()):
            break
        if _wall_clock() >= deadline:  # a re-measurement is wanted but the budget is spent
            truncated = True
            findings = {n: _noise(chosen.result(n, truncated=True, **common), max_spread, max_load) for n in runs}
            break
        reps *= 2

    budget_note = (f"time budget of {budget_s:g} s spent after {chosen.samples} timed rounds"
                   if truncated else None)
    results: dict[str, LatencyResult] = {}
    complaints = []
    for name in runs:
        notes = tuple(findings[name]) + ((budget_note,) if budget_note else ())
        results[name] = chosen.result(name, truncated=truncated, notes=notes, noisy=bool(findings[name]),
                                      attempts=attempt, **common)
        if notes:
            complaints.append(f"{name!r}: " + "; ".join(notes))
    message = None
    if complaints:
        message = (f"latency measurement is {'noisy' if any(findings.values()) else 'truncated'} after "
                   f"{attempt} attempt(s) (up to {reps} repeats): " + " | ".join(complaints)
                   + ". Medians may be off; measure on an idle machine, with fewer threads or clock='cpu'.")
    return results, message


def _check_options(warmup: int, repeats: int, threads: int | None, clock: str, retries: int,
                   budget_s: float | None, dev: torch.device, cuda_graph: bool) -> None:
    check_range("warmup", warmup, 0)
    check_range("repeats", repeats, 1)
    check_range("retries", retries, 0)
    if threads is not None:
        check_range("threads", threads, 1)
    if budget_s is not None:
        check_range("budget_s", budget_s, 0, low_open=True)
    if clock not in CLOCKS:
        raise ConfigError(f"clock={clock!r}: expected one of {', '.join(CLOCKS)}")
    if cuda_graph and dev.type != "cuda":
        raise ConfigError("cuda_graph=True needs device='cuda'")
    if clock == "cpu" and dev.type != "cpu":
        raise ConfigError("clock='cpu' times CPU work only; on CUDA the latency is timed with CUDA events "
                          "(clock='wall')")


def compare_latency(models: Mapping[str, nn.Module], example_inputs: Inputs, *,
                    device: str | torch.device = "cpu", threads: int | None = 1, repeats: int = 50,
                    warmup: int = 10, clock: str = "wall", cuda_graph: bool = False, channels_last: bool = False,
                    dtype: torch.dtype | None = None, retries: int = 2, budget_s: float | None = BUDGET_S,
                    max_spread: float = MAX_SPREAD, max_load: float = MAX_LOAD) -> dict[str, LatencyResult]:
    """Latency of each of ``models`` on the same ``example_inputs``, timed in interleaved rounds (A, B, A, B, ...)
    so that all of them see the same machine state; ``{name: LatencyResult}`` in the order of ``models``.

    Options as in :func:`measure_latency`, except that ``threads`` defaults to 1 (comparisons are steadiest
    single-threaded) and ``budget_s`` is per model (the call stops after ``budget_s * len(models)`` seconds).
    If any model is noisy, all are re-measured together. Compare two results with :func:`speedup`, which
    checks that their time windows overlap."""
    results, message = _compare(models, example_inputs, device=device, threads=threads, repeats=repeats,
                                warmup=warmup, clock=clock, cuda_graph=cuda_graph, channels_last=channels_last,
                                dtype=dtype, retries=retries, budget_s=budget_s, max_spread=max_spread,
                                max_load=max_load)
    if message:
        warnings.warn(message, NoisyLatencyWarning, stacklevel=2)
    return results


def _compare(models: Mapping[str, nn.Module], example_inputs: Inputs, *, device: str | torch.device,
             threads: int | None, repeats: int, warmup: int, clock: str, cuda_graph: bool, channels_last: bool,
             dtype: torch.dtype | None, retries: int, budget_s: float | None, max_spread: float,
             max_load: float) -> tuple[dict[str, LatencyResult], str | None]:
    if not models:
        raise ConfigError("compare_latency needs at least one model")
    dev = _resolve_device(device)
    _check_options(warmup, repeats, threads, clock, retries, budget_s, dev, cuda_graph)
    inputs = as_tuple(example_inputs)
    prepared = {name: _prepare(m, inputs, dev, dtype, channels_last) for name, m in models.items()}
    total_budget = None if budget_s is None else budget_s * len(models)
    batch = inputs[0].shape[0]

    def runner(model: nn.Module, args: tuple[torch.Tensor, ...]) -> Callable[[], object]:
        return lambda: model(*args)

    with torch.inference_mode(), contextlib.ExitStack() as stack:
        for m in {id(m): m for m, _ in prepared.values()}.values():  # the same model may appear twice
            stack.enter_context(eval_mode(m))
        runs = {name: runner(m, args) for name, (m, args) in prepared.items()}
        if dev.type == "cpu":
            previous = torch.get_num_threads()
            used = threads or previous
            torch.set_num_threads(used)
            try:
                method = f"cpu eager {used} thread{'s' if used > 1 else ''}"
                method += " (cpu time)" if clock == "cpu" else ""
                return _interleaved(runs, warmup=warmup, repeats=repeats, clock=clock, cuda=None, retries=retries,
                                    budget_s=total_budget, max_spread=max_spread, max_load=max_load,
                                    info=dict(batch_size=batch, device="cpu", threads=used, method=method))
            finally:
                torch.set_num_threads(previous)
        if cuda_graph:
            runs = {name: _cuda_graph_replay(run, dev) for name, run in runs.items()}
        method = "cuda graph" if cuda_graph else "cuda events eager"
        return _interleaved(runs, warmup=warmup, repeats=repeats, clock=clock, cuda=dev, retries=retries,
                            budget_s=total_budget, max_spread=max_spread, max_load=max_load,
                            info=dict(batch_size=batch, device=str(dev), threads=None, method=method))


def measure_latency(model: nn.Module, example_inputs: Inputs, *, device: str | torch.device = "cpu",
                    warmup: int = 10, repeats: int = 50, threads: int | None = None, cuda_graph: bool = False,
                    channels_last: bool = False, dtype: torch.dtype | None = None, clock: str = "wall",
                    retries: int = 2, budget_s: float | None = BUDGET_S, max_spread: float = MAX_SPREAD,
                    max_load: float = MAX_LOAD) -> LatencyResult:
    """Median latency of ``model(*example_inputs)`` (one batch, eval mode, inference mode) after ``warmup`` runs.

    CPU: ``torch.set_num_threads(threads)`` is pinned during the measurement and restored afterwards
    (``threads=None``: the current setting); each forward is timed with ``time.perf_counter`` (``clock="wall"``)
    or ``time.process_time`` (``clock="cpu"``: this process's CPU time, much less sensitive to other jobs on a
    loaded machine, but summed over all the process's threads, so with ``threads > 1`` it reads up to
    ``threads`` times the wall time, spin-waiting included). GPU (``device="cuda[:i]"``): CUDA events around
    each forward; ``cuda_graph=True`` captures one forward in a CUDA graph and times its replays, which removes
    the kernel-launch overhead that dominates small CIFAR nets in eager mode. ``dtype`` (e.g.
    ``torch.bfloat16``) converts the model and the floating inputs; ``channels_last`` converts the model and 4-D
    inputs. The caller's model is never modified (a converted copy is measured).

    Noise and time: re-measured up to ``retries`` times (doubling ``repeats``) while noisy (``max_spread``,
    ``max_load``), at most ``budget_s`` seconds in all (None: no cap); see the module docstring. To compare two
    models, use :func:`compare_latency` rather than two calls of this function.
    """
    results, message = _compare({"model": model}, example_inputs, device=device, threads=threads, repeats=repeats,
                                warmup=warmup, clock=clock, cuda_graph=cuda_graph, channels_last=channels_last,
                                dtype=dtype, retries=retries, budget_s=budget_s, max_spread=max_spread,
                                max_load=max_load)
    if message:
        warnings.warn(message, NoisyLatencyWarning, stacklevel=2)
    return results["model"]


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
