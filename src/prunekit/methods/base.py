"""The Method layer: a registry of pruning methods and the harness every method run shares.

A method is a config dataclass plus its paper's loop::

    @register_method("slimming", config=SlimmingConfig)
    class NetworkSlimming(Method):
        def execute(self, run: MethodRun, model: nn.Module) -> nn.Module:
            ...                                 # the paper's loop: run.train(...), run.transform(...)
            return model

``Method.run(model, data, output_dir)`` builds a :class:`MethodRun` — the example input, the device policy, a
resumable, fingerprinted :class:`~prunekit.train.pipeline.Pipeline` whose training stages get distinct
data-order offsets, baseline and final evaluation (test set for the reported numbers, validation split for
every decision), summaries with interleaved latency, the per-group widths plot, method plots, ``result.json``
(RESULTS-SCHEMA, written from the config the run used) and the final model file — then calls ``execute``.
``prunekit prune <name>`` and ``prunekit prune --list`` come from the registry; a method adds no CLI code.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.train import Callback, TrainConfig, evaluate
from prunekit.train.pipeline import Artifact, Pipeline, StageRecord

if TYPE_CHECKING:  # pragma: no cover
    from prunekit.methods.result import PruneResult

_METHODS: dict[str, type["Method"]] = {}


def register_method(name: str, *, config: type, title: str | None = None,
                    summary: str | None = None) -> Callable[[type], type]:
    """Class decorator: registers a :class:`Method` subclass under ``name`` (snake_case; the CLI spells it
    kebab-case) with its config dataclass; ``summary`` (one line for ``prunekit prune --list`` and ``--help``)
    defaults to the first sentence of the method module's docstring."""
    def wrap(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        import sys

        doc = " ".join((sys.modules[cls.__module__].__doc__ or "").split())
        cls.name, cls.config_class, cls.title = name, config, title or cls.__name__
        cls.summary = summary or (doc.split(". ")[0].rstrip(".") + "." if doc else cls.title)
        _METHODS[name] = cls
        return cls
    return wrap


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)


def get_method(name: str) -> type["Method"]:
    """The method class registered as ``name`` (``-`` and ``_`` are interchangeable); unknown names list the
    valid ones."""
    key = name.replace("-", "_")
    if key not in _METHODS:
        close = difflib.get_close_matches(key, list(_METHODS), n=3)
        hint = f" Did you mean {', '.join(c.replace('_', '-') for c in close)}?" if close else ""
        raise ConfigError(f"unknown method {name!r}.{hint} Valid: "
                          f"{', '.join(m.replace('_', '-') for m in _METHODS)}")
    return _METHODS[key]


@dataclass
class RunInfo:
    """How a run is named in its result record: ``name`` (record name), ``model_name`` (zoo name or file),
    ``reduced`` (not the paper's full protocol), ``settings`` (what determines the run beyond the config —
    data options, seed — part of every stage's fingerprint), ``command`` (the command line, if any),
    ``metadata`` (what the final model file records: model name, dataset options — so ``prunekit eval FILE``
    can rebuild the data)."""

    name: str | None = None
    model_name: str = "model"
    reduced: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # stored in the model file (model + data spec)


