"""BatchNorm recalibration: re-estimate running statistics after the weights or the architecture changed.

A sub-network sampled from a supernet (MetaPruning), a freshly pruned model, or weights averaged over a run
carry running mean/var that no longer describe their activations; evaluating them as they are gives a
misleading accuracy. :func:`recalibrate_bn` measures the statistics again on a few training batches.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, check_range

_BN = nn.modules.batchnorm._BatchNorm


def _inputs(batch: Any) -> Any:
    """The model input of one loader item: ``x`` of ``(x, y)``, or the item itself."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int, *,
                   device: str | torch.device | None = None) -> nn.Module:
    """Reset the running statistics of every BatchNorm in ``model`` and re-estimate them on ``batches`` batches.

    Every BatchNorm that tracks running stats is reset, switched to a cumulative average (``momentum=None``)
    and fed the first ``batches`` batches of ``loader`` (items ``(x, y)`` or ``x``) with the model in train
    mode, without gradients. Afterwards each BatchNorm's ``running_mean`` is the mean of its per-batch means
    (the exact mean of the data seen when the batches are of equal size) and ``running_var`` the mean of its
    per-batch unbiased variances; ``num_batches_tracked`` counts the batches. Each BatchNorm's momentum and every
    module's train/eval mode are restored. Parameters are not changed. Returns ``model``.

    ``device``: where the batches are moved (default: the device of the model's first parameter or buffer).
    Raises ConfigError when ``loader`` yields no batch (the statistics would be left reset).
    """
    check_range("batches", batches, 1)
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return model
    if device is None:
        first = next(model.parameters(), None)
        if first is None:
            first = next(model.buffers())
        device = first.device
    device = torch.device(device)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    seen = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            x = _inputs(batch)
            model(x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x)
            seen += 1
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
    if seen == 0:
        raise ConfigError("recalibrate_bn: the loader yielded no batch; BatchNorm statistics are left reset")
    return model
