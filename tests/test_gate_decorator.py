"""Gate Decorator: gates (add / fold / slice), Taylor scores, group scores, ticks and floors, the Tick-Tock loop
(target, resume, end to end), the gated convolution of BN-free nets, bad input."""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import yaml

import prunekit
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import get_importance
from prunekit.methods.gate_decorator import (GateDecorator, GateDecoratorConfig, TaylorScores,
                                             group_scores, params_without_gates, plan_tick,
                                             prune_tick, taylor_scores, tick_count)
from prunekit.planning import channel_floors
from prunekit.methods.gates import GatedBatchNorm2d, GatedConv2d, add_gates, find_gates, fold_gates
from prunekit.train import Callback, TrainingInterrupted

from _toy import ToyLoader


class ResNetLet(nn.Module):
    """Tiny net with a residual add (conv1 and conv3 outputs tied: one group with two BN gates)."""

    def __init__(self, bn: bool = True, w: tuple[int, int] = (6, 8), classes: int = 4):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        a, b = w
        self.conv1, self.bn1 = nn.Conv2d(3, a, 3, padding=1, bias=not bn), norm(a)
        self.conv2, self.bn2 = nn.Conv2d(a, b, 3, padding=1, bias=not bn), norm(b)
        self.conv3, self.bn3 = nn.Conv2d(b, a, 3, padding=1, bias=not bn), norm(a)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(a, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(x + self.bn3(self.conv3(y)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.3 * torch.randn(n, generator=g)
            m.running_mean = 0.2 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)
    return model


def _net(seed=0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(ResNetLet(**kw), seed).eval()


def _data(n_train=64, batch=16):
    return SimpleNamespace(train=ToyLoader(n=n_train, batch_size=batch),
                           val=ToyLoader(n=32, batch_size=16, shuffle=False),
                           test=ToyLoader(n=32, batch_size=16, shuffle=False, seed=1))


def config_from_recipe(recipe, **overrides):
    from prunekit.app import method_config
    return method_config(GateDecorator, recipe, overrides)


def _tiny_config(**kw) -> GateDecoratorConfig:
    base = dict(target_macs=0.5, prune_per_tick=0.15, ticks_per_round=2,
                tick={"steps_per_epoch": 2}, tock={"epochs": 1, "steps_per_epoch": 2, "lr": 0.05},
                finetune={"epochs": 1, "steps_per_epoch": 2, "lr": 0.05, "progress": False})
    base.update(kw)
    return GateDecoratorConfig(**base)


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: one intra-op thread is several times faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- gates
@pytest.mark.parametrize("init", ["one", "bn_scale"])
def test_add_and_fold_gates_keep_outputs(init, tmp_path):
    model = _net()
    ref = model(X)
    gated = copy.deepcopy(model)
    gates = add_gates(gated, init=init)
    assert len(gates) == 3 and all(isinstance(gated.get_submodule(g.name), GatedBatchNorm2d) for g in gates)
    assert all(not g.layer.weight.requires_grad for g in gates)  # γ frozen while gated
    assert torch.allclose(gated(X), ref, atol=1e-6)
    for g in gates:
        g.param.data.uniform_(0.1, 2.0)
    y = gated(X)
    # live model: the gated block is replaced by its BN
    live = copy.deepcopy(gated)
    fold_gates(live)
    assert (live(X) - y).abs().max() < 1e-5
    assert not find_gates(live) and type(live.bn1) is nn.BatchNorm2d and live.bn1.weight.requires_grad
    assert live.state_dict().keys() == model.state_dict().keys()
    # after a save/load round trip (a Pipeline stage): still gated layers
    prunekit.save(gated, tmp_path / "g.safetensors", example_inputs=X)
    loaded = prunekit.load(tmp_path / "g.safetensors").eval()
    assert len(find_gates(loaded)) == 3 and not loaded.bn1.weight.requires_grad
    assert torch.allclose(loaded(X), y, atol=1e-6)
    trained = copy.deepcopy(loaded).train()  # training mode still normalises by batch statistics, updates them
    live_train = copy.deepcopy(gated).train()
    assert torch.allclose(trained(X), live_train(X), atol=1e-5)
    assert torch.allclose(trained.bn2.running_mean, live_train.bn2.running_mean)
    assert int(trained.bn2.num_batches_tracked) == int(gated.bn2.num_batches_tracked) + 1
    fold_gates(loaded)
    assert (loaded(X) - y).abs().max() < 1e-5
    assert not find_gates(loaded) and not any("gate" in n for n, _ in loaded.named_parameters())
    assert loaded.state_dict().keys() == model.state_dict().keys()
    prunekit.save(loaded, tmp_path / "f.safetensors", example_inputs=X)  # a plain model again


def test_graph_slices_gates_with_their_channels():
    model = _net()
    plain = DependencyGraph(copy.deepcopy(model), X)
    add_gates(model)
    gated = DependencyGraph(model, X)
    widths = {n: w - 2 for n, w in plain.widths().items() if plain.group(n).prunable}
    assert gated.macs(widths) == plain.macs(widths)  # the gates cost no MACs
    assert gated.params() == plain.params() + 6 + 8 + 6
    assert params_without_gates(gated, widths) == plain.params(widths)
    for g in find_gates(model):
        g.param.data.uniform_(0.5, 1.5)
    # channels whose gates are all zero contribute nothing: removing them changes outputs by rounding only
    model.bn1.gate.data[[1, 4]] = 0
    model.bn3.gate.data[[1, 4]] = 0  # the residual group: both gates of the tied channels
    model.bn2.gate.data[[0, 2, 7]] = 0
    y = model(X)
    graph = DependencyGraph(model, X)
    resid = next(g for g in graph.prunable_groups if g.size == 6)
    inner = next(g for g in graph.prunable_groups if g.size == 8)
    assert {gm.member.name for gm in resid.members if gm.member.attr == "gate"} == {"bn1.gate", "bn3.gate"}
    graph.prune_groups({resid.name: [0, 2, 3, 5], inner.name: [1, 3, 4, 5, 6]})
    assert model.bn1.gate.shape == (4,) and model.bn2.gate.shape == (5,) and model.bn2.num_features == 5
    assert (model(X) - y).abs().max() < 1e-5


# ----------------------------------------------------------------------------- Taylor scores
def test_taylor_score_is_the_first_order_loss_change():
    torch.manual_seed(0)
    model = _net().double()
    add_gates(model)
    for g in find_gates(model):
        g.param.data.uniform_(0.5, 1.5)
    x = torch.randn(48, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (48,))
    batches = [(x[:24], y[:24]), (x[24:], y[24:])]

    def loss() -> float:  # Σ over the batches of each batch's mean loss: what Θ differentiates
        with torch.no_grad():
            return nn.functional.cross_entropy(model(x), y, reduction="none").view(2, 24).mean(1).sum().item()

    theta = taylor_scores(model, batches, mode="paper")  # |Σ_batches φ·∂L/∂φ|, eval-mode BN
    base = loss()
    exact, small, zeroed, est = [], [], [], []
    for g in find_gates(model):
        for i in range(g.channels):
            phi = g.param.data[i].item()
            eps = 1e-6
            g.param.data[i] = phi * (1 - eps)  # d L / d log φ by central finite difference
            lo = loss()
            g.param.data[i] = phi * (1 + eps)
            hi = loss()
            g.param.data[i] = 0.9 * phi  # a small step towards removing the channel
            small.append(abs(loss() - base) / 0.1)
            g.param.data[i] = 0.0  # removing it
            zeroed.append(abs(loss() - base))
            g.param.data[i] = phi
            exact.append(abs(hi - lo) / (2 * eps))
            est.append(theta[g.name][i].item())
    exact, small, zeroed, est = map(torch.tensor, (exact, small, zeroed, est))
    assert torch.allclose(est, exact, rtol=1e-4, atol=1e-9)  # Θ = |φ ∂L/∂φ| exactly
    # the loss change of shrinking a gate by 10% is 0.1·Θ to first order
    assert torch.corrcoef(torch.stack([est, small]))[0, 1] > 0.98
    assert (est - small).abs().max() < 0.2 * est.max()
    # zeroing is a large step: Θ still ranks the channels by the loss change of removing them

    def rank(v):
        return v.argsort().argsort().double()

    assert torch.corrcoef(torch.stack([rank(est), rank(zeroed)]))[0, 1] > 0.6


def test_taylor_callback_modes_and_resume_state():
    model = _net()
    add_gates(model)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    paper, official = taylor_scores(model, batches, mode="paper"), taylor_scores(model, batches)
    single = [taylor_scores(model, [b], mode="official") for b in batches]
    for k in paper:
        assert torch.allclose(official[k], single[0][k] + single[1][k])
        assert (official[k] >= paper[k] - 1e-12).all()
    cb = TaylorScores("paper")
    cb.attach(model)
    cb.sums = {k: v.clone() for k, v in paper.items()}
    other = TaylorScores("paper")
    other.attach(model)
    other.load_state_dict(cb.state_dict())
    assert all(torch.equal(other.scores()[k], paper[k]) for k in paper)


def test_group_score_is_the_sum_over_member_gates():
    model = _net()
    add_gates(model)
    graph = DependencyGraph(model, X)
    gen = torch.Generator().manual_seed(3)
    gate_scores = {g.name: torch.rand(g.channels, generator=gen, dtype=torch.float64) for g in find_gates(model)}
    scores = group_scores(graph, gate_scores)
    resid = next(g for g in graph.prunable_groups if g.size == 6)
    inner = next(g for g in graph.prunable_groups if g.size == 8)
    assert torch.allclose(scores[resid.name], gate_scores["bn1"] + gate_scores["bn3"])  # paper eq. 9
    assert torch.allclose(scores[inner.name], gate_scores["bn2"])
    imp = get_importance("gate_taylor", scores=gate_scores)
    assert torch.allclose(imp(graph, resid).double(), scores[resid.name], atol=1e-6)
    # the official code's default: groups tied across residual adds stay whole
    assert set(group_scores(graph, gate_scores, group_pruning=False)) == {inner.name}


# ----------------------------------------------------------------------------- ticks
def test_tick_prunes_exactly_p_of_the_remaining_channels_and_respects_the_floor():
    model = _net()
    add_gates(model)
    graph = DependencyGraph(model, X)
    resid = next(g for g in graph.prunable_groups if g.size == 6).name
    inner = next(g for g in graph.prunable_groups if g.size == 8).name
    scores = {resid: torch.tensor([5.0, 0.1, 6.0, 0.3, 7.0, 8.0]),
              inner: torch.tensor([0.2, 9.0, 0.05, 9.0, 9.0, 0.4, 0.5, 9.0])}
    floors = {resid: 1, inner: 1}
    assert tick_count(0.25, 14) == 3 and tick_count(5, 14) == 5 and tick_count(0.01, 14) == 1
    plan = plan_tick(graph, scores, amount=0.25, floors=floors)  # floor(0.25 * 14) = 3 lowest: 0.05, 0.1, 0.2
    assert plan.remaining == 14 and plan.requested == plan.removed == 3
    assert plan.keep[resid].tolist() == [0, 2, 3, 4, 5] and plan.keep[inner].tolist() == [1, 3, 4, 5, 6, 7]
    # floor: the inner group keeps >= ceil(0.5 * 8) = 4 channels, its best ones; the count is still met elsewhere
    floors = channel_floors(graph, min_keep=0.5)
    assert floors == {resid: 3, inner: 4}
    plan = plan_tick(graph, scores, amount=6, floors=floors)
    assert plan.removed == 6 and plan.widths == {resid: 4, inner: 4} and inner in plan.floor_hit
    assert plan.keep[inner].tolist() == [1, 3, 4, 7]
    # asking for more than the floors allow removes what is left above them
    plan = plan_tick(graph, scores, amount=13, floors=floors)
    assert plan.removed == 7 and plan.widths == {resid: 3, inner: 4}
    # physically, via the gates' scores (eq. 9 sums bn1 + bn3 on the residual group)
    gate_scores = {"bn1": scores[resid] / 2, "bn3": scores[resid] / 2, "bn2": scores[inner]}
    plan = prune_tick(model, X, gate_scores, amount=0.25, min_keep=0.1)
    assert plan.removed == 3 and model.bn2.gate.shape == (6,) and model.conv1.out_channels == 5
    assert model(X).shape == (4, 4)


def test_last_tick_removes_only_what_the_target_needs():
    model = _net()
    add_gates(model)
    graph = DependencyGraph(model, X)
    gen = torch.Generator().manual_seed(0)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in graph.prunable_groups}
    floors = {n: 1 for n in scores}
    macs0 = graph.macs()
    budget = 0.8 * macs0
    plan = plan_tick(graph, scores, amount=10, floors=floors, fits=lambda w: graph.macs(w) <= budget)
    assert plan.limited_by_target and plan.removed < 10
    assert graph.macs(plan.widths) <= budget
    fewer = plan_tick(graph, scores, amount=plan.removed - 1, floors=floors)
    assert graph.macs(fewer.widths) > budget  # one channel less would not fit


# ----------------------------------------------------------------------------- BN-free nets
def test_gated_convolution_on_a_bn_free_net():
    model = _net(bn=False)
    macs = DependencyGraph(model, X).macs()
    gates = add_gates(model)  # auto: no BatchNorm -> a gate after every conv
    assert [g.kind for g in gates] == ["conv"] * 3 and isinstance(model.conv1, GatedConv2d)
    assert DependencyGraph(model, X).macs() == macs
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))
    theta = taylor_scores(model, [(x, y)])
    assert set(theta) == {"conv1", "conv2", "conv3"} and all((v >= 0).all() for v in theta.values())
    plan = prune_tick(model, X, theta, amount=4, min_keep=0.1)
    assert plan.removed == 4
    for g in find_gates(model):
        g.param.data.uniform_(0.5, 1.5)
    out = model(X)
    fold_gates(model)
    assert type(model.conv1) is nn.Conv2d and not find_gates(model)
    assert (model(X) - out).abs().max() < 1e-5


