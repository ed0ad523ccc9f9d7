"""Network Slimming: sparsity, global threshold, floors, tied groups, resume, CLI, bad input."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.data import build_data
from prunekit.errors import ConfigError
from prunekit.methods import NetworkSlimming, SlimmingConfig, slim
from prunekit.methods.slimming import bn_gamma_scores
from prunekit.train import Callback, L1Subgradient, TrainConfig, Trainer, TrainingInterrupted, bn_weights

from _cli import run_cli


def _chain(widths=(4, 6, 8)) -> nn.Module:
    layers, c = [], 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 5))


def _set_gammas(model: nn.Module, values: list[list[float]]) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn, v in zip(bns, values):
        bn.weight.data = torch.tensor(v)


def test_global_threshold_prunes_exactly_the_lowest_gammas():
    torch.manual_seed(0)
    model = _chain()
    gam = [[0.9, 0.01, 0.8, 0.02], [0.05, 0.7, 0.6, 0.03, 0.5, 0.4], [0.3, 0.04, 0.2, 0.1, 0.06, 1.0, 0.35, 0.45]]
    _set_gammas(model, gam)
    x = torch.randn(2, 3, 8, 8)
    flat = sorted(v for g in gam for v in g)
    ratio = 6 / len(flat)  # the six smallest: .01 .02 .03 .04 .05 .06
    plan = slim(model, x, ratio=ratio, min_keep=0.1)
    assert plan.threshold == pytest.approx(0.06)
    kept = [m.weight.detach().tolist() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    expect = [[v for v in g if v > 0.06] for g in gam]
    for k, e in zip(kept, expect):
        assert k == pytest.approx(e)
    assert model(x).shape == (2, 5)


def test_floor_holds_at_ratio_099():
    model = _chain((8, 16, 32))
    x = torch.randn(2, 3, 8, 8)
    plan = slim(model, x, ratio=0.99, min_keep=0.25, min_channels=2)
    sizes = [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sizes == [2, 4, 8]  # 25% of each layer kept, never emptied
    assert len(plan.floor_hit) == 3
    assert model(x).shape == (2, 5)


def test_sparsity_training_shrinks_gamma():
    data = build_data("synthetic", num_train=256, num_test=64, image_size=8, batch_size=32, val_split=0.0)
    results = {}
    for s in (0.0, 0.3):
        torch.manual_seed(0)
        m = prunekit.models.create("smallcnn", in_channels=3)
        cfg = TrainConfig(epochs=2, lr=0.05, progress=False)

        Trainer(m, data.train, config=cfg, callbacks=[L1Subgradient(s)] if s else []).fit()
        results[s] = torch.cat([g.detach().abs() for g in bn_weights(m)]).mean().item()
    assert results[0.3] < 0.8 * results[0.0]


@pytest.mark.parametrize("name, size", [("resnet20", 16), ("densenet40", 16), ("mobilenetv2", 16)])
def test_tied_groups_pruned_consistently(name, size):
    torch.manual_seed(0)
    model = prunekit.models.create(name).eval()
    for m in model.modules():  # random |γ| so the threshold cuts everywhere
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand_like(m.weight) + 0.01
    x = torch.randn(2, 3, size, size)
    graph = prunekit.DependencyGraph(model, x)
    before = {g.name: g.size for g in graph.prunable_groups}
    scores = bn_gamma_scores(graph, "mean")
    tied = [g.name for g in graph.prunable_groups if len(g.bn_layers) > 1]
    plan = slim(model, x, ratio=0.4)
    assert model(x).shape == (2, 10)
    after = prunekit.DependencyGraph(model, x).widths()
    assert plan.widths == {n: after[n] for n in plan.widths}
    # exactly the channels below the global threshold go, in every group (floors aside), tied groups included
    for n, s in scores.items():
        expect = max(int((s > plan.threshold).sum()), plan_floor(before[n]))
        assert after[n] == expect, n
    assert tied and any(after[n] < before[n] for n in tied)
    removed = sum(before[n] - after[n] for n in scores)
    total = sum(before[n] for n in scores)
    assert removed == int(0.4 * total) if not plan.floor_hit else removed < int(0.4 * total)


def plan_floor(size: int, min_keep: float = 0.05) -> int:
    import math
    return max(1, math.ceil(min_keep * size - 1e-9))


def test_target_macs_is_met():
    torch.manual_seed(0)
    model = prunekit.models.create("resnet20")
    x = torch.randn(1, 3, 32, 32)
    base = prunekit.count(model, x).macs
    slim(model, x, target_macs=0.5)
    kept = prunekit.count(model, x).macs / base
    assert 0.4 < kept <= 0.5


def test_group_score_is_mean_over_tied_bns():
    model = prunekit.models.create("resnet20")
    x = torch.randn(1, 3, 32, 32)
    g = prunekit.DependencyGraph(model, x)
    scores = bn_gamma_scores(g, "mean")
    sums = bn_gamma_scores(g, "sum")
    residual = max(g.prunable_groups, key=lambda grp: len(grp.bn_layers))
    n = len(residual.bn_layers)
    assert n > 2
    assert torch.allclose(sums[residual.name], scores[residual.name] * n)


class _KillInFinetune(Callback):
    """SIGTERM at global step ``step`` of the fine-tuning stage (the Trainer checkpoints, then stops)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.config.checkpoint_dir.name.endswith("finetune") and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_resume_mid_finetune_gives_same_model(tmp_path):
    data = build_data("digits", batch_size=64, val_split=0.1)

    def run(out, callbacks=()):
        torch.manual_seed(0)
        m = prunekit.models.create("smallcnn", in_channels=1)
        tc = TrainConfig(epochs=1, lr=0.05, progress=False, steps_per_epoch=6)
        ft = TrainConfig(epochs=2, lr=0.02, progress=False, steps_per_epoch=6)
        cfg = SlimmingConfig(sparsity=1e-3, ratio=0.3, sparsity_train=tc, finetune=ft)
        return NetworkSlimming(cfg).run(m, data, out, latency=False, callbacks=callbacks)

    ref = run(tmp_path / "ref")
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "run", callbacks=[_KillInFinetune(8)])  # mid-way through fine-tuning's 2nd epoch
    assert (tmp_path / "run" / "pass1-prune" / "record.json").exists()
    assert not (tmp_path / "run" / "pass1-finetune" / "record.json").exists()
    res = run(tmp_path / "run")
    a, b = ref.model.state_dict(), res.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res.widths_after == ref.widths_after


