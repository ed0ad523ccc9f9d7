"""``imagefolder``: images on disk, one sub-folder per class (torchvision ``ImageFolder``), decoded by workers.

Layout of ``data_dir``::

    train/<class>/*.png|jpg|...     training images
    val/<class>/...  or  test/<class>/...   the test set (ImageNet convention: ``val/`` is what is reported)

If both ``val/`` and ``test/`` exist, ``test/`` is the test set and ``val/`` the validation set (unless
``val_split > 0``, which always holds the validation set out of ``train/``). Transforms: training
``RandomResizedCrop(image_size)`` + horizontal flip; evaluation ``Resize(image_size / 0.875)`` +
``CenterCrop(image_size)``; ImageNet normalisation.

``FolderLoader`` gives these datasets the ``TensorLoader`` interface: ``set_epoch``, ``iter_from`` (skips
batches without decoding them), ``num_samples``, batches moved to the device. Sample order and augmentation
depend only on ``(seed, epoch, position in the epoch)``, whatever ``num_workers`` is.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from prunekit.data.sampling import AUGMENT, derive_seed, epoch_order, shard_size
from prunekit.data.spec import IMAGENET_MEAN, IMAGENET_STD, DataSpec
from prunekit.errors import ConfigError, DataError, check_range

DEFAULT_IMAGE_SIZE = 224
LAYOUT_HELP = ("an imagefolder --data-dir needs train/<class>/<image> and val/<class>/<image> (or test/...) "
               "sub-folders, one folder per class, with the same class folders in each")


class _PerSampleSeeded(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` runs the (torch-RNG based) transforms under ``seed``,
    restoring the caller's RNG afterwards: augmentation independent of worker count and scheduling."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class FolderLoader:
    """Batches of a map-style image dataset through a worker ``DataLoader``, with the ``TensorLoader`` API.

    Yields ``x`` float32 (B, C, S, S) normalised and ``y`` int64 (B,) on ``device``. Sharding and sizes follow
    ``TensorLoader`` (``epoch_order``): shuffled loaders give each rank ``N // world_size`` samples.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, shuffle: bool = False, drop_last: bool | None = None,
                 seed: int = 0, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 num_workers: int = 4, channels_last: bool = False) -> None:
        check_range("batch_size", batch_size, 1)
        check_range("num_workers", num_workers, 0)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = self.shuffle if drop_last is None else bool(drop_last)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.device = torch.device(device)
        self.num_workers = int(num_workers)
        self.channels_last = bool(channels_last)
        self._next_epoch = 0
        self._start_step = 0
        self.epoch = 0

    @property
    def dataset_size(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def num_samples(self) -> int:
        return shard_size(self.dataset_size, rank=self.rank, world_size=self.world_size, equal=self.shuffle)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        check_range("epoch", epoch, 0)
        self._next_epoch = int(epoch)

    def set_start_step(self, step: int) -> None:
        check_range("step", step, 0, len(self))
        self._start_step = int(step)

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.set_start_step(step)
        return iter(self)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self._next_epoch, self._start_step
        self._next_epoch, self._start_step = epoch + 1, 0
        self.epoch = epoch
        return self._batches(epoch, start)

    def _items(self, epoch: int, start: int) -> list[tuple[int, int]]:
        """``(dataset index, augmentation seed)`` for each sample of the epoch from batch ``start`` on."""
        order = epoch_order(self.dataset_size, seed=self.seed, epoch=epoch, shuffle=self.shuffle,
                            rank=self.rank, world_size=self.world_size)
        indices = (np.arange(self.dataset_size) if order is None else order.numpy())[: self.num_samples]
        if self.drop_last:
            indices = indices[: len(self) * self.batch_size]
        first = start * self.batch_size
        base = derive_seed(self.seed, AUGMENT, epoch, self.rank)
        return [(int(i), (base + first + k) % (1 << 63)) for k, i in enumerate(indices[first:])]

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pin = self.device.type == "cuda"
        loader = DataLoader(_PerSampleSeeded(self.dataset), batch_size=self.batch_size,
                            sampler=self._items(epoch, start), num_workers=self.num_workers,
                            pin_memory=pin, drop_last=False)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in loader:
            yield (x.to(self.device, non_blocking=pin).contiguous(memory_format=memory_format),
                   y.to(self.device, torch.int64, non_blocking=pin))

    def __repr__(self) -> str:
        return (f"FolderLoader(n={self.dataset_size}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"workers={self.num_workers}, device={self.device}, rank={self.rank}/{self.world_size})")


def _torchvision():
    try:
        import torchvision.datasets as datasets
        import torchvision.transforms as transforms
    except Exception as e:  # ImportError, or a torchvision built for another torch
        raise DataError(f"dataset 'imagefolder' needs a working torchvision (pip install 'prunekit[vision]'): {e}"
                        ) from e
    return datasets, transforms


def _transforms(image_size: int, mean: Sequence[float], std: Sequence[float]):
    _, T = _torchvision()
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *norm])
    evaluate = T.Compose([T.Resize(int(round(image_size / 0.875))), T.CenterCrop(image_size), *norm])
    return train, evaluate


def open_imagefolder(data_dir: str | Path | None, image_size: int | None = None
                     ) -> tuple[Dataset, Dataset, Dataset, Dataset | None, DataSpec]:
    """Scan ``data_dir``. Returns ``(train_aug, train_plain, test, val_dir_or_None, spec)``: the training
    images with training transforms and (same files) with evaluation transforms, the test set, the ``val/``
    folder if it is a separate validation set, and the spec (3 channels, ImageNet mean/std)."""
    if data_dir is None:
        raise DataError(f"dataset 'imagefolder' needs --data-dir: {LAYOUT_HELP}")
    root = Path(data_dir).expanduser()
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    check_range("image_size", size, 1)
    datasets, _ = _torchvision()
    train_dir, val_dir, test_dir = root / "train", root / "val", root / "test"
    if not train_dir.is_dir() or not (val_dir.is_dir() or test_dir.is_dir()):
        raise DataError(f"--data-dir '{root}' is not an image folder: {LAYOUT_HELP}")
    held_dir = test_dir if test_dir.is_dir() else val_dir
    train_tf, eval_tf = _transforms(size, IMAGENET_MEAN, IMAGENET_STD)

    def scan(folder: Path, transform) -> Dataset:
        try:
            return datasets.ImageFolder(str(folder), transform=transform)
        except (FileNotFoundError, RuntimeError) as e:
            raise DataError(f"{folder}: {e}; {LAYOUT_HELP}") from e

    train = scan(train_dir, train_tf)
    train_plain = copy.copy(train)
    train_plain.transform = eval_tf
    test = scan(held_dir, eval_tf)
    val = scan(val_dir, eval_tf) if held_dir == test_dir and val_dir.is_dir() else None
    for other in (d for d in (test, val) if d is not None):
        if other.classes != train.classes:
            raise DataError(f"{other.root}: class folders {other.classes[:5]}... differ from those of "
                            f"{train_dir} {train.classes[:5]}...; {LAYOUT_HELP}")
    spec = DataSpec("imagefolder", len(train.classes), 3, size, IMAGENET_MEAN, IMAGENET_STD)
    return train, train_plain, test, val, spec


def targets_of(dataset: Dataset) -> np.ndarray:
    """Class index of every sample of an ``ImageFolder`` (no image is decoded)."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ConfigError(f"{type(dataset).__name__} has no .targets; cannot split it by class")
    return np.asarray(targets, dtype=np.int64)
