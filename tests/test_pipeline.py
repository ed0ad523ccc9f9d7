"""Pipelines: fingerprinted, resumable, branchable stages; typed artifacts; distinct data orders."""

from __future__ import annotations

import json

import pytest
import torch

from prunekit.errors import ConfigError
from prunekit.train import TrainConfig
from prunekit.train.pipeline import EpochOffset, Pipeline, diff_settings

from _cli import run_cli
from _toy import ToyLoader, toy_model

X = torch.randn(2, 3, 8, 8)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "lr": 0.05, "progress": False, "steps_per_epoch": 3, **kw})


def _two_stages(out, *, lr=0.05, settings=None, restart=False, artifact="model"):
    pipe = Pipeline(out, X, settings=settings or {"seed": 0}, restart=restart)
    m = pipe.train("a", toy_model(), ToyLoader(), None, _cfg(lr=lr), artifact=artifact)
    m = pipe.train("b", m, ToyLoader(), None, _cfg(), artifact=artifact)
    return pipe, m


def test_same_settings_resume_bit_identically(tmp_path):
    _, ref = _two_stages(tmp_path / "ref")
    pipe, again = _two_stages(tmp_path / "ref")  # every stage done: loaded, not retrained
    assert [r.name for r in pipe.records] == ["a", "b"]
    a, b = ref.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_changed_setting_is_refused_with_the_difference_named(tmp_path):
    _two_stages(tmp_path / "run")
    with pytest.raises(ConfigError) as e:
        _two_stages(tmp_path / "run", lr=0.2)
    msg = str(e.value)
    assert "stage a" in msg and "lr: 0.05 → 0.2" in msg and "--restart" in msg and "-o" in msg
    with pytest.raises(ConfigError, match="seed: 0 → 1"):
        _two_stages(tmp_path / "run", settings={"seed": 1})
    pipe, _ = _two_stages(tmp_path / "run", lr=0.2, restart=True)  # the way out
    assert json.loads((tmp_path / "run" / "a" / "record.json").read_text())["inputs"]["stage"]["train"]["lr"] == 0.2


def test_a_changed_upstream_stage_invalidates_the_downstream_fingerprint(tmp_path):
    p1, _ = _two_stages(tmp_path / "one")
    p2, _ = _two_stages(tmp_path / "two", lr=0.1)
    assert p1.fingerprint("b") != p2.fingerprint("b")  # b's own settings are equal; its parent differs


def test_training_stages_get_distinct_data_orders(tmp_path):
    pipe, _ = _two_stages(tmp_path / "run")
    offsets = [r.inputs["stage"]["data_offset"] for r in pipe.records]
    assert offsets == [0, 1000]
    loader = ToyLoader()
    view = EpochOffset(loader, 1000)
    view.set_epoch(2)
    assert loader.epoch == 1002 and len(view) == len(loader)


def test_branches_from_one_parent_and_state_artifacts(tmp_path):
    pipe = Pipeline(tmp_path / "run", X)
    parent = pipe.train("parent", toy_model(), ToyLoader(), None, _cfg())
    fps = []
    for k, lr in enumerate((0.01, 0.02)):
        child = pipe.load_stage("parent")
        pipe.train(f"proposal{k}", child, ToyLoader(), None, _cfg(lr=lr), parent="parent", artifact="state")
        fps.append(pipe.records[-1].inputs["parent"])
    assert fps[0] == fps[1] == pipe.fingerprint("parent")
    assert (tmp_path / "run" / "proposal0" / "state.pt").exists()
    assert not (tmp_path / "run" / "proposal0" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="has not run"):
        pipe.train("x", parent, ToyLoader(), None, _cfg(), parent="nope")


def test_diff_settings_lists_nested_leaves():
    assert diff_settings({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4}) == \
        ["a.c: 2 → 3", "d: '(unset)' → 4"]


def test_cli_rerun_with_another_setting_stops_with_one_line(tmp_path):
    out = tmp_path / "l1"
    base = ["prune", "l1", "--model", "smallcnn", "--data", "digits", "--device", "cpu", "--no-progress",
            "-o", str(out)]
    r = run_cli(*base, "--ratio", "0.3")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(*base, "--ratio", "0.5")
    assert r.returncode == 2 and "ratio: 0.3 → 0.5" in r.stderr and "--restart" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli(*base, "--ratio", "0.5", "--restart")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((out / "result.json").read_text())
    assert rec["details"]["config"]["ratio"] == 0.5 and rec["details"]["ratio"] == 0.5
