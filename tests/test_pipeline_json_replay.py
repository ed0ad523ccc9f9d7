"""A ``json`` stage (record only, no model saved) gives its caller the same model and the same metrics on the
first run as when it is replayed from its record on resume."""

from __future__ import annotations

import torch

from prunekit.train import TrainConfig
from prunekit.train.pipeline import Pipeline

from _toy import ToyLoader, toy_model

X = torch.randn(2, 3, 8, 8)


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(out):
    """A json transform that (wrongly) edits the model and returns non-JSON types, then a json training probe."""
    pipe = Pipeline(out, X, settings={"seed": 0})
    torch.manual_seed(0)
    model = toy_model()
    before = _state(model)

    def poke(m):
        with torch.no_grad():
            m[0].weight.add_(1.0)
        return {"shape": (2, 3), "widths": {"a": 4}, "by_index": {3: "x"}, "value": torch.tensor(1.5)}

    a = pipe.transform("poke", model, poke, kind="measure", artifact="json")
    ma = pipe.records[-1].metrics
    cfg = TrainConfig(epochs=1, lr=0.05, progress=False, steps_per_epoch=3)
    b = pipe.train("probe", a, ToyLoader(), None, cfg, artifact="json",
                   after=lambda m, _t: {"w0": float(m[0].weight.detach().sum())})
    mb = pipe.records[-1].metrics
    return before, a, ma, b, mb


def test_json_stages_return_the_same_model_and_metrics_on_first_run_and_replay(tmp_path):
    before, a1, ma1, b1, mb1 = _run(tmp_path)
    assert _same(_state(a1), before) and _same(_state(b1), before)  # the caller's model, unchanged
    assert ma1 == {"shape": [2, 3], "widths": {"a": 4}, "by_index": {"3": "x"}, "value": 1.5}  # as read back
    assert mb1["w0"] != float(before["0.weight"].sum())  # the probe trained (a copy)

    before2, a2, ma2, b2, mb2 = _run(tmp_path)  # every stage replayed from its record
    assert _same(before2, before)
    assert _same(_state(a2), _state(a1)) and _same(_state(b2), _state(b1))
    assert ma2 == ma1 and mb2 == mb1
    assert list(ma2) == list(ma1)  # same key order too
