"""Vectorised union-find over integer ids (numpy only).

``components(n, a, b)`` returns, for each id ``0..n-1``, the smallest id of its connected component under the
edges ``a[k] -- b[k]``. Hook-and-compress rounds: each round hooks every edge's larger root onto the smaller one
and then compresses paths completely; a graph of E edges needs O(log E) rounds in practice, each O(E + n).
"""

from __future__ import annotations

import numpy as np


def _compress(parent: np.ndarray) -> np.ndarray:
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest member id) of each id's component; ``a`` and ``b`` are equal-length int arrays of edges."""
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while a.size:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(parent, hi, lo)
        parent = _compress(parent)
    return parent
