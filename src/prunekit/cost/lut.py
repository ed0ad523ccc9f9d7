"""NetAdapt's latency look-up table: every layer signature measured once on the target, a network predicted as the
sum of its layers plus a measured constant.

``LatencyTable(graph, backend)`` is a :class:`~prunekit.cost.models.CostModel` (``table(widths) -> ms``):

- **Entries.** The graph's leaf-layer calls (``graph.layer_signatures(widths)``: type, kernel, stride, groups,
  per-sample input/output shape, dtype) are measured *alone* on the target, at the table's batch size, for every
  width on the grid a group can take (its full width and the multiples of ``round_to`` below it): conv, linear
  and BatchNorm layers are rebuilt at the entry's channels, stateless layers (activations, pooling) reused.
  Signatures that are equal (``LayerSignature.key``: the paper's "same filter shape and feature-map size") share
  one entry, so a ResNet's repeated blocks cost one measurement. Identity, Dropout and Flatten cost 0; a layer
  type the table cannot rebuild is left to the constant (``unmeasured`` lists them).
- **Prediction** = sum of the entries of the network's signatures + ``constant``, where ``constant`` = the
  directly measured latency of the full network minus its entry sum (adds, reshapes, framework overhead: what the
  layers alone do not see). A query off the grid measures the missing entries on the spot.
- **Targets** (:class:`Backend`): ``TorchCPU`` (eager, pinned threads, the project's ``measure_latency``),
  ``OnnxRuntimeCPU`` (each entry exported to ONNX and run by ONNX Runtime's CPU provider with pinned threads:
  what many deployments run; its graph optimisations fuse conv + BN + ReLU, which the constant partly absorbs)
  and ``CudaGraphs`` (bf16, channels_last, every forward replayed from a CUDA graph: eager timing of small
  networks measures kernel launches, not widths). Each times a forward after warm-up as the median of repeats.
- **Cache.** Entries are stored under ``cache_dir`` (default ``$PRUNEKIT_CACHE/lut`` or
  ``~/.cache/prunekit/lut``) in one JSON file per *identity*: runtime, device (CPU model / GPU name), threads,
  batch size, dtype, memory format and the versions of torch / ONNX Runtime / CUDA. Another device or version
  reads another file, so stale numbers are never reused; every model measured on the same identity shares it.
- **Accuracy** (:meth:`LatencyTable.check`): predicted vs directly measured latency on random width
  configurations (median |error|, Spearman ρ) and — what NetAdapt relies on — predicted vs measured *change* when
  one group shrinks by one grid step, all measured interleaved in the same rounds, with the machine's own noise
  (the full network measured twice) beside the errors.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import platform
import random
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from prunekit.cost.latency import NoisyLatencyWarning, compare_latency
from prunekit.cost.models import CostModel
from prunekit.errors import ConfigError, check_range
from prunekit.graph import DependencyGraph, LayerSignature

FORMAT = "prunekit.lut/1"
RUNTIMES = ("cpu", "onnxruntime", "cuda")
ZERO_COST = ("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "Flatten", "Unflatten")
STATELESS = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Hardswish",
             "Hardsigmoid", "Hardtanh", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "MaxPool1d", "MaxPool2d",
             "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
             "AdaptiveAvgPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "ChannelShuffle",
             "PixelShuffle", "PixelUnshuffle", "Upsample", "ZeroPad2d", "ConstantPad2d")
_CONV_ATTRS = ("kernel_size", "stride", "padding", "dilation", "groups", "output_padding")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Timing:
    """One measured latency: median and 10th/90th percentiles (ms per batch) of ``repeats`` timed forwards."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int = 0

    @property
    def spread(self) -> float:
        return self.p90_ms / self.p10_ms if self.p10_ms > 0 else math.inf


