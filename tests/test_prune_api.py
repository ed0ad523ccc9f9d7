"""``prunekit.prune`` / ``apply_widths`` / ``resolve_width``: options, validation and error messages."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, resolve_width, select_top
from prunekit.planning import apply_widths, plan, prune
from prunekit.importance import get_importance, list_importances

from _graph_nets import build, single_thread  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 16, 16)


def test_prune_ratio_in_place_and_returned():
    m = build("residual")
    out = prune(m, X, ratio=0.5)
    assert out is m
    assert (m.stem[0].out_channels, m.a1[0].out_channels, m.b1[0].out_channels, m.b2[0].out_channels) == (4, 3, 6, 8)
    assert m.head.fc.out_features == 5 and m(X).shape == (2, 5)
    for mod in m.modules():  # plain modules: no hooks, no masks left behind
        assert not mod._forward_hooks and not mod._forward_pre_hooks


def test_ratio_rounding_is_floor_of_removed():
    m = build("residual")
    prune(m, X, ratio=0.3)  # sizes 8, 6, 16, 12 -> remove floor(0.3 * size) = 2, 1, 4, 3
    assert (m.stem[0].out_channels, m.a1[0].out_channels, m.proj[0].out_channels, m.b1[0].out_channels) == (6, 5, 12, 9)


def test_ratio_zero_changes_nothing():
    m = build("residual")
    y = m(X)
    prune(m, X, ratio=0.0)
    assert torch.equal(m(X), y)


def test_prune_widths_partial():
    m = build("residual")
    prune(m, X, widths={"a1.0": 2, "stem.0": 8})
    assert m.a1[0].out_channels == 2 and m.stem[0].out_channels == 8


@pytest.mark.parametrize("kwargs,match", [
    ({}, "exactly one of"),
    ({"ratio": 0.5, "widths": {}}, "exactly one of"),
    ({"ratio": 1.0}, "ratio"),
    ({"ratio": -0.1}, "ratio"),
    ({"ratio": "half"}, "ratio"),
    ({"ratio": 0.5, "min_channels": 0}, "min_channels"),
    ({"ratio": 0.5, "round_to": 0}, "round_to"),
    ({"widths": {"stem.O": 4}}, "stem.0"),
    ({"widths": {"head.fc": 3}}, "head.fc.*not prunable"),
    ({"widths": {"stem.0": 0}}, "outside"),
    ({"widths": {"stem.0": 2.5}}, "integer"),
    ({"ratio": 0.5, "protected": ["nope"]}, "unknown channel group"),
    ({"ratio": 0.5, "importance": "l3"}, "l1"),
])
def test_prune_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        prune(build("residual"), X, **kwargs)


def test_width_equal_to_size_is_allowed_on_unprunable_groups():
    m = build("residual")
    prune(m, X, widths={"head.fc": 5})
    assert m.head.fc.out_features == 5


def test_protected_groups_are_untouched():
    m = build("residual")
    prune(m, X, ratio=0.5, protected={"stem.0"})
    assert m.stem[0].out_channels == 8 and m.a1[0].out_channels == 3
    with pytest.raises(ConfigError, match="protected"):
        prune(build("residual"), X, widths={"stem.0": 4}, protected=["stem.0"])


# ratio 0.99 asks for 1 channel of every group (sizes 8, 6, 16, 12): min_channels raises that, round_to rounds it
# up to one multiple (capped at the group's size: the 6-channel group stays whole under round_to=8)
@pytest.mark.parametrize("round_to,min_channels,widths", [(1, 1, (1, 1, 1, 1)), (1, 3, (3, 3, 3, 3)),
                                                          (4, 1, (4, 4, 4, 4)), (8, 2, (8, 6, 8, 8))])
def test_min_channels_and_round_to_at_extreme_ratio(round_to, min_channels, widths):
    m = build("residual")
    names = [g.name for g in DependencyGraph(m, X).prunable_groups]
    assert names == ["stem.0", "a1.0", "proj.0", "b1.0"]
    prune(m, X, ratio=0.99, round_to=round_to, min_channels=min_channels)
    g = DependencyGraph(m, X)
    assert tuple(g[name].size for name in names) == widths
    assert m(X).shape == (2, 5)


def test_resolve_width():
    assert resolve_width(64, 64) == 64 and resolve_width(64, 100) == 64
    assert resolve_width(64, 1) == 1
    assert resolve_width(64, 13, round_to=8) == 16 and resolve_width(64, 11, round_to=8) == 8
    assert resolve_width(64, 2, round_to=8) == 8
    assert resolve_width(10, 5, round_to=8) == 8
    assert resolve_width(64, 1, min_channels=3) == 3 and resolve_width(64, 1, min_channels=3, round_to=4) == 4
    assert resolve_width(64, 2, min_width=9) == 9
    assert resolve_width(4, 1, min_channels=16) == 4


def test_select_top_keeps_pinned_and_cover():
    s = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.2])
    assert select_top(s, 2).tolist() == [0, 2]
    assert select_top(s, 2, torch.tensor([1])).tolist() == [1, 2]
    assert select_top(s, 2, torch.tensor([1]), [torch.tensor([3, 4])]).tolist() == [1, 3]
    assert select_top(torch.zeros(4), 2).tolist() == [0, 1]


def test_apply_widths_with_scores_keeps_the_best():
    m = build("residual")
    g = DependencyGraph(m, X)
    w0 = m.a1[0].weight.detach().clone()
    keep = apply_widths(g, {"a1.0": 2}, scores={"a1.0": torch.tensor([0, 5, 0, 0, 9, 0.0])})
    assert keep["a1.0"].tolist() == [1, 4]
    assert torch.equal(m.a1[0].weight, w0[[1, 4]])
    assert g["a1.0"].size == 2  # the graph follows the pruned model
    with pytest.raises(ConfigError, match="entries"):
        apply_widths(g, {"stem.0": 4}, scores={"stem.0": torch.ones(3)})


def test_apply_widths_on_a_model_and_as_a_plan():
    m = build("residual")
    apply_widths(m, {"a1.0": 2}, example_inputs=X)
    assert m.a1[0].out_channels == 2
    with pytest.raises(ConfigError, match="example_inputs"):
        apply_widths(m, {"a1.0": 1})
    g = DependencyGraph(m, X)
    g.apply_plan(plan(g, {"b1.0": 3}, keep="l2"))
    assert m.b1[0].out_channels == 3 and g["b1.0"].size == 3


def test_graph_tracks_the_model_through_successive_prunings():
    m = build("residual")
    g = DependencyGraph(m, X)
    for w in (6, 4, 2):
        apply_widths(g, {"stem.0": w, "b1.0": w})
        assert g.macs() == prunekit.count(m, X).macs
        assert [(gr.name, gr.size) for gr in g.groups] == [(gr.name, gr.size) for gr in DependencyGraph(m, X).groups]


def test_prune_groups_validation():
    g = DependencyGraph(build("residual"), X)
    for keep, match in [({"a1.0": []}, "empty"), ({"a1.0": [0, 9]}, "outside"), ({"a1.0": [1, 1]}, "repeated"),
                        ({"head.fc": [0, 1]}, "cannot be pruned")]:
        with pytest.raises(ConfigError, match=match):
            g.prune_groups(keep)


def test_macs_and_params_analytic_agree_with_count_at_many_widths():
    m = build("concat")
    g = DependencyGraph(m, X)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        widths = {gr.name: int(torch.randint(1, gr.size + 1, (1,), generator=gen)) for gr in g.prunable_groups}
        predicted = (g.macs(widths), g.params(widths))
        m2 = build("concat")
        apply_widths(DependencyGraph(m2, X), widths)
        c = prunekit.count(m2, X)
        assert predicted == (c.macs, c.params)
    vec = g.width_vector({"c1.0": 3})
    assert g.macs(vec) == g.macs({"c1.0": 3})
    with pytest.raises(ConfigError, match="unknown"):
        g.macs({"zz": 1})


def test_importances():
    assert {"l1", "l2", "bn_scale", "random"} <= set(list_importances())
    m = build("residual")
    g = DependencyGraph(m, X)
    grp = g["a1.0"]
    l1 = get_importance("l1")(g, grp)
    assert torch.allclose(l1, m.a1[0].weight.detach().abs().sum((1, 2, 3)))
    l2 = get_importance("l2")(g, grp)
    assert torch.allclose(l2, m.a1[0].weight.detach().pow(2).sum((1, 2, 3)).sqrt())
    bn = get_importance("bn_scale")(g, g["stem.0"])
    assert torch.allclose(bn, m.stem[1].weight.abs() + m.a2[1].weight.abs())
    r1, r2 = get_importance("random")(g, grp), get_importance("random", seed=0)(g, grp)
    assert torch.equal(r1, r2) and r1.shape == (6,)
    stream = get_importance("l1")(g, g["stem.0"])  # summed over the two producers of the stream
    assert torch.allclose(stream, m.stem[0].weight.abs().sum((1, 2, 3)) + m.a2[0].weight.abs().sum((1, 2, 3)))
