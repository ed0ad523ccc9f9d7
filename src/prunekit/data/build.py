"""``build_data``: a dataset name and options in, train/val/test loaders out. The registry of datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from prunekit.data import cifar, digits, imagefolder, synthetic
from prunekit.data.imagefolder import FolderLoader
from prunekit.data.sampling import balanced_subset, stratified_split
from prunekit.data.spec import ArrayData, DataLoaders
from prunekit.data.tensor_loader import TensorLoader
from prunekit.errors import ConfigError, check_range


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    summary: str
    options: tuple[str, ...]  # dataset-specific keyword options build_data accepts for it
    in_memory: bool  # True: served by TensorLoader from device memory


_DATASETS: dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry("digits", "offline default: scikit-learn's 1,797 real 8x8 digits, 1x8x8, 10 classes "
                 "(fixed stratified 20% test split)", (), True),
    DatasetEntry("cifar10", "CIFAR-10, 3x32x32, 10 classes, 50k/10k; --data-dir in npz or torchvision layout, "
                 "or --download; image_size resizes at load (e.g. 16)", (), True),
    DatasetEntry("cifar100", "CIFAR-100 (fine labels), 3x32x32, 100 classes, 50k/10k; --data-dir in npz or "
                 "torchvision layout, or --download", (), True),
    DatasetEntry("synthetic", "random learnable images (class pattern + noise), 3x32x32, 10 classes, 5000/1000; "
                 "deterministic by seed", ("num_train", "num_test", "num_classes", "in_channels"), True),
    DatasetEntry("imagefolder", "--data-dir with train/ and val/ (or test/) class sub-folders, decoded by "
                 "DataLoader workers; image_size (default 224)", (), False),
)}


def list_datasets() -> list[str]:
    """Names ``build_data`` accepts, offline default first."""
    return list(_DATASETS)


def describe(name: str | None = None) -> str:
    """Human-readable description of one dataset or (``None``) all of them, with the on-disk layouts."""
    if name is not None:
        entry = _get_entry(name)
        return f"{entry.name}: {entry.summary}"
    lines = [f"- {e.name}: {e.summary}" for e in _DATASETS.values()]
    return "\n".join(["Datasets:", *lines, "", "CIFAR layouts:", cifar.__doc__.split("\n", 2)[2].strip(),
                      "", "ImageFolder layout:", imagefolder.__doc__.split("\n", 2)[2].strip()])


def _get_entry(name: str) -> DatasetEntry:
    key = name.lower()
    if key not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}. Valid names: {', '.join(_DATASETS)}")
    return _DATASETS[key]


def _load_arrays(entry: DatasetEntry, data_dir: str | Path | None, download: bool, seed: int,
                 image_size: int | None, options: dict[str, Any]) -> ArrayData:
    if entry.name == "digits":
        return digits.load_digits_arrays()
    if entry.name == "synthetic":
        return synthetic.make_synthetic(seed=seed, **options,
                                        **({} if image_size is None else {"image_size": image_size}))
    return cifar.load_cifar(entry.name, data_dir, download, image_size=image_size)


def _split_train(labels: np.ndarray, val_split: float, train_subset: int | None, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation samples within the training set (val first, then the subset)."""
    train_idx, val_idx = stratified_split(labels, val_split, seed)
    if train_subset is not None:
        train_idx = train_idx[balanced_subset(labels[train_idx], train_subset, seed)]
    return train_idx, val_idx


def _check_enough(num_samples: int, batch_size: int, world_size: int) -> None:
    if num_samples < batch_size:
        raise ConfigError(f"batch_size={batch_size} is larger than the {num_samples} training images each of the "
                          f"{world_size} rank(s) sees; lower batch_size or raise train_subset/val_split")