class Method:
    """Base class of the pruning methods. Subclasses set nothing by hand (``register_method`` does) and
    implement :meth:`execute`; :meth:`check` may refuse a model before any training."""

    name: ClassVar[str] = "method"
    title: ClassVar[str] = "method"
    summary: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, config: Any):
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                              f"{type(config).__name__}")
        self.config = config

    def check(self, run: "MethodRun", model: nn.Module) -> None:
        """Raise ConfigError if the method cannot prune ``model`` (called before any stage runs)."""

    def execute(self, run: "MethodRun", model: nn.Module) -> nn.Module:
        """The paper's loop: stages through ``run``; returns the final pruned model."""
        raise NotImplementedError

    def run(self, model: nn.Module, data: Any, output_dir: str | Path, *, device: str = "cpu",
            log: Callable[[str], None] | None = None, latency: bool = True, callbacks: Iterable[Callback] = (),
            restart: bool = False, info: RunInfo | None = None, leaf_modules: Iterable[type | str] = (),
            tracer: str = "auto", approximate_statistics: bool = False) -> "PruneResult":
        """Prune ``model`` on ``data`` (prunekit DataLoaders: train / val / test) under ``output_dir``
        (resumable: re-running the same call continues; other settings stop with a clear error unless
        ``restart``) and report. ``callbacks`` join every training stage. ``leaf_modules``/``tracer``/
        ``approximate_statistics``: how every graph of the run is built (see ``DependencyGraph``). Returns the
        :class:`PruneResult`; writes ``result.json``, ``widths.png``, method plots and ``model.safetensors`` into
        ``output_dir`` (every stage is a prunekit model file: the model needs an fx graph, see
        ``prunekit.io.save``)."""
        run = MethodRun(self, model, data, output_dir, device=device, log=log, latency=latency,
                        callbacks=callbacks, restart=restart, info=info,
                        trace_options={"leaf_modules": tuple(leaf_modules), "tracer": tracer,
                                       "approximate_statistics": approximate_statistics})
        self.check(run, run.model)
        final = self.execute(run, run.model)
        return run.finish(final)


def train_fields(config_class: type) -> list[str]:
    """The fields of a method config that hold a training phase (``TrainConfig`` or None)."""
    return [f.name for f in fields(config_class) if "TrainConfig" in str(f.type)]


def phase_epochs(config: Any) -> dict[str, int]:
    """``{"<phase>_epochs": epochs}`` for every training phase of a method config (0 when disabled)."""
    return {f"{name}_epochs": (getattr(config, name).epochs if getattr(config, name) is not None else 0)
            for name in train_fields(type(config))}


