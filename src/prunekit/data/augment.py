"""Batched image augmentation and normalisation on tensors, on whatever device the batch lives on.

No Python loop over images and no host synchronisation: random numbers come from a device generator and the
crop and the flip are a single ``gather`` with per-sample offsets.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """Random-crop and mirror a batch, like torchvision's ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip``.

    ``x``: (B, C, H, W), any dtype. Each image is zero-padded by ``padding`` pixels on every side and cropped
    back to H x W at an offset drawn uniformly from ``[0, 2 * padding]`` on each axis; if ``flip``, each image
    is then mirrored left-right with probability 1/2. Returns a new (B, C, H, W) tensor of ``x``'s dtype.
    ``generator`` must live on ``x.device`` (``None``: the default generator).
    """
    b, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding))
        offset_y = torch.randint(0, 2 * padding + 1, (b, 1, 1), generator=generator, device=dev)
        offset_x = torch.randint(0, 2 * padding + 1, (b, 1, 1), generator=generator, device=dev)
    else:
        offset_y = offset_x = torch.zeros((b, 1, 1), dtype=torch.long, device=dev)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    if flip:
        mirrored = torch.rand((b, 1, 1), generator=generator, device=dev) < 0.5
        cols = torch.where(mirrored, (w - 1) - cols, cols)
    rows = torch.arange(h, device=dev).view(1, h, 1) + offset_y
    padded_w = w + 2 * padding
    index = (rows * padded_w + cols + offset_x).view(b, 1, h * w).expand(b, c, h * w)
    return x.flatten(2).gather(2, index).view(b, c, h, w)


def normalization_affine(mean: Sequence[float], std: Sequence[float], pixel_scale: float,
                         device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of shape (1, C, 1, 1) such that ``x * scale + shift == (x * pixel_scale - mean) / std``."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return pixel_scale / std_t, -mean_t / std_t


def normalize(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """float32 ``x * scale + shift`` for a batch of raw pixels (see ``normalization_affine``)."""
    return torch.addcmul(shift, x.to(torch.float32), scale)
