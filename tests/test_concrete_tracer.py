"""The concrete tracer: models torch.fx cannot trace symbolically (iterating a chunk, branching on shapes, caching
on the module) are traced with each op run on the example inputs; groups, surgery and analytic cost work the same
on its graph; the widths file saves and rebuilds such models."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import CheckpointError, ConfigError
from prunekit.graph import DependencyGraph, GraphError

from _graph_nets import bit_identical_when_nothing_pruned, cbr, check_half, masked_then_pruned, randomize_bn
from _graph_nets import single_thread  # noqa: F401  (autouse fixture)


class SplitBlock(nn.Module):
    """YOLOv8's C2f pattern: ``list(x.chunk(2, 1))`` (a proxy cannot be iterated), each bottleneck appended."""

    def __init__(self, cin: int, cout: int, n: int = 2):
        super().__init__()
        self.c = cout // 2
        self.cv1 = cbr(cin, 2 * self.c, 1)
        self.m = nn.ModuleList(cbr(self.c, self.c) for _ in range(n))
        self.cv2 = cbr((2 + n) * self.c, cout, 1)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class CachingHead(nn.Module):
    """A detection-style head that recomputes a grid only when the input shape changes (``self.shape``), and
    iterates over a stride buffer."""

    shape = None

    def __init__(self, cin: int, nout: int = 6):
        super().__init__()
        self.out = nn.Conv2d(cin, nout, 1)
        self.register_buffer("stride", torch.tensor([8.0]))
        self.nout = nout

    def forward(self, x):
        y = self.out(x)
        if self.shape != x.shape:
            self.grid = torch.arange(x.shape[-1], dtype=x.dtype)
            self.shape = x.shape
        for s in self.stride:
            y = y + self.grid * s
        return y.view(x.shape[0], self.nout, -1)


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16, 3, 2)
        self.block = SplitBlock(16, 32)
        self.down = cbr(32, 32, 3, 2)
        self.head = CachingHead(32)

    def forward(self, x, *args, **kwargs):
        feats = self.down(self.block(self.stem(x)))
        return self.head(feats), feats


def _detector() -> Detector:
    torch.manual_seed(0)
    return randomize_bn(Detector()).eval()


X = torch.randn(2, 3, 32, 32)


def test_fx_fails_and_auto_falls_back_to_the_concrete_tracer():
    with pytest.raises(GraphError, match="could not trace"):
        DependencyGraph(_detector(), X, tracer="fx")
    graph = DependencyGraph(_detector(), X)
    assert graph.tracer == "concrete"
    assert DependencyGraph(nn.Sequential(cbr(3, 8), nn.Conv2d(8, 4, 1)), X).tracer == "fx"


def test_bad_tracer_name_is_one_clear_error():
    with pytest.raises(ConfigError, match="tracer must be one of"):
        DependencyGraph(_detector(), X, tracer="export")


def test_concrete_graph_prunes_like_an_fx_graph():
    graph = DependencyGraph(_detector(), X, pin_outputs=False)
    names = {g.name for g in graph.prunable_groups}
    assert {"stem.0", "block.cv1.0", "block.m.0.0", "block.cv2.0"} <= names
    err, _ = masked_then_pruned(graph, X)
    assert err < 1e-5
    before, predicted, after = check_half(graph, X)
    assert after < before and predicted == after


def test_nothing_pruned_is_bit_identical_on_a_concrete_graph():
    bit_identical_when_nothing_pruned(_detector(), X)


def test_building_the_graph_leaves_module_attributes_alone():
    model = _detector()
    before = {n: dict(vars(m)) for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    DependencyGraph(model, X)
    for n, m in model.named_modules():
        assert set(vars(m)) == set(before[n]), n
        assert all(vars(m)[k] is v for k, v in before[n].items()), n
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.head.shape is None and "grid" not in vars(model.head)


def test_model_outputs_keep_their_channels_unless_pin_outputs_is_false():
    pinned = DependencyGraph(_detector(), X)
    assert not pinned.group("down.0").prunable and "model output" in pinned.group("down.0").reason
    free = DependencyGraph(_detector(), X, pin_outputs=False)
    assert free.group("down.0").prunable
    model = _detector()
    prunekit.prune(model, X, ratio=0.5, pin_outputs=False)
    y, feats = model(X)
    assert y.shape == (2, 6, 64) and feats.shape[1] == 16


class ChannelBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 16), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.a(x)
        if x.shape[1] == 16:  # a branch on the channel count: pruning would take the other path
            x = x * 2
        return self.b(x)


