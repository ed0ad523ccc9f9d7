"""Channel groups: structure, names (stable across deepcopy, re-tracing and processes), coverage, lookup."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import ConfigError
from prunekit.graph import ChannelGroup, DependencyGraph

from _graph_nets import build, single_thread  # noqa: F401  (autouse fixture)


def _x(n=1, s=16):
    return torch.randn(n, 3, s, s)


def test_residual_stream_is_one_group():
    m = build("residual")
    g = DependencyGraph(m, _x())
    names = [gr.name for gr in g.groups]
    assert names == ["stem.0", "a1.0", "proj.0", "b1.0", "head.fc"]
    stream = g["stem.0"]
    assert isinstance(stream, ChannelGroup) and stream.size == 8 and stream.prunable
    held = {(gm.name, gm.role) for gm in stream.members}
    assert {("stem.0", "out"), ("stem.1", "out"), ("a1.0", "in"), ("a2.0", "out"), ("a2.1", "out"),
            ("b1.0", "in"), ("proj.0", "in")} <= held
    assert {gm.name for gm in stream.producers} == {"stem.0", "a2.0"}
    assert {gm.name for gm in stream.bn_layers} == {"stem.1", "a2.1"}
    assert {gm.name for gm in stream.consumers} == {"a1.0", "b1.0", "proj.0"}
    assert all(gm.offset == 0 for gm in stream.members)


def test_model_output_and_input_are_not_prunable():
    g = DependencyGraph(build("residual"), _x())
    fc = g["head.fc"]
    assert not fc.prunable and fc.reason == "model output"
    # the model input is no group and the first conv's input channels are no member
    assert all(gm.role != "in" for gm in g["stem.0"].members if gm.name == "stem.0")
    assert not any(gm.name == "stem.0" and gm.role == "in" for gr in g.groups for gm in gr.members)


def test_names_stable_across_deepcopy_and_retrace():
    m = build("concat")
    x = _x()
    names = [(gr.name, gr.size) for gr in DependencyGraph(m, x).groups]
    assert [(gr.name, gr.size) for gr in DependencyGraph(copy.deepcopy(m), x).groups] == names
    assert [(gr.name, gr.size) for gr in DependencyGraph(m, torch.randn(3, 3, 16, 16)).groups] == names


def test_names_stable_across_processes():
    code = ("import torch, prunekit, json; from prunekit.graph import DependencyGraph;"
            "m = prunekit.models.create('resnet20');"
            "print(json.dumps([g.name for g in DependencyGraph(m, torch.randn(1, 3, 32, 32)).groups]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = [g.name for g in DependencyGraph(prunekit.models.create("resnet20"), torch.randn(1, 3, 32, 32)).groups]
    assert json.loads(out.strip().splitlines()[-1]) == here


def test_building_does_not_modify_the_model():
    m = build("residual").train()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    attrs = set(vars(m))
    DependencyGraph(m, _x(2))
    assert m.training and all(mod.training for mod in m.modules())
    assert set(vars(m)) == attrs
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_unknown_group_name_lists_close_names():
    g = DependencyGraph(build("residual"), _x())
    with pytest.raises(ConfigError, match="stem.0"):
        g.group("stem.O")
    assert "stem.0" in g and "nope" not in g and len(g) == 5


def test_coverage_report():
    g = DependencyGraph(build("residual"), _x())
    cov = g.coverage()
    assert cov.ratio == 1.0 and cov.total == 8 + 6 + 8 + 12 + 16 + 16
    assert cov.per_layer["stem.0"] == (8, 8)
    assert "coverage" in str(cov)
    cov = DependencyGraph(build("split_slice"), _x()).coverage()
    assert cov.ratio < 1 and "c1.0" in cov.unprunable


def test_tuple_inputs_and_multiple_outputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(2, 4, 1)
            self.c = nn.Conv2d(4, 6, 1)

        def forward(self, x, y):
            h = self.c(self.a(x) + self.b(y))
            return h, h.mean((2, 3))

    g = DependencyGraph(Two(), (torch.randn(1, 3, 4, 4), torch.randn(1, 2, 4, 4)))
    assert g["a"].prunable and not g["c"].prunable


def test_summary_and_repr():
    g = DependencyGraph(build("residual"), _x())
    text = g.summary()
    assert "stem.0" in text and "fixed: model output" in text and "coverage" in text
    assert "5 groups, 4 prunable" in repr(g)


def test_widths_and_iteration():
    g = DependencyGraph(build("residual"), _x())
    assert g.widths() == {gr.name: gr.size for gr in g}
    assert [gr.name for gr in g.prunable_groups] == ["stem.0", "a1.0", "proj.0", "b1.0"]
