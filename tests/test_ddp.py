"""Multi-process training through torchrun, on CPU with the gloo backend (2 processes)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch

from _cli import run_cli

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")

WORKER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from _toy import ToyLoader, toy_model
    from prunekit.train import Trainer, TrainConfig, distributed
    info = distributed.init_from_env("cpu")
    model = toy_model(seed=info.rank)  # different inits: DDP must broadcast rank 0's weights
    loader = ToyLoader(rank=info.rank, world_size=info.world_size, batch_size=8)
    val = ToyLoader(rank=info.rank, world_size=info.world_size, batch_size=8, shuffle=False)
    res = Trainer(model, loader, val, config=TrainConfig(epochs=2, lr=0.05, progress=False,
                  checkpoint_dir={out!r})).fit()
    torch.save(model.state_dict(), {out!r} + f"/rank{{info.rank}}.pt")
    with open({out!r} + f"/val{{info.rank}}.txt", "w") as f:  # a file per rank: stdout lines interleave
        f.write(f"VAL {{res.final['val_top1']}} {{info.world_size}}")
""")


def test_ddp_gloo_two_processes_stay_in_sync(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    r = run_cli(str(script), module=TORCHRUN, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in w0:
        if "running" in k or "num_batches" in k:
            continue  # BN statistics are per process (no SyncBN), as in plain DDP
        assert torch.allclose(w0[k], w1[k]), k
    assert (tmp_path / "last.ckpt").exists()  # rank 0 wrote the checkpoint
    # both ranks report the same (all-reduced) validation accuracy over the whole val set
    vals = [(tmp_path / f"val{r}.txt").read_text() for r in (0, 1)]
    assert vals[0] == vals[1] and vals[0].startswith("VAL ") and vals[0].endswith(" 2")


def test_ddp_cli_train(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*TORCHRUN[2:], "-m", "prunekit", "train", "--model", "smallcnn", "--data", "digits",
                "--epochs", "3", "--lr", "0.2", "--batch-size", "32", "-o", str(out), "--no-progress",
                "--device", "cpu", module=TORCHRUN[:2], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # 10 classes: chance is 10%; three epochs over the two shards reach ~90%, so 75% asks for real learning
    # (the two process start-ups dominate the time: one epoch is hardly faster)
    assert summary["epochs"] == 3 and summary["test_top1"] > 75