class CacheCheck(nn.Module):
    cached = None

    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 16), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.a(x)
        if self.cached != x.shape:  # None != shape whatever the count: the branch does not depend on it
            pass
        return self.b(x)


def test_a_branch_on_a_channel_count_pins_it_and_one_that_cannot_change_does_not():
    g = DependencyGraph(ChannelBranch(), X, tracer="concrete").group("a.0")
    assert not g.prunable and "decides a branch" in g.reason
    assert DependencyGraph(CacheCheck(), X, tracer="concrete").group("a.0").prunable


class DataBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.a(x)
        if y.sum() > 0:  # on tensor values: no tracer can record this
            y = -y
        return y


def test_data_dependent_branch_is_refused_with_the_line():
    with pytest.raises(GraphError) as info:
        DependencyGraph(DataBranch(), X)
    msg = str(info.value)
    assert "data-dependent" in msg and "test_concrete_tracer.py" in msg and "\n" not in msg


def test_widths_file_round_trip_rebuilds_the_users_class(tmp_path):
    model = _detector()
    prunekit.prune(model, X, ratio=0.4, pin_outputs=False)
    with pytest.raises(prunekit.PrunekitError, match="architecture='widths'"):
        prunekit.save(model, tmp_path / "g.pk")
    assert not (tmp_path / "g.pk").exists()
    path = prunekit.save(model, tmp_path / "w.pk", architecture="widths", example_inputs=X)
    rebuilt = prunekit.load(path, model=Detector())
    assert type(rebuilt) is Detector
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(X)[0], rebuilt(X)[0])
    with pytest.raises(CheckpointError, match="model=<the unpruned model>"):
        prunekit.load(path)
    with pytest.raises(CheckpointError, match="saved from a"):
        prunekit.load(path, model=nn.Sequential(nn.Conv2d(3, 4, 1)))


def test_widths_file_needs_example_inputs_and_a_known_architecture(tmp_path):
    with pytest.raises(ConfigError, match="example_inputs"):
        prunekit.save(_detector(), tmp_path / "w.pk", architecture="widths")
    with pytest.raises(ConfigError, match="architecture must be one of"):
        prunekit.save(_detector(), tmp_path / "w.pk", architecture="onnx")
    fx_model = nn.Sequential(cbr(3, 8), nn.Conv2d(8, 4, 1))
    path = prunekit.save(fx_model, tmp_path / "g.pk")
    with pytest.raises(CheckpointError, match="without model="):
        prunekit.load(path, model=fx_model)


def test_methods_take_the_tracing_options(tmp_path):
    from prunekit.data import build_data
    from prunekit.methods import MagnitudeConfig, get_method
    from prunekit.models import create

    data = build_data("digits", batch_size=64, val_split=0.2, seed=0, train_subset=256, num_workers=0)
    method = get_method("l1")(MagnitudeConfig(ratio=0.5))
    result = method.run(create("smallcnn"), data, tmp_path, latency=False, leaf_modules=["conv2"])
    # the opaque block's input and output channels are not prunable; the others are pruned
    assert not {"conv1.0", "conv2.0"} & set(result.widths_before)
    assert result.widths_after["conv4.0"] < result.widths_before["conv4.0"]


def test_a_model_that_already_ran_is_traced_as_freshly_built():
    """The head caches the input shape on its first call; tracing the cache-hit branch would pin the channel
    count it compares: the graph of a model that has run equals that of a fresh one."""
    model = _detector()
    with torch.no_grad():
        model(X)
    assert model.head.shape is not None
    cached = {g.name: g.prunable for g in DependencyGraph(model, X, pin_outputs=False).groups}
    fresh = {g.name: g.prunable for g in DependencyGraph(_detector(), X, pin_outputs=False).groups}
    assert cached == fresh and cached["down.0"]
    assert model.head.shape == X.new_empty(2, 32, 8, 8).shape  # the cache is left as it was


SCALE = torch.ones(1)  # a tensor literal of the forward's code: fx lifts it onto the root as a constant


class LiteralThenDataBranch(DataBranch):
    def forward(self, x):
        return super().forward(x * SCALE)


def test_a_failed_trace_leaves_no_lifted_constant_on_the_model():
    model = LiteralThenDataBranch()
    before = set(vars(model))
    with pytest.raises(GraphError):
        DependencyGraph(model, X)
    assert set(vars(model)) == before
