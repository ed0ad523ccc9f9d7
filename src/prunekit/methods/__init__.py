"""The pruning methods, each a small orchestrator over the graph, importance, cost and train layers."""

from prunekit.methods.pipeline import Pipeline, StageRecord
from prunekit.methods.result import PruneResult
from prunekit.methods.gate_decorator import GateDecorator, GateDecoratorConfig
from prunekit.methods.gates import add_gates, fold_gates
from prunekit.methods.slimming import NetworkSlimming, SlimmingConfig, slim

__all__ = ["Pipeline", "StageRecord", "PruneResult", "GateDecorator", "GateDecoratorConfig", "add_gates",
           "fold_gates", "NetworkSlimming", "SlimmingConfig", "slim"]
