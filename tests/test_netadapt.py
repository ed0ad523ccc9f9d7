"""NetAdapt: the schedule, the selection rules, tied groups, floors, the family, resume mid-iteration, the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import prunekit
from prunekit.data import build_data
from prunekit.errors import ConfigError
from prunekit.methods import NetAdapt, NetAdaptConfig
from prunekit.methods.netadapt import grid_floor, iteration_target, select_proposal
from prunekit.train import Callback, TrainConfig

from _cli import run_cli
from test_lut import FakeBackend


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", batch_size=64, val_split=0.2)


def _config(**kw) -> NetAdaptConfig:
    base = dict(target_macs=0.6, round_to=4, min_channels=4, short_term_steps=2, max_iters=3, uniform_points=0,
                measure_family=False, short_term=TrainConfig(epochs=1, lr=1e-3, schedule="constant", progress=False),
                long_term=None)
    return NetAdaptConfig(**{**base, **kw})


def test_iteration_targets_follow_the_official_schedule():
    r0 = 100.0
    assert iteration_target(100.0, r0, 1) == pytest.approx(97.5)
    assert iteration_target(90.0, r0, 3) == pytest.approx(90 - 2.5 * 0.96 ** 2)
    # 30 iterations of the default schedule remove 0.025 (1 - 0.96^30) / 0.04 = 44 % of R0 (the "0.5" scripts)
    r = r0
    for i in range(1, 31):
        r = iteration_target(r, r0, i)
    assert r / r0 == pytest.approx(1 - 0.025 * (1 - 0.96 ** 30) / 0.04)


def test_selection_rules():
    props = [{"val_top1": 80.0, "resource": 90.0}, {"val_top1": 78.0, "resource": 70.0},
             {"val_top1": 85.0, "resource": 100.0}]  # the last one does not lower the resource: never chosen
    assert select_proposal(props, "accuracy", 82.0, 100.0) == 0  # the paper: highest accuracy
    # the official code: least accuracy lost per resource saved: 2/10 vs 4/30
    assert select_proposal(props, "accuracy_per_latency", 82.0, 100.0) == 1
    assert select_proposal([props[2]], "accuracy", 82.0, 100.0) is None
    tie = [{"val_top1": 80.0, "resource": 90.0}, {"val_top1": 80.0, "resource": 80.0}]
    assert select_proposal(tie, "accuracy", 82.0, 100.0) == 1  # ties: the lower resource


def test_grid_floor():
    assert grid_floor(64, 8, 8) == 8 and grid_floor(64, 9, 8) == 16 and grid_floor(16, 1, 8) == 8
    assert grid_floor(6, 8, 8) == 6


def test_config_is_checked():
    with pytest.raises(ConfigError, match="exactly one"):
        NetAdaptConfig()
    with pytest.raises(ConfigError, match="exactly one"):
        NetAdaptConfig(target_macs=0.5, target_latency=0.5)
    with pytest.raises(ConfigError, match="selection"):
        NetAdaptConfig(target_macs=0.5, selection="best")
    with pytest.raises(ConfigError, match="clock"):
        NetAdaptConfig(target_latency=0.5, platform="onnxruntime", clock="cpu")


def test_needs_a_validation_split(tmp_path):
    data = build_data("digits", batch_size=64, val_split=0.0)
    with pytest.raises(ConfigError, match="validation split"):
        NetAdapt(_config()).run(prunekit.models.create("smallcnn", in_channels=1), data, tmp_path)


def test_residual_groups_shrink_together_and_the_family_is_kept(tmp_path, digits):
    model = prunekit.models.create("resnet20", in_channels=1)
    res = NetAdapt(_config(target_macs=0.8, max_iters=2, round_to=8, min_channels=8)).run(model, digits, tmp_path)
    fam = res.details["family"]
    assert [f["iteration"] for f in fam] == list(range(len(fam))) and len(fam) >= 2
    assert all(fam[i + 1]["resource"] < fam[i]["resource"] for i in range(len(fam) - 1))
    for f in fam:  # every iteration's network is on disk, loads, and has the recorded widths
        m = prunekit.load(f["model"])
        g = prunekit.graph.DependencyGraph(m, torch.randn(2, 1, 8, 8))
        assert {k: v for k, v in g.widths().items() if k in f["widths"]} == f["widths"]
    # a residual stream group (stem + the stage-1 block outputs) changes as one: every add still matches
    final = res.model.cpu().eval()
    assert final(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    out = {n: m.out_channels for n, m in final.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert out["stem.0"] == out["layer1.0.conv2"] == out["layer1.1.conv2"] == out["layer1.2.conv2"]
    assert out["layer2.0.conv2"] == out["layer2.1.conv2"] == out["layer2.2.conv2"]
    proposals = res.details["proposals"][0]
    assert len(proposals) == 12  # one per prunable group of resnet20
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["method"] == "netadapt" and rec["details"]["resource"] == "macs"
    assert (tmp_path / "family.png").exists()


def test_the_floor_holds(tmp_path, digits):
    model = prunekit.models.create("smallcnn", in_channels=1)
    c = _config(target_macs=0.05, init_reduction=0.5, max_iters=8, min_channels=4, min_keep=0.5)
    res = NetAdapt(c).run(model, digits, tmp_path)
    w0, w1 = res.widths_before, res.widths_after
    for n in w0:
        assert w1[n] >= max(4, grid_floor(w0[n], int(0.5 * w0[n]), 4))
    assert res.details["floor_hit"] and "floors" in res.details["stopped"]


class _StopAt(Callback):
    """Interrupts the k-th training stage (a proposal's short-term fine-tune) after its first step."""

    def __init__(self, k: int):
        self.k, self.fits = k, 0

    def on_fit_start(self, trainer):
        self.fits += 1

    def on_step_end(self, trainer):
        if self.fits == self.k:
            raise KeyboardInterrupt


def test_resume_mid_iteration_gives_the_same_family(tmp_path, digits):
    def run(out, callbacks=()):
        torch.manual_seed(0)
        model = prunekit.models.create("smallcnn", in_channels=1)
        return NetAdapt(_config(short_term_steps=3, max_iters=2)).run(model, digits, out, callbacks=callbacks)

    ref = run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", [_StopAt(5)])  # iteration 2, second proposal
    again = run(tmp_path / "cut")

    def family(r):
        return [{k: f[k] for k in ("iteration", "widths", "resource", "val_top1")} | {"group": f.get("group")}
                for f in r.details["family"]]

    assert family(again) == family(ref)
    sd_a, sd_b = again.model.state_dict(), ref.model.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_b)


