"""Width-configuration search spaces and MetaPruning's evolutionary search, under a cost window.

:class:`WidthSpace` encodes a configuration as one *gene* per searchable group — the index of a width level
(default 31 levels 0.10, 0.13, ..., 1.00 of the group's size; channels ``floor(size · level)``, rounded to
``round_to``, at least ``min_channels``). Groups tied across residual adds are one group, hence one gene, as
upstream's per-stage gene. :class:`EvolutionarySearch` is upstream's loop: a population of candidates inside the
window ``[low, high]`` of a cost model; each iteration keeps the best ``select`` of all candidates seen, draws
``mutations`` children from the top ``parents`` (each gene re-drawn with probability ``mutation_prob`` among the
other levels) and ``crossovers`` (uniform mask over two distinct parents), rejects children that leave the window
or were seen before, and fills the population with random candidates of the window. Fitness (higher is better) is
computed once per candidate and cached; every iteration's state is written to a JSON snapshot, so a killed search
resumes and ends with the same population. Draws come from a generator seeded by ``(seed, iteration, stream)``,
so a resumed iteration repeats the draws of the interrupted one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from prunekit.errors import ConfigError, check_range

Genes = tuple[int, ...]


def width_levels(low: float = 0.10, high: float = 1.00, step: float = 0.03) -> tuple[float, ...]:
    """``low, low+step, ..., high`` (upstream: 0.10..1.00 step 0.03, 31 levels), rounded to 1e-6."""
    check_range("levels low", low, 0.0, 1.0, low_open=True)
    check_range("levels high", high, low, 1.0)
    check_range("levels step", step, 0.0, 1.0, low_open=True)
    n = int(math.floor((high - low) / step + 1e-6)) + 1
    return tuple(round(low + i * step, 6) for i in range(n))


@dataclass(frozen=True)
class WidthSpace:
    """Genes ↔ widths: ``groups`` (searchable group names) with their full ``sizes``; ``levels`` (fractions of
    a group kept); ``fixed`` ({group: width} held constant, e.g. the classifier's input at full width);
    ``round_to`` / ``min_channels``: the channel grid and floor."""

    groups: tuple[str, ...]
    sizes: tuple[int, ...]
    levels: tuple[float, ...] = field(default_factory=width_levels)
    fixed: Mapping[str, int] = field(default_factory=dict)
    round_to: int = 1
    min_channels: int = 1

    def __post_init__(self) -> None:
        if len(self.groups) != len(self.sizes):
            raise ConfigError("WidthSpace: groups and sizes differ in length")
        if not self.groups:
            raise ConfigError("WidthSpace: no searchable group (every prunable group is fixed)")
        if not self.levels:
            raise ConfigError("WidthSpace: no width level")

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def channels(self, size: int, level: float) -> int:
        """Channels of a group of ``size`` at ``level``: ``floor(size·level)`` on the ``round_to`` grid."""
        w = int(math.floor(size * level + 1e-9))
        if self.round_to > 1:
            w = int(math.floor(w / self.round_to + 0.5)) * self.round_to
        w = max(w, self.min_channels, self.round_to if self.round_to > 1 else 1, 1)
        return min(w, size)

    def widths(self, genes: Sequence[int]) -> dict[str, int]:
        """{group: channels} of ``genes`` (fixed groups included)."""
        if len(genes) != len(self.groups):
            raise ConfigError(f"a candidate has {len(genes)} genes; the space has {len(self.groups)} groups")
        out = {g: self.channels(s, self.levels[int(i)]) for g, s, i in zip(self.groups, self.sizes, genes)}
        out.update(self.fixed)
        return out

    def uniform(self, level: float) -> dict[str, int]:
        """{group: channels} with every searchable group at ``level`` (any fraction, not only a grid level)."""
        out = {g: self.channels(s, level) for g, s in zip(self.groups, self.sizes)}
        out.update(self.fixed)
        return out

    def random(self, rng: np.random.Generator, level_range: tuple[int, int] | None = None) -> Genes:
        """Genes drawn uniformly over the levels (or over ``level_range = [lo, hi)`` of level indices)."""
        lo, hi = level_range or (0, self.num_levels)
        return tuple(int(v) for v in rng.integers(lo, hi, size=len(self.groups)))

    def mutate(self, genes: Genes, prob: float, rng: np.random.Generator) -> Genes:
        """Each gene re-drawn with probability ``prob``, uniformly among the *other* levels."""
        out = list(genes)
        for i in range(len(out)):
            if rng.random() < prob:
                out[i] = int((out[i] + rng.integers(1, self.num_levels)) % self.num_levels)
        return tuple(out)

    @staticmethod
    def crossover(a: Genes, b: Genes, rng: np.random.Generator) -> Genes:
        """Each gene from ``a`` or ``b`` with probability 1/2 (uniform crossover)."""
        mask = rng.random(len(a)) < 0.5
        return tuple(int(x if m else y) for x, y, m in zip(a, b, mask))


@dataclass
class EvolutionConfig:
    """Upstream's defaults (MetaPruning ``search.py``): ``population`` 50, ``select`` 50 kept, ``parents`` top 10,
    ``mutations`` 25 (gene re-drawn with ``mutation_prob`` 0.1), ``crossovers`` 25, ``iterations`` 20.
    ``random_level_range``: level indices ``[lo, hi)`` random candidates draw from (upstream's ResNet uses
    [12, 24) to hit its window more often; None: all levels). ``max_draws``: random draws allowed per candidate
    before the window is declared unreachable."""

    population: int = 50
    select: int = 50
    parents: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    iterations: int = 20
    random_level_range: tuple[int, int] | None = None
    max_draws: int = 20000

    def __post_init__(self) -> None:
        check_range("population", self.population, 1)
        check_range("select", self.select, 1)
        check_range("parents", self.parents, 1)
        check_range("mutations", self.mutations, 0)
        check_range("crossovers", self.crossovers, 0)
        check_range("mutation_prob", self.mutation_prob, 0.0, 1.0)
        check_range("iterations", self.iterations, 1)
        if self.mutations + self.crossovers > self.population:
            raise ConfigError(f"mutations + crossovers = {self.mutations + self.crossovers} exceed population="
                              f"{self.population}")


Fitness = Callable[[list[Genes]], list[float]]


class EvolutionarySearch:
    """MetaPruning's evolutionary search over ``space`` (see the module docstring).

    ``cost(widths) -> float`` (e.g. analytic MACs) must lie in ``window = (low, high)``; ``fitness(candidates)``
    scores a list of candidates (higher is better; called once per iteration with all new candidates, so it can
    batch or split them across processes). ``snapshot``: JSON file written after every iteration (and read on
    start to resume). ``seed``: all draws. ``log``: progress lines.
    """

    def __init__(self, space: WidthSpace, cost: Callable[[Mapping[str, int]], float], window: tuple[float, float],
                 fitness: Fitness, config: EvolutionConfig | None = None, *, seed: int = 0,
                 snapshot: str | Path | None = None, log: Callable[[str], None] | None = None,
                 progress: Callable[[int, int], None] | None = None):
        low, high = window
        if not low <= high:
            raise ConfigError(f"search window ({low}, {high}): low must not exceed high")
        self.space, self.cost, self.window, self.fitness = space, cost, (float(low), float(high)), fitness
        self.config = config or EvolutionConfig()
        self.seed = int(seed)
        self.snapshot = Path(snapshot) if snapshot is not None else None
        self.log = log or (lambda m: None)
        self.progress = progress
        self.cache: dict[Genes, float] = {}
        self.costs: dict[Genes, float] = {}
        self.history: list[dict[str, float]] = []
        self.top: list[Genes] = []
        self.candidates: list[Genes] = []
        self.iteration = 0

    # ---- pieces ---------------------------------------------------------------------------------------------------
    def rng(self, iteration: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, iteration, stream])

    def in_window(self, genes: Genes) -> bool:
        if genes not in self.costs:
            self.costs[genes] = float(self.cost(self.space.widths(genes)))
        low, high = self.window
        return low <= self.costs[genes] <= high

    def random_candidates(self, n: int, rng: np.random.Generator, exclude: Iterable[Genes] = ()) -> list[Genes]:
        """Exactly ``n`` new candidates in the window, drawn uniformly (rejection sampling)."""
        seen = set(exclude) | set(self.cache)
        out: list[Genes] = []
        draws = 0
        while len(out) < n:
            if draws >= self.config.max_draws * max(1, n):
                raise ConfigError(
                    f"no random width configuration fell in the cost window [{self.window[0]:.4g}, "
                    f"{self.window[1]:.4g}] after {draws} draws: widen the window, or change the width levels or "
                    "random_level_range")
            draws += 1
            g = self.space.random(rng, self.config.random_level_range)
            if g not in seen and self.in_window(g):
                seen.add(g)
                out.append(g)
        return out

    def mutation(self, rng: np.random.Generator, seen: set[Genes]) -> list[Genes]:
        c, out = self.config, []
        parents = self.top[:c.parents]
        for _ in range(10 * c.mutations):
            if len(out) >= c.mutations or not parents:
                break
            child = self.space.mutate(parents[int(rng.integers(len(parents)))], c.mutation_prob, rng)
            if child not in seen and self.in_window(child):
                seen.add(child)
                out.append(child)
        return out

    def crossover(self, rng: np.random.Generator, seen: set[Genes]) -> list[Genes]:
        c, out = self.config, []
        parents = self.top[:c.parents]
        if len(parents) < 2:
            return out
        for _ in range(10 * c.crossovers):
            if len(out) >= c.crossovers:
                break
            i, j = rng.choice(len(parents), size=2, replace=False)
            child = self.space.crossover(parents[int(i)], parents[int(j)], rng)
            if child not in seen and self.in_window(child):
                seen.add(child)
                out.append(child)
        return out

    def next_population(self, iteration: int) -> list[Genes]:
        """The candidates of ``iteration``: random at 0; else mutations + crossovers of the top, then random."""
        n = self.config.population
        if iteration == 0:
            return self.random_candidates(n, self.rng(0, 0))
        seen = set(self.cache)
        kids = self.mutation(self.rng(iteration, 1), seen) + self.crossover(self.rng(iteration, 2), seen)
        return kids + self.random_candidates(n - len(kids), self.rng(iteration, 3), exclude=seen)

    # ---- the loop -------------------------------------------------------------------------------------------------
    def run(self) -> Genes:
        """Search for ``config.iterations`` iterations (resuming from the snapshot if any); returns the best."""
        self._load()
        while self.iteration < self.config.iterations:
            it = self.iteration
            if not self.candidates:
                self.candidates = self.next_population(it)
            new = [g for g in self.candidates if g not in self.cache]
            if new:
                for g, f in zip(new, self.fitness(new)):
                    self.cache[g] = float(f)
            pool = list(dict.fromkeys(self.top + self.candidates))
            pool.sort(key=lambda g: (-self.cache[g], g))
            self.top = pool[:self.config.select]
            scores = [self.cache[g] for g in self.candidates]
            self.history.append({"iteration": it, "best": self.cache[self.top[0]], "mean": float(np.mean(scores)),
                                 "population_best": max(scores), "evaluated": len(self.cache)})
            self.log(f"search iteration {it + 1}/{self.config.iterations}: best {self.cache[self.top[0]]:.2f}, "
                     f"population mean {np.mean(scores):.2f} ({len(self.cache)} evaluated)")
            self.iteration = it + 1
            self.candidates = []
            self._save()
            if self.progress is not None:
                self.progress(self.iteration, self.config.iterations)
        return self.top[0]

    @property
    def best(self) -> Genes:
        return self.top[0]

    # ---- snapshot -------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": "prunekit.evolution/1", "seed": self.seed, "window": list(self.window),
                "groups": list(self.space.groups), "iteration": self.iteration,
                "top": [list(g) for g in self.top], "history": self.history,
                "cache": [[list(g), f] for g, f in self.cache.items()]}

    def _save(self) -> None:
        if self.snapshot is None:
            return
        self.snapshot.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.snapshot.with_suffix(self.snapshot.suffix + ".tmp")
        tmp.write_text(json.dumps(self.state()))
        os.replace(tmp, self.snapshot)

    def _load(self) -> None:
        if self.snapshot is None or not self.snapshot.exists():
            return
        try:
            s = json.loads(self.snapshot.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"search snapshot {self.snapshot} is unreadable ({e}); delete it to start over")
        if s.get("groups") != list(self.space.groups) or s.get("seed") != self.seed or \
                [float(v) for v in s.get("window", [])] != list(self.window):
            raise ConfigError(f"search snapshot {self.snapshot} belongs to another search (groups, seed or window "
                              "differ); delete it or use another output folder")
        self.iteration = int(s["iteration"])
        self.top = [tuple(g) for g in s["top"]]
        self.history = list(s["history"])
        self.cache = {tuple(g): float(f) for g, f in s["cache"]}
        self.log(f"search: resuming after iteration {self.iteration} ({len(self.cache)} candidates evaluated)")


def random_search(space: WidthSpace, cost: Callable[[Mapping[str, int]], float], window: tuple[float, float],
                  fitness: Fitness, count: int, *, seed: int = 0, batch: int = 50,
                  level_range: tuple[int, int] | None = None) -> list[tuple[Genes, float]]:
    """The control of an evolutionary search: ``count`` distinct random candidates of the window, scored in
    batches of ``batch``; returns ``[(genes, fitness)]`` in draw order."""
    search = EvolutionarySearch(space, cost, window, fitness,
                                EvolutionConfig(population=1, select=1, parents=1, mutations=0, crossovers=0,
                                                iterations=1, random_level_range=level_range), seed=seed)
    cands = search.random_candidates(count, search.rng(0, 7))
    out: list[tuple[Genes, float]] = []
    for i in range(0, len(cands), batch):
        chunk = cands[i:i + batch]
        out.extend(zip(chunk, (float(f) for f in fitness(chunk))))
    return out
