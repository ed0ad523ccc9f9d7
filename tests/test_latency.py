"""Latency under noise: interleaved comparisons, the comparability rule, the noisy flag and re-measurement, the
time budget, the CPU-time clock, threads; and the before/after summaries built on them.

Timing rules are tested against a fake clock (each fake forward advances it by a scripted number of ms), so no
assertion depends on how fast or busy the machine is.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Callable, Iterable

import pytest
import torch
import torch.nn as nn
from rich.console import Console

import prunekit.cost.latency as latency
from prunekit.cost import (
    LatencyResult,
    NoisyLatencyWarning,
    compare_latency,
    measure_latency,
    speedup,
    why_not_comparable,
)
from prunekit.errors import ConfigError
from prunekit.report import ModelSummary, comparison_table, summarize, summarize_pair


class FakeMachine:
    """Replaces the module's clocks, load average and core count; ``log`` lists the fake forwards in order."""

    def __init__(self) -> None:
        self.wall = 1000.0  # seconds
        self.cpu = 50.0
        self.cpu_share = 0.5  # CPU seconds per wall second of a fake forward
        self.load: tuple[float, float, float] | None = (0.0, 0.0, 0.0)
        self.cpus = 4
        self.log: list[str] = []

    def advance(self, name: str, ms: float) -> None:
        self.log.append(name)
        self.wall += ms / 1e3
        self.cpu += self.cpu_share * ms / 1e3


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    m = FakeMachine()
    monkeypatch.setattr(latency, "_wall_clock", lambda: m.wall)
    monkeypatch.setattr(latency, "_cpu_clock", lambda: m.cpu)
    monkeypatch.setattr(latency, "_loadavg", lambda: m.load)
    monkeypatch.setattr(latency, "_cpus", lambda: m.cpus)
    return m


class Scripted(nn.Module):
    """A model whose forward 'takes' ``durations`` ms on the fake clock (cycled), optionally after a real conv."""

    def __init__(self, name: str, machine: FakeMachine, durations: Iterable[float] | Callable[[int], float],
                 conv: bool = False):
        super().__init__()
        self.name, self.machine, self.calls = name, machine, 0
        self.durations = durations if callable(durations) else _cycle(list(durations))
        self.conv = nn.Conv2d(3, 4, 3) if conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.machine.advance(self.name, self.durations(self.calls))
        self.calls += 1
        return self.conv(x) if self.conv is not None else x


def _cycle(values: list[float]) -> Callable[[int], float]:
    return lambda i: values[i % len(values)]


X = torch.randn(2, 3, 8, 8)


def _result(median: float = 1.0, p10: float = 0.9, p90: float = 1.1, *, start: float | None = 0.0,
            end: float | None = 1.0, **kw) -> LatencyResult:
    base = dict(batch_size=1, device="cpu", threads=1, method="cpu eager 1 thread", repeats=30)
    base.update(kw)
    return LatencyResult(median, p10, p90, start_s=start, end_s=end, **base)


