"""Plain data containers shared by every dataset: what a dataset *is* (``DataSpec``), what ``build_data``
returns (``DataLoaders``) and the in-memory form a dataset takes before it becomes loaders (``ArrayData``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

# Per-channel statistics of the training sets, in units of pixel/255.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about a dataset.

    ``mean``/``std`` are per channel, in the units the images are scaled to before normalisation
    (pixel/255 for 8-bit images), so ``x_normalized = (x_scaled - mean) / std``.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int  # height == width of the images a loader yields
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.in_channels, self.image_size, self.image_size)


@dataclass
class DataLoaders:
    """The loaders ``build_data`` returns. ``val`` is ``None`` unless ``val_split > 0`` (or the dataset ships one).

    Every loader yields ``(x, y)``: ``x`` float32 (B, C, H, W) normalised, ``y`` int64 (B,), both on the device
    the loaders were built for. ``val`` is held out of the training set; ``test`` is the dataset's own test set.
    """

    train: Iterable
    val: Iterable | None
    test: Iterable
    spec: DataSpec

    def summary(self) -> str:
        """One line for logs, e.g. ``cifar10: train 45000 (351 batches), val 5000, test 10000``."""
        parts = [f"train {self.train.num_samples} ({len(self.train)} batches of {self.train.batch_size})"]
        if self.val is not None:
            parts.append(f"val {self.val.num_samples}")
        parts.append(f"test {self.test.num_samples}")
        return f"{self.spec.name}: " + ", ".join(parts)


@dataclass
class ArrayData:
    """A whole dataset held in memory, before it is split and wrapped in loaders.

    Images are uint8 (N, C, H, W) on the CPU; labels int64 (N,). ``pixel_scale`` maps stored values to the
    units of ``spec.mean``/``spec.std`` (1/255 for 8-bit pixels). ``crop_padding`` and ``flip`` describe the
    dataset's standard training augmentation (random crop after zero padding, horizontal mirror).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    spec: DataSpec
    pixel_scale: float = 1.0 / 255.0
    crop_padding: int = 4
    flip: bool = True
