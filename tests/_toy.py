"""Tiny deterministic model and loader for fast Trainer tests (no dependency on the data package)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ToyLoader:
    """Learnable toy images: class-dependent means + noise; order and noise depend only on (seed, epoch, step)."""

    def __init__(self, n: int = 96, batch_size: int = 16, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        g = torch.Generator().manual_seed(1234)
        self.y = torch.arange(n) % 4
        self.x = torch.randn(4, 3, 8, 8, generator=g)[self.y] + 0.5 * torch.randn(n, 3, 8, 8, generator=g)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.shuffle, self.epoch = shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.y) // self.world // self.batch_size

    def iter_from(self, start: int):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.y), generator=g) if self.shuffle else torch.arange(len(self.y))
        order = order[self.rank::self.world]
        for i in range(start, len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            noise = torch.randn(len(idx), 3, 8, 8, generator=torch.Generator().manual_seed(
                self.seed * 10**6 + self.epoch * 1000 + i))
            yield self.x[idx] + 0.1 * noise, self.y[idx]

    def __iter__(self):
        return self.iter_from(0)


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 4))