def _percentiles(times: list[float]) -> Timing:
    s = sorted(times)

    def q(p: float) -> float:
        pos = p * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return Timing(statistics.median(s), q(0.1), q(0.9), len(s))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Backend:
    """How one target runs a network: ``identity()`` (what the cache is keyed by), ``measure(module, x)`` (one
    network or layer, after warm-up, median of repeats) and ``measure_many(models, x)`` (several, interleaved in
    the same rounds, for comparisons). ``batch_size`` and ``dtype`` describe the inputs it is given."""

    runtime = "backend"

    def __init__(self, *, batch_size: int = 1, dtype: str = "float32", warmup: int = 10, repeats: int = 50,
                 threads: int | None = 1):
        check_range("batch_size", batch_size, 1)
        check_range("warmup", warmup, 0)
        check_range("repeats", repeats, 1)
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype={dtype!r}: expected one of {', '.join(_DTYPES)}")
        self.batch_size, self.dtype, self.warmup, self.repeats, self.threads = batch_size, dtype, warmup, repeats, \
            threads

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def identity(self) -> dict[str, Any]:
        return {"format": FORMAT, "runtime": self.runtime, "device": _cpu_name(), "machine": platform.machine(),
                "threads": self.threads, "batch_size": self.batch_size, "dtype": self.dtype,
                "torch": torch.__version__}

    def measure(self, module: nn.Module, x: torch.Tensor) -> Timing:
        return self.measure_many({"m": module}, x)["m"]

    def measure_many(self, models: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.runtime} batch {self.batch_size} {self.dtype}"


class TorchCPU(Backend):
    """torch eager on the CPU, ``threads`` pinned (``torch.set_num_threads``), ``clock`` "wall" or "cpu"."""

    runtime = "cpu"

    def __init__(self, *, clock: str = "wall", budget_s: float | None = 20.0, **kw: Any):
        super().__init__(**kw)
        self.clock, self.budget_s = clock, budget_s

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "clock": self.clock}

    def measure_many(self, models: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoisyLatencyWarning)
            res = compare_latency(dict(models), x, device="cpu", threads=self.threads, repeats=self.repeats,
                                  warmup=self.warmup, clock=self.clock, dtype=self.torch_dtype, retries=1,
                                  budget_s=self.budget_s)
        return {k: Timing(r.median_ms, r.p10_ms, r.p90_ms, r.repeats) for k, r in res.items()}

    def describe(self) -> str:
        return f"torch eager CPU, {self.threads} thread(s), batch {self.batch_size} {self.dtype}"


class CudaGraphs(Backend):
    """CUDA, every forward captured once in a CUDA graph and timed by its replays (CUDA events); ``dtype``
    defaults to bfloat16, ``channels_last`` to True."""

    runtime = "cuda"

    def __init__(self, *, device: str = "cuda", channels_last: bool = True, dtype: str = "bfloat16",
                 budget_s: float | None = 20.0, **kw: Any):
        super().__init__(dtype=dtype, threads=None, **kw)
        if not torch.cuda.is_available():
            raise ConfigError("the cuda latency target needs a CUDA device; this machine has none")
        self.device, self.channels_last, self.budget_s = device, channels_last, budget_s

    def identity(self) -> dict[str, Any]:
        dev = torch.device(self.device)
        return {**super().identity(), "device": torch.cuda.get_device_name(dev), "cuda": torch.version.cuda,
                "channels_last": self.channels_last, "timing": "cuda graph"}

    def measure_many(self, models: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoisyLatencyWarning)
            res = compare_latency(dict(models), x, device=self.device, threads=None, repeats=self.repeats,
                                  warmup=self.warmup, cuda_graph=True, channels_last=self.channels_last,
                                  dtype=self.torch_dtype, retries=1, budget_s=self.budget_s)
        return {k: Timing(r.median_ms, r.p10_ms, r.p90_ms, r.repeats) for k, r in res.items()}

    def describe(self) -> str:
        return f"CUDA graphs on {self.identity()['device']}, batch {self.batch_size} {self.dtype}"


