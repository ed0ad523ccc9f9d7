"""MetaPruning: the PruningNet (generated crops == materialized model), the width space and the evolutionary
search (window, population size, resume), the sanity gate, DDP sampling, and the method end to end."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from _cli import run_cli
from prunekit.data import build_data
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.methods import MetaPruning, MetaPruningConfig
from prunekit.methods.metapruning import SampleWidths, fresh_pruned, uniform_at_least, width_space
from prunekit.methods.pruningnet import PruningNet, WeightGenerator, classifier_groups
from prunekit.models import create
from prunekit.planning import EvolutionConfig, EvolutionarySearch, WidthSpace, random_search, width_levels
from prunekit.train import TrainConfig


def _net(name: str, seed: int = 0, hidden: int = 4):
    torch.manual_seed(seed)
    model = create(name, num_classes=10)
    x = torch.randn(6, 3, 16, 16)
    graph = DependencyGraph(model, x[:2])
    return model, graph, PruningNet(model, graph, hidden=hidden), x  # small generators: the same maths, less RAM


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "densenet40"])
def test_generated_forward_equals_materialized_model(name):
    model, graph, net, x = _net(name)
    space = width_space(graph, MetaPruningConfig(target_macs=0.5))
    rng = np.random.default_rng(0)
    loader = [(torch.randn(8, 3, 16, 16), None) for _ in range(2)]
    for genes in [space.random(rng), space.random(rng), tuple([0] * len(space.groups))]:
        widths = space.widths(genes)
        net.calibrate_bn(widths, loader, 2)
        pruned = net.materialize(widths)
        assert DependencyGraph(pruned, x[:2]).widths() == {**graph.widths(), **widths}
        net.eval(), pruned.eval()
        with torch.no_grad():
            y_net, y_pruned = net(x), pruned(x)
        assert torch.allclose(y_net, y_pruned, atol=1e-5, rtol=1e-4), (y_net - y_pruned).abs().max()
        net.train(), pruned.train()  # batch statistics: no calibration involved
        with torch.no_grad():
            assert torch.allclose(net(x), pruned(x), atol=1e-5, rtol=1e-4)


def test_generator_gathers_exactly_the_prefix_crop():
    gen = WeightGenerator((6, 4, 3, 3), hidden=8)
    r = torch.tensor([0.5, 0.75])
    full = gen(r, [None, None, None, None])
    crop = gen(r, [torch.arange(3), torch.tensor([0, 1, 3]), None, None])
    assert crop.shape == (3, 3, 3, 3)
    assert torch.allclose(crop, full[:3][:, [0, 1, 3]])
    assert gen.flat_index([None] * 4) is None


def test_prefix_keep_and_gradients_reach_every_generator():
    model, graph, net, x = _net("resnet20")
    space = width_space(graph, MetaPruningConfig(target_macs=0.5))
    net.set_widths(space.uniform(0.5))
    plan = net.plan()
    for name, keep in plan.keep.items():  # every changed group keeps a prefix of its channels
        assert torch.equal(keep, torch.arange(keep.numel())), name
    net.train()
    net(x).sum().backward()
    # (fc2's bias: with 4 hidden units a generator's ReLUs may all be off for one input, zeroing fc2.weight's grad)
    assert all(g.fc2.weight.grad is not None and g.fc2.bias.grad.abs().sum() > 0 for g in net.generators.values())


def test_classifier_group_is_fixed_at_full_width():
    model, graph, net, x = _net("resnet20")
    assert classifier_groups(graph) == ["layer3.0.conv2"]
    space = width_space(graph, MetaPruningConfig(target_macs=0.5))
    assert "layer3.0.conv2" not in space.groups and space.fixed == {"layer3.0.conv2": 64}
    pruned = net.materialize(space.widths(tuple([0] * len(space.groups))))
    assert pruned.head.fc.in_features == 64 and pruned.head.fc.weight.shape == model.head.fc.weight.shape
    assert "head.fc" not in [n for n in net.generated]  # the classifier is shared, not generated
    with pytest.raises(ConfigError, match="nope"):
        width_space(graph, MetaPruningConfig(target_macs=0.5, fixed_groups=("nope",)))


def test_evaluation_without_calibration_is_refused():
    model, graph, net, x = _net("resnet20")
    net.set_widths({})
    net.eval()
    with pytest.raises(ConfigError, match="calibrate_bn"):
        net(x)


def test_width_levels_and_channels():
    levels = width_levels()
    assert len(levels) == 31 and levels[0] == 0.1 and levels[-1] == 1.0
    space = WidthSpace(("a", "b"), (16, 64), levels, round_to=8)
    assert space.widths((0, 30)) == {"a": 8, "b": 64}  # floor(1.6) -> grid 8 (never below one step)
    assert WidthSpace(("a",), (16,), levels).widths((1,)) == {"a": 2}  # floor(16 * 0.13)


def _search_setup(window=(0.25, 0.35)):
    sizes = (16, 16, 32, 32, 64, 64)
    space = WidthSpace(tuple(f"g{i}" for i in range(6)), sizes, width_levels())
    full = sum(s * s for s in sizes)

    def cost(w):
        return sum(w[f"g{i}"] ** 2 for i in range(6)) / full

    def fitness(cands):  # deterministic, prefers wide early groups
        return [float(sum((i + 1) * g for i, g in enumerate(c[::-1]))) for c in cands]
    return space, cost, window, fitness


def test_offspring_stay_in_the_window_and_population_is_exact():
    space, cost, window, fitness = _search_setup()
    cfg = EvolutionConfig(population=20, select=20, parents=5, mutations=8, crossovers=8, iterations=5)
    es = EvolutionarySearch(space, cost, window, fitness, cfg, seed=3)
    es.run()
    assert len(es.cache) == 5 * 20  # every iteration evaluates exactly `population` new candidates
    rng = np.random.default_rng(0)
    seen = set(es.cache)
    kids = es.mutation(rng, set(seen)) + es.crossover(rng, set(seen))
    assert kids and all(window[0] <= cost(space.widths(k)) <= window[1] for k in kids)
    assert all(window[0] <= cost(space.widths(g)) <= window[1] for g in es.cache)
    for it in range(1, 4):
        assert len(es.next_population(it)) == 20
    assert es.history[-1]["best"] >= es.history[0]["best"]


def test_unreachable_window_is_a_clear_error():
    space, cost, _, fitness = _search_setup()
    es = EvolutionarySearch(space, cost, (2.0, 3.0), fitness, EvolutionConfig(population=4, select=4, parents=2,
                            mutations=1, crossovers=1, iterations=1, max_draws=50))
    with pytest.raises(ConfigError, match="cost window"):
        es.run()


def test_resumed_search_ends_with_the_same_population(tmp_path):
    space, cost, window, fitness = _search_setup()
    cfg = dict(population=12, select=12, parents=4, mutations=4, crossovers=4)
    whole = EvolutionarySearch(space, cost, window, fitness, EvolutionConfig(**cfg, iterations=4), seed=1,
                               snapshot=tmp_path / "a.json")
    whole.run()
    EvolutionarySearch(space, cost, window, fitness, EvolutionConfig(**cfg, iterations=2), seed=1,
                       snapshot=tmp_path / "b.json").run()  # "killed" after two iterations
    resumed = EvolutionarySearch(space, cost, window, fitness, EvolutionConfig(**cfg, iterations=4), seed=1,
                                 snapshot=tmp_path / "b.json")
    resumed.run()
    assert resumed.top == whole.top and resumed.cache == whole.cache and resumed.history == whole.history
    other = EvolutionarySearch(space, cost, (0.2, 0.3), fitness, EvolutionConfig(**cfg, iterations=4), seed=1,
                               snapshot=tmp_path / "b.json")
    with pytest.raises(ConfigError, match="another search"):
        other.run()


def test_random_search_scores_distinct_candidates_of_the_window():
    space, cost, window, fitness = _search_setup()
    scored = random_search(space, cost, window, fitness, 30, batch=7)
    assert len(scored) == 30 and len({g for g, _ in scored}) == 30
    assert all(window[0] <= cost(space.widths(g)) <= window[1] for g, _ in scored)


def test_uniform_twin_costs_at_least_the_winner():
    model, graph, net, x = _net("resnet20")
    space = width_space(graph, MetaPruningConfig(target_macs=0.3))
    winner = space.widths(space.random(np.random.default_rng(1)))
    ratio, uniform = uniform_at_least(space, graph.macs, graph.macs(winner))
    assert graph.macs(uniform) >= graph.macs(winner)
    assert graph.macs(space.uniform(ratio - 0.01)) < graph.macs(winner)
    fresh = fresh_pruned(model, graph, uniform, seed=0)
    assert DependencyGraph(fresh, x[:2]).widths() == {**graph.widths(), **uniform}


def test_sampling_depends_only_on_seed_and_step():
    model, graph, net, x = _net("resnet20")
    space = width_space(graph, MetaPruningConfig(target_macs=0.5))
    cb = SampleWidths(net, space)

    class FakeTrainer:
        def __init__(self, step):
            self.global_step, self.config = step, TrainConfig(seed=4)
    draws = []
    for step in (0, 1, 0):
        cb.on_step_start(FakeTrainer(step), None)
        draws.append(net.widths)
    assert draws[0] == draws[2] != draws[1]


DDP_WORKER = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {tests!r})
    from _toy import ToyLoader
    from prunekit.graph import DependencyGraph
    from prunekit.methods.metapruning import MetaPruningConfig, SampleWidths, width_space
    from prunekit.methods.pruningnet import PruningNet
    from prunekit.models import create
    from prunekit.train import Callback, Trainer, TrainConfig, distributed
    info = distributed.init_from_env("cpu")
    torch.manual_seed(0)
    model = create("smallcnn", num_classes=4, in_channels=3)
    x = torch.randn(2, 3, 8, 8)
    graph = DependencyGraph(model, x)
    net = PruningNet(model, graph, hidden=4)
    space = width_space(graph, MetaPruningConfig(target_macs=0.5))
    seen = []

    class Record(Callback):
        def on_step_start(self, trainer, batch):
            seen.append(net.widths)

    loader = ToyLoader(rank=info.rank, world_size=info.world_size, batch_size=8)
    Trainer(net, loader, None, config=TrainConfig(epochs=1, lr=0.01, progress=False),
            callbacks=[SampleWidths(net, space), Record()]).fit()
    with open({out!r} + f"/widths{{info.rank}}.json", "w") as f:
        json.dump(seen, f)
""")