# ------------------------------------------------------------------------------------------------ interleaving
def test_compare_latency_interleaves_rounds_and_windows_overlap(machine: FakeMachine) -> None:
    a, b = Scripted("a", machine, [2.0]), Scripted("b", machine, [1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoisyLatencyWarning)
        r = compare_latency({"a": a, "b": b}, X, warmup=2, repeats=4)
    assert machine.log == ["a", "b"] * (2 + 4)  # warm-up rounds, then timed rounds, always A, B, A, B
    assert list(r) == ["a", "b"]
    ra, rb = r["a"], r["b"]
    assert (ra.median_ms, ra.p10_ms, ra.p90_ms, ra.repeats) == pytest.approx((2.0, 2.0, 2.0, 4))
    assert rb.median_ms == pytest.approx(1.0) and rb.repeats == 4
    assert (ra.noisy, ra.truncated, ra.attempts, ra.notes) == (False, False, 1, ())
    assert ra.start_s < rb.start_s < ra.end_s < rb.end_s  # the two windows interleave
    assert why_not_comparable(ra, rb) is None
    assert speedup(ra, rb) == pytest.approx(2.0)
    assert (ra.loadavg, ra.cpus, ra.clock, ra.threads) == ((0.0, 0.0, 0.0), 4, "wall", 1)


def test_measured_one_after_the_other_is_not_comparable(machine: FakeMachine) -> None:
    a, b = Scripted("a", machine, [2.0]), Scripted("b", machine, [1.0])
    ra = measure_latency(a, X, warmup=1, repeats=5, threads=1)
    rb = measure_latency(b, X, warmup=1, repeats=5, threads=1)
    assert machine.log == ["a"] * 6 + ["b"] * 6
    assert ra.end_s <= rb.start_s
    assert speedup(ra, rb) is None
    assert "same time" in why_not_comparable(ra, rb)


def test_comparability_rule() -> None:
    ok = _result(2.0, start=0.0, end=10.0), _result(1.0, start=0.1, end=10.1)
    assert speedup(*ok) == pytest.approx(2.0)
    # windows: disjoint, touching, or overlapping by less than half of the shorter one
    assert speedup(_result(start=0.0, end=1.0), _result(start=2.0, end=3.0)) is None
    assert speedup(_result(start=0.0, end=1.0), _result(start=1.0, end=2.0)) is None
    assert speedup(_result(start=0.0, end=1.0), _result(start=0.6, end=1.6)) is None
    assert speedup(_result(start=0.0, end=1.0), _result(start=0.4, end=1.4)) is not None
    assert speedup(_result(start=0.0, end=1.0), _result(start=0.6, end=1.6), min_overlap=0.3) is not None
    # no window recorded (e.g. built by hand)
    assert "window" in why_not_comparable(_result(start=None), _result())
    # spread p90/p10 above 2 on either side
    wide = _result(1.0, 0.4, 1.2)  # 3.0
    assert wide.spread == pytest.approx(3.0)
    assert speedup(_result(), wide) is None and speedup(wide, _result()) is None
    assert "p90/p10 = 3.00" in why_not_comparable(_result(), wide)
    assert speedup(_result(), wide, max_spread=4) is not None
    assert speedup(_result(), _result(1.0, 0.5, 1.0)) is not None  # exactly 2: still comparable
    assert _result(1.0, 0.0, 1.0).spread == float("inf")
    # different settings, too few samples
    for kw in (dict(device="cuda:0"), dict(clock="cpu"), dict(threads=2), dict(batch_size=4)):
        assert speedup(_result(), _result(**kw)) is None
    assert "samples" in why_not_comparable(_result(), _result(repeats=2))


# ------------------------------------------------------------------------------------------- noise and retries
def test_noisy_spread_is_remeasured_then_flagged(machine: FakeMachine) -> None:
    m = Scripted("m", machine, [1.0, 1.0, 5.0])  # p10 1, p90 5: spread 5
    with pytest.warns(NoisyLatencyWarning, match=r"spread p90/p10 = 5\.00 \(> 2\)"):
        r = measure_latency(m, X, warmup=0, repeats=5, threads=1, retries=2)
    assert len(machine.log) == 5 + 10 + 20  # two re-measurements, doubling the repeats
    assert (r.repeats, r.attempts, r.noisy, r.truncated) == (20, 3, True, False)
    assert any("spread" in n for n in r.notes)


def test_noise_that_goes_away_is_not_flagged(machine: FakeMachine) -> None:
    m = Scripted("m", machine, lambda i: 10.0 if i == 2 else 1.0)  # one slow forward in the first attempt
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoisyLatencyWarning)
        r = measure_latency(m, X, warmup=0, repeats=5, threads=1)
    assert (r.repeats, r.attempts, r.noisy, r.notes) == (10, 2, False, ())
    assert r.median_ms == pytest.approx(1.0)


def test_loaded_machine_is_flagged_and_own_threads_do_not_count(machine: FakeMachine) -> None:
    m = Scripted("m", machine, [1.0])
    machine.load, machine.cpus = (9.0, 8.0, 7.0), 4  # (9 - 1 own thread) / 4 cores = 2 per core
    with pytest.warns(NoisyLatencyWarning, match=r"machine load 2\.00 per core"):
        r = measure_latency(m, X, warmup=0, repeats=5, threads=1, retries=1)
    assert (r.noisy, r.attempts, r.repeats, r.loadavg) == (True, 2, 10, (9.0, 8.0, 7.0))
    assert r.load_per_core == pytest.approx(2.0)
    assert "load 2.00/core" in str(r) and "[noisy]" in str(r)

    machine.load = (4.0, 4.0, 4.0)  # 4 measuring threads on 4 cores: the measurement itself
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoisyLatencyWarning)
        r = measure_latency(m, X, warmup=0, repeats=5, threads=4)
    assert (r.noisy, r.attempts, r.load_per_core) == (False, 1, 0.0)
    assert r.threads == 4

    machine.load = None  # no os.getloadavg: the load rule is skipped
    r = measure_latency(m, X, warmup=0, repeats=5, threads=1)
    assert (r.loadavg, r.load_per_core, r.noisy) == (None, None, False)


