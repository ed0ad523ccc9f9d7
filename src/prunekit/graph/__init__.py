"""The channel dependency graph, surgery and the ``prune`` API.

    graph = DependencyGraph(model, example_inputs)     # trace -> ChannelGroups
    graph.groups, graph.macs(widths), graph.params(widths), graph.coverage()
    graph.prune_groups({name: kept_indices})            # physical, in place
    apply_widths(graph, {name: width}, importance="l1")
    prune(model, example_inputs, ratio=0.5)             # all of it in one call
"""

from prunekit.graph.api import apply_widths, prune, resolve_width, select_top
from prunekit.graph.dependency import Coverage, DependencyGraph
from prunekit.graph.group import ChannelGroup, GroupMember, Member
from prunekit.graph.surgery import LayerSurgery, register_surgery
from prunekit.graph.trace import GraphError

__all__ = ["ChannelGroup", "Coverage", "DependencyGraph", "GraphError", "GroupMember", "LayerSurgery", "Member",
           "apply_widths", "prune", "register_surgery", "resolve_width", "select_top"]