def test_ddp_ranks_sample_the_same_configuration(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    r = run_cli(str(script), module=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
                timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = (json.loads((tmp_path / f"widths{k}.json").read_text()) for k in (0, 1))
    assert len(w0) >= 2 and w0 == w1 and len({json.dumps(w, sort_keys=True) for w in w0}) > 1


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", batch_size=64, val_split=0.2)


def _config(**kw):
    base = dict(target_macs=0.4, window=0.1, pruningnet=TrainConfig(epochs=8, lr=0.05, schedule="cosine",
                label_smoothing=0.1, progress=False), population=6, select=6, parents=3, mutations=2, crossovers=2,
                iterations=2, recal_batches=3, retrain=TrainConfig(epochs=1, lr=0.05, schedule="cosine",
                                                                   progress=False))
    base.update(kw)
    return MetaPruningConfig(**base)


def test_sanity_gate_stops_an_untrained_pruningnet(digits, tmp_path):
    cfg = _config(pruningnet=TrainConfig(epochs=1, lr=1e-6, schedule="constant", progress=False))
    with pytest.raises(ConfigError, match="sanity gate failed.*(below|does not rise|falls)"):
        MetaPruning(cfg).run(create("smallcnn", num_classes=10), digits, tmp_path / "run", latency=False)
    assert not (tmp_path / "run" / "search").exists()


def test_method_end_to_end_on_digits_and_resume(digits, tmp_path):
    torch.manual_seed(0)
    cfg = _config(retrain_seeds=2, controls=("uniform",))
    res = MetaPruning(cfg).run(create("smallcnn", num_classes=10), digits, tmp_path / "run", latency=False)
    d = res.details
    torch.manual_seed(0)  # the same input model: a re-run resumes (another one would be refused)
    assert d["gate"]["uniform_family_val_top1"]["1.0"] > 20
    lo, hi = d["space"]["window"]
    assert lo <= d["search"]["cost"] <= hi and len(d["search"]["history"]) == 2
    assert d["random_control"]["evaluated"] == d["search"]["evaluated"]
    assert set(d["arms"]) >= {"winner", "uniform"} and len(d["arms"]["winner"]["test_top1"]) == 2
    assert d["arms"]["uniform"]["macs"] >= d["arms"]["winner"]["macs"]
    assert "verdict" in d["arms"]["winner_minus_uniform"]
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["method"] == "metapruning" and record["pruned"]["macs"] == d["arms"]["winner"]["macs"]
    for png in ("search.png", "arms.png", "widths.png"):
        assert (tmp_path / "run" / png).stat().st_size > 0
    again = MetaPruning(cfg).run(create("smallcnn", num_classes=10), digits, tmp_path / "run", latency=False)
    assert again.details["search"] == d["search"] and again.details["arms"]["winner"] == d["arms"]["winner"]


def test_cli_end_to_end_on_digits(tmp_path):
    out = tmp_path / "run"
    r = run_cli("prune", "metapruning", "--model", "smallcnn", "--data", "digits", "--target-macs", "0.4",
                "--window", "0.1", "--pruningnet-epochs", "1", "--no-gate", "--population", "4", "--select", "4",
                "--parents", "2", "--mutations", "1", "--crossovers", "1", "--iterations", "1",
                "--recal-batches", "2", "--retrain-epochs", "1", "--controls", "uniform", "--no-random-control",
                "--train-subset", "300", "--no-progress", "-o", str(out), "--device", "cpu", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((out / "result.json").read_text())
    assert record["method"] == "metapruning" and record["pruned"]["macs"] <= 0.41 * record["baseline"]["macs"]
    assert "searched winner vs controls" in r.stdout and "uniform" in r.stdout  # the arms table
    bad = run_cli("prune", "metapruning", "--model", "smallcnn", "--data", "digits", "--target-macs", "1.5",
                  "-o", str(tmp_path / "bad"), timeout=120)
    assert bad.returncode == 2 and "target_macs" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("recipe", sorted(p.name for p in (Path(__file__).parents[1] / "recipes" / "metapruning")
                                          .glob("*.yaml")))
def test_recipes_parse(recipe):
    import yaml

    from prunekit.app.recipes import method_config
    from prunekit.methods import get_method

    rc = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "metapruning" / recipe).read_text())
    cfg = method_config(get_method("metapruning"), rc)
    assert rc["method"] == "metapruning" and cfg.target_macs is not None and cfg.retrain is not None
    assert cfg.pruningnet.label_smoothing == 0.1 and cfg.population >= cfg.mutations + cfg.crossovers


def test_latency_budget_searches_inside_the_table_window(digits, tmp_path):
    # a wide window: the table is measured on this (possibly loaded) machine, so the reachable range moves
    cfg = _config(target_latency=0.99, target_macs=None, window=0.6, round_to=4, lut_check=0, clock="cpu",
                  lut_cache=str(tmp_path / "lut"), pruningnet=TrainConfig(epochs=1, lr=0.05, progress=False),
                  gate=False, iterations=1, retrain=None, random_control=False)
    res = MetaPruning(cfg).run(create("smallcnn", num_classes=10), digits, tmp_path / "run", latency=False)
    space = res.details["space"]
    assert space["resource"] == "latency" and space["window"][0] <= res.details["search"]["cost"] <= space["window"][1]
    assert all(w % 4 == 0 or w == 64 for w in res.details["search"]["widths"].values())
    with pytest.raises(ConfigError, match="round_to >= 4"):
        MetaPruningConfig(target_latency=0.5)
    with pytest.raises(ConfigError, match="exactly one"):
        MetaPruningConfig(target_latency=0.5, target_macs=0.5, round_to=8)


def test_pruningnet_training_resumes_exactly(tmp_path):
    import signal

    from _toy import ToyLoader
    from prunekit.train import Callback, Trainer
    from prunekit.train.trainer import TrainingInterrupted

    def build():
        torch.manual_seed(0)
        model = create("smallcnn", num_classes=4, in_channels=3)
        graph = DependencyGraph(model, torch.randn(2, 3, 8, 8))
        net = PruningNet(model, graph, hidden=4)
        return net, width_space(graph, MetaPruningConfig(target_macs=0.5))

    class SigtermAt(Callback):
        def on_step_end(self, trainer):
            if trainer.global_step == 7:
                signal.raise_signal(signal.SIGTERM)

    def fit(net, space, folder, extra=()):
        cfg = TrainConfig(epochs=2, lr=0.05, schedule="cosine", progress=False, checkpoint_dir=folder, resume=True)
        Trainer(net, ToyLoader(batch_size=8), None, config=cfg, callbacks=[SampleWidths(net, space), *extra]).fit()

    whole, space = build()
    fit(whole, space, tmp_path / "a")
    killed, space = build()
    with pytest.raises(TrainingInterrupted):
        fit(killed, space, tmp_path / "b", [SigtermAt()])
    resumed, space = build()
    fit(resumed, space, tmp_path / "b")
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
