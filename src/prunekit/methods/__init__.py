"""The pruning methods: each a config dataclass plus its paper's loop, registered with ``@register_method``.

``list_methods()`` → the registered names; ``get_method(name)`` → the class; ``Method.run(model, data, out)``
runs one (the shared harness is :class:`~prunekit.methods.base.MethodRun`).
"""

from prunekit.methods.base import Method, MethodRun, RunInfo, get_method, list_methods, register_method
from prunekit.methods.magnitude import MagnitudeConfig, UniformL1, UniformL2  # registration order = --list order
from prunekit.methods.slimming import NetworkSlimming, SlimmingConfig, slim  # noqa: I001
from prunekit.methods.gate_decorator import GateDecorator, GateDecoratorConfig
from prunekit.methods.gates import add_gates, fold_gates
from prunekit.methods.result import PruneResult
from prunekit.methods.netadapt import NetAdapt, NetAdaptConfig
from prunekit.methods.metapruning import MetaPruning, MetaPruningConfig
from prunekit.methods.condensenet import CondenseNetConfig, CondenseNetMethod, convert as condense_convert

__all__ = ["Method", "MethodRun", "RunInfo", "get_method", "list_methods", "register_method", "PruneResult",
           "GateDecorator", "GateDecoratorConfig", "add_gates", "fold_gates", "MagnitudeConfig", "UniformL1",
           "UniformL2", "NetworkSlimming", "SlimmingConfig", "slim", "NetAdapt", "NetAdaptConfig",
           "CondenseNetConfig", "CondenseNetMethod", "condense_convert", "MetaPruning", "MetaPruningConfig"]
