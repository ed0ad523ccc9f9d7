"""Per-op channel rules (see ``registry``): layers in ``modules``, functions and Tensor methods in ``functions``."""

from prunekit.graph.rules.registry import (FUNCTION_RULES, METHOD_RULES, MODULE_RULES, SIZE_AWARE, Call, SizeRef,
                                          function_rule, method_rule, module_rule, unknown_rule)
from prunekit.graph.rules import functions as _functions  # noqa: F401  (registers)
from prunekit.graph.rules.functions import SIZE_RULES
from prunekit.graph.rules import modules as _modules  # noqa: F401  (registers)

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "MODULE_RULES", "SIZE_AWARE", "SIZE_RULES", "Call", "SizeRef", "function_rule", "method_rule", "module_rule",
           "unknown_rule"]
