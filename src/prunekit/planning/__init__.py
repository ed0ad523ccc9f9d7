"""Planning: what to keep, above the graph, importance and cost layers.

- ``GlobalRanking``: one ranking of channels over groups, per-group floors (``channel_floors``: a fraction
  *kept* plus ``min_channels``), budgets as a channel count, a ratio, or a cost-model target
  (``smallest(fits)``, bisection); ``largest_width``: NetAdapt's per-group solve;
- ``Widths``: a validated width configuration; ``plan``/``apply_widths``/``prune``: the one-call entry points
  that also resolve importance names;
- ``WidthSpace`` / ``EvolutionarySearch`` / ``random_search``: width configurations as genes over width levels and
  MetaPruning's evolutionary search of them inside a cost window (resumable).
"""

from prunekit.planning.prune import apply_widths, plan, prune, uniform_widths
from prunekit.planning.ranking import GlobalRanking, RankedPlan, channel_floors, largest_width
from prunekit.planning.search import EvolutionConfig, EvolutionarySearch, WidthSpace, random_search, width_levels
from prunekit.planning.widths import Widths

__all__ = ["EvolutionConfig", "EvolutionarySearch", "GlobalRanking", "RankedPlan", "WidthSpace", "Widths",
           "apply_widths", "channel_floors", "largest_width", "plan", "prune", "random_search", "uniform_widths",
           "width_levels"]
