"""Tracing a model and walking its graph with the channel rules.

Why torch.fx (symbolic tracing): it records the model's own Python forward at the level users write it
(``nn.Module`` calls, ``torch``/``F`` functions, Tensor methods) with module qualified names attached, so every
rule is keyed by an op the user recognises and every member is a real attribute of the user's module that
surgery can shrink in place. All torchvision classification models trace; control flow on ``self.training`` is
handled by tracing both modes and merging the constraints. Alternatives: autograd-graph walking (Torch-Pruning)
needs a backward graph and loses non-differentiable ops and module names for functional code; ``torch.export``
/ ``make_fx`` lower to ATen ops, dropping the module structure that surgery edits and re-deriving it is costly.
The price of fx: data-dependent Python control flow cannot be traced (a clear error names the reason; the
offending submodule can be declared a leaf with ``leaf_modules=``, which makes its channels unprunable).

Shapes come from running the traced graph once on the example inputs. By default this runs on the ``meta``
device (no arithmetic: a ResNet-50 at 224 px takes tens of milliseconds); if any op cannot run on meta tensors,
the walk restarts with the real inputs in eval mode under ``no_grad``.

Building a graph never modifies the model: tracing and the walks run with every buffer swapped for a copy
(``scratch_buffers``), so code that fx traces through and that updates state in place (a BatchNorm subclass's
``num_batches_tracked += 1``, ``F.batch_norm(training=True)`` on the running statistics) writes to the copies;
the training flags are restored.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.fx
import torch.nn as nn
from torch.fx.node import map_aggregate, map_arg

from prunekit.errors import PrunekitError
from prunekit.graph.builder import Builder, Core
from prunekit.graph.rules import (METHOD_RULES, MODULE_RULES, SIZE_AWARE, SIZE_RULES, Call, SizeRef,
                                  unknown_rule)
from prunekit.graph.rules.registry import function_rule_for


class GraphError(PrunekitError):
    """The model cannot be traced or analysed."""


class _Tracer(torch.fx.Tracer):
    """fx tracer with extra leaves (by type or qualified name) that remembers where tracing failed: the
    innermost module being traced and the source line of the user's code that raised."""

    def __init__(self, leaf_types: tuple[type, ...], leaf_names: frozenset[str] = frozenset()):
        super().__init__()
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self._stack: list[tuple[str, nn.Module]] = []
        self.failed_in: tuple[str, nn.Module] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (bool(self.leaf_types) and isinstance(m, self.leaf_types)) or qualname in self.leaf_names \
            or super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        self._stack.append((self.path_of_module(m), m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self._stack[-1]
            raise
        finally:
            self._stack.pop()


_MISSING = object()


class _ConcreteProxy(torch.fx.Proxy):
    """A proxy that also knows the value its node takes on the example inputs, so Python can branch on it.

    ``bool``, ``len``, iteration, ``int``/``float``/``index`` use that value (the trace is specialised on it,
    like ``torch.export`` specialises on the example's shapes); branching on a *tensor's* values is refused
    (that is data-dependent: the graph would silently be right for this input only)."""

    def _value(self, use: str) -> Any:
        value = self.tracer.values.get(self.node, _MISSING)  # type: ignore[attr-defined]
        if value is _MISSING:
            raise torch.fx.proxy.TraceError(
                f"{use} of '{self.node.name}' needs its value on the example inputs, which could not be computed")
        if use == "bool" and isinstance(value, torch.Tensor):
            raise torch.fx.proxy.TraceError(
                f"control flow on the values of tensor '{self.node.name}' (data-dependent: not traceable)")
        return value

    def __bool__(self) -> bool:
        value = bool(self._value("bool"))
        return not value if self.node.name in self.tracer.flips else value  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._value("len"))

    def __iter__(self) -> Iterator[torch.fx.Proxy]:
        return iter([self[i] for i in range(len(self._value("iteration")))])

    def __int__(self) -> int:
        return int(self._value("int()"))

    def __float__(self) -> float:
        return float(self._value("float()"))

    def __index__(self) -> int:
        import operator
        return operator.index(self._value("index"))

    def __getattr__(self, name: str) -> torch.fx.Proxy:
        return _ConcreteAttribute(self, name)


class _ConcreteAttribute(_ConcreteProxy, torch.fx.proxy.Attribute):
    pass


class _ConcreteTracer(_Tracer):
    """fx tracing that runs every recorded op on the example inputs as it goes (``values``: node -> value), so
    Python control flow on shapes and counts (``list(x.chunk(2, 1))``, ``if self.shape != x.shape``, ``for s in
    self.stride``) follows the example's path. Values are computed with tracing paused (module calls and
    parameter reads inside run for real, record nothing); a value that cannot be computed is only an error
    where control flow needs it."""

    def __init__(self, inputs: Sequence[torch.Tensor], leaf_types: tuple[type, ...],
                 leaf_names: frozenset[str] = frozenset(), meta: bool = True, flips: frozenset[str] = frozenset()):
        super().__init__(leaf_types, leaf_names)
        self.values: dict[torch.fx.Node, Any] = {}
        self.flips = flips  # names of the nodes whose truth value is taken the other way (the other branch)
        self.meta = meta
        self._inputs = [_to_meta(x) for x in inputs] if meta else list(inputs)
        self._meta_state: dict[str, dict[str, torch.Tensor]] = {}
        self._paused = 0

    def call_module(self, m: nn.Module, forward, args, kwargs):
        if self._paused:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self._paused:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return _ConcreteProxy(node, self)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> torch.fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        self.values[node] = self._compute(node)
        return node

    def _compute(self, node: torch.fx.Node) -> Any:
        if node.op == "placeholder":
            target = str(node.target)
            if target.startswith("**"):
                return {}
            if target.startswith("*"):
                return ()
            return self._inputs.pop(0) if self._inputs else (node.args[0] if node.args else _MISSING)
        if node.op == "output":
            return _MISSING
        missing = False

        def value(n: torch.fx.Node) -> Any:
            nonlocal missing
            v = self.values.get(n, _MISSING)
            missing = missing or v is _MISSING
            return v
        args, kwargs = map_arg(node.args, value), map_arg(node.kwargs, value)
        if missing:
            return _MISSING
        self._paused += 1
        try:
            with torch.no_grad():
                return self._run(node, args, kwargs, self.meta)
        except Exception:  # noqa: BLE001 - a value that cannot be computed only matters where it is needed
            if not self.meta or node.op == "call_module":
                return _MISSING
            return self._run_materialised(node, args, kwargs)
        finally:
            self._paused -= 1

    def _run(self, node: torch.fx.Node, args: tuple, kwargs: dict, meta: bool) -> Any:
        if node.op == "get_attr":
            v: Any = self.root
            for part in str(node.target).split("."):
                v = getattr(v, part)
            return _to_meta(v) if meta else v
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        module = self.root.get_submodule(node.target)
        if meta:
            return _meta_call(module, node.target, args, kwargs, self._meta_state)
        return module(*args, **kwargs)

    def _run_materialised(self, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
        """An op meta tensors cannot run (``x.new_full(size, fill_tensor)`` reads ``fill_tensor.item()``): run
        it on zeros of the same shapes and keep the result's shape only. Only tensor results are kept: a
        Python number computed from zeros would steer control flow wrongly (it stays unknown)."""
        def real(x: Any) -> Any:
            return torch.zeros(x.shape, dtype=x.dtype) if isinstance(x, torch.Tensor) and x.is_meta else x
        try:
            with torch.no_grad():
                out = self._run(node, map_aggregate(args, real), map_aggregate(kwargs, real), False)
        except Exception:  # noqa: BLE001
            return _MISSING
        leaves: list[Any] = []
        map_aggregate(out, leaves.append)
        if not leaves or not all(isinstance(x, torch.Tensor) for x in leaves):
            return _MISSING
        return _to_meta(out)


def _user_line(exc: BaseException) -> str | None:
    """``file:line: code`` of the innermost frame of ``exc``'s traceback outside torch (the user's line)."""
    import os
    import traceback

    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(torch_dir)
              and os.path.basename(f.filename) != "trace.py"]
    if not frames:
        return None
    f = frames[-1]
    return f"{f.filename}:{f.lineno}: {(f.line or '').strip()}"


_STANDARD_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _standard_layout(m: nn.Module) -> bool:
    """A Conv/Linear subclass whose weight and bias have the base class's layout (so its rule and surgery
    apply when it is kept whole)."""
    w, b = getattr(m, "weight", None), getattr(m, "bias", None)
    if not isinstance(w, torch.Tensor):
        return False
    if isinstance(m, nn.Linear):
        out, shape = m.out_features, (m.out_features, m.in_features)
    else:
        out, shape = m.out_channels, (m.out_channels, m.in_channels // m.groups, *m.kernel_size)
    return tuple(w.shape) == shape and (b is None or (isinstance(b, torch.Tensor) and tuple(b.shape) == (out,)))


@contextmanager
def scratch_buffers(model: nn.Module) -> Iterator[None]:
    """Swap every buffer of ``model`` for a copy while the block runs; put the originals back afterwards.

    Buffers shared by several modules stay shared (one copy each). Parameters are not copied: fx records
    every use of a parameter (it is a proxy while tracing), and the walks read them under ``no_grad``.
    """
    saved: list[tuple[nn.Module, str, torch.Tensor]] = []
    copies: dict[int, torch.Tensor] = {}
    for m in model.modules():
        for key, buf in m._buffers.items():
            if buf is not None:
                saved.append((m, key, buf))
    with torch.no_grad():
        for m, key, buf in saved:
            copy = copies.get(id(buf))
            if copy is None:
                copy = copies[id(buf)] = buf.clone()
            m._buffers[key] = copy
    try:
        yield
    finally:
        for m, key, buf in saved:
            m._buffers[key] = buf


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def _kept_attributes(model: nn.Module) -> Iterator[dict[str, Any]]:
    """Undo attribute assignments that a forward makes on its modules while it is traced (``self.anchors =
    ...`` would otherwise leave a proxy behind). Yields a dict that receives, at exit, the attributes the block
    added to the root model (fx parks the tensor literals it lifts out of the forward there: the graph's
    constants); they are taken off the model too, whether tracing succeeded or not."""
    saved = [(m, dict(vars(m))) for m in model.modules()]
    added: dict[str, Any] = {}
    try:
        yield added
    finally:
        for m, attrs in saved:
            now = vars(m)
            for key in [k for k in now if k not in attrs]:
                value = now.pop(key)
                if m is model:
                    added[key] = value
            for key, value in attrs.items():
                if now.get(key, _MISSING) is not value:
                    now[key] = value


TRACERS = ("auto", "fx", "concrete")


def trace(model: nn.Module, leaf_types: tuple[type, ...] = (), leaf_names: Iterable[str] = (), *,
          tracer: str = "fx", inputs: Sequence[torch.Tensor] | None = None, used: list[str] | None = None,
          real_values: bool = False, flips: frozenset[str] = frozenset()
          ) -> list[tuple[torch.fx.Graph, dict[str, Any], dict | None, bool]]:
    """fx graphs of ``model``'s eval-mode forward and, if it differs, its train-mode forward.

    ``tracer``: ``"fx"`` (symbolic), ``"concrete"`` (fx that also runs each op on ``inputs`` so Python control
    flow on shapes follows the example's path: see ``_ConcreteTracer``) or ``"auto"`` (fx; concrete only if fx
    fails). ``used``, if given, receives the name of the tracer that produced the graphs. The concrete tracer
    computes values on meta tensors (shapes only) and, where the control flow needs a value that meta tensors
    cannot give (``.item()``), or with ``real_values``, on the real inputs.

    Returns ``[(graph, constants, values, meta)]``: ``constants`` holds the tensor literals fx lifted out of the forward
    (fx parks them on the traced module; they are taken back off the user's model here); ``values`` the concrete
    tracer's node values (None for fx), on meta tensors if ``meta``. A Conv/Linear subclass
    whose own forward fx cannot trace (timm's ``Conv2dSame`` computes its padding with ``math.ceil`` on the
    input's shape) is kept whole and analysed as its base layer, with a warning, if its weights have the
    base layer's layout; any other failure raises GraphError naming the module and the source line.
    """
    if tracer not in TRACERS:
        raise ValueError(f"tracer must be one of {', '.join(TRACERS)}, got {tracer!r}")
    if tracer != "fx" and inputs is None:
        raise ValueError(f"tracer={tracer!r} needs the example inputs")
    leaf_names = set(leaf_names)
    auto: list[str] = []
    stages = (["fx"] if tracer != "concrete" else []) + \
        ([] if tracer == "fx" else ["concrete"] if real_values else ["concrete-meta", "concrete"])
    use = stages.pop(0)
    while True:
        try:
            graphs = _trace_modes(model, leaf_types, frozenset(leaf_names), None if use == "fx" else inputs,
                                  meta=use == "concrete-meta", flips=flips)
        except _TraceFailed as failed:
            where = failed.where
            if _keep_whole(where, leaf_names):
                # every layer of that class runs the same forward: keep them all whole (one retry per class)
                same = [(n, m) for n, m in model.named_modules() if type(m) is type(where[1])
                        and n not in leaf_names and _standard_layout(m)]
                leaf_names.update(n for n, _ in same)
                auto.extend(f"'{n}' ({_type_name(m)})" for n, m in same)
                continue
            if use == "fx":
                first = failed.error
            if stages:
                use = stages.pop(0)
                continue
            if tracer == "auto":
                raise GraphError(f"{first} The concrete tracer (tried next: control flow specialised on the "
                                 f"example inputs) failed too: {failed.error}") from failed.error.__cause__
            raise failed.error from failed.error.__cause__
        break
    if used is not None:
        used.append(use.partition("-")[0])
    if auto:
        warnings.warn(f"prunekit: fx could not trace the forward of {', '.join(auto[:5])}"
                      f"{f' and {len(auto) - 5} more' if len(auto) > 5 else ''}: each is kept whole and analysed "
                      "as the convolution/linear layer it subclasses (its weights have that layout)", stacklevel=3)
    return graphs


def _keep_whole(where: tuple[str, nn.Module] | None, leaf_names: set[str] | frozenset[str]) -> bool:
    """Whether a module whose forward fx could not trace can be kept whole and analysed as its base layer."""
    return where is not None and isinstance(where[1], _STANDARD_LAYERS) and where[0] not in leaf_names \
        and not type(where[1]).__module__.startswith("torch.nn") and _standard_layout(where[1])


def _type_name(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


class _TraceFailed(Exception):
    def __init__(self, error: GraphError, where: tuple[str, nn.Module] | None):
        super().__init__(str(error))
        self.error, self.where = error, where


def _trace_modes(model: nn.Module, leaf_types: tuple[type, ...], leaf_names: frozenset[str],
                 inputs: Sequence[torch.Tensor] | None = None, meta: bool = False, flips: frozenset[str] = frozenset()
                 ) -> list[tuple[torch.fx.Graph, dict[str, Any], dict | None, bool]]:
    """Trace eval and train mode (fx, or concrete on ``inputs``: values on meta tensors if ``meta``, the truth
    value of the nodes named in ``flips`` taken the other way)."""
    graphs = []
    for training in (False, True):
        tracer = _Tracer(leaf_types, leaf_names) if inputs is None else _ConcreteTracer(inputs, leaf_types,
                                                                                        leaf_names, meta, flips)
        try:
            with _mode(model, training), scratch_buffers(model), _kept_attributes(model) as consts:
                graph = tracer.trace(model)
        except Exception as exc:  # noqa: BLE001 - fx raises many types
            if training and graphs and not _keep_whole(tracer.failed_in, leaf_names):
                warnings.warn(f"prunekit: the train-mode forward of {type(model).__name__} could not be traced "
                              f"({type(exc).__name__}: {exc}); only the eval-mode graph is analysed", stacklevel=4)
                break
            where = tracer.failed_in
            inside = f" inside module '{where[0]}' ({_type_name(where[1])})" if where is not None else ""
            line = _user_line(exc)
            at = f" at {line}" if line else ""
            error = GraphError(
                f"torch.fx{' (concrete)' if inputs is not None else ''} could not trace {type(model).__name__} "
                f"({'train' if training else 'eval'} mode)"
                f"{inside}{at}: {type(exc).__name__}: {exc}. prunekit needs an fx-traceable forward (no Python "
                "control flow on tensor values or shapes); declare the offending submodules leaves with "
                "leaf_modules=[type or qualified name] (their channels become unprunable).")
            error.__cause__ = exc
            raise _TraceFailed(error, where) from exc
        if graphs and str(graph) == str(graphs[0][0]):
            break
        graphs.append((graph, consts, getattr(tracer, "values", None), meta))
    return graphs


def _to_meta(v: Any) -> Any:
    return map_aggregate(v, lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x)


def _has_tensor(v: Any) -> bool:
    found = False

    def visit(x: Any) -> Any:
        nonlocal found
        found = found or isinstance(x, torch.Tensor)
        return x
    map_aggregate(v, visit)
    return found


class _MetaRunFailed(Exception):
    pass


_SAME_SHAPE = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm,
               nn.PReLU, nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
               nn.modules.dropout._DropoutNd)
# functions whose output has the input's shape: on meta tensors they are not run (F.batch_norm in a train-mode
# graph checks the batch statistics' sample count, which a batch-1 example with a 1x1 map fails)
_F_SAME_SHAPE = {torch.nn.functional.batch_norm, torch.nn.functional.instance_norm,
                 torch.nn.functional.group_norm, torch.nn.functional.layer_norm}
_F_CONV = {nn.Conv1d: torch.nn.functional.conv1d, nn.Conv2d: torch.nn.functional.conv2d,
           nn.Conv3d: torch.nn.functional.conv3d}


def _meta_call(module: nn.Module, name: str, args: tuple, kwargs: dict, cache: dict) -> Any:
    """Run a layer on meta tensors: shape-only shortcuts for common layers, else the layer with meta state."""
    x = args[0] if args else None
    if not kwargs and isinstance(x, torch.Tensor) and len(args) == 1:
        if isinstance(module, _SAME_SHAPE) and type(module).__module__.startswith("torch.nn."):
            return torch.empty_like(x)
        conv = _F_CONV.get(type(module))
        if conv is not None:
            w = torch.empty(module.weight.shape, device="meta", dtype=x.dtype)
            return conv(x, w, None, module.stride, module.padding, module.dilation, module.groups)
        if type(module) is nn.Linear:
            return x.new_empty((*x.shape[:-1], module.out_features))
    state = cache.get(name)
    if state is None:
        state = cache[name] = {k: v.to("meta") for k, v in [*module.named_parameters(), *module.named_buffers()]}
    if not state:
        return module(*args, **kwargs)
    return torch.func.functional_call(module, state, args, kwargs)


def _walk(b: Builder, graph: torch.fx.Graph, consts: dict[str, Any], inputs: Sequence[torch.Tensor],
          meta: bool, values: Mapping[torch.fx.Node, Any] | None = None, pin_outputs: bool = True) -> None:
    """Run the rules over ``graph``, computing every node's value (on meta tensors if ``meta``) unless the
    concrete tracer already holds it in ``values``."""
    model = b.model
    modules = dict(model.named_modules())
    meta_state: dict[str, dict[str, torch.Tensor]] = {}
    env: dict[torch.fx.Node, Any] = {}
    labels: dict[torch.fx.Node, Any] = {}
    n_in = 0
    for node in graph.nodes:
        op = node.op
        lab = None
        if op == "placeholder":
            if str(node.target).startswith("*"):  # *args / **kwargs of forward: nothing beyond example_inputs
                env[node] = {} if str(node.target).startswith("**") else ()
                labels[node] = None
                continue
            if n_in < len(inputs):
                value = inputs[n_in]
            elif node.args:
                value = node.args[0]
            else:
                raise GraphError(f"forward() takes more inputs than example_inputs gives: missing '{node.target}'")
            n_in += 1
            value = _to_meta(value) if meta else value
        elif op == "get_attr":
            target = node.target
            if target in consts:
                value = consts[target]
            else:
                owner, _, attr = target.rpartition(".")
                value = getattr(modules[owner] if owner else model, attr)
                if isinstance(value, torch.Tensor) and value.ndim:
                    b.param_owners[target] = (owner, attr)
                    lab = {d: b.param_dim_ids(target, d, s) for d, s in enumerate(value.shape) if s > 1} or None
            value = _to_meta(value) if meta else value
        elif op == "output":
            if pin_outputs:
                b.pin_labels(map_arg(node.args[0], lambda n: labels.get(n)), "model output")
            continue
        else:
            args = map_arg(node.args, env.__getitem__)
            kwargs = map_arg(node.kwargs, env.__getitem__)
            module = modules[node.target] if op == "call_module" else None
            known = values.get(node, _MISSING) if values is not None else _MISSING
            try:
                if known is not _MISSING:
                    value = known
                elif op == "call_module":
                    if meta:
                        value = _meta_call(module, node.target, args, kwargs, meta_state)
                    else:
                        value = module(*args, **kwargs)
                elif op == "call_function":
                    if meta and node.target in _F_SAME_SHAPE and args and isinstance(args[0], torch.Tensor):
                        value = torch.empty_like(args[0])
                    else:
                        value = node.target(*args, **kwargs)
                else:
                    value = getattr(args[0], node.target)(*args[1:], **kwargs)
            except Exception as exc:  # noqa: BLE001
                if meta:
                    raise _MetaRunFailed(str(exc)) from exc
                where = f" (module '{node.target}')" if op == "call_module" else ""
                raise GraphError(f"the model failed on example_inputs at node '{node.name}'{where}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            largs = map_arg(node.args, lambda n: labels.get(n))
            lkwargs = map_arg(node.kwargs, lambda n: labels.get(n))
            call = Call(node, module, node.target if op == "call_module" else "", args, kwargs, largs, lkwargs,
                        value)
            if _has_tensor(value):
                if op == "call_module":
                    rule = next((MODULE_RULES[t] for t in type(module).__mro__ if t in MODULE_RULES), unknown_rule)
                elif op == "call_function":
                    rule = function_rule_for(node.target)
                    if rule is None:
                        rule = _tuple_rule if _is_tuple_type(node.target) else unknown_rule
                else:
                    rule = METHOD_RULES.get(node.target, unknown_rule)
            else:
                rule = SIZE_RULES.get(node.target) if op != "call_module" else None
            if rule is not None:
                try:
                    lab = rule(b, call)
                except PrunekitError:
                    raise
                except Exception as exc:
                    exc.add_note(f"prunekit: while applying the channel rule of node '{node.name}' ({call.op_name()})")
                    raise
            if rule not in SIZE_AWARE and rule not in _SIZE_PASS:
                _pin_sizes(b, call, (largs, lkwargs))
            if op == "call_module" and args:
                b.add_record(node.target, module, args[0], value, largs[0] if largs else None, lab)
        env[node] = value
        labels[node] = lab


def _is_tuple_type(target: Any) -> bool:
    return isinstance(target, type) and issubclass(target, tuple)


def _tuple_rule(b: Builder, call: Call) -> tuple:
    """Building a (named) tuple of tensors, e.g. GoogLeNet's train-mode outputs: labels are just collected."""
    return tuple(call.largs) + tuple(call.lkwargs.values())


_SIZE_PASS = set(SIZE_RULES.values()) | {_tuple_rule}


def _pin_sizes(b: Builder, call: Call, labels: Any) -> None:
    """An op that does not understand sizes used a channel count computed from a tensor: pin those channels."""
    def visit(x: Any) -> Any:
        if isinstance(x, SizeRef) and x.ids is not None:
            b.pin(x.ids, f"channel count used by {call.op_name()} in '{call.where}'")
        return x
    map_aggregate(labels, visit)


def analyse(model: nn.Module, inputs: tuple[torch.Tensor, ...], leaf_types: tuple[type, ...] = (),
            leaf_names: Iterable[str] = (), tracer: str = "auto", pin_outputs: bool = True,
            approximate_statistics: bool = False) -> tuple[Core, str]:
    """Trace ``model`` (``tracer`` as in ``trace``) and run every rule; returns the class-level core of the
    dependency graph and the name of the tracer used. ``pin_outputs``: the channels of the model's outputs keep
    their count (False: they may shrink too). ``approximate_statistics``: a mean/var over the channels is
    prunable (marked inexact) instead of pinned."""
    used: list[str] = []
    graphs = trace(model, leaf_types, leaf_names, tracer=tracer, inputs=inputs, used=used)
    concrete = graphs[0][2] is not None
    sources = _AttributeSources(lambda: trace(model, leaf_types, leaf_names, inputs=inputs,
                                              tracer="concrete" if concrete else "fx")[0][0])
    opts = _WalkOptions(pin_outputs, approximate_statistics, sources)
    real = False
    try:
        core, branches = _analyse_graphs(model, inputs, graphs, opts)
    except _MetaRunFailed:  # a concrete graph traced on meta values has an op meta tensors cannot run
        graphs, real = trace(model, leaf_types, leaf_names, tracer="concrete", inputs=inputs, real_values=True), True
        core, branches = _analyse_graphs(model, inputs, graphs, opts)
        used = ["concrete"]
    if branches and graphs[0][2] is not None:
        # A channel count decides a branch (``if self.shape != x.shape: <recompute>``, the shape cached by an
        # earlier call). Trace the other side of every such decision; if both paths compute the same outputs on
        # the example inputs (a cache hit and its recomputation), analyse them together: whichever the pruned
        # model takes, its constraints hold and its function is the same. Otherwise (or if the other side
        # cannot be traced) the counts stay pinned.
        flips = frozenset(branches)
        try:
            other = trace(model, leaf_types, leaf_names, tracer="concrete", inputs=inputs, real_values=real,
                          flips=flips)
            if _same_outputs(model, graphs[0], other[0], inputs):
                core, _ = _analyse(model, inputs, graphs + other, opts, flips)
        except (GraphError, _MetaRunFailed):
            pass
    return core, used[0]


@dataclass(frozen=True)
class _WalkOptions:
    """How the rules are run: ``pin_outputs`` (the model's outputs keep their channel counts),
    ``approximate_statistics`` (a mean/var over channels is prunable, inexact), ``sources`` (the split-size
    attribute check)."""

    pin_outputs: bool
    approximate_statistics: bool
    sources: "_AttributeSources"


class _AttributeSources:
    """Whether a literal of the traced code comes from a module attribute: trace again (eval mode) with the
    attribute changed and see whether the literal at the same node follows (cached per question)."""

    _KEYS = ("split_size_or_sections", "split_size", "split_sizes")

    def __init__(self, retrace: Callable[[], torch.fx.Graph]):
        self.retrace = retrace
        self.known: dict[tuple[int, str, str], bool] = {}

    def __call__(self, module: nn.Module, attr: str, node_name: str, value: Any) -> bool:
        key = (id(module), attr, node_name)
        if key not in self.known:
            self.known[key] = self._check(module, attr, node_name, value)
        return self.known[key]

    def _check(self, module: nn.Module, attr: str, node_name: str, value: Any) -> bool:
        if isinstance(value, int):
            probe: Any = value + 1
        elif isinstance(value, (list, tuple)) and value:
            probe = type(value)([*value[:-1], value[-1] + 1])
        else:
            return False
        old = vars(module)[attr]
        setattr(module, attr, probe)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = self.retrace()
        except Exception:  # noqa: BLE001 - cannot tell: not confirmed
            return False
        finally:
            setattr(module, attr, old)
        node = next((n for n in graph.nodes if n.name == node_name), None)
        if node is None:
            return False
        got = node.args[1] if len(node.args) > 1 else next((node.kwargs[k] for k in self._KEYS if k in node.kwargs),
                                                           None)
        same = list(got) == list(probe) if isinstance(probe, (list, tuple)) and isinstance(got, (list, tuple)) \
            else got == probe
        return bool(same)


def _same_outputs(model: nn.Module, a: tuple, b: tuple, inputs: tuple[torch.Tensor, ...]) -> bool:
    """Whether two traced eval-mode graphs of ``model`` give the same outputs on ``inputs`` (relative error
    below 1e-5 on every floating output, equal otherwise)."""
    def run(graph: torch.fx.Graph, consts: dict[str, Any]) -> list:
        for k, v in consts.items():
            setattr(model, k, v)
        try:
            out = torch.fx.GraphModule(model, graph)(*inputs)
        finally:
            for k in consts:
                delattr(model, k)
        flat: list = []
        map_aggregate(out, lambda x: flat.append(x) if isinstance(x, torch.Tensor) else x)
        return flat
    try:
        with _mode(model, False), torch.no_grad(), scratch_buffers(model), _kept_attributes(model):
            ya, yb = run(a[0], a[1]), run(b[0], b[1])
    except Exception:  # noqa: BLE001 - cannot tell: not the same
        return False
    if len(ya) != len(yb):
        return False
    for u, v in zip(ya, yb):
        if u.shape != v.shape or u.dtype != v.dtype:
            return False
        if not u.is_floating_point():
            if not torch.equal(u, v):
                return False
        elif float((u.double() - v.double()).norm()) > 1e-5 * float(u.double().norm()) + 1e-12:
            return False
    return True


def _analyse_graphs(model: nn.Module, inputs: tuple[torch.Tensor, ...], graphs: list, opts: "_WalkOptions"
                    ) -> tuple[Core, list[str]]:
    try:
        return _analyse(model, inputs, graphs, opts)
    except GraphError as exc:
        if len(graphs) == 1:
            raise
        warnings.warn(f"prunekit: the train-mode graph of {type(model).__name__} does not run on example_inputs "
                      f"({exc}); only the eval-mode graph is analysed (train-only branches such as auxiliary "
                      "heads may break after pruning: give example_inputs of the training size)", stacklevel=3)
        return _analyse(model, inputs, graphs[:1], opts)


def _analyse(model: nn.Module, inputs: tuple[torch.Tensor, ...], graphs: list, opts: "_WalkOptions",
             analysed_branches: frozenset[str] = frozenset()) -> tuple[Core, list[str]]:
    """The core of ``graphs`` walked together, and the branch decisions on channel counts that pinned."""
    batch = int(inputs[0].shape[0]) if inputs[0].ndim else 1
    concrete = graphs[0][2] is not None  # values known: walk once, computing only what the tracer could not
    for meta in (True, False):
        b = Builder(model, batch)
        b.analysed_branches = analysed_branches
        b.attribute_feeds = opts.sources
        b.approximate_statistics = opts.approximate_statistics
        try:
            with _mode(model, False), torch.no_grad(), scratch_buffers(model):
                for i, (graph, consts, values, meta_values) in enumerate(graphs):
                    b.record_layers = i == 0
                    _walk(b, graph, consts, inputs, meta_values if concrete else meta, values, opts.pin_outputs)
        except _MetaRunFailed:
            if concrete:
                raise
            continue
        return b.finalize(), b.branches
    raise AssertionError("unreachable")