def test_compare_remeasures_all_models_together(machine: FakeMachine) -> None:
    a, b = Scripted("a", machine, [1.0]), Scripted("b", machine, lambda i: 10.0 if i == 1 else 1.0)
    r = compare_latency({"a": a, "b": b}, X, warmup=0, repeats=3)
    assert machine.log == ["a", "b"] * (3 + 6)  # b was noisy: both were re-measured, still interleaved
    assert r["a"].attempts == r["b"].attempts == 2 and not r["b"].noisy
    assert speedup(r["a"], r["b"]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------- time budget
def test_budget_caps_a_slow_measurement(machine: FakeMachine) -> None:
    m = Scripted("m", machine, [1000.0])  # one second per forward
    t0 = machine.wall
    with pytest.warns(NoisyLatencyWarning, match="time budget of 5 s spent"):
        r = measure_latency(m, X, warmup=10, repeats=50, threads=1, budget_s=5)
    assert machine.wall - t0 <= 5 + 1  # at most one forward past the budget
    assert machine.log.count("m") == 2 + 3  # warm-up cut after a quarter of the budget, then 3 timed forwards
    assert (r.repeats, r.truncated, r.noisy) == (3, True, True)  # fewer than 5 samples: noisy
    assert r.median_ms == pytest.approx(1000.0)


def test_budget_always_times_one_forward(machine: FakeMachine) -> None:
    m = Scripted("m", machine, [30_000.0])
    with pytest.warns(NoisyLatencyWarning, match="budget"):
        r = measure_latency(m, X, warmup=5, repeats=50, threads=1, budget_s=1)
    assert machine.log == ["m", "m"]  # the warm-up forward started in the budget, then one timed forward
    assert (r.repeats, r.truncated, r.noisy) == (1, True, True)


def test_budget_is_per_model(machine: FakeMachine) -> None:
    a, b = Scripted("a", machine, [5000.0]), Scripted("b", machine, [5000.0])
    with pytest.warns(NoisyLatencyWarning, match="time budget of 40 s"):
        r = compare_latency({"a": a, "b": b}, X, warmup=5, repeats=50, budget_s=20)
    # 40 s in all: one 10-s warm-up round (a quarter of it), then timed rounds until 40 s are spent
    assert machine.log == ["a", "b"] * (1 + 3)
    assert r["a"].repeats == r["b"].repeats == 3 and r["a"].truncated and r["b"].truncated


def test_budget_spent_during_a_remeasurement_keeps_the_fuller_attempt(machine: FakeMachine) -> None:
    m = Scripted("m", machine, [1.0, 1.0, 5.0])  # always noisy; 30 forwards take 70 ms
    with pytest.warns(NoisyLatencyWarning, match="spread.*time budget"):
        r = measure_latency(m, X, warmup=0, repeats=30, threads=1, budget_s=0.1)
    assert 30 < len(machine.log) < 30 + 60  # the re-measurement was cut short ...
    assert (r.repeats, r.attempts, r.truncated, r.noisy) == (30, 2, True, True)  # ... and the first one kept


def test_no_budget(machine: FakeMachine) -> None:
    m = Scripted("m", machine, [60_000.0])
    r = measure_latency(m, X, warmup=1, repeats=3, threads=1, budget_s=None)
    assert r.repeats == 3 and not r.truncated


# ------------------------------------------------------------------------------------------ clocks and threads
def test_cpu_clock_option_uses_process_time(machine: FakeMachine) -> None:
    m = Scripted("m", machine, [4.0])
    r = measure_latency(m, X, warmup=0, repeats=5, threads=1, clock="cpu")
    assert r.median_ms == pytest.approx(2.0)  # the CPU clock's 2 ms, not the wall clock's 4 ms
    assert r.clock == "cpu" and r.method == "cpu eager 1 thread (cpu time)"
    assert r.end_s - r.start_s == pytest.approx(5 * 4e-3)  # the window stays on the wall clock
    w = measure_latency(m, X, warmup=0, repeats=5, threads=1)
    assert speedup(r, w) is None  # different clocks


def test_cpu_clock_real_measurement_is_positive() -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoisyLatencyWarning)
        r = measure_latency(net, torch.randn(1, 3, 32, 32), warmup=2, repeats=10, threads=1, clock="cpu",
                            retries=0)
        rs = compare_latency({"a": net, "b": net}, torch.randn(1, 3, 32, 32), warmup=1, repeats=5, clock="cpu",
                             retries=0)
    assert r.median_ms > 0 and r.p90_ms > 0 and r.clock == "cpu"
    assert all(v.median_ms > 0 and v.clock == "cpu" for v in rs.values())


def test_bad_clock_and_options() -> None:
    net = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="clock"):
        measure_latency(net, torch.randn(1, 2), clock="gpu")
    with pytest.raises(ConfigError, match="budget_s"):
        compare_latency({"a": net}, torch.randn(1, 2), budget_s=0)
    with pytest.raises(ConfigError, match="retries"):
        compare_latency({"a": net}, torch.randn(1, 2), retries=-1)
    with pytest.raises(ConfigError, match="at least one model"):
        compare_latency({}, torch.randn(1, 2))
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="clock='cpu'"):
            measure_latency(net, torch.randn(1, 2), device="cuda", clock="cpu")