class OnnxRuntimeCPU(Backend):
    """ONNX Runtime's CPU execution provider, ``threads`` intra-op threads (1 inter-op), full graph
    optimisation; each module is exported with the legacy (TorchScript) exporter and timed with
    ``time.perf_counter`` around ``session.run``."""

    runtime = "onnxruntime"

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ConfigError("the onnxruntime latency target needs `pip install onnxruntime`") from None
        if self.dtype != "float32":
            raise ConfigError("the onnxruntime CPU target measures float32 only")

    def identity(self) -> dict[str, Any]:
        import onnxruntime

        return {**super().identity(), "onnxruntime": onnxruntime.__version__}

    def session(self, module: nn.Module, x: torch.Tensor):
        import onnxruntime as ort

        buf = io.BytesIO()
        module = copy.deepcopy(module).cpu().float().eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads or 0
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
        return sess

    def measure_many(self, models: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        feed = {"x": x.detach().cpu().float().numpy()}
        sessions = {k: self.session(m, x) for k, m in models.items()}
        for _ in range(self.warmup):
            for s in sessions.values():
                s.run(None, feed)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(self.repeats):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, feed)
                times[k].append((time.perf_counter() - t0) * 1e3)
        return {k: _percentiles(v) for k, v in times.items()}

    def describe(self) -> str:
        return f"ONNX Runtime CPU, {self.threads} thread(s), batch {self.batch_size} {self.dtype}"


def make_backend(runtime: str, *, batch_size: int | None = None, dtype: str | None = None, threads: int = 1,
                 warmup: int = 10, repeats: int = 50, device: str = "cuda", clock: str = "wall") -> Backend:
    """The :class:`Backend` for ``runtime`` (``cpu`` | ``onnxruntime`` | ``cuda``) with the platform defaults:
    batch 1 float32 on the CPU targets, batch 128 bfloat16 under CUDA graphs; ``clock`` (wall | cpu) for torch on
    the CPU only."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"latency target {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    kw = dict(warmup=warmup, repeats=repeats)
    if runtime == "cuda":
        return CudaGraphs(device=device, batch_size=batch_size or 128, dtype=dtype or "bfloat16", **kw)
    if clock != "wall" and runtime != "cpu":
        raise ConfigError(f"clock={clock!r} is for the torch CPU target only")
    if runtime == "cpu":
        return TorchCPU(batch_size=batch_size or 1, dtype=dtype or "float32", threads=threads, clock=clock, **kw)
    return OnnxRuntimeCPU(batch_size=batch_size or 1, dtype=dtype or "float32", threads=threads, **kw)


# ------------------------------------------------------------------------------------------------ layer rebuilds
def _entry_key(sig: LayerSignature) -> str:
    return json.dumps(sig.key, default=list)


def _build_layer(sig: LayerSignature, template: nn.Module) -> nn.Module | None:
    """A layer like ``template`` with the channels of ``sig`` (None: the table cannot rebuild it)."""
    t, attrs = sig.type, dict(sig.attrs)
    if isinstance(template, nn.modules.conv._ConvNd):
        kw = {k: v for k, v in attrs.items() if k in _CONV_ATTRS}
        cin, cout, groups = sig.in_shape[0], sig.out_shape[0], int(kw.get("groups", 1))
        if cin % groups or cout % groups:
            return None
        return type(template)(cin, cout, bias=template.bias is not None, **kw)
    if isinstance(template, nn.Linear):
        return nn.Linear(sig.in_shape[-1], sig.out_shape[-1], bias=template.bias is not None)
    if isinstance(template, nn.modules.batchnorm._BatchNorm):
        bn = type(template)(sig.in_shape[0], eps=template.eps, affine=template.affine,
                            track_running_stats=template.track_running_stats)
        return bn
    if t in STATELESS and not any(True for _ in template.parameters()):
        return copy.deepcopy(template)
    return None


# ------------------------------------------------------------------------------------------------ the table
@dataclass
class CheckReport:
    """The accuracy of a table against direct measurement (all numbers in ms, errors in % unless named).

    ``configs``: ``[{widths, predicted, measured}]`` for random width configurations; ``median_abs_error_pct``,
    ``spearman``; ``deltas``: ``[{group, width, predicted, measured}]`` latency *saved* when one group shrinks by
    one grid step, with ``delta_median_abs_error_ms``, ``delta_spearman`` and ``delta_sign_agreement`` (share of
    groups where prediction and measurement agree that the latency falls); ``noise_pct``: |difference| between two
    measurements of the full network in the same rounds, and ``median_spread`` (p90/p10 of all measurements)."""

    backend: str
    full_ms: float
    configs: list[dict[str, Any]] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)
    median_abs_error_pct: float | None = None
    spearman: float | None = None
    delta_median_abs_error_ms: float | None = None
    delta_spearman: float | None = None
    delta_sign_agreement: float | None = None
    noise_pct: float | None = None
    noise_ms: float | None = None
    median_spread: float | None = None

    def errors_pct(self) -> list[float]:
        return [100 * (c["predicted"] - c["measured"]) / c["measured"] for c in self.configs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        def f(v, fmt):
            return "n/a" if v is None else format(v, fmt)

        sign = None if self.delta_sign_agreement is None else 100 * self.delta_sign_agreement
        return (f"LUT vs direct measurement ({self.backend}; full network {self.full_ms:.3f} ms):\n"
                f"  {len(self.configs)} random width configurations: median |error| "
                f"{f(self.median_abs_error_pct, '.1f')}%, Spearman {f(self.spearman, '.3f')}\n"
                f"  {len(self.deltas)} one-group changes: median |error of the saving| "
                f"{f(self.delta_median_abs_error_ms, '.4f')} ms, Spearman {f(self.delta_spearman, '.3f')}, "
                f"same sign {f(sign, '.0f')}%\n"
                f"  machine noise: the full network measured twice differs by {f(self.noise_pct, '.1f')}% "
                f"({f(self.noise_ms, '.4f')} ms); median p90/p10 spread {f(self.median_spread, '.2f')}")


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long sequences (average ranks for ties; None if undefined)."""
    if len(a) != len(b) or len(a) < 2:
        return None

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va > 0 and vb > 0 else None


