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
the walk restarts with the real inputs in eval mode under ``no_grad`` (nothing in the model is modified).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

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
    def __init__(self, leaf_types: tuple[type, ...]):
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (bool(self.leaf_types) and isinstance(m, self.leaf_types)) or super().is_leaf_module(m, qualname)


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def trace(model: nn.Module, leaf_types: tuple[type, ...] = ()) -> list[tuple[torch.fx.Graph, dict[str, Any]]]:
    """fx graphs of ``model``'s eval-mode forward and, if it differs, its train-mode forward.

    Returns ``[(graph, constants)]``: ``constants`` holds the tensor literals fx lifted out of the forward (fx
    parks them on the traced module; they are taken back off the user's model here).
    """
    graphs = []
    for training in (False, True):
        tracer = _Tracer(leaf_types)
        before = set(vars(model))
        try:
            with _mode(model, training):
                graph = tracer.trace(model)
        except Exception as exc:  # noqa: BLE001 - fx raises many types
            if training and graphs:
                import warnings
                warnings.warn(f"prunekit: the train-mode forward of {type(model).__name__} could not be traced "
                              f"({type(exc).__name__}: {exc}); only the eval-mode graph is analysed", stacklevel=3)
                break
            raise GraphError(
                f"torch.fx could not trace {type(model).__name__} ({'train' if training else 'eval'} mode): "
                f"{type(exc).__name__}: {exc}. prunekit needs an fx-traceable forward (no Python control flow on "
                "tensor values); declare the offending submodule types as leaves with "
                "DependencyGraph(..., leaf_modules=[...]) (their channels become unprunable).") from exc
        finally:
            added = set(vars(model)) - before
        consts = {}
        for attr in added:
            consts[attr] = getattr(model, attr)
            delattr(model, attr)
        if graphs and str(graph) == str(graphs[0][0]):
            break
        graphs.append((graph, consts))
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
          meta: bool) -> None:
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
            out_labels = map_arg(node.args[0], lambda n: labels.get(n))
            b.pin_labels(out_labels, "model output")
            continue
        else:
            args = map_arg(node.args, env.__getitem__)
            kwargs = map_arg(node.kwargs, env.__getitem__)
            module = None
            try:
                if op == "call_module":
                    module = modules[node.target]
                    if meta:
                        value = _meta_call(module, node.target, args, kwargs, meta_state)
                    else:
                        value = module(*args, **kwargs)
                elif op == "call_function":
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


def analyse(model: nn.Module, inputs: tuple[torch.Tensor, ...], leaf_types: tuple[type, ...] = ()) -> Core:
    """Trace ``model`` and run every rule; returns the class-level core of the dependency graph."""
    graphs = trace(model, leaf_types)
    try:
        return _analyse(model, inputs, graphs)
    except GraphError as exc:
        if len(graphs) == 1:
            raise
        import warnings
        warnings.warn(f"prunekit: the train-mode graph of {type(model).__name__} does not run on example_inputs "
                      f"({exc}); only the eval-mode graph is analysed (train-only branches such as auxiliary "
                      "heads may break after pruning: give example_inputs of the training size)", stacklevel=3)
        return _analyse(model, inputs, graphs[:1])


def _analyse(model: nn.Module, inputs: tuple[torch.Tensor, ...], graphs: list) -> Core:
    batch = int(inputs[0].shape[0]) if inputs[0].ndim else 1
    for meta in (True, False):
        b = Builder(model, batch)
        try:
            with _mode(model, False), torch.no_grad():
                for i, (graph, consts) in enumerate(graphs):
                    b.record_layers = i == 0
                    _walk(b, graph, consts, inputs, meta)
        except _MetaRunFailed:
            continue
        return b.finalize()
    raise AssertionError("unreachable")