def test_threads_pinned_and_restored_even_on_error() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    net = nn.Sequential(nn.Linear(4, 4)).train()
    net.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoisyLatencyWarning)
        r = compare_latency({"a": net, "b": nn.Linear(4, 4)}, torch.randn(1, 4), warmup=1, repeats=3, retries=0)
    assert set(seen) == {1} and r["a"].threads == r["b"].threads == 1  # default: 1 thread for comparisons
    assert torch.get_num_threads() == before
    assert net.training  # eval mode during, restored after

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        compare_latency({"a": nn.Linear(4, 4), "b": Boom()}, torch.randn(1, 4), threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_compare_latency_cuda(cuda_graph: bool) -> None:
    a = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
    b = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoisyLatencyWarning)
        r = compare_latency({"a": a, "b": b}, torch.randn(2, 3, 16, 16), device="cuda", warmup=3, repeats=10,
                            cuda_graph=cuda_graph, retries=0)
    assert all(v.median_ms > 0 and v.threads is None and v.device.startswith("cuda") for v in r.values())
    assert r["a"].start_s < r["b"].end_s and r["b"].start_s < r["a"].end_s
    assert next(a.parameters()).device.type == "cpu"


# ---------------------------------------------------------------------------------------------------- summaries
def _render(table) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    return console.file.getvalue()


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_summarize_pair_interleaves_and_table_shows_spread_and_speedup(machine: FakeMachine, cpu_only) -> None:
    base = Scripted("base", machine, [2.0], conv=True)
    pruned = Scripted("pruned", machine, [1.0], conv=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoisyLatencyWarning)
        sa, sb = summarize_pair(base, pruned, X, repeats=5)
    assert machine.log[2:] == ["base", "pruned"] * (10 + 5)  # after the two counting forwards
    assert sa.latency_ms == {"cpu_bs1": pytest.approx(2.0)} and sb.latency_ms == {"cpu_bs1": pytest.approx(1.0)}
    assert sa.latency["cpu_bs1"].threads == 1 and sa.latency["cpu_bs1"].batch_size == 1
    text = _render(comparison_table("t", {"baseline": sa, "pruned": sb}))
    assert "2.000 (2.000–2.000)" in text and "1.000 (1.000–1.000)" in text
    assert "2.00×" in text and "n/a" not in text
    assert sa.as_dict()["latency"]["cpu_bs1"]["median_ms"] == pytest.approx(2.0)


def test_separate_summaries_show_no_speedup(machine: FakeMachine, cpu_only) -> None:
    base = Scripted("base", machine, [2.0], conv=True)
    pruned = Scripted("pruned", machine, [1.0], conv=True)
    sa, sb = summarize(base, X, repeats=5), summarize(pruned, X, repeats=5, clock="cpu")
    assert sa.latency["cpu_bs1"].threads == 1  # no longer 2
    assert sb.latency["cpu_bs1"].clock == "cpu" and sb.latency_ms["cpu_bs1"] == pytest.approx(0.5)
    text = _render(comparison_table("t", {"baseline": sa, "pruned": sb}))
    assert "speed-up cpu_bs1" in text and "n/a (noisy)" in text


def test_noisy_pair_shows_no_speedup(machine: FakeMachine, cpu_only) -> None:
    base = Scripted("base", machine, [1.0, 1.0, 5.0], conv=True)
    pruned = Scripted("pruned", machine, [1.0], conv=True)
    with pytest.warns(NoisyLatencyWarning):
        sa, sb = summarize_pair(base, pruned, X, repeats=5, threads=2)
    assert sa.latency["cpu_bs1"].noisy and not sb.latency["cpu_bs1"].noisy
    assert sa.latency["cpu_bs1"].threads == 2
    text = _render(comparison_table("t", {"baseline": sa, "pruned": sb}))
    assert "n/a (noisy)" in text and " noisy" in text


def test_hand_built_summaries_still_render() -> None:
    a = ModelSummary(1000, 2000, {"cpu_bs1": 1.5}, {"test": 90.0})
    b = ModelSummary(500, 1000, {"cpu_bs1": 1.0})
    assert dataclasses.fields(ModelSummary)[-1].name == "latency" and b.latency == {}
    text = _render(comparison_table("t", {"baseline": a, "pruned": b}))
    assert "1.500" in text and "n/a (noisy)" in text and "50.0%" in text
    text = _render(comparison_table("t", {"only": a}))
    assert "speed-up" not in text


def test_summarize_without_latency() -> None:
    s = summarize(nn.Conv2d(3, 4, 3), X, latency=False)
    assert s.latency == {} and s.latency_ms == {} and s.macs == 4 * 36 * 27

