"""YOLOv8n end to end (ultralytics, built from its yaml: nothing is downloaded): the graph (concrete tracer: fx
cannot iterate C2f's chunk nor follow the Detect head's shape checks), 30 % of channels pruned with the head's
output convolutions protected, same output shapes, fewer MACs, widths-file round trip, ONNX verified, and a few
fine-tuning steps with the ultralytics loss on synthetic boxes."""

from __future__ import annotations

import warnings

import pytest
import torch

import prunekit
from prunekit.graph import DependencyGraph

from _graph_nets import single_thread  # noqa: F401  (autouse fixture)

tasks = pytest.importorskip("ultralytics.nn.tasks")

X = torch.randn(1, 3, 128, 128)


def _yolo(nc: int = 3):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tasks.DetectionModel("yolov8n.yaml", nc=nc, verbose=False).eval()


def _head_outputs(graph: DependencyGraph) -> list[str]:
    """The groups of the Detect head's last convolutions (box and class outputs), found from the graph: the
    producers that feed the head's reshape to a literal size (they are pinned by it)."""
    head = type(graph.model.model[-1]).__name__
    assert head == "Detect"
    prefix = f"model.{len(graph.model.model) - 1}."
    return [g.name for g in graph.groups if g.name.startswith(prefix) and not g.prunable]


@pytest.fixture(scope="module")
def pruned():
    model = _yolo()
    with torch.no_grad():
        before = [t.shape for t in _flat(model(X))]
    macs0 = prunekit.count(model, X).macs
    graph = DependencyGraph(model, X, pin_outputs=False)
    protected = _head_outputs(graph)
    prunekit.prune(model, X, ratio=0.3, protected=protected, pin_outputs=False)
    return model, graph, protected, before, macs0


def _flat(y):
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _flat(v)]
    return [t for v in y for t in _flat(v)]


def test_graph_is_traced_concretely_and_covers_the_network():
    graph = DependencyGraph(_yolo(), X, pin_outputs=False)
    assert graph.tracer == "concrete"
    coverage = sum(g.size for g in graph.prunable_groups) / sum(g.size for g in graph.groups)
    assert coverage > 0.85
    assert len(_head_outputs(graph)) == 7  # 3 box + 3 class output convs + the DFL conv


def test_pruned_detector_keeps_output_shapes_and_loses_macs(pruned):
    model, _, protected, before, macs0 = pruned
    with torch.no_grad():
        y, preds = model(X)
    assert y.shape == before[0]
    assert preds["boxes"].shape == before[1] and preds["scores"].shape == before[2]
    assert prunekit.count(model, X).macs < 0.7 * macs0
    head = model.model[-1]
    assert all(head.cv2[i][2].out_channels == 64 and head.cv3[i][2].out_channels == 3 for i in range(3))


def test_pruned_detector_round_trips_through_a_widths_file(pruned, tmp_path):
    model = pruned[0]
    path = prunekit.save(model, tmp_path / "yolo.safetensors", architecture="widths", example_inputs=X)
    rebuilt = prunekit.load(path, model=_yolo()).eval()
    with torch.no_grad():
        assert torch.equal(model(X)[0], rebuilt(X)[0])


def test_pruned_detector_exports_to_onnx(pruned, tmp_path):
    pytest.importorskip("onnxruntime")
    prunekit.export_onnx(pruned[0], X, tmp_path / "yolo.onnx", verify=True)


def test_pruned_detector_fine_tunes_with_the_ultralytics_loss():
    from ultralytics.cfg import get_cfg

    model = _yolo()
    prunekit.prune(model, X, ratio=0.3, pin_outputs=False)
    model.args = get_cfg()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = {"img": torch.rand(2, 3, 128, 128), "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
             "cls": torch.tensor([[0.0], [2.0], [1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.3, 0.6, 0.2, 0.2], [0.7, 0.3, 0.4, 0.3]])}
    losses = []
    for _ in range(3):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(float(loss.sum().detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_classification_model_prunes():
    torch.manual_seed(0)
    model = tasks.ClassificationModel("yolov8n-cls.yaml", nc=10, verbose=False).eval()
    x = torch.randn(1, 3, 64, 64)
    macs0 = prunekit.count(model, x).macs
    prunekit.prune(model, x, ratio=0.3)
    with torch.no_grad():
        y = model(x)
    assert all(t.shape == (1, 10) for t in _flat(y))  # eval mode: (probabilities, logits)
    assert prunekit.count(model, x).macs < 0.7 * macs0


def test_a_detector_that_already_ran_prunes_like_a_fresh_one():
    """Detect caches the input shape on its first call (``self.shape``); the graph of a model that ran (say, a
    validation pass before pruning) must not pin the feature maps the cache key compares."""
    fresh = DependencyGraph(_yolo(), X, pin_outputs=False)
    used = _yolo()
    with torch.no_grad():
        used(X)
    assert used.model[-1].shape is not None
    ran = DependencyGraph(used, X, pin_outputs=False)
    assert {g.name: g.prunable for g in ran.groups} == {g.name: g.prunable for g in fresh.groups}