def test_bad_input():
    with pytest.raises(ConfigError, match="ratio"):
        SlimmingConfig(ratio=1.2)
    with pytest.raises(ConfigError, match="exactly one"):
        SlimmingConfig(ratio=0.5, target_macs=0.5)
    no_bn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="l1"):
        slim(no_bn, torch.randn(1, 3, 8, 8), ratio=0.5)
    with pytest.raises(ConfigError, match="ratio"):
        slim(_chain(), torch.randn(1, 3, 8, 8), ratio=0.0)


def test_cli_slimming_end_to_end(tmp_path):
    out = tmp_path / "slim"
    args = ["prune", "slimming", "--model", "smallcnn", "--data", "digits", "--sparsity", "1e-3", "--ratio", "0.3",
            "--sparsity-train-epochs", "1", "--finetune-epochs", "1", "--set", "sparsity_train.lr=0.05",
            "--set", "finetune.lr=0.05", "--device", "cpu", "-o", str(out),
            "--no-progress"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((out / "result.json").read_text())
    assert rec["method"] == "slimming" and rec["reduced"] is True
    assert rec["pruned"]["macs"] < rec["baseline"]["macs"]
    assert (out / "widths.png").stat().st_size > 1000 and (out / "gamma_hist.png").exists()
    loaded = prunekit.load(out / "model.safetensors")
    assert loaded(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    r = run_cli(*args)  # re-running resumes: every stage is already done
    assert r.returncode == 0 and r.stderr.count("done earlier") == 3, r.stderr[-2000:]
    r = run_cli("prune", "slimming", "--model", "smallcnn", "--ratio", "1.5", "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and "ratio" in r.stderr