def config_settings(config: Any, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """A config dataclass as plain data (TrainConfig fields as their settings), for fingerprints/records."""
    from prunekit.train.pipeline import train_settings

    out: dict[str, Any] = {}
    for f in fields(config):
        if f.name in exclude:
            continue
        v = getattr(config, f.name)
        out[f.name] = train_settings(v) if isinstance(v, TrainConfig) else v
    return out


def model_digest(model: nn.Module) -> str:
    """A short digest of ``model``'s state (names, shapes, values): the run's starting point."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class MethodRun:
    """The harness of one method run (see the module docstring). Methods use: ``x`` (example input, CPU),
    ``device``, ``data``, ``log``, ``graph0``/``widths0`` (graph and prunable group widths of the input model),
    ``graph(model)``,
    ``train``/``transform`` (pipeline stages), ``evaluate``, ``set_baseline``, ``details`` (into the record),
    ``plot_histograms``/``plot_trajectory``, ``floor_hit`` (groups stopped by their floor)."""

    def __init__(self, method: Method, model: nn.Module, data: Any, output_dir: str | Path, *, device: str,
                 log: Callable[[str], None] | None, latency: bool, callbacks: Iterable[Callback], restart: bool,
                 info: RunInfo | None, trace_options: Mapping[str, Any] | None = None):
        self.method, self.config, self.data = method, method.config, data
        self.out = Path(output_dir)
        self.device = device
        self.log = log or (lambda m: None)
        self.latency = latency
        self.callbacks = list(callbacks)
        self.info = info or RunInfo()
        self.x = next(iter(data.test))[0][:2].detach().cpu()
        self.model = model.cpu()
        self.trace_options: dict[str, Any] = dict(trace_options or {})  # DependencyGraph's keyword options
        self.graph0 = self.graph(self.model)  # of the input model, before any stage
        self.widths0 = {g.name: g.size for g in self.graph0.prunable_groups}
        self.details: dict[str, Any] = {}
        self.floor_hit: list[str] = []
        self.artifacts: dict[str, str] = {}
        self.tables: list[Any] = []  # extra rich tables the method adds to the report (PruneResult.tables())
        self._baseline = None
        self._baseline_model: nn.Module | None = None
        spec = getattr(data, "spec", None)
        settings = {"method": method.name, "model": model_digest(self.model),
                    "data": {"spec": spec.__dict__ if spec is not None else None,
                             "train": getattr(data.train, "num_samples", None),
                             "val": getattr(data.val, "num_samples", None) if data.val is not None else None,
                             "batch_size": getattr(data.train, "batch_size", None)},
                    **self.info.settings}
        keep = bool(getattr(self.config, "keep_checkpoints", True))
        self.pipe = Pipeline(self.out, self.x, device=device, log=self.log, settings=settings, restart=restart,
                             keep_checkpoints=keep)
        self.model.to(device)

    # ---- stages -----------------------------------------------------------------------------------------------
    def train(self, name: str, model: nn.Module, config: TrainConfig, callbacks: Iterable[Callback] = (), *,
              validate: bool = True, after: Callable[[nn.Module, Any], dict[str, Any]] | None = None,
              settings: Mapping[str, Any] | None = None, data_offset: int | None = None,
              parent: str | None = None, artifact: Artifact = "model") -> nn.Module:
        """A training stage on the train split (validation after each epoch unless ``validate=False``); the
        user's callbacks are added after the method's."""
        return self.pipe.train(name, model, self.data.train, self.data.val if validate else None, config,
                               [*callbacks, *self.callbacks], after=after, settings=settings,
                               data_offset=data_offset, parent=parent, artifact=artifact)

    def transform(self, name: str, model: nn.Module, fn: Callable[[nn.Module], dict[str, Any] | None],
                  kind: str = "prune", *, settings: Mapping[str, Any] | None = None, parent: str | None = None,
                  artifact: Artifact = "model") -> nn.Module:
        """A deterministic in-place step (pruning, folding) as a stage."""
        return self.pipe.transform(name, model, fn, kind, settings=settings, parent=parent, artifact=artifact)

    @property
    def records(self) -> list[StageRecord]:
        return self.pipe.records

    def last_metrics(self) -> dict[str, Any]:
        """The metrics of the stage that ran (or was loaded) last."""
        return self.pipe.records[-1].metrics

    # ---- models and numbers ---------------------------------------------------------------------------------
    def graph(self, model: nn.Module) -> DependencyGraph:
        """The dependency graph of ``model``, built on the CPU (the model is moved there and stays there:
        prune it, then call ``to_device``)."""
        return DependencyGraph(model.cpu(), self.x, **self.trace_options)

    def to_device(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def evaluate(self, model: nn.Module, split: str = "val") -> float | None:
        """Top-1 (%) on ``split`` (``val``: every decision; ``test``: only the reported numbers); None when
        the split does not exist."""
        loader = getattr(self.data, split)
        return None if loader is None else evaluate(model, loader).top1

    @property
    def baseline_top1(self) -> dict[str, float | None]:
        """Top-1 (%) of the baseline on ``test`` and ``val`` (set by :meth:`set_baseline`)."""
        return dict(self._baseline or {})

    def set_baseline(self, model: nn.Module) -> None:
        """The unpruned network the report compares against (a copy is kept for the interleaved latency)."""
        self._baseline_model = copy.deepcopy(model).cpu().eval()
        self._baseline = {k: self.evaluate(model, k) for k in ("test", "val")}

    # ---- plots ----------------------------------------------------------------------------------------------
    def plot_histograms(self, filename: str, series: Mapping[str, Any], *, title: str, xlabel: str) -> None:
        """Histograms into ``output_dir/filename`` (artifact ``<stem>_png``)."""
        from prunekit.report import plot_histograms

        path = plot_histograms(series, self.out / filename, title=title, xlabel=xlabel)
        self.artifacts[f"{Path(filename).stem.removesuffix('_hist')}_png"] = str(path)

    def plot_trajectory(self, filename: str, x: list[float], ys: Mapping[str, list[float]], *, title: str,
                        xlabel: str, ylabel: str) -> None:
        """Curves over ``x`` into ``output_dir/filename`` (artifact ``<stem>_png``)."""
        from prunekit.report import plot_trajectory

        path = plot_trajectory(x, ys, self.out / filename, title=title, xlabel=xlabel, ylabel=ylabel)
        self.artifacts[f"{Path(filename).stem}_png"] = str(path)

    # ---- the end ----------------------------------------------------------------------------------------------
    def finish(self, model: nn.Module) -> "PruneResult":
        """Final evaluation and summaries, widths plot, model file, ``result.json``; returns the result."""
        from prunekit.io import save
        from prunekit.methods.result import PruneResult
        from prunekit.report import plot_widths, summarize_pair

        if self._baseline_model is None:
            raise ConfigError(f"{self.method.name}: the method never called run.set_baseline(model)")
        model.eval()
        widths1 = self.graph(model).widths()
        self.to_device(model)
        baseline, pruned = summarize_pair(self._baseline_model, model, self.x, latency=self.latency)
        for k, v in self._baseline.items():
            if v is not None:
                baseline.top1[k] = v
        for k in ("test", "val"):
            v = self.evaluate(model, k)
            if v is not None:
                pruned.top1[k] = v
        self._warn_if_collapsed(baseline.top1.get("val"), pruned.top1.get("val"))
        widths_after = {k: widths1.get(k, v) for k, v in self.widths0.items()}
        self.details.setdefault("floor_hit", sorted(set(self.floor_hit)))
        self.details["config"] = config_settings(self.config)
        result = PruneResult(self.method.name, model, dict(self.widths0), widths_after, baseline, pruned,
                             list(self.pipe.records), self.details)
        result.artifacts["widths_png"] = str(plot_widths(self.widths0, widths_after, self.out / "widths.png",
                                                         title=f"{self.method.title}: channels per group"))
        result.artifacts.update(self.artifacts)
        result.extra_tables = list(self.tables)
        meta = {"model": {"name": self.info.model_name}, **self.info.metadata,
                "input_shape": list(self.x.shape[1:]), "pruned": {"method": self.method.name}}
        save(model.cpu().eval(), self.out / "model.safetensors", example_inputs=self.x, metadata=meta)
        self.to_device(model)
        result.artifacts["model"] = str(self.out / "model.safetensors")
        dataset = getattr(getattr(self.data, "spec", None), "name", "data")
        result.write_record(self.out / "result.json",
                            name=self.info.name or f"{self.method.name}-{self.info.model_name}-{dataset}",
                            model_name=self.info.model_name, dataset=dataset, reduced=self.info.reduced,
                            device=str(self.device), command=self.info.command, schedule=self.schedule())
        return result

    def _warn_if_collapsed(self, before: float | None, after: float | None) -> None:
        """Say so (log + record) when the pruned network lost most of its validation accuracy, and why."""
        if before is None or after is None or after >= 0.5 * before:
            return
        floors = sorted(set(self.floor_hit))
        why = (f" Groups at their floor: {', '.join(floors[:8])}{' ...' if len(floors) > 8 else ''} — the budget "
               "forced everything else down to meet it." if floors else "")
        msg = (f"warning: validation top-1 collapsed after pruning ({before:.1f}% → {after:.1f}%).{why} Ask for "
               "less (a higher target_macs / lower ratio), give fine-tuning more epochs, or raise min_keep.")
        self.log(msg)
        self.details["warnings"] = [*self.details.get("warnings", []), msg]

    def schedule(self) -> dict[str, Any]:
        """The training budget of the run: epochs of every training phase of the config, and the batch size."""
        return {"batch_size": getattr(self.data.train, "batch_size", None), **phase_epochs(self.config)}
