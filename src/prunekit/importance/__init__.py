"""Channel importance: one score per channel of a ChannelGroup, aggregated over the group's members.

``get_importance("l1")`` returns a scorer; ``scorer(graph, group)`` -> float tensor ``[group.size]`` (higher =
more important). Registered: ``l1``, ``l2`` (magnitude of the producing conv/linear weights), ``bn_scale``
(``|gamma|`` of the group's BatchNorms), ``random``. Methods add their own with ``@register_importance``.
"""

from prunekit.importance.base import (BNScaleImportance, Importance, MagnitudeImportance, RandomImportance,
                                      get_importance, list_importances, register_importance)

__all__ = ["BNScaleImportance", "Importance", "MagnitudeImportance", "RandomImportance", "get_importance",
           "list_importances", "register_importance"]
