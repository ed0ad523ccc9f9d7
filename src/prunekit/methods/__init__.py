"""The pruning methods, each a small orchestrator over the graph, importance, cost and train layers."""

from prunekit.methods.pipeline import Pipeline, StageRecord
from prunekit.methods.result import PruneResult
from prunekit.methods.slimming import NetworkSlimming, SlimmingConfig, slim

__all__ = ["Pipeline", "StageRecord", "PruneResult", "NetworkSlimming", "SlimmingConfig", "slim"]
