"""LatencyTable: shared entries, the on-disk cache and its identity, prediction = sum + constant, the per-group
solve against brute force, the error report, ONNX Runtime, and the `prunekit lut` CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.cost import count
from prunekit.cost.lut import Backend, LatencyTable, OnnxRuntimeCPU, Timing, TorchCPU, make_backend, spearman
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.planning import largest_width



class FakeBackend(Backend):
    """Latency = 1e-6 ms per MAC of the batch + 0.01 ms per call: no clock, fully deterministic."""

    runtime = "fake"

    def __init__(self, version: str = "1", **kw):
        super().__init__(**kw)
        self.version, self.calls = version, 0

    def identity(self):
        return {**super().identity(), "fake": self.version}

    def measure_many(self, models, x):
        out = {}
        for k, m in models.items():
            self.calls += 1
            ms = 1e-6 * count(m, x[:1]).macs * x.shape[0] + 0.01
            out[k] = Timing(ms, ms, ms, 1)
        return out


def _net(widths=(16, 32)) -> nn.Module:
    torch.manual_seed(0)
    layers, c = [], 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 5)).eval()


def _resnet20():
    return DependencyGraph(prunekit.models.create("resnet20").eval(), torch.randn(2, 3, 16, 16))


def test_identical_signatures_share_one_entry(tmp_path):
    graph = _resnet20()
    sigs = graph.layer_signatures()
    assert len({s.key for s in sigs}) < len(sigs)  # repeated blocks
    backend = FakeBackend(batch_size=2)
    table = LatencyTable(graph, backend, round_to=8, cache_dir=tmp_path)
    keys = table.grid_signatures()
    measured_layers = sum(1 for s in keys.values() if s.type not in ("Identity",))
    assert table.stats["measured"] == measured_layers  # every distinct entry measured exactly once
    assert backend.calls == measured_layers + 1  # + the full network, for the constant
    # a second model with the same layers (another instance) reuses every entry from the cache
    again = FakeBackend(batch_size=2)
    t2 = LatencyTable(_resnet20(), again, round_to=8, cache_dir=tmp_path)
    assert t2.stats["measured"] == 0 and t2.stats["cached"] == measured_layers and again.calls == 1
    assert t2({"layer3.0.conv1": 32}) == pytest.approx(table({"layer3.0.conv1": 32}))


def test_cache_is_invalidated_by_another_device_or_torch_version(tmp_path, monkeypatch):
    graph = DependencyGraph(_net(), torch.randn(2, 3, 8, 8))
    first = LatencyTable(graph, FakeBackend(batch_size=2), cache_dir=tmp_path)
    n = first.stats["measured"]
    assert n > 0 and LatencyTable(graph, FakeBackend(batch_size=2), cache_dir=tmp_path).stats["measured"] == 0
    other_device = FakeBackend(version="2", batch_size=2)
    assert LatencyTable(graph, other_device, cache_dir=tmp_path).stats["measured"] == n
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert LatencyTable(graph, FakeBackend(batch_size=2), cache_dir=tmp_path).stats["measured"] == n
    assert LatencyTable(graph, FakeBackend(batch_size=4), cache_dir=tmp_path).stats["measured"] == n  # batch
    assert len(list(tmp_path.glob("fake-*.json"))) == 4


def test_prediction_is_sum_plus_measured_constant():
    graph = DependencyGraph(_net(), torch.randn(2, 3, 8, 8))
    backend = FakeBackend(batch_size=4)
    table = LatencyTable(graph, backend, round_to=4, cache_dir=False)
    assert table(None) == pytest.approx(table.full_measured.median_ms)  # the constant closes the gap at R0
    assert table.constant == pytest.approx(table.full_measured.median_ms - table.layer_sum(None))
    # the fake's cost is linear in MACs, so the sum + constant predicts every configuration exactly
    rep = table.check(6, seed=1)
    assert rep.median_abs_error_pct == pytest.approx(0, abs=1e-6)
    assert rep.spearman == pytest.approx(1.0) and rep.delta_sign_agreement == 1.0
    assert len(rep.deltas) == 2 and rep.noise_pct == 0
    assert "Spearman" in str(rep)


def test_off_grid_queries_measure_the_missing_entries():
    graph = DependencyGraph(_net(), torch.randn(2, 3, 8, 8))
    table = LatencyTable(graph, FakeBackend(batch_size=2), round_to=8, cache_dir=False)
    before = table.stats["measured"]
    table({graph.prunable_groups[0].name: 5})
    assert table.stats["measured"] > before


def test_grid_is_the_full_width_and_multiples_of_round_to():
    graph = _resnet20()
    table = LatencyTable(graph, FakeBackend(), round_to=8, min_channels=8, cache_dir=False, build=False)
    assert table.grid("layer3.0.conv1") == [8, 16, 24, 32, 40, 48, 56, 64]
    assert table.grid("stem.0") == [8, 16]


def test_per_group_solve_is_the_largest_width_meeting_the_target():
    graph = _resnet20()
    table = LatencyTable(graph, FakeBackend(batch_size=2), round_to=8, cache_dir=False)
    widths = graph.widths()
    r0 = table(widths)
    for name in ("stem.0", "layer2.0.conv1", "layer3.0.conv2", "layer3.2.conv1"):
        for frac in (0.99, 0.97, 0.9, 0.8):
            target = frac * r0
            grid = [w for w in table.grid(name) if w >= 8]
            brute = [w for w in grid if table({**widths, name: w}) <= target]
            got = largest_width(table, widths, name, target, low=8, step=8)
            assert got == (max(brute) if brute else None), (name, frac)


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert spearman([1, 1], [1, 2]) is None


def test_measured_table_orders_networks_like_measurement():
    """Real CPU timing (process CPU time, 1 thread): only orderings and a loose bound, never absolute times."""
    graph = DependencyGraph(_net((8, 64)), torch.randn(2, 3, 16, 16))
    table = LatencyTable(graph, TorchCPU(batch_size=8, clock="cpu", repeats=15, warmup=3), round_to=8,
                         cache_dir=False)
    name = graph.prunable_groups[1].name
    small = {name: 8}
    assert table(small) < table(None)
    t = table.backend.measure_many({"full": graph.model, "small": table.network(small)}, table.example())
    assert t["small"].median_ms < t["full"].median_ms
    assert 1 / 3 < table(small) / t["small"].median_ms < 3


def test_onnxruntime_table_builds_and_checks():
    pytest.importorskip("onnxruntime")
    graph = DependencyGraph(_net((8, 16)), torch.randn(2, 3, 8, 8))
    table = LatencyTable(graph, OnnxRuntimeCPU(batch_size=2, repeats=5, warmup=1), round_to=8, cache_dir=False)
    assert table.stats["measured"] > 0 and table.full_measured.median_ms > 0
    rep = table.check(3)
    assert len(rep.configs) == 3 and rep.median_abs_error_pct is not None


def test_backend_options_are_checked():
    with pytest.raises(ConfigError, match="latency target"):
        make_backend("tpu")
    with pytest.raises(ConfigError, match="dtype"):
        TorchCPU(dtype="int8")
    with pytest.raises(ConfigError, match="clock"):
        make_backend("onnxruntime", clock="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            make_backend("cuda")


def test_lut_cli_build_and_check(tmp_path):
    from typer.testing import CliRunner

    from prunekit.cli.lut import lut_app

    common = ["--model", "smallcnn", "--input-size", "3,8,8", "--batch-size", "2", "--round-to", "16", "--repeats",
              "3", "--warmup", "1", "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    runner = CliRunner()
    r = runner.invoke(lut_app, ["build", *common, "--check", "2", "--output", str(tmp_path / "lut.json")])
    assert r.exit_code == 0, r.output[-2000:]
    assert "Spearman" in r.output and "from the cache" in r.output
    data = json.loads((tmp_path / "lut.json").read_text())
    assert data["table"]["entries"] and len(data["check"]["configs"]) == 2
    r = runner.invoke(lut_app, ["check", *common, "--configs", "2", "--json", str(tmp_path / "rep.json")])
    assert r.exit_code == 0, r.output[-2000:]
    assert "(0 measured" in r.output and "median |error|" in r.output  # every entry came from the cache
    assert json.loads((tmp_path / "rep.json").read_text())["median_abs_error_pct"] is not None
