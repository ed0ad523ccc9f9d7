"""Small helpers every layer may use (the bottom of the import graph, beside ``errors``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own ``training`` flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


def umask_mode() -> int:
    """The permission bits a new regular file gets under the process umask (0o644 under the usual 0o022);
    temp files from ``tempfile.mkstemp`` are 0o600 and must be widened before they replace a user's file."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
