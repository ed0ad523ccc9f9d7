"""The command line end to end on tiny data, and every bad-input case giving one clear error line."""

from __future__ import annotations

import json

import pytest
import torch

from _cli import run_cli


def test_models_lists_one_name_per_line():
    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    for n in ["resnet20", "resnet32", "resnet56", "resnet110", "resnet164", "vgg11", "vgg13", "vgg16", "vgg19",
              "mobilenetv2", "densenet40"]:
        assert n in names
    assert all(" " not in line for line in r.stdout.splitlines())


def test_train_eval_resume_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--model", "smallcnn", "--data", "digits", "--epochs", "3", "--batch-size", "64",
                "--val-split", "0.1", "--lr", "0.2", "-o", str(out), "--no-progress", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["test_top1"] > 50  # 10 classes: chance is 10%
    assert (out / "last.ckpt").exists() and (out / "metrics.csv").exists()

    r = run_cli("eval", str(out / "last.ckpt"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert f"{summary['test_top1']:.2f}%" in r.stdout  # same number as at the end of training

    # a finished run resumed with the same settings does no more work and keeps its weights
    before = torch.load(out / "last.ckpt", weights_only=True)["model"]
    r = run_cli("train", "--model", "smallcnn", "--data", "digits", "--epochs", "3", "--batch-size", "64",
                "--val-split", "0.1", "--lr", "0.2", "-o", str(out), "--no-progress", "--device", "cpu",
                "--resume")
    assert r.returncode == 0, r.stderr
    after = torch.load(out / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_recipe_with_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: smallcnn\ndata: synthetic\nbatch_size: 32\n"
                      "data_args: {num_train: 128, num_test: 64, image_size: 8, in_channels: 1}\n"
                      "train: {epochs: 5, lr: 0.05, schedule: cosine}\n")
    out = tmp_path / "run"
    r = run_cli("train", "--recipe", str(recipe), "--epochs", "1", "-o", str(out), "--no-progress",
                "--device", "cpu")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["config"]["epochs"] == 1 and ckpt["config"]["schedule"] == "cosine"


def test_profile_prints_and_writes_json(tmp_path):
    r = run_cli("profile", "--model", "resnet20", "--batch", "1", "--batch", "4", "--repeats", "3",
                "--json", str(tmp_path / "p.json"), "--groups")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "p.json").read_text())
    assert rec["params"] > 0.2e6 and 35e6 < rec["macs"] < 45e6
    assert set(rec["latency_ms"]) == {"bs1", "bs4"} and rec["latency_ms"]["bs1"]["median"] > 0
    assert rec["latency_ms"]["bs1"]["p10"] <= rec["latency_ms"]["bs1"]["median"] <= rec["latency_ms"]["bs1"]["p90"]
    assert "MACs" in r.stdout
    assert "conv output channels prunable (100.0%)" in r.stdout and rec["coverage"]["ratio"] == 1.0


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "resnet57"], "resnet56"),                         # lists valid names
    (["train", "--model", "resnet20", "--data", "cifar10", "--data-dir", "/nonexistent/cifar"], "npz"),
    (["train", "--model", "resnet20", "--lr", "-1"], "lr=-1"),
    (["train", "--model", "resnet20", "--schedule", "sometimes"], "schedule"),
    (["train", "--model", "resnet20", "--data", "mnist"], "mnist"),
    (["train", "--model", "resnet20", "--val-split", "1.5"], "val_split"),
    (["train", "--model", "resnet20", "--model-arg", "depth"], "key=value"),
    (["eval", "/nonexistent.ckpt"], "does not exist"),
    (["profile", "--model", "resnet20", "--input-size", "3,32"], "input-size"),
    (["profile", "--model", "resnet20", "--device", "cuda:7"], "CUDA"),
    (["profile", "--model", "resnet20", "--batch", "0"], "--batch 0"),
    (["train", "--model", "smallcnn", "--milestones", "a,b"], "--milestones"),
    (["train", "--model", "smallcnn", "--resume"], "no checkpoint"),
    (["train", "--init", "/nonexistent/model.safetensors"], "does not exist"),
    (["prune", "l1", "--model", "smallcnn", "--ratio", "0.3", "--round-to", "128", "--device", "cpu"],
     "removes no channel"),
])
def test_bad_input_is_one_clear_error(tmp_path, args, needle):
    out = tmp_path / "never"
    r = run_cli(*args, *(["-o", str(out)] if args[0] in ("train", "prune") else []))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "error:" in r.stderr and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "last.ckpt").exists()  # nothing half-written


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 100)
    r = run_cli("eval", str(bad))
    assert r.returncode == 2 and "corrupt" in r.stderr, r.stderr


def test_files_where_folders_belong_and_bad_recipes(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    bad_yaml = tmp_path / "r.yaml"
    bad_yaml.write_text("model: [smallcnn\n")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for args, needle in [
        (["prune", "l1", "--model", "smallcnn", "--ratio", "0.3", "--device", "cpu", "-o", str(taken)], "is a file"),
        (["train", "--model", "smallcnn", "--epochs", "1", "-o", str(taken)], str(taken)),
        (["train", "--recipe", str(bad_yaml), "-o", str(tmp_path / "t")], "not valid YAML"),
        (["eval", str(empty)], "prunekit model file"),
    ]:
        r = run_cli(*args)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-1500:])


def test_a_pruned_model_file_works_everywhere(tmp_path):
    out = tmp_path / "l1"
    r = run_cli("prune", "l1", "--model", "smallcnn", "--target-macs", "0.5", "--device", "cpu", "--no-progress",
                "-o", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    model = str(out / "model.safetensors")
    r = run_cli("eval", model)
    assert r.returncode == 0 and "digits" in r.stdout and "top-1" in r.stdout, r.stderr[-2000:]
    r = run_cli("profile", "--model", model, "--batch", "1", "--repeats", "3", "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "p.json").read_text())["macs"] <= 0.5 * 525952
    r = run_cli("train", "--init", model, "--data", "digits", "--epochs", "1", "--no-progress", "-o",
                str(tmp_path / "ft"))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["model"] == "smallcnn" and summary["epochs"] == 1


def test_quickstart_compares_slimming_and_uniform_at_equal_macs(tmp_path):
    r = run_cli("quickstart", "--epochs", "2", "--sparsity-epochs", "1", "--finetune-epochs", "1", "--no-progress",
                "-o", str(tmp_path / "q"))
    assert r.returncode == 0, r.stderr[-3000:]
    for needle in ("baseline", "Network Slimming", "uniform L1", "Next:"):
        assert needle in r.stdout, needle
    slim = json.loads((tmp_path / "q" / "slimming" / "result.json").read_text())
    uni = json.loads((tmp_path / "q" / "uniform-l1" / "result.json").read_text())
    for rec in (slim, uni):
        assert rec["pruned"]["macs"] <= 0.5 * rec["baseline"]["macs"]
    assert abs(slim["pruned"]["macs"] - uni["pruned"]["macs"]) < 0.05 * slim["baseline"]["macs"]
