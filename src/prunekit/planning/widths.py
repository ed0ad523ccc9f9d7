"""Width configurations as values: ``Widths``, a validated ``{group name: width}`` for one graph.

MetaPruning's encoding, NetAdapt's state and a pruned model's architecture are all one of these; a cost model
evaluates it (``cost(widths) -> float``) and ``graph.plan(widths)`` turns it into a pruning.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph


class Widths(Mapping[str, int]):
    """An immutable, validated width per group of ``graph`` (complete: groups not given keep their size).

    Every name must be a group of the graph; every width an integer in ``[group.min_width, group.size]``; an
    unprunable group only its own size. Equality and hashing follow the mapping (usable as a cache key).
    """

    __slots__ = ("_w", "_key")

    def __init__(self, graph: DependencyGraph, widths: Mapping[str, int] | None = None):
        full = graph.widths()
        for name, w in (widths or {}).items():
            g = graph.group(name)  # unknown names raise with close matches
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w != int(w):
                raise ConfigError(f"width of group {name!r} must be an integer, got {w!r}")
            w = int(w)
            if w != g.size and not g.prunable:
                raise ConfigError(f"group {name!r} is not prunable ({g.reason}); only width {g.size} is allowed")
            if not g.min_width <= w <= g.size:
                raise ConfigError(f"width {w} for group {name!r} is outside [{g.min_width}, {g.size}]")
            full[name] = w
        self._w = full
        self._key = tuple(sorted(full.items()))

    def __getitem__(self, name: str) -> int:
        return self._w[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._w)

    def __len__(self) -> int:
        return len(self._w)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Widths):
            return self._key == other._key
        return isinstance(other, Mapping) and dict(self._w) == dict(other)

    def __repr__(self) -> str:
        return f"Widths({self._w!r})"

    def replace(self, graph: DependencyGraph, **changes: int) -> "Widths":
        """A copy with some widths changed (validated against ``graph``)."""
        return Widths(graph, {**self._w, **changes})

    def changed(self, graph: DependencyGraph) -> dict[str, int]:
        """Only the groups narrower than in ``graph`` now."""
        sizes = graph.widths()
        return {k: v for k, v in self._w.items() if v != sizes[k]}
