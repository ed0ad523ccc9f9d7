"""CondenseNet: learned group convolution (mask, groups, condensing stages, schedule, group lasso), conversion to
the inference form (same function, save/load, ONNX), the zoo's counts, the method end to end on tiny data."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.cost import count
from prunekit.data import build_data
from prunekit.methods.condensenet import (Condensation, GroupLasso, convert, group_lasso, kept_fraction,
                                          learned_group_convs, stage_at)
from prunekit.models import create
from prunekit.models.condensenet import CondenseNet, official_count
from prunekit.models.layers_lgc import CondensedConv, CondensedLinear, LearnedGroupConv
from prunekit.train import Callback, Trainer, TrainConfig

from _cli import run_cli


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return model


def _tiny(**kwargs) -> CondenseNet:
    torch.manual_seed(0)
    return _randomize(CondenseNet(stages=(2, 2, 2), growth=(4, 4, 4), **kwargs))


def _lgc(cin: int = 16, cout: int = 8, groups: int = 4, seed: int = 1) -> LearnedGroupConv:
    torch.manual_seed(seed)
    lgc = LearnedGroupConv(cin, cout, groups)
    nn.init.normal_(lgc.conv.weight)
    return lgc


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets on a loaded 2-core machine: one intra-op thread avoids the spin-wait contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data():
    return build_data("synthetic", batch_size=8, val_split=0.0, num_train=16, num_test=16, image_size=8, seed=0)


# ---------------------------------------------------------------------------------------------- the layer
def test_mask_shape_and_group_membership_o_mod_g():
    lgc = _lgc()
    assert lgc.mask.shape == lgc.conv.weight.shape == (8, 16, 1, 1)
    assert lgc.condense_factor == 4 and lgc.delta == 4 and int(lgc.stage) == 0
    lgc.condense_to(1)
    m = lgc.mask[:, :, 0, 0]
    for o in range(8):
        assert torch.equal(m[o], m[o % 4]), "filter o belongs to group o mod G"
    assert (m.sum(1) == 12).all()
    assert not torch.equal(m[0], m[1])  # groups choose their own inputs
    assert (lgc.conv.weight * (1 - lgc.mask)).abs().sum() == 0  # removed weights are zero
    with pytest.raises(prunekit.ConfigError, match="multiple"):
        LearnedGroupConv(10, 8, groups=4)


def test_each_stage_removes_the_weakest_columns_of_each_group_by_l1():
    lgc = _lgc()
    for stage in (1, 2, 3):
        w = (lgc.conv.weight * lgc.mask)[:, :, 0, 0].detach().abs()
        live = lgc.group_mask().clone()
        assert lgc.condense_to(stage) == 1
        dropped = live & ~lgc.group_mask()
        for g in range(4):
            imp = w[g::4].sum(0)  # L1 over the group's filters
            order = [j for j in imp.argsort(stable=True).tolist() if live[g, j]]
            assert sorted(dropped[g].nonzero().flatten().tolist()) == sorted(order[:4])
        assert lgc.kept_per_group == 16 - 4 * stage
        assert (lgc.group_mask().sum(1) == 16 - 4 * stage).all()
    assert lgc.kept_fraction() == 0.25
    assert lgc.condense_to(5) == 0 and int(lgc.stage) == 3  # C - 1 stages at most


def test_stages_at_the_official_fractions_of_training():
    assert [stage_at(p, 4) for p in (0, 0.166, Fraction(1, 6), 0.3, Fraction(1, 3), 0.49, 0.5, 0.9)] == \
        [0, 0, 1, 1, 2, 2, 3, 3]
    assert [stage_at(p, 2) for p in (0.49, 0.5)] == [0, 1]
    assert [stage_at(p, 4, condense_end=0.75) for p in (0.24, 0.25, 0.5, 0.75)] == [0, 1, 2, 3]


class _Stop(Exception):
    pass


class _StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_start(self, trainer, batch):
        if trainer.global_step == self.step:
            raise _Stop


def _fit(tmp, callbacks, resume=False):
    torch.manual_seed(0)
    model = CondenseNet(stages=(2, 2, 2), growth=(4, 4, 4))
    cfg = TrainConfig(epochs=3, lr=0.05, schedule="cosine", nesterov=True, weight_decay=1e-4, progress=False,
                      checkpoint_dir=tmp, resume=resume, eval_every=3)
    Trainer(model, _data().train, None, config=cfg, callbacks=callbacks).fit()
    return model


def test_schedule_follows_training_and_survives_resume(tmp_path):
    full = Condensation()
    ref = _fit(tmp_path / "a", [full])  # 3 epochs x 2 steps: stages at steps 1, 2, 3
    assert [e["step"] for e in full.events] == [1, 2, 3]
    assert [e["kept"] for e in full.events] == [0.75, 0.5, 0.25]
    assert all(int(m.stage) == 3 for _, m in learned_group_convs(ref))
    with pytest.raises(_Stop):  # killed at step 3 (stage 2 done): the checkpoint (step 2) has stage 1 only
        _fit(tmp_path / "b", [Condensation(), _StopAt(3)])
    again = Condensation()
    resumed = _fit(tmp_path / "b", [again], resume=True)
    assert [e["step"] for e in again.events] == [1, 2, 3]
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_group_lasso_gradient_matches_finite_differences():
    lgc = _lgc(8, 8).double()
    lgc.condense_to(1)
    w0 = lgc.conv.weight.detach().clone()
    del lgc.conv.weight  # the weight becomes a plain tensor attribute: the input of the check

    def f(w):
        lgc.conv.weight = w
        return lgc.lasso()

    assert torch.autograd.gradcheck(f, (w0.clone().requires_grad_(),), eps=1e-6, atol=1e-5)
    lgc.condense_to(3)
    assert float(lgc.lasso().detach()) == 0.0  # upstream: no lasso once condensed
    model = _tiny()
    term = GroupLasso(1e-3).extra_loss(type("T", (), {"model": model})())
    assert torch.isclose(term, 1e-3 * group_lasso(model))


# ---------------------------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("stage", [3, 1])
def test_converted_computes_the_same_function(stage):
    model = _tiny().eval()
    for _, m in learned_group_convs(model):
        m.condense_to(stage)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        y = model(x)
        conv = convert(copy.deepcopy(model))
        assert not learned_group_convs(conv)
        assert sum(isinstance(m, CondensedConv) for m in conv.modules()) == 6
        assert (conv(x) - y).abs().max() <= 1e-4
    if stage == 3:
        assert count(conv, x[:1]).macs < count(model, x[:1]).macs


def test_converted_after_training_steps_saves_loads_and_exports(tmp_path):
    torch.manual_seed(0)
    model = CondenseNet(stages=(2, 2, 2), growth=(4, 4, 4))
    cfg = TrainConfig(epochs=1, lr=0.05, schedule="cosine", progress=False)
    cond = Condensation()
    Trainer(model, _data().train, None, config=cfg, callbacks=[cond]).fit()
    assert kept_fraction(model) == 0.25 and len(cond.events) == 1  # 2 steps: step 1 is past 1/2: all 3 stages
    model.eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        y = model(x)
    # the training form round-trips as learned group convs
    loaded = prunekit.load(prunekit.save(model, tmp_path / "train.safetensors", example_inputs=x))
    assert len(learned_group_convs(loaded)) == 6
    conv = convert(loaded)
    with torch.no_grad():
        assert (conv(x) - y).abs().max() <= 1e-4
    back = prunekit.load(prunekit.save(conv, tmp_path / "conv.safetensors", example_inputs=x))
    with torch.no_grad():
        assert torch.equal(back(x), conv(x))
    prunekit.export_onnx(back, x, tmp_path / "conv.onnx", verify=True)


def test_classifier_pruning_keeps_the_strongest_inputs():
    lin = nn.Linear(8, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 5, 0, 0, 2, 0, 0]] * 3))
    c = CondensedLinear.from_linear(lin, 0.5)
    assert {0, 2, 5} <= set(c.index.tolist()) and c.kept_features == 4
    x = torch.randn(2, 8)
    x[:, [1, 3, 4, 6, 7]] = 0  # only the kept inputs matter
    assert torch.allclose(c(x), lin(x), atol=1e-6)


def test_learned_group_convs_in_a_users_densenet():
    from prunekit.methods.condensenet import condense, use_learned_group_convs
    from prunekit.models.densenet_cifar import DenseNet

    torch.manual_seed(0)
    model = _randomize(DenseNet(depth=7, growth_rate=4)).eval()  # transitions BN -> ReLU -> conv1x1 (12, 16 ch)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y0 = model(x)
    names = use_learned_group_convs(model, x)
    assert names == ["features.2.conv.2", "features.4.conv.2"]
    condense(model, Fraction(1, 2))
    with torch.no_grad():
        y = model(x)
        assert not torch.allclose(y, y0)  # condensed: a different (smaller) function
        assert torch.allclose(convert(model)(x), y, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- the zoo
@pytest.mark.parametrize("name,flops,params", [("condensenet50", 28.6e6, 0.22e6), ("condensenet86", 65.8e6, 0.52e6),
                                               ("condensenet122", 116.7e6, 0.95e6)])
def test_zoo_counts_reproduce_the_official_convention(name, flops, params):
    f, p = official_count(create(name))
    assert round(f / 1e5) == round(flops / 1e5) and round(p / 1e4) == round(params / 1e4)


def test_condensenet86_counts_in_prunekits_convention():
    model = create("condensenet86").eval()
    x = torch.zeros(1, 3, 32, 32)
    assert round(count(model, x).macs / 1e5) == 1739  # training form: dense masked 1x1 convs, 173.9M
    for _, m in learned_group_convs(model):
        m.condense_to(3)
    conv = convert(model)
    assert round(count(conv, x).macs / 1e5) == 624  # converted: 62.4M (the paper's 65.8M adds ReLU/pool/bias)
    assert next(m for m in conv.modules() if isinstance(m, nn.Linear)).in_features == 800


def test_fixed_arm_costs_what_the_converted_learned_net_costs():
    learned = _tiny()
    for _, m in learned_group_convs(learned):
        m.condense_to(3)
    x = torch.zeros(1, 3, 8, 8)
    a, b = count(convert(learned), x), count(_tiny(one_by_one="fixed"), x)
    assert (a.macs, a.params) == (b.macs, b.params)


# ---------------------------------------------------------------------------------------------- interfaces
def test_prune_condensenet_recipe_end_to_end_then_condense_convert_cli(tmp_path):
    """What ``prunekit prune condensenet --recipe r.yaml`` runs (in process, without the latency timing), then
    ``prunekit condense convert`` on the trained training-form stage file."""
    from typer.testing import CliRunner

    from prunekit.app import load_recipe, run_method
    from prunekit.cli.condense import condense_app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: condensenet\nmodel: condensenet50\nmodel_args: {stages: [2, 2, 2], growth: [4, 4, 4]}\n"
                      "data: synthetic\ndata_args: {num_train: 32, num_test: 16, image_size: 8}\nbatch_size: 8\n"
                      "val_split: 0.25\ncondensenet: {prune_classifier: true}\ntrain: {epochs: 2}\n")
    out = tmp_path / "run"
    result, _ = run_method("condensenet", load_recipe(recipe), out, progress=False, latency=False)
    rec = json.loads((out / "result.json").read_text())
    assert rec["method"] == "condensenet" and rec["pruned"]["macs"] < 0.7 * rec["baseline"]["macs"]
    assert [e["kept"] for e in rec["details"]["condensation"]] == [0.75, 0.5, 0.25]
    conv = rec["details"]["conversion"]
    assert conv["max_abs_diff"] <= 1e-4 and "val_top1_classifier_pruned" in conv
    final = prunekit.load(out / "model.safetensors")
    assert any(isinstance(m, CondensedLinear) for m in final.modules())

    res = CliRunner().invoke(condense_app, ["convert", str(out / "condense" / "model.safetensors"), "-o",
                                            str(tmp_path / "c.safetensors"), "--onnx", str(tmp_path / "c.onnx")])
    assert res.exit_code == 0, res.output
    assert "max |Δ output|" in res.output and (tmp_path / "c.onnx").exists()
    assert not learned_group_convs(prunekit.load(tmp_path / "c.safetensors"))


def test_prune_condensenet_help_is_generated_from_the_config():
    r = run_cli("prune", "condensenet", "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--group-lasso", "--condense-end", "--prune-classifier", "--classifier-keep", "--train-epochs"):
        assert flag in r.stdout


def test_condense_convert_cli_times_both_forms_when_asked(tmp_path, monkeypatch):
    """``--latency-batch N`` times the training and the converted form together (the timer is stubbed: CI
    machines are too noisy for real timings)."""
    from typer.testing import CliRunner

    import prunekit.cost
    from prunekit.cli.condense import condense_app

    model = _tiny().eval()
    for _, m in learned_group_convs(model):
        m.condense_to(3)
    src = prunekit.save(model, tmp_path / "m.safetensors", example_inputs=torch.zeros(1, 3, 8, 8))
    seen = {}

    def fake_compare(models, x, **kw):
        seen.update(names=list(models), batch=x.shape[0], models=models, **kw)
        return {"training": type("R", (), {"median_ms": 2.0})(), "converted": type("R", (), {"median_ms": 1.0})()}

    monkeypatch.setattr(prunekit.cost, "compare_latency", fake_compare)
    monkeypatch.setattr(prunekit.cost, "speedup", lambda a, b: a.median_ms / b.median_ms)
    res = CliRunner().invoke(condense_app, ["convert", str(src), "-o", str(tmp_path / "c.safetensors"),
                                            "--latency-batch", "3"])
    assert res.exit_code == 0, res.output
    assert seen["names"] == ["training", "converted"] and seen["batch"] == 3 and seen["threads"] == 1
    assert learned_group_convs(seen["models"]["training"]) and not learned_group_convs(seen["models"]["converted"])
    assert "2 ms → 1 ms (2.00×)" in res.output