# ----------------------------------------------------------------------------- the loop
def test_end_to_end_stops_at_the_macs_target(tmp_path):
    model = _net(w=(8, 12)).train()
    res = GateDecorator(_tiny_config()).run(model, _data(), tmp_path / "run", latency=False)
    traj = res.details["trajectory"]
    ticks = [t for t in traj if "-tick" in t["stage"]]
    assert res.pruned.macs <= 0.5 * res.baseline.macs
    assert all(t["macs_kept"] > 0.5 for t in ticks[:-1]) and ticks[-1]["macs_kept"] <= 0.5  # stops at once
    assert [t["stage"] for t in traj][:4] == ["start", "round0-tock", "round1-tick1", "round1-tick2"]
    assert res.details["ticks"] == len(ticks) and traj[-1]["stage"] == ticks[-1]["stage"]
    assert not find_gates(res.model) and res.model(X).shape == (4, 4)
    loaded = prunekit.load(tmp_path / "run" / "model.safetensors")
    assert torch.allclose(loaded(X), res.model.cpu().eval()(X), atol=1e-6)
    for key in ("widths_png", "trajectory_png", "gates_png"):
        assert os.path.getsize(res.artifacts[key]) > 1000
    assert not any((tmp_path / "run").glob("*/last.ckpt"))  # finished stages keep only their model file
    rec = res.record(name="t", model_name="resnetlet", dataset="toy", reduced=True)
    assert rec["method"] == "gate_decorator" and rec["pruned"]["macs"] == res.pruned.macs


