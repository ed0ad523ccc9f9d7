"""The GPU runner (benchmarks/gpu/): ledger validity, budget planning, an end-to-end run on a fake ledger (dependency,
timeout, partial files, file cap, resume, collect) and a CPU dry run of two real rows' smoke variants."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"
RUN = GPU / "run.py"
COLLECT = GPU / "collect.py"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


L = _module("gpu_ledgerlib", GPU / "ledgerlib.py")


def _run(args: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, **kw)


# ------------------------------------------------------------------------------------------------ the real ledger
PENDING_ROWS = {  # README "GPU rows — pending" + the section 2 list
    "baseline-resnet56", "baseline-vgg19", "loader-throughput-gpu", "gbn-overhead-resnet56", "gd-resnet56-flops60",
    "gd-resnet56-flops70", "gd-vgg16-flops90", "slimming-vgg19-p70", "slimming-resnet56-vs-tp-bn_scale",
    "tp-group_taylor-resnet56-flops60", "latency-speedup-gpu", "metapruning-resnet56-macs30",
    "condensenet86-cifar10"}
PLACEHOLDERS = {"netadapt-mobilenetv2-cudagraph"}


def test_ledger_is_valid_and_complete():
    ledger = L.load()
    assert L.validate(ledger) == []
    ids = [r["id"] for r in ledger["rows"]]
    assert ids[0] == "baseline-resnet56"  # first: its checkpoint unblocks the most rows
    assert PENDING_ROWS <= set(ids)
    by_id = L.rows_by_id(ledger)
    for rid in PLACEHOLDERS:  # blocked until a committed script runs them on a GPU
        assert L.status_word(by_id[rid]) == "blocked" and by_id[rid]["command"] is None
    for r in ledger["rows"]:
        for key in L.REQUIRED:
            assert key in r, (r["id"], key)
        if L.status_word(r) != "blocked":
            for script in L.scripts_of(r["command"]) + L.scripts_of(r["smoke"]["command"]):
                assert (REPO / script).is_file(), (r["id"], script)
            assert "~/cifar10" in r["command"] or r["needs"]["data"] is None
    needing = [r["id"] for r in ledger["rows"] if (r["needs"]["checkpoint"] or {}).get("from_row") ==
               "baseline-resnet56"]
    assert len(needing) >= 4


def test_validate_reports_broken_rows():
    good = L.load()
    cases = {
        "missing field(s) ['target']": lambda r: r.pop("target"),
        "does not exist": lambda r: r.update(command=r["command"].replace("train_baseline", "no_such_script")),
        "is not one of": lambda r: r.update(status="maybe"),
        "is not a row": lambda r: r["needs"].update(checkpoint={"path": "x", "from_row": "nope", "committed": None}),
        "needs file (one of writes)": lambda r: r["check"].append({"file": "other.json", "path": ["a"], "op": ">="}),
        "a done row must name": lambda r: r.update(status="done"),
        "same script": lambda r: r["smoke"].update(command="python benchmarks/loader_throughput.py"),
    }
    for needle, breaks in cases.items():
        ledger = copy.deepcopy(good)
        breaks(ledger["rows"][0])
        problems = L.validate(ledger)
        assert any(needle in p for p in problems), (needle, problems)
    ledger = copy.deepcopy(good)
    ledger["rows"].append(copy.deepcopy(ledger["rows"][1]))
    assert any("duplicate" in p for p in L.validate(ledger))


# ------------------------------------------------------------------------------------------------ planning
def _row(rid, est, status="pending", ck=None, wheel=None, **kw):
    return {"id": rid, "title": rid, "status": status, "command": f"python benchmarks/{rid}.py",
            "est_device_min": est, "needs": {"data": "cifar10", "checkpoint": ck, "wheel": wheel},
            "writes": [f"{rid}.json"], "target": "t", "check": [], "result": None, "notes": "",
            "smoke": {"command": f"python benchmarks/{rid}.py --smoke", "writes": [f"{rid}-s.json"],
                      "est_min": est / 10}, **kw}


CK_A = {"path": "~/runs/a/last.ckpt", "from_row": "a", "committed": None}
CK_A_COMMITTED = {"path": "~/runs/a/last.ckpt", "from_row": "a", "committed": "benchmarks/checkpoints/a.ckpt"}
FAKE = {"schema": L.SCHEMA, "rows": [
    _row("a", 8, artifacts=[{"path": "~/runs/a/last.ckpt", "as": "a.ckpt"}]),
    _row("part", 1, part_of="a"),
    _row("b", 2, ck=CK_A),
    _row("c", 3),
    _row("f", 1, ck=CK_A_COMMITTED),
    _row("g", 0.5, wheel="torch_pruning"),
    _row("h", 4, ck=CK_A, est_if_done={"row": "a", "est_device_min": 0.5}),
    _row("z", 1, status="blocked (method not landed)"),
    _row("d", 0.5, status="done", result="d.json"),
]}


def test_plan_greedy_in_ledger_order_with_needs():
    p = L.plan(FAKE, 9, wheel_ok=lambda w: False)
    assert p.scheduled == ["a", "f"]  # a (8), then f: its checkpoint comes from a, planned before it
    assert p.left_min == pytest.approx(0)
    assert p.skipped["b"].startswith("does not fit") and p.skipped["c"].startswith("does not fit")
    assert "torch_pruning" in p.skipped["g"] and p.skipped["part"] == "measured by a"
    assert p.skipped["z"] == "blocked (method not landed)" and p.skipped["d"].startswith("done (ledger")

    # a does not fit: rows needing its checkpoint wait, unless a committed copy exists
    committed = lambda ck: ck["committed"] is not None  # noqa: E731
    p = L.plan(FAKE, 5, checkpoint_available=committed)
    assert p.scheduled == ["c", "f", "g"] and p.skipped["b"].startswith("waits for a")
    assert p.skipped["h"].startswith("waits for a")

    # a finished on this machine: its dependants run; h uses its shorter estimate
    p = L.plan(FAKE, 4, done_here={"a"}, checkpoint_available=lambda ck: True)
    assert p.scheduled == ["b", "f", "g", "h"] and p.est["h"] == 0.5 and p.skipped["a"].startswith("done here")

    # data missing: every data row is blocked; file cap: one result (+ artifacts) per row
    assert L.plan(FAKE, 60, data_ok=lambda: "no CIFAR-10").scheduled == []
    assert L.plan(FAKE, 60, files_left=2).scheduled == ["a"]  # a = result + artifact
    # --rows: keeps ledger order, may re-run a ledger-done row, refuses part_of and unknown ids
    assert L.plan(FAKE, 60, only=["d", "c"]).scheduled == ["c", "d"]
    with pytest.raises(ValueError, match="measured by a"):
        L.plan(FAKE, 60, only=["part"])
    with pytest.raises(ValueError, match="unknown"):
        L.plan(FAKE, 60, only=["nope"])
    # dry run: smoke estimates
    assert L.plan(FAKE, 1.0, dry_run=True).est["a"] == pytest.approx(0.8)


def test_checks_and_ledger_edits():
    rec = [{"pruned": {"top1": 93.5}, "baseline": {"top1": 93.3}}, {"pruned": {"top1": 93.6}}]
    ok = L.evaluate_check({"path": [0, "pruned", "top1"], "op": ">=", "ref": [0, "baseline", "top1"],
                           "offset": 0.1}, rec)
    assert ok["met"] is True and ok["expected"] == pytest.approx(93.4)
    assert L.evaluate_check({"path": [0, "pruned", "top1"], "op": ">=", "ref": [1, "pruned", "top1"]}, rec)["met"] \
        is False
    assert L.evaluate_check({"path": ["missing"], "op": ">=", "value": 1}, rec[0])["met"] is None
    text = (GPU / "ledger.yaml").read_text()
    edited = L.set_row_fields(text, "loader-throughput-gpu", status="done",
                              result="benchmarks/results/loader-throughput-gpu.json")
    rows = L.rows_by_id(yaml.safe_load(edited))
    assert rows["loader-throughput-gpu"]["status"] == "done"
    assert rows["loader-throughput-gpu"]["result"] == "benchmarks/results/loader-throughput-gpu.json"
    assert rows["baseline-resnet56"]["status"] == "pending" and edited.count("\n") == text.count("\n")


# ------------------------------------------------------------------------------------------------ end to end (fake)
TRAIN = """
import argparse, json, os
ap = argparse.ArgumentParser(); ap.add_argument("--out"); ap.add_argument("--ckpt")
ap.add_argument("--value", type=float); a = ap.parse_args()
os.makedirs(os.path.dirname(a.ckpt), exist_ok=True); open(a.ckpt, "w").write("weights-%s" % a.value)
os.makedirs(os.path.dirname(a.out), exist_ok=True)
json.dump({"schema": "prunekit.result/1", "versions": {"prunekit": "unknown"}, "baseline": {"top1": a.value},
           "pythonpath": os.environ["PYTHONPATH"], "unbuffered": os.environ.get("PYTHONUNBUFFERED")}, open(a.out, "w"))
