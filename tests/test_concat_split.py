"""Concatenation (offsets into consumers), chunk, split, slicing and channel shuffle."""

from __future__ import annotations

import pytest
import torch

from prunekit.graph import DependencyGraph
from prunekit.planning import apply_widths

from _graph_nets import (bit_identical_when_nothing_pruned, build, check_half, masked_then_pruned,
                         single_thread)  # noqa: F401  (autouse fixture)

X = torch.randn(2, 3, 16, 16)


def test_concat_members_carry_offsets():
    g = DependencyGraph(build("concat"), X)
    a, b, c = g["c1.0"], g["c2.0"], g["c3.0"]
    # c3 reads cat([a, b]): a's channels at offset 0, b's at offset 6
    (in_a,) = [gm for gm in a.members if gm.name == "c3.0"]
    (in_b,) = [gm for gm in b.members if gm.name == "c3.0"]
    assert in_a.offset == 0 and in_b.offset == 6
    # c4 reads cat([a, b, c, x]): the input's 3 channels are fixed and belong to no group
    (c4_a,) = [gm for gm in a.members if gm.name == "c4.0"]
    (c4_c,) = [gm for gm in c.members if gm.name == "c4.0"]
    assert c4_a.offset == 0 and c4_c.offset == 10
    assert all(gr.prunable for gr in g.groups[:4])


def test_concat_prunes_consumers_at_the_right_offsets():
    m = build("concat")
    g = DependencyGraph(m, X)
    apply_widths(g, {"c1.0": 3, "c2.0": 2, "c3.0": 4})
    assert m.c3[0].in_channels == 5 and m.c4[0].in_channels == 3 + 2 + 4 + 3
    assert m(X).shape == (2, 5)


@pytest.mark.parametrize("name", ["concat", "chunk_shuffle", "split_slice"])
def test_invariants(name):
    bit_identical_when_nothing_pruned(build(name), X)
    err, _ = masked_then_pruned(build(name), X)
    assert err < 1e-5
    before, predicted, after = check_half(build(name), X)
    assert predicted == after <= before


def test_chunk_and_shuffle_keep_halves_equal():
    m = build("chunk_shuffle")
    g = DependencyGraph(m, X)
    stream = g["stem.0"]
    # stem's 8 channels: chunk ties k with k+4, the shuffle ties the two halves of the concat, nn.ChannelShuffle
    # ties again: the stream prunes in classes of 4 positions
    assert stream.size == 2 and stream.prunable
    (stem,) = [gm for gm in stream.members if gm.name == "stem.0"]
    assert stem.positions.numel() == 8 and stem.offset is None
    apply_widths(g, {"stem.0": 1})
    assert m.stem[0].out_channels == 4 and m(X).shape == (2, 5)


def test_static_split_and_partial_slice_pin():
    g = DependencyGraph(build("split_slice"), X)
    assert not g["c1.0"].prunable and "split" in g["c1.0"].reason
    assert not g["c4.0"].prunable and "slice" in g["c4.0"].reason
    # c2 (read through a full slice y[:, :] and added to c3's sliced output) stays prunable
    assert g["c2.0"].prunable