class _KillAt(Callback):
    """SIGTERM at global step ``step`` of stage ``stage`` (the Trainer checkpoints, then stops)."""

    def __init__(self, stage: str, step: int):
        self.stage, self.step = stage, step

    def on_step_end(self, trainer):
        if trainer.config.checkpoint_dir.name == self.stage and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_resume_mid_loop_gives_the_same_model(tmp_path):
    def run(out, callbacks=()):
        cfg = _tiny_config(target_macs=None, target_params=0.6)  # the parameter target, this time
        return GateDecorator(cfg).run(_net(w=(8, 12)).train(), _data(), out, latency=False, callbacks=callbacks)

    ref = run(tmp_path / "ref")
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "run", callbacks=[_KillAt("round1-tick2", 1)])  # mid-tick: scores half accumulated
    assert (tmp_path / "run" / "round1-tick1" / "record.json").exists()
    assert (tmp_path / "run" / "round1-tick2" / "last.ckpt").exists()
    res = run(tmp_path / "run")
    a, b = ref.model.state_dict(), res.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res.widths_after == ref.widths_after
    assert [s.name for s in res.stages] == [s.name for s in ref.stages]
    assert res.pruned.params <= 0.6 * res.baseline.params
    assert res.details["trajectory"][-2]["params_kept"] > 0.6  # the tick before the last had not reached it


