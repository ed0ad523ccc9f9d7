"""NetAdapt's proposals shared among processes (torchrun, gloo on CPU): the same family as one process, a run
interrupted earlier continues without redoing a finished proposal, and the CLI under torchrun."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.data import build_data
from prunekit.methods import NetAdapt, NetAdaptConfig
from prunekit.train import Callback, TrainConfig

from _cli import run_cli

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


def config() -> NetAdaptConfig:
    return NetAdaptConfig(target_macs=0.6, round_to=4, min_channels=4, short_term_steps=2, max_iters=3,
                          uniform_points=1, measure_family=False,
                          short_term=TrainConfig(epochs=1, lr=1e-3, schedule="constant", progress=False),
                          long_term=TrainConfig(epochs=1, lr=1e-3, max_steps=2, schedule="constant", progress=False))


def data():
    return build_data("digits", batch_size=64, val_split=0.2)


def model():
    torch.manual_seed(0)
    return prunekit.models.create("smallcnn", in_channels=1)


def outcome(res) -> dict:
    """What must not depend on the number of processes: each iteration's choice, widths, resource, accuracy,
    and every proposal."""
    fam = [{k: f.get(k) for k in ("iteration", "group", "width", "widths", "resource", "val_top1")}
           for f in res.details["family"]]
    uniform = [{k: u[k] for k in ("widths", "resource", "val_top1")} for u in res.details["uniform"]]
    return {"family": fam, "proposals": res.details["proposals"], "uniform": uniform}


class Trained(Callback):
    """The stages this process trained (one fit each)."""

    def __init__(self, stop_at: int | None = None):
        self.stages: list[str] = []
        self.stop_at = stop_at

    def on_fit_start(self, trainer):
        self.stages.append(Path(trainer.config.checkpoint_dir).name)

    def on_step_end(self, trainer):
        if len(self.stages) == self.stop_at:
            raise KeyboardInterrupt


WORKER = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)  # as the in-process reference (whatever OMP_NUM_THREADS says)
    sys.path.insert(0, {tests!r})
    from test_netadapt_parallel import NetAdapt, Trained, config, data, model, outcome
    trained = Trained()
    res = NetAdapt(config()).run(model(), data(), {out!r}, callbacks=[trained])
    rank = torch.distributed.get_rank()
    with open({out!r} + f"/rank{{rank}}.json", "w") as f:
        json.dump({{"outcome": outcome(res), "trained": trained.stages,
                   "world": torch.distributed.get_world_size()}}, f)
    torch.save(res.model.state_dict(), {out!r} + f"/rank{{rank}}.pt")
""")


@pytest.fixture
def one_thread():
    """torchrun gives each of its workers OMP_NUM_THREADS=1; the in-process runs compared with them must use one
    thread too (another thread count changes float reduction order, hence the trained weights)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_two_processes_choose_as_one_and_continue_an_interrupted_run(tmp_path, one_thread):
    ref = NetAdapt(config()).run(model(), data(), tmp_path / "ref")
    assert ref.details["iterations"] == 3 and len(ref.details["proposals"][0]) == 3  # smallcnn: 3 groups
    # one process stops in iteration 2's second proposal; two processes continue the run in that folder
    cut = Trained(stop_at=5)
    with pytest.raises(KeyboardInterrupt):
        NetAdapt(config()).run(model(), data(), tmp_path / "par", callbacks=[cut])
    assert cut.stages == ["iter01-p00", "iter01-p01", "iter01-p02", "iter02-p00", "iter02-p01"]
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), out=str(tmp_path / "par")))
    r = run_cli(str(script), module=TORCHRUN, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / "par" / f"rank{k}.json").read_text()) for k in (0, 1)]
    want = json.loads(json.dumps(outcome(ref)))
    for k in (0, 1):
        assert ranks[k]["world"] == 2
        assert ranks[k]["outcome"] == want  # the same choices, widths and accuracies as one process
        sd = torch.load(tmp_path / "par" / f"rank{k}.pt", weights_only=True)
        assert all(torch.equal(sd[n], v) for n, v in ref.model.state_dict().items())  # the same final model
    # finished proposals were loaded, the interrupted one resumed on its owner; proposal j on rank j % 2;
    # the uniform point and the long-term fine-tune on rank 0 alone
    p2 = ["iter02-p01", "iter02-p02"]
    p3 = [p["stage"] for p in ref.details["proposals"][2]]
    assert ranks[0]["trained"] == [p2[1], *p3[0::2], "uniform1", "long-term"]
    assert ranks[1]["trained"] == [p2[0], *p3[1::2]]
    assert (tmp_path / "par" / "result.json").exists() and (tmp_path / "par" / "family.png").exists()


def test_cli_under_torchrun(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*TORCHRUN[2:], "-m", "prunekit", "prune", "netadapt", "--model", "smallcnn", "--target-macs", "0.8",
                "--device", "cpu", "--no-progress", "--short-term-steps", "2", "--long-term-epochs", "1",
                "--max-iters", "2", "--round-to", "8", "--min-channels", "8", "--uniform-points", "0",
                "--no-measure-family", "--val-split", "0.2", "-o", str(out), module=TORCHRUN[:2], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out / "result.json").read_text())
    assert rec["method"] == "netadapt" and rec["details"]["iterations"] == 2
    assert "(rank 1) stage iter01-p01 (train)" in r.stderr  # rank 1 trained proposal 1
    assert "(rank 1) stage iter01-p00 (train)" not in r.stderr
    assert prunekit.load(out / "model.safetensors") is not None
