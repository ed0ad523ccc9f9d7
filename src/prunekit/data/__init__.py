"""Datasets and loaders: ``build_data(name, ...)`` → ``DataLoaders(train, val, test, spec)``.

Datasets (``list_datasets()``; ``describe()`` prints the on-disk layouts):

- ``digits``: the offline default, scikit-learn's bundled 1,797 real 8x8 digits (1x8x8, 10 classes); a fixed,
  stratified 20% is the test set.
- ``cifar10`` / ``cifar100``: from ``data_dir`` in the npz layout (``train_*.npz`` + ``test.npz`` with
  ``images`` uint8 (N, 32, 32, 3) and ``labels``) or torchvision's (``cifar-10-batches-py/``,
  ``cifar-100-python/``), detected automatically; ``download=True`` fetches it with torchvision.
- ``synthetic``: deterministic, learnable random images (3x32x32, 10 classes) for tests and benchmarks.
- ``imagefolder``: ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*`` (or ``test/``).

In-memory datasets (all but imagefolder) are served by ``TensorLoader``: the whole set on the device, crops,
flips and normalisation done there in batched tensor ops. The validation split (``val_split``) is always held
out of the training set; the test set is only for the final number. Order and augmentation of every batch are
a function of ``(seed, epoch, batch index)``: ``loader.set_epoch(e)`` and ``loader.iter_from(step)`` reproduce
any point of a run exactly.
"""

from prunekit.data.build import build_data, describe, list_datasets
from prunekit.data.imagefolder import FolderLoader
from prunekit.data.spec import DataLoaders, DataSpec
from prunekit.data.tensor_loader import TensorLoader

__all__ = ["DataLoaders", "DataSpec", "FolderLoader", "TensorLoader", "build_data", "describe", "list_datasets"]