print("trained", a.value)
"""
USE = """
import argparse, json, os
ap = argparse.ArgumentParser(); ap.add_argument("--ckpt"); ap.add_argument("--out"); a = ap.parse_args()
os.makedirs(os.path.dirname(a.out), exist_ok=True)
json.dump({"schema": "prunekit.result/1", "from_checkpoint": open(a.ckpt).read()}, open(a.out, "w"))
print("used", a.ckpt)
"""
SLOW = """
import json, os, sys, time
d = os.path.expanduser(sys.argv[1]); os.makedirs(d, exist_ok=True)
json.dump({"epoch": 3}, open(os.path.join(d, "partial.json"), "w"))
print("slow: started", flush=True)
time.sleep(600)
"""


def _fake_row(rid, command, writes, est=0.02, **kw):
    r = {"id": rid, "title": rid, "status": "pending", "command": command, "est_device_min": est,
         "needs": {"data": "cifar10", "checkpoint": None, "wheel": None}, "writes": writes, "target": "t",
         "check": [], "result": None, "notes": "", "smoke": {"command": command, "writes": writes}}
    r.update(kw)
    return r


def _write_ledger(path: Path, rows: list[dict]) -> None:
    """One field per line, as in the real ledger (collect.py edits the status/result lines in place)."""
    lines = ["schema: prunekit.gpu-ledger/1", "rows:"]
    for r in rows:
        for i, (k, v) in enumerate(r.items()):
            val = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
            lines.append(("  - " if i == 0 else "    ") + f"{k}: {val}")
    path.write_text("\n".join(lines) + "\n")


def _fake_repo(tmp: Path) -> tuple[Path, Path, Path]:
    repo = tmp / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name, src in (("fake_train", TRAIN), ("fake_use", USE), ("fake_slow", SLOW)):
        (repo / "benchmarks" / f"{name}.py").write_text(textwrap.dedent(src))
    (repo / "results").mkdir()
    (repo / "results" / "old.json").write_text("{}")

    row = _fake_row
    ledger = {"schema": L.SCHEMA, "rows": [
        row("train", "python benchmarks/fake_train.py --out results/train.json --ckpt ~/runs/train/last.bin "
                     "--value 93.4", ["results/train.json"],
            artifacts=[{"path": "~/runs/train/last.bin", "as": "train.bin"}],
            check=[{"file": "results/train.json", "path": ["baseline", "top1"], "op": ">=", "value": 93.0}]),
        row("use", "python benchmarks/fake_use.py --ckpt ~/runs/train/last.bin --out results/use.json",
            ["results/use.json"],
            needs={"data": "cifar10", "checkpoint": {"path": "~/runs/train/last.bin", "from_row": "train",
                                                     "committed": None}, "wheel": None}),
        row("slow", "python benchmarks/fake_slow.py ~/runs/slow", ["results/slow.json"],
            partial=["~/runs/slow/partial.json"]),
        row("old", "python benchmarks/fake_train.py --out results/old.json --ckpt ~/runs/old/x --value 1",
            ["results/old.json"], status="done", result="results/old.json"),
        row("later", "python benchmarks/fake_use.py --ckpt x --out results/later.json", ["results/later.json"],
            status="blocked (method not landed)"),
    ]}
    ledger_path = tmp / "ledger.yaml"
    _write_ledger(ledger_path, ledger["rows"])
    assert L.validate(L.load(ledger_path), repo) == []
    data = tmp / "data"
    data.mkdir()
    names = [f"train_{i}.npz" for i in range(5)] + ["test.npz"]
    for n in names:
        (data / n).write_bytes(n.encode())
    (data / "MANIFEST.sha256").write_text("".join(f"{hashlib.sha256(n.encode()).hexdigest()}  {n}\n" for n in names))
    return repo, ledger_path, data


def test_runner_end_to_end_on_a_fake_ledger(tmp_path):
    repo, ledger, data = _fake_repo(tmp_path)
    out, runs = tmp_path / "out", tmp_path / "runs"
    common = ["--ledger", ledger, "--cwd", repo, "--runs-dir", runs, "--data-dir", data, "--out", out,
              "--commit", "abc123", "--grace-s", "1", "--kill-after-s", "2"]
    p = _run([RUN, "--budget-min", "0.25", *common], timeout=90)
    assert p.returncode == 1, p.stdout + p.stderr  # the slow row was cut at its timeout
    files = sorted(f.name for f in out.iterdir())
    assert files == ["runner-summary.json", "runner.log", "slow.result.json", "train.bin", "train.result.json",
                     "use.result.json"]
    s = json.loads((out / "runner-summary.json").read_text())
    assert s["finished"] and s["commit"] == "abc123" and s["torch"] and s["device"]
    assert s["data"]["manifest"]["state"] == "verified"
    assert s["plan"]["scheduled"] == ["train", "use", "slow"]
    assert s["plan"]["skipped"]["old"].startswith("done (ledger") and s["plan"]["skipped"]["later"].startswith(
        "blocked")
    status = {r["id"]: r["status"] for r in s["rows"]}
    assert status == {"train": "done", "use": "done", "slow": "interrupted"}
    assert all(r["minutes"] < 0.5 for r in s["rows"])

    train = json.loads((out / "train.result.json").read_text())
    rec = train["files"]["results/train.json"]
    assert rec["baseline"]["top1"] == 93.4 and rec["unbuffered"] == "1"
    assert rec["pythonpath"].split(os.pathsep)[0] == str(repo / "src")
    assert train["checks"][0]["met"] is True
    assert train["artifacts"][0]["as"] == "train.bin" and (out / "train.bin").read_text() == "weights-93.4"
    use = json.loads((out / "use.result.json").read_text())
    assert use["files"]["results/use.json"]["from_checkpoint"] == "weights-93.4"  # ran after train, same paths
    assert str(runs) in use["command"] and "~/runs" in use["ledger_command"]
    slow = json.loads((out / "slow.result.json").read_text())
    assert slow["partial"] == {"~/runs/slow/partial.json": {"epoch": 3}} and slow["files"] == {}
    assert slow["rc"] == 124 and "slow: started" in slow["log_tail"]
    log = (out / "runner.log").read_text()
    assert "trained 93.4" in log and "used" in log and "===== row slow: interrupted" in log

    # resumable: the finished rows are skipped (out folder and this machine's runs folder)
    p = _run([RUN, "--budget-min", "1", "--rows", "train,use", *common], timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    s2 = json.loads((out / "runner-summary.json").read_text())
    assert s2["plan"]["scheduled"] == [] and "done here" in s2["plan"]["skipped"]["train"]
    assert {r["id"] for r in s2["rows"]} == {"train", "use", "slow"}  # earlier entries kept

    # a corrupted data file blocks every data row
    (data / "test.npz").write_bytes(b"corrupt")
    p = _run([RUN, "--budget-min", "1", "--plan-only", *common], timeout=60)
    assert p.returncode == 0 and "sha256 mismatch: ['test.npz']" in p.stdout and "run   slow" not in p.stdout

    # collect: results and artifact into the repo, ledger rows done, the cut row left pending
    results, ckpts = tmp_path / "results", tmp_path / "ckpts"
    p = _run([COLLECT, out, "--ledger", ledger, "--results-dir", results, "--checkpoints-dir", ckpts], timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "MET" in p.stdout and "not done slow: interrupted" in p.stdout
    got = json.loads((results / "train.json").read_text())
    assert got["baseline"]["top1"] == 93.4 and got["versions"]["prunekit"] == "abc123"
    assert (ckpts / "train.bin").read_text() == "weights-93.4"
    rows = L.rows_by_id(L.load(ledger))
    assert rows["train"]["status"] == "done" and rows["train"]["result"] == str(results / "train.json")
    assert rows["use"]["status"] == "done" and rows["slow"]["status"] == "pending"
    assert L.validate(L.load(ledger), repo) == []


def test_runner_replans_the_minutes_a_failed_row_leaves(tmp_path):
    """A row that fails at once gives its minutes back: a row that did not fit the first plan runs after it."""
    repo, _, data = _fake_repo(tmp_path)
    (repo / "benchmarks" / "fake_fail.py").write_text("import sys; print('boom'); sys.exit(7)\n")
    ledger = tmp_path / "ledger2.yaml"
    _write_ledger(ledger, [
        _fake_row("big", "python benchmarks/fake_fail.py", ["results/big.json"], est=0.3),
        _fake_row("small", "python benchmarks/fake_train.py --out results/small.json --ckpt ~/runs/s/x --value 1",
                  ["results/small.json"], est=0.2)])
    out = tmp_path / "out2"
    p = _run([RUN, "--budget-min", "0.4", "--ledger", ledger, "--cwd", repo, "--runs-dir", tmp_path / "runs2",
              "--data-dir", data, "--out", out, "--grace-s", "1", "--kill-after-s", "2"], timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    s = json.loads((out / "runner-summary.json").read_text())
    assert s["plan"]["scheduled"] == ["big"] and s["plan"]["skipped"]["small"].startswith("does not fit")
    assert s["plan"]["run_order"] == ["big", "small"]
    assert {r["id"]: (r["status"], r["rc"]) for r in s["rows"]} == {"big": ("failed", 7), "small": ("done", 0)}
    assert json.loads((out / "big.result.json").read_text())["log_tail"] == ["boom"]


def test_collect_refuses_a_dry_run(tmp_path):
    (tmp_path / "runner-summary.json").write_text(json.dumps({"dry_run": True}))
    (tmp_path / "x.result.json").write_text(json.dumps({"row": "x", "status": "done", "dry_run": True}))
    p = _run([COLLECT, tmp_path, "--ledger", GPU / "ledger.yaml"], timeout=60)
    assert p.returncode != 0 and "dry run" in p.stderr


# ------------------------------------------------------------------------------------------------ dry run (real rows)
@pytest.mark.slow
def test_dry_run_of_real_rows(tmp_path):
    """The cheapest real smoke variants end to end on CPU: the loader row and the ResNet-56 baseline (a shrunk copy of
    its recipe, its checkpoint slimmed into the out folder), in a scratch copy of the repo, on synthetic data."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    smoke_files = [REPO / "benchmarks" / "results" / n for n in ("baseline-resnet56-cifar10-smoke.json",
                                                                 "loader-throughput-cpu-smoke.json")]
    before = [f.exists() and f.stat().st_mtime_ns for f in smoke_files]
    p = _run([RUN, "--dry-run", "--rows", "loader-throughput-gpu,baseline-resnet56", "--out", out, "--runs-dir", runs],
             timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads((out / "runner-summary.json").read_text())
    assert s["dry_run"] and [r["status"] for r in s["rows"]] == ["done", "done"]
    assert s["data"]["manifest"]["state"] == "verified"
    assert len(list(out.iterdir())) <= 8
    base = json.loads((out / "baseline-resnet56.result.json").read_text())
    rec = base["files"]["benchmarks/results/baseline-resnet56-cifar10-smoke.json"]
    # (its "reduced" is false: train_baseline.py takes the paper's epochs from the recipe it is given and ignores
    # train_subset; dry-run bundles are marked dry_run and collect.py refuses them)
    assert rec["schema"] == "prunekit.result/1" and rec["model"] == "resnet56" and base["dry_run"] is True
    assert 0 <= rec["baseline"]["top1"] <= 100 and rec["baseline"]["macs"] > 0
    assert rec["schedule"]["train_epochs"] == 1 and "--device cpu" in base["command"]
    loader = json.loads((out / "loader-throughput-gpu.result.json").read_text())
    assert loader["files"]["benchmarks/results/loader-throughput-cpu-smoke.json"]["ratio"] > 0
    art = base["artifacts"][0]
    assert art["as"] == "resnet56_cifar10.ckpt" and art["bytes"] < (runs / "base-resnet56" / "last.ckpt").stat().st_size
    import torch

    ckpt = torch.load(out / "resnet56_cifar10.ckpt", weights_only=True)
    assert ckpt["optimizer"] is None and ckpt["meta"]["model"]["name"] == "resnet56" and ckpt["model"]
    assert [f.exists() and f.stat().st_mtime_ns for f in smoke_files] == before  # only the scratch copy got them
