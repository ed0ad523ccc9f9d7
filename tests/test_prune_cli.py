"""``prunekit prune``: one command per registered method, generated options, one-line errors."""

from __future__ import annotations

import json

import pytest

import prunekit
from prunekit.methods import list_methods

from _cli import run_cli


def test_list_shows_every_registered_method():
    r = run_cli("prune", "--list")
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert names == [m.replace("_", "-") for m in list_methods()]
    assert {"l1", "l2", "slimming", "gate-decorator"} <= set(names)


def test_generated_options_come_from_the_config():
    r = run_cli("prune", "gate-decorator", "--help")
    assert r.returncode == 0
    for flag in ("--target-macs", "--prune-per-tick", "--min-keep", "--tick-epochs", "--tock-epochs",
                 "--finetune-epochs", "--set", "--restart", "--recipe"):
        assert flag in r.stdout, flag


def test_l1_end_to_end_prints_accuracy_and_writes_a_usable_model(tmp_path):
    out = tmp_path / "l1"
    r = run_cli("prune", "l1", "--model", "smallcnn", "--ratio", "0.5", "--round-to", "2", "--device", "cpu",
                "--no-progress", "-o", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "top-1" in r.stdout
    rec = json.loads((out / "result.json").read_text())
    assert rec["method"] == "l1" and rec["pruned"]["macs"] < 0.5 * rec["baseline"]["macs"]
    assert "top1" in rec["pruned"] and "top1_val" in rec["pruned"]
    assert all(w % 2 == 0 for w in rec["widths"]["after"].values())
    assert prunekit.load(out / "model.safetensors") is not None


@pytest.mark.parametrize("args, needle", [
    (["prune", "nope"], "No such command"),
    (["prune", "l1", "--model", "smallcnn", "--set", "rato=0.5"], "did you mean 'ratio'"),
    (["prune", "l1", "--model", "smallcnn", "--set", "ratio"], "key=value"),
    (["prune", "l1", "--model", "smallcnn", "--ratio", "1.5"], "ratio"),
    (["prune", "l1", "--model", "smallcnn"], "exactly one of ratio"),
    (["prune", "slimming", "--model", "smallcnn", "--ratio", "0.3", "--set", "passes=two"], "passes"),
    (["prune", "slimming", "--model", "smallcnn", "--ratio", "0.3", "--set", "finetune.epoch=3"], "epochs"),
    (["prune", "gate-decorator", "--model", "smallcnn", "--target-macs", "0.5", "--prune-per-tick", "abc"],
     "prune_per_tick"),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    r = run_cli(*args, "-o", str(tmp_path / "x"), "--device", "cpu") if args[1] != "nope" else run_cli(*args)
    assert r.returncode == 2, (r.stdout + r.stderr)[-2000:]
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_bad_recipe_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("slimming: {ratio: 0.3\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("slimming: {ratio: 0.3, sparsty: 1.0e-4}\n")
    for recipe, needle in ((bad, "not valid YAML"), (typo, "sparsty"), (tmp_path / "missing.yaml", "does not exist")):
        r = run_cli("prune", "slimming", "--recipe", str(recipe), "--model", "smallcnn", "-o", str(tmp_path / "o"))
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
