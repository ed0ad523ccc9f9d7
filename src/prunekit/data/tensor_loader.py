"""``TensorLoader``: a whole dataset resident on one device, batched, augmented and normalised there.

For datasets that fit in device memory (CIFAR-10 is 150 MB as uint8) this replaces a worker-based
``DataLoader``: the per-batch work is an index, one gather (crop + flip) and one fused multiply-add, all
queued asynchronously on the device, so a GPU never waits for its input.

Reproducibility contract: the samples and the augmentation of batch ``step`` of epoch ``epoch`` depend only on
``(seed, epoch, step, rank, world_size)``. ``set_epoch`` picks the epoch; ``iter_from(step)`` starts an epoch at
batch ``step`` without computing the batches before it, so a run resumed mid-epoch sees exactly the data an
uninterrupted run would.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from prunekit.data.augment import normalization_affine, normalize, random_crop_flip
from prunekit.data.sampling import AUGMENT, derive_seed, epoch_order, shard_size
from prunekit.errors import ConfigError, check_range

Batch = tuple[torch.Tensor, torch.Tensor]


class TensorLoader:
    """Iterate over ``(images, labels)`` held as tensors on ``device``.

    Args:
        images: (N, C, H, W) uint8 or floating tensor (any device; copied to ``device`` once).
        labels: (N,) integer tensor of class indices.
        batch_size: images per batch (per rank).
        mean, std: per-channel normalisation, in the units of ``images * pixel_scale``.
        pixel_scale: factor from stored values to those units; default 1/255 for uint8, else 1.
        shuffle: draw a new permutation each epoch (training); otherwise the stored order.
        crop_padding: > 0 enables random crops after zero padding by that many pixels.
        flip: random horizontal mirroring (probability 1/2 per image).
        drop_last: drop the final incomplete batch; default ``shuffle``.
        seed: base seed of the epoch permutations and of the augmentation.
        device: where the data lives and batches are produced.
        rank, world_size: distributed sharding (see ``prunekit.data.sampling.epoch_order``). Shuffled loaders give
            every rank ``N // world_size`` samples (equal batch counts); unshuffled ones split all ``N`` exactly,
            so summing a metric over ranks counts every test image once (batch counts may then differ by one).
        channels_last: yield batches in ``torch.channels_last`` memory format.

    Iterating yields ``x`` float32 (B, C, H, W) normalised and ``y`` int64 (B,), both on ``device``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], pixel_scale: float | None = None,
                 shuffle: bool = False, crop_padding: int = 0, flip: bool = False, drop_last: bool | None = None,
                 seed: int = 0, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 channels_last: bool = False) -> None:
        if images.dim() != 4:
            raise ConfigError(f"images must be a 4-d (N, C, H, W) tensor; got shape {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ConfigError(f"labels must have shape ({images.shape[0]},); got {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ConfigError(f"mean/std need {images.shape[1]} values (one per channel); "
                              f"got {len(mean)} and {len(std)}")
        check_range("batch_size", batch_size, 1)
        check_range("crop_padding", crop_padding, 0)
        check_range("world_size", world_size, 1)
        check_range("rank", rank, 0, world_size - 1)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.drop_last = self.shuffle if drop_last is None else bool(drop_last)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.channels_last = bool(channels_last)
        if pixel_scale is None:
            pixel_scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        self._scale, self._shift = normalization_affine(mean, std, pixel_scale, self.device)
        self._generator = torch.Generator(device=self.device)
        self._next_epoch = 0
        self._start_step = 0
        self.epoch = 0  # the epoch of the most recently started iteration

    # ----------------------------------------------------------------------------------------- sizes
    @property
    def dataset_size(self) -> int:
        """Images in the whole dataset (all ranks)."""
        return int(self.images.shape[0])

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (before ``drop_last``)."""
        return shard_size(self.dataset_size, rank=self.rank, world_size=self.world_size, equal=self.shuffle)

    @property
    def augment(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def __len__(self) -> int:
        """Batches in a full epoch on this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    # ----------------------------------------------------------------------------------------- epochs
    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``. Without calls, successive iterations use 0, 1, 2, ..."""
        check_range("epoch", epoch, 0)
        self._next_epoch = int(epoch)

    def set_start_step(self, step: int) -> None:
        """Make the next iteration (only) start at batch ``step`` (0 <= step <= len(self))."""
        check_range("step", step, 0, len(self))
        self._start_step = int(step)

    def iter_from(self, step: int) -> Iterator[Batch]:
        """Iterate over the next epoch starting at batch ``step``; earlier batches are skipped, not computed."""
        self.set_start_step(step)
        return iter(self)

    def __iter__(self) -> Iterator[Batch]:
        epoch, start = self._next_epoch, self._start_step
        self._next_epoch, self._start_step = epoch + 1, 0
        self.epoch = epoch
        return self._batches(epoch, start)

    # ----------------------------------------------------------------------------------------- batches
    def _batches(self, epoch: int, start: int) -> Iterator[Batch]:
        order = epoch_order(self.dataset_size, seed=self.seed, epoch=epoch, shuffle=self.shuffle,
                            rank=self.rank, world_size=self.world_size, device=self.device)
        n = self.num_samples
        for step in range(start, len(self)):
            lo, hi = step * self.batch_size, min((step + 1) * self.batch_size, n)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            yield self._prepare(x, epoch, step), y

    def _prepare(self, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """Augment (seeded by ``(seed, epoch, step, rank)``) and normalise one raw batch."""
        if self.augment:
            self._generator.manual_seed(derive_seed(self.seed, AUGMENT, epoch, step, self.rank))
            x = random_crop_flip(x, self.crop_padding, self.flip, self._generator)
        x = normalize(x, self._scale, self._shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __repr__(self) -> str:
        return (f"TensorLoader(n={self.dataset_size}, shape={tuple(self.images.shape[1:])}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, crop_padding={self.crop_padding}, "
                f"flip={self.flip}, device={self.device}, rank={self.rank}/{self.world_size})")