def build_data(name: str, *, data_dir: str | Path | None = None, batch_size: int = 128,
               eval_batch_size: int | None = None, val_split: float = 0.0, device: str | torch.device = "cpu",
               seed: int = 0, download: bool = False, augment: bool = True, train_subset: int | None = None,
               num_workers: int = 4, rank: int = 0, world_size: int = 1, image_size: int | None = None,
               channels_last: bool = False, **options: Any) -> DataLoaders:
    """Build train / val / test loaders for dataset ``name`` (see ``list_datasets()`` and ``describe()``).

    Args:
        name: ``digits`` (offline default), ``cifar10``, ``cifar100``, ``synthetic`` or ``imagefolder``.
        data_dir: where the data is (cifar: npz or torchvision layout; imagefolder: train/ + val/ or test/).
        batch_size: training batch size per rank; ``eval_batch_size`` (default: ``batch_size``) for val/test.
        val_split: fraction in [0, 1) of the *training* set held out (seeded, stratified by class) as the
            validation set; the test set is never touched. 0 → ``val`` is ``None`` (imagefolder: ``val/`` if
            it exists beside ``test/``).
        device: where batches are produced (in-memory datasets live there entirely).
        seed: seeds the validation split, the training subset, epoch orders and augmentation (and the
            synthetic images); the digits test split is fixed.
        download: fetch CIFAR with torchvision into ``data_dir`` if it is not there.
        augment: standard training augmentation (CIFAR: 4-px-padded random crop + flip; digits: 1-px shifts;
            imagefolder: random-resized crop + flip). Validation and test loaders never augment.
        train_subset: use only this many training images (seeded random, class balanced), for tiny runs.
        num_workers: decoding workers (imagefolder only).
        rank, world_size: distributed sharding: each rank gets a disjoint share of every epoch.
        image_size: imagefolder crop size (default 224); synthetic image size (default 32); cifar: resize the
            uint8 images once at load (area averaging when shrinking, e.g. 16 for cheap CPU runs; the crop
            padding scales with it: 2 px at 16).
        channels_last: yield batches in channels_last memory format.
        options: dataset-specific options (synthetic: num_train, num_test, num_classes, in_channels).

    Returns ``DataLoaders(train, val, test, spec)``; every loader yields float32 normalised (B, C, H, W) images
    and int64 labels on ``device`` and has ``set_epoch``, ``iter_from``, ``batch_size``, ``num_samples``.
    """
    entry = _get_entry(name)
    unknown = set(options) - set(entry.options)
    if unknown:
        raise ConfigError(f"option(s) {sorted(unknown)} are not understood by dataset {entry.name!r}; it accepts "
                          f"{list(entry.options) or 'none'}")
    check_range("val_split", val_split, 0.0, 1.0, high_open=True)
    check_range("batch_size", batch_size, 1)
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    check_range("eval_batch_size", eval_batch_size, 1)
    check_range("world_size", world_size, 1)
    check_range("rank", rank, 0, world_size - 1)
    if train_subset is not None:
        check_range("train_subset", train_subset, 1)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={str(device)!r}, but CUDA is not available on this machine; use device='cpu'")
    common = dict(seed=seed, device=device, rank=rank, world_size=world_size, channels_last=channels_last)

    if not entry.in_memory:
        if image_size is None:
            image_size = imagefolder.DEFAULT_IMAGE_SIZE
        train_aug, train_plain, test_ds, val_folder, spec = imagefolder.open_imagefolder(data_dir, image_size)
        train_idx, val_idx = _split_train(imagefolder.targets_of(train_aug), val_split, train_subset, seed)
        train_src = train_aug if augment else train_plain
        folder = dict(common, num_workers=num_workers)
        train = FolderLoader(Subset(train_src, train_idx.tolist()), batch_size=batch_size, shuffle=True, **folder)
        _check_enough(train.num_samples, batch_size, world_size)
        val_ds = Subset(train_plain, val_idx.tolist()) if len(val_idx) else val_folder
        val = None if val_ds is None else FolderLoader(val_ds, batch_size=eval_batch_size, **folder)
        test = FolderLoader(test_ds, batch_size=eval_batch_size, **folder)
        return DataLoaders(train, val, test, spec)

    data = _load_arrays(entry, data_dir, download, seed, image_size, options)
    if image_size is not None and image_size != data.spec.image_size:
        raise ConfigError(f"image_size={image_size}: {entry.name} images are {data.spec.image_size}x"
                          f"{data.spec.image_size} and are not resized (image_size applies to imagefolder, "
                          f"synthetic, cifar10 and cifar100)")
    train_idx, val_idx = (torch.from_numpy(i) for i in
                          _split_train(data.train_labels.numpy(), val_split, train_subset, seed))
    tensor = dict(common, mean=data.spec.mean, std=data.spec.std, pixel_scale=data.pixel_scale)
    train = TensorLoader(data.train_images[train_idx], data.train_labels[train_idx], batch_size=batch_size,
                         shuffle=True, crop_padding=data.crop_padding if augment else 0,
                         flip=data.flip and augment, **tensor)
    _check_enough(train.num_samples, batch_size, world_size)
    val = None
    if len(val_idx):
        val = TensorLoader(data.train_images[val_idx], data.train_labels[val_idx], batch_size=eval_batch_size,
                           **tensor)
    test = TensorLoader(data.test_images, data.test_labels, batch_size=eval_batch_size, **tensor)
    return DataLoaders(train, val, test, data.spec)
