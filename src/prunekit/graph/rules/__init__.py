"""Per-op channel rules (see ``registry``): layers in ``modules``; functions and Tensor methods by op family in
``elementwise``, ``reductions``, ``spatial``, ``shape``, ``concat_split``, ``indexing``, ``functional_layers``,
``factories``, ``sizes`` (the provenance of Python ints computed from sizes) and ``control_flow``
(comparisons of sizes)."""

from prunekit.graph.rules.registry import (FUNCTION_RULES, METHOD_RULES, MODULE_RULES, SIZE_AWARE, Call, SizeRef,
                                          function_rule, method_rule, module_rule, unknown_rule)
# Registration order matters where two families key the same op (a later one wins): keep this order.
from prunekit.graph.rules import elementwise as _elementwise  # noqa: F401  (registers)
from prunekit.graph.rules import reductions as _reductions  # noqa: F401  (registers)
from prunekit.graph.rules import spatial as _spatial  # noqa: F401  (registers)
from prunekit.graph.rules import shape as _shape  # noqa: F401  (registers)
from prunekit.graph.rules import concat_split as _concat_split  # noqa: F401  (registers)
from prunekit.graph.rules import indexing as _indexing  # noqa: F401  (registers)
from prunekit.graph.rules import functional_layers as _functional_layers  # noqa: F401  (registers)
from prunekit.graph.rules import factories as _factories  # noqa: F401  (registers)
from prunekit.graph.rules.sizes import SIZE_RULES
from prunekit.graph.rules import control_flow as _control_flow  # noqa: F401  (registers)
from prunekit.graph.rules import modules as _modules  # noqa: F401  (registers)

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "MODULE_RULES", "SIZE_AWARE", "SIZE_RULES", "Call", "SizeRef",
           "function_rule", "method_rule", "module_rule", "unknown_rule"]
