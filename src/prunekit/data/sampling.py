"""Seeds, epoch orders and splits. Everything here is a pure function of its arguments, so a run that is
resumed, or runs on several ranks, sees exactly the same data as one that is not."""

from __future__ import annotations

import numpy as np
import torch

from prunekit.errors import ConfigError

# Stream tags passed to ``derive_seed`` so that the generators for different purposes never coincide.
PERMUTATION = 0
AUGMENT = 1
SPLIT = 2
SUBSET = 3


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from a tuple of non-negative integers, e.g. ``(seed, AUGMENT, epoch, step)``.

    Nearby inputs give unrelated seeds (numpy's SeedSequence hashing); the result is a valid
    ``torch.Generator.manual_seed`` argument on every device.
    """
    state = np.random.SeedSequence([int(p) % (1 << 64) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def shard_size(n: int, *, rank: int, world_size: int, equal: bool) -> int:
    """How many of ``n`` samples rank ``rank`` gets: ``n // world_size`` if ``equal`` (the rest is dropped
    this epoch), otherwise its exact strided share (shares differ by at most one, and sum to ``n``)."""
    if equal:
        return n // world_size
    return len(range(rank, n, world_size))


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool, rank: int = 0, world_size: int = 1,
                device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The dataset indices rank ``rank`` visits in ``epoch``, as an int64 tensor on ``device``.

    With ``shuffle`` every rank draws the same permutation (seeded by ``(seed, epoch)`` only) and takes every
    ``world_size``-th element starting at ``rank``, truncated to ``n // world_size``: the shares are disjoint
    and equal. Without ``shuffle`` the order is ``rank, rank + world_size, ...`` over all ``n`` samples
    (disjoint, complete). Returns ``None`` for the identity order (no shuffle, one rank), so callers can slice.
    """
    if not shuffle:
        if world_size == 1:
            return None
        return torch.arange(rank, n, world_size, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, PERMUTATION, epoch))
    perm = torch.randperm(n, generator=gen, device=device)
    if world_size == 1:
        return perm
    return perm[rank::world_size][: n // world_size]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..N-1`` into ``(kept, held_out)`` with ``round(fraction * N)`` held out (at least one if
    ``fraction > 0``), allocated to classes in proportion to their size (largest remainder), each class's
    members drawn at random. Both index arrays are sorted. Deterministic in ``(labels, fraction, seed)``."""
    labels = np.asarray(labels)
    n = len(labels)
    if fraction <= 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(derive_seed(seed, SPLIT))
    classes, counts = np.unique(labels, return_counts=True)
    total = min(max(1, round(fraction * n)), n - 1)
    quota = counts * (total / n)
    take = np.floor(quota).astype(np.int64)
    remainder = total - int(take.sum())
    if remainder:
        # Largest fractional parts first; random tie-break so no class is systematically favoured.
        order = np.lexsort((rng.random(len(classes)), -(quota - take)))
        take[order[:remainder]] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def balanced_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices into ``labels``, class balanced: classes are dealt round-robin (one random member of
    each class per round, classes in a random order), so class counts differ by at most one while every class
    has members left. Returned sorted. Deterministic in ``(labels, size, seed)``."""
    labels = np.asarray(labels)
    if not 0 < size <= len(labels):
        raise ConfigError(f"train_subset={size} is out of range: the training set has {len(labels)} images; "
                          f"expected 1..{len(labels)}")
    rng = np.random.default_rng(derive_seed(seed, SUBSET))
    classes = np.unique(labels)
    class_pos = rng.permutation(len(classes))  # deal order of the classes within a round
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    position = np.empty(len(labels), dtype=np.int64)
    for c, pos in zip(classes, class_pos):
        members = rng.permutation(np.flatnonzero(labels == c))
        rank_in_class[members] = np.arange(len(members))
        position[members] = pos
    key = rank_in_class * len(classes) + position
    return np.sort(np.argsort(key, kind="stable")[:size])
