"""Planning: what to keep, above the graph, importance and cost layers.

- ``GlobalRanking``: one ranking of channels over groups, per-group floors (``channel_floors``: a fraction
  *kept* plus ``min_channels``), budgets as a channel count, a ratio, or a cost-model target
  (``smallest(fits)``, bisection); ``largest_width``: NetAdapt's per-group solve;
- ``Widths``: a validated width configuration; ``plan``/``apply_widths``/``prune``: the one-call entry points
  that also resolve importance names.
"""

from prunekit.planning.prune import apply_widths, plan, prune, uniform_widths
from prunekit.planning.ranking import GlobalRanking, RankedPlan, channel_floors, largest_width
from prunekit.planning.widths import Widths

__all__ = ["GlobalRanking", "RankedPlan", "Widths", "apply_widths", "channel_floors", "largest_width", "plan",
           "prune", "uniform_widths"]
