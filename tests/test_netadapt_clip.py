"""NetAdaptConfig.clip_to_budget: no iteration targets less than the budget, so the run ends on it."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.data import build_data
from prunekit.methods import NetAdapt, NetAdaptConfig
from prunekit.train import TrainConfig


@pytest.mark.parametrize("clip", [False, True])
def test_the_last_target_is_clipped_to_the_budget(tmp_path, clip):
    data = build_data("digits", batch_size=64, val_split=0.2)
    c = NetAdaptConfig(target_macs=0.8, init_reduction=0.15, decay=1.0, round_to=1, min_channels=2, max_iters=4,
                       clip_to_budget=clip, short_term_steps=1, uniform_points=0, measure_family=False,
                       short_term=TrainConfig(epochs=1, lr=1e-3, schedule="constant", progress=False),
                       long_term=None)
    torch.manual_seed(0)
    res = NetAdapt(c).run(prunekit.models.create("smallcnn", in_channels=1), data, tmp_path)
    fam, budget = res.details["family"], res.details["budget"]
    assert res.details["stopped"] == "budget" and fam[-1]["resource"] <= budget
    targets = [f["target"] for f in fam[1:]]
    if clip:
        assert min(targets) == pytest.approx(budget) and all(t >= budget - 1e-9 for t in targets)
    else:  # 0.15 then 0.15 more: the official loop aims past the budget on its last iteration
        assert min(targets) < budget
