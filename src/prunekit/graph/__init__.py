"""The channel dependency graph, surgery and the ``prune`` API.

    graph = DependencyGraph(model, example_inputs)     # trace -> ChannelGroups
    graph.groups, graph.macs(widths), graph.params(widths), graph.coverage()
    plan = graph.plan({name: width}, keep="prefix" | scores | scorer)   # a PruningPlan: pure data
    graph.apply_plan(plan)                               # physical, in place (plan.materialize(model): a copy)
    graph.prune_groups({name: kept_indices})            # the same from explicit indices
    (prunekit.planning.prune / apply_widths resolve importance names such as "l1" on top of this)

How channel flow is computed (modules, top to bottom):

- ``trace``: torch.fx symbolic trace (eval mode, plus train mode when it differs), then one walk over the graph
  on meta tensors (shapes only) applying a *rule* per op;
- ``rules``: per op type (layer class, function, Tensor method) how channel ids flow: a conv's output gets fresh
  ids (a producer), BN/activations pass them, an add ties the operands' ids, a concat concatenates them, a
  reshape repeats/splits them, an op without a rule pins them (with a warning); sizes read from tensors
  (``x.size(1)``) carry their channel ids too (``SizeRef``), so reshapes sized by them stay consistent;
- ``builder``: union-find over the ties -> channel *classes*; classes made by the same producer -> *groups*;
- ``dependency``: ``DependencyGraph`` / ``ChannelGroup`` (``group``), analytic cost (``analytic``), and
  surgery (``surgery``: one handler per layer type) that slices every member of the removed classes.
"""

from prunekit.graph.api import keep_indices, resolve_width, select_top
from prunekit.graph.dependency import Coverage, DependencyGraph, LayerSignature
from prunekit.graph.group import ChannelGroup, GroupMember, Member
from prunekit.graph.plan import LayerResize, PruningPlan, TensorSlice
from prunekit.graph.surgery import LayerSurgery, register_surgery
from prunekit.graph.trace import GraphError

__all__ = ["ChannelGroup", "Coverage", "DependencyGraph", "GraphError", "LayerSignature", "GroupMember", "LayerResize",
           "LayerSurgery",
           "Member", "PruningPlan", "TensorSlice", "keep_indices", "register_surgery", "resolve_width", "select_top"]