def default_cache_dir() -> Path:
    root = os.environ.get("PRUNEKIT_CACHE")
    return Path(root) / "lut" if root else Path.home() / ".cache" / "prunekit" / "lut"


class LatencyTable(CostModel):
    """Predicted latency (ms per batch of ``backend.batch_size``) of ``graph``'s network at any widths: the sum
    of its layers' measured entries plus a measured constant (see the module docstring).

    ``graph``: the DependencyGraph of the *unpruned* network (queries give widths of its groups). ``backend``:
    the target (:func:`make_backend`). ``round_to``: the width grid step (entries are measured for every group
    width that is the full width or a multiple of it, at least ``min_channels``). ``cache_dir``: where entries
    persist (None: the default, False: no disk cache). ``progress``: a progress bar while measuring. Building
    measures what the cache lacks and the constant; ``stats`` counts signatures, unique entries, cache hits and
    measurements."""

    name, unit = "latency", "ms"

    def __init__(self, graph: DependencyGraph, backend: Backend, *, round_to: int = 8, min_channels: int = 1,
                 cache_dir: str | Path | None | bool = None, progress: bool = False,
                 log: Callable[[str], None] | None = None, build: bool = True):
        check_range("round_to", round_to, 1)
        self.graph, self.backend = graph, backend
        self.round_to, self.min_channels = int(round_to), int(min_channels)
        self.progress, self.log = progress, log or (lambda m: None)
        self.cache_path = None if cache_dir is False else \
            Path(cache_dir if cache_dir not in (None, True) else default_cache_dir()) / self._cache_name()
        self.entries: dict[str, float] = {}
        self.constant = 0.0
        self.full_measured: Timing | None = None
        self.unmeasured: dict[str, str] = {}  # signature type -> why (cost left to the constant)
        self.stats = {"signatures": 0, "unique": 0, "cached": 0, "measured": 0}
        self._modules = dict(graph.model.named_modules(remove_duplicate=False))
        self._skip: set[str] = set()
        self._cache: dict[str, float] = {}
        self._load_cache()
        if build:
            self.build()

    # ---- identity and cache ---------------------------------------------------------------------------------
    def _cache_name(self) -> str:
        ident = json.dumps(self.backend.identity(), sort_keys=True, default=str)
        return f"{self.backend.runtime}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"

    def _load_cache(self) -> None:
        if self.cache_path is None or not self.cache_path.exists():
            return
        try:
            data = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return
        if data.get("identity") == json.loads(json.dumps(self.backend.identity(), default=str)):
            self._cache = {k: float(v) for k, v in data.get("entries", {}).items()}
        else:
            self._cache = {}

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        merged = {}
        if self.cache_path.exists():  # another process may have added entries meanwhile
            try:
                old = json.loads(self.cache_path.read_text())
                if old.get("identity") == json.loads(json.dumps(self.backend.identity(), default=str)):
                    merged.update(old.get("entries", {}))
            except (OSError, ValueError):
                pass
        merged.update(self._cache)
        tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"identity": self.backend.identity(), "entries": merged}, indent=0,
                                  default=str))
        os.replace(tmp, self.cache_path)

    # ---- the grid -------------------------------------------------------------------------------------------
    def grid(self, group: str) -> list[int]:
        """The widths group ``group`` may take in queries answered from the table (ascending)."""
        g = self.graph.group(group)
        step = g.round_to(self.round_to)
        low = max(self.min_channels, g.min_width)
        return sorted({g.size, *(w for w in range(step, g.size, step) if w >= low)})

    def grid_signatures(self) -> dict[str, LayerSignature]:
        """Every distinct signature the grid can produce ({entry key: signature})."""
        graph = self.graph
        full = graph.widths()
        base = graph.layer_signatures(full)
        prunable = [g.name for g in graph.prunable_groups]
        deps: list[set[str]] = [set() for _ in base]
        for name in prunable:
            grid = self.grid(name)
            if len(grid) < 2:
                continue
            for j, s in enumerate(graph.layer_signatures({name: grid[0]})):
                if s.key != base[j].key:
                    deps[j].add(name)
        buckets: dict[tuple[str, ...], list[int]] = {}
        for j, d in enumerate(deps):
            buckets.setdefault(tuple(sorted(d)), []).append(j)
        out: dict[str, LayerSignature] = {}
        for names, idx in buckets.items():
            combos = product(*(self.grid(n) for n in names)) if len(names) <= 3 else \
                [tuple(full[n] for n in names)] + [tuple(w if m == n else full[m] for m in names)
                                                   for n in names for w in self.grid(n)]
            for combo in combos:
                sigs = graph.layer_signatures(dict(zip(names, combo))) if names else base
                for j in idx:
                    out.setdefault(_entry_key(sigs[j]), sigs[j])
        return out

    # ---- measuring ------------------------------------------------------------------------------------------
    def _module_for(self, sig: LayerSignature) -> nn.Module | None:
        if sig.type in ZERO_COST:
            return None
        template = self._modules.get(sig.name)
        if template is None:
            self.unmeasured.setdefault(sig.type, "module not found")
            return None
        layer = _build_layer(sig, template)
        if layer is None:
            self.unmeasured.setdefault(sig.type, "cannot be rebuilt at other widths")
        return layer

    def _input(self, shape: Sequence[int]) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.randn(self.backend.batch_size, *shape, generator=g)

    def _entry(self, key: str, sig: LayerSignature) -> float | None:
        """The entry for ``sig`` (measured now if missing); None for layers left to the constant."""
        if key in self.entries:
            return self.entries[key]
        if key in self._skip:
            return None
        if key in self._cache:
            self.entries[key] = self._cache[key]
            self.stats["cached"] += 1
            return self.entries[key]
        if sig.type in ZERO_COST:
            self.entries[key] = 0.0
            return 0.0
        layer = self._module_for(sig)
        if layer is None:
            self._skip.add(key)
            return None
        t = self.backend.measure(layer.eval(), self._input(sig.in_shape))
        self.entries[key] = self._cache[key] = t.median_ms
        self.stats["measured"] += 1
        return t.median_ms

    def build(self) -> "LatencyTable":
        """Measure every grid entry the cache lacks (progress bar), then the constant; saves the cache."""
        sigs = self.grid_signatures()
        self.stats["signatures"] = len(self.graph.layer_signatures())
        self.stats["unique"] = len(sigs)
        todo = [(k, s) for k, s in sigs.items()]
        t0 = time.perf_counter()
        from rich.progress import Progress

        with Progress(disable=not self.progress, transient=True) as bar:
            task = bar.add_task(f"LUT ({self.backend.runtime})", total=len(todo))
            for i, (k, s) in enumerate(todo):
                self._entry(k, s)
                bar.advance(task)
                if self.stats["measured"] and i % 50 == 49:
                    self._save_cache()
        self._save_cache()
        self.measure_constant()
        self.log(f"latency table: {self.stats['unique']} entries ({self.stats['measured']} measured, "
                 f"{self.stats['cached']} from the cache) for {self.stats['signatures']} layer calls, "
                 f"{time.perf_counter() - t0:.1f} s; constant {self.constant:+.4f} ms")
        return self

    def measure_constant(self) -> float:
        """Measure the full network directly; ``constant`` = measured − entry sum."""
        self.full_measured = self.backend.measure(self.graph.model.eval(), self.example())
        self.constant = self.full_measured.median_ms - self.layer_sum(None)
        return self.constant

    def example(self) -> torch.Tensor:
        x = self.graph.example_inputs[0]
        return self._input(tuple(x.shape[1:]))

    # ---- prediction -----------------------------------------------------------------------------------------
    def layer_sum(self, widths: Mapping[str, int] | None = None) -> float:
        """Sum of the entries of the network's layers at ``widths`` (None: the full network)."""
        total = 0.0
        for sig in self.graph.layer_signatures(widths):
            v = self._entry(_entry_key(sig), sig)
            if v is not None:
                total += v
        return total

    def __call__(self, widths: Mapping[str, int] | None = None) -> float:
        return self.layer_sum(widths) + self.constant

    def layer_breakdown(self, widths: Mapping[str, int] | None = None) -> dict[str, float]:
        """{layer name: entry ms} at ``widths`` (layers left to the constant omitted)."""
        out = {}
        for sig in self.graph.layer_signatures(widths):
            v = self._entry(_entry_key(sig), sig)
            if v is not None:
                out[sig.name] = v
        return out

    def to_dict(self) -> dict[str, Any]:
        """The table as data (identity, constant, entries, stats): what a run folder keeps."""
        return {"identity": self.backend.identity(), "round_to": self.round_to, "constant_ms": self.constant,
                "full_measured_ms": None if self.full_measured is None else asdict(self.full_measured),
                "stats": dict(self.stats), "unmeasured": dict(self.unmeasured), "entries": dict(self.entries)}

    @classmethod
    def from_dict(cls, graph: DependencyGraph, backend: Backend, data: Mapping[str, Any], *,
                  min_channels: int = 1, cache_dir: str | Path | None | bool = None, progress: bool = False,
                  log: Callable[[str], None] | None = None) -> "LatencyTable":
        """The table ``to_dict`` wrote (nothing measured now; entries off its grid are measured when queried)."""
        ident = json.loads(json.dumps(backend.identity(), default=str))
        if data.get("identity") != ident:
            raise ConfigError("this latency table was measured on another target "
                              f"({data.get('identity')}); this backend is {ident}")
        table = cls(graph, backend, round_to=int(data["round_to"]), min_channels=min_channels, cache_dir=cache_dir,
                    progress=progress, log=log, build=False)
        table.entries.update({k: float(v) for k, v in data["entries"].items()})
        table.constant = float(data["constant_ms"])
        fm = data.get("full_measured_ms")
        table.full_measured = None if fm is None else Timing(**fm)
        table.stats.update(data.get("stats", {}))
        table.unmeasured.update(data.get("unmeasured", {}))
        return table

    # ---- accuracy -------------------------------------------------------------------------------------------
    def random_widths(self, n: int, seed: int = 0) -> list[dict[str, int]]:
        """``n`` random width configurations on the grid (each group uniform over its grid)."""
        rng = random.Random(seed)
        names = [g.name for g in self.graph.prunable_groups]
        return [{k: rng.choice(self.grid(k)) for k in names} for _ in range(n)]

    def network(self, widths: Mapping[str, int]) -> nn.Module:
        """The graph's network at ``widths`` (first channels kept: latency does not depend on which)."""
        return self.graph.plan(dict(widths), keep="prefix").materialize(self.graph.model).eval()

    def check(self, n: int = 20, seed: int = 0, *, deltas: bool = True) -> CheckReport:
        """Predicted vs directly measured latency (see :class:`CheckReport`); everything measured interleaved."""
        check_range("n", n, 0)
        configs = self.random_widths(n, seed)
        models: dict[str, nn.Module] = {"full": self.graph.model.eval(), "full-again": copy.deepcopy(
            self.graph.model).eval()}
        for i, w in enumerate(configs):
            models[f"config{i}"] = self.network(w)
        shrinks = []
        if deltas:
            for g in self.graph.prunable_groups:
                below = [w for w in self.grid(g.name) if w < g.size]
                if below:
                    shrinks.append((g.name, below[-1]))
                    models[f"shrink:{g.name}"] = self.network({g.name: below[-1]})
        timings = self.backend.measure_many(models, self.example())
        full_ms = timings["full"].median_ms
        rep = CheckReport(self.backend.describe(), full_ms)
        for i, w in enumerate(configs):
            rep.configs.append({"widths": w, "predicted": self(w), "measured": timings[f"config{i}"].median_ms})
        if rep.configs:
            errs = rep.errors_pct()
            rep.median_abs_error_pct = statistics.median(abs(e) for e in errs)
            rep.spearman = spearman([c["predicted"] for c in rep.configs], [c["measured"] for c in rep.configs])
        pred_full = self(None)
        for name, w in shrinks:
            rep.deltas.append({"group": name, "width": w, "predicted": pred_full - self({name: w}),
                               "measured": full_ms - timings[f"shrink:{name}"].median_ms})
        if rep.deltas:
            p = [d["predicted"] for d in rep.deltas]
            m = [d["measured"] for d in rep.deltas]
            rep.delta_median_abs_error_ms = statistics.median(abs(a - b) for a, b in zip(p, m))
            rep.delta_spearman = spearman(p, m)
            rep.delta_sign_agreement = sum((a > 0) == (b > 0) for a, b in zip(p, m)) / len(p)
        again = timings["full-again"].median_ms
        rep.noise_ms = abs(full_ms - again)
        rep.noise_pct = 100 * rep.noise_ms / full_ms if full_ms > 0 else None
        rep.median_spread = statistics.median(t.spread for t in timings.values())
        return rep


__all__ = ["Backend", "CheckReport", "CudaGraphs", "LatencyTable", "OnnxRuntimeCPU", "Timing", "TorchCPU",
           "make_backend", "spearman", "default_cache_dir"]