def test_bad_input():
    with pytest.raises(ConfigError, match="target"):
        GateDecoratorConfig()
    with pytest.raises(ConfigError, match="prune_per_tick"):
        GateDecoratorConfig(target_macs=0.5, prune_per_tick=1.5)
    with pytest.raises(ConfigError, match="prune_per_tick"):
        GateDecoratorConfig(target_macs=0.5, prune_per_tick=0)
    with pytest.raises(ConfigError, match="unknown"):
        config_from_recipe({"gate_decorator": {"target_macs": 0.5, "p": 0.1}})
    with pytest.raises(ConfigError, match="epochs"):
        config_from_recipe({"gate_decorator": {"target_macs": 0.5}, "tock": {"epochs": 0}})
    cfg = config_from_recipe({"gate_decorator": {"target_macs": 0.5}, "tick": {"steps_per_epoch": 3},
                              "finetune": None}, tock={"epochs": 2})
    assert cfg.tick.steps_per_epoch == 3 and cfg.tick.lr == 1e-3 and cfg.tock.epochs == 2 and cfg.finetune is None
    with pytest.raises(ConfigError, match="floor"):  # infeasible at the floors: refused before any training
        GateDecorator(_tiny_config(target_macs=0.05, min_keep=0.5)).run(_net(), _data(), "/nonexistent/x",
                                                                           latency=False)
    model = _net()
    add_gates(model)
    with pytest.raises(ConfigError, match="gated already"):
        add_gates(model)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (Path(__file__).parents[1] / "recipes" / "gate_decorator")
                                          .glob("*.yaml")))
def test_recipes_parse(recipe):
    rc = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "gate_decorator" / recipe).read_text())
    assert rc["method"] == "gate_decorator" and rc["model"] in prunekit.models.list_models()
    cfg = config_from_recipe(rc)
    assert cfg.target_macs is not None and cfg.finetune is not None
    assert cfg.finetune.epochs >= rc.get("paper_epochs", {}).get("finetune_epochs", 0)