def test_latency_resource_with_a_fake_target(tmp_path, digits, monkeypatch):
    fake = FakeBackend(batch_size=4)
    monkeypatch.setattr(NetAdapt, "backend", lambda self, run: fake)
    c = _config(target_macs=None, target_latency=0.7, max_iters=3, lut_check=3, lut_cache=str(tmp_path / "cache"),
                selection="accuracy", measure_family=True)
    torch.manual_seed(0)
    model = prunekit.models.create("smallcnn", in_channels=1)
    res = NetAdapt(c).run(copy.deepcopy(model), digits, tmp_path / "run")
    fam = res.details["family"]
    assert res.details["resource"] == "latency" and fam[0]["resource"] == pytest.approx(res.details["r0"])
    assert fam[0]["measured_ms"] == pytest.approx(res.details["r0"])  # prediction = measurement at R0
    for f in fam[1:]:  # the fake is linear in MACs, so the table predicts every network exactly
        assert f["resource"] == pytest.approx(f["measured_ms"])
    for i, f in enumerate(fam[1:], 1):  # each iteration met its target
        assert f["resource"] <= f["target"] + 1e-9
        assert f["target"] == pytest.approx(fam[i - 1]["resource"] - 0.025 * res.details["r0"] * 0.96 ** (i - 1))
    assert res.details["lut"]["check"]["median_abs_error_pct"] == pytest.approx(0, abs=1e-6)
    assert (tmp_path / "run" / "lut.json").exists() and "lut_error_png" in res.artifacts
    calls = fake.calls
    res2 = NetAdapt(c).run(copy.deepcopy(model), digits, tmp_path / "run")
    assert fake.calls == calls  # resumed: the run's own table, nothing re-measured
    assert res2.details["family"] == fam


@pytest.mark.parametrize("resource", ["--target-macs", "--target-latency"])
def test_cli_end_to_end_on_digits(tmp_path, resource):
    out = tmp_path / "run"
    extra = ["--lut-repeats", "3", "--lut-warmup", "1", "--lut-check", "2", "--latency-batch", "4", "--set",
             f"lut_cache={tmp_path / 'cache'}", "--clock", "cpu"] if resource == "--target-latency" else []
    r = run_cli("prune", "netadapt", "--model", "smallcnn", resource, "0.8", "--device", "cpu", "--no-progress",
                "--short-term-steps", "2", "--long-term-epochs", "1", "--max-iters", "2", "--round-to", "8",
                "--min-channels", "8", "--uniform-points", "1", "--no-measure-family", "--val-split", "0.2",
                "-o", str(out), *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out / "result.json").read_text())
    assert rec["method"] == "netadapt" and rec["details"]["iterations"] >= 1
    assert rec["details"]["resource"] == ("latency" if "latency" in resource else "macs")
    assert (out / "family.png").exists() and (out / "iter01" / "model.safetensors").exists()
    assert prunekit.load(out / "model.safetensors") is not None


def test_run_takes_the_tracing_options(tmp_path):
    """NetAdapt's own run (it shares proposals among processes) accepts Method.run's tracing options."""
    c = NetAdaptConfig(target_macs=0.8, round_to=4, min_channels=4, short_term_steps=1, max_iters=1,
                       uniform_points=0, measure_family=False,
                       short_term=TrainConfig(epochs=1, lr=1e-3, schedule="constant", progress=False), long_term=None)
    torch.manual_seed(0)
    res = NetAdapt(c).run(prunekit.models.create("smallcnn", in_channels=1), build_data("digits", batch_size=64,
                          val_split=0.2), tmp_path, latency=False, leaf_modules=["conv2"])
    assert not {"conv1.0", "conv2.0"} & set(res.widths_before)  # the opaque block's channels stay whole
