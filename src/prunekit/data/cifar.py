"""``cifar10`` / ``cifar100`` from a directory in either of two layouts, detected automatically.

(a) npz layout (``../shared/data/cifar10``): ``train_*.npz`` (any number of chunks, read in sorted order) and
    ``test.npz``; each holds ``images`` uint8 (N, 32, 32, 3) HWC/RGB and ``labels`` (N,) integer class indices
    (optional ``class_names``). No pickle involved.
(b) torchvision / official python layout: the folder ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``) or ``cifar-100-python/`` (``train``, ``test``; fine labels), as extracted from
    ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``. ``--data-dir`` may name that folder or its parent.
    The pickles are read with an unpickler that only accepts numpy arrays, lists, dicts, strings and numbers.
(c) ``download=True``: torchvision downloads and extracts the official archive into ``data_dir`` (layout b);
    needs internet and torchvision (``pip install 'prunekit[vision]'``).

Both layouts may sit directly in ``data_dir`` or in ``data_dir/<name>`` (e.g. ``--data-dir ../shared/data``).
``image_size`` (e.g. 16) resizes every image once, at load, on the uint8 arrays (area averaging when shrinking,
bilinear when enlarging; rounded back to uint8); the crop padding of the augmentation scales with it (4 px at 32).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunekit.data.spec import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, ArrayData, DataSpec
from prunekit.errors import DataError


@dataclass(frozen=True)
class CifarVariant:
    name: str
    title: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folder: str  # torchvision's extracted folder name
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    torchvision_class: str
    url: str

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.name, self.num_classes, 3, 32, self.mean, self.std)


VARIANTS = {
    "cifar10": CifarVariant("cifar10", "CIFAR-10", 10, CIFAR10_MEAN, CIFAR10_STD, "cifar-10-batches-py",
                            tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "labels", "CIFAR10",
                            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": CifarVariant("cifar100", "CIFAR-100", 100, CIFAR100_MEAN, CIFAR100_STD, "cifar-100-python",
                             ("train",), "test", "fine_labels", "CIFAR100",
                             "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


def layout_help(variant: CifarVariant) -> str:
    """The paragraph every 'data not found' error ends with: both layouts and the download option."""
    return (f"--data-dir must point at {variant.title} in one of two layouts:\n"
            f"  (a) npz layout: train_0.npz ... train_4.npz and test.npz, each with 'images' uint8 (N, 32, 32, 3) "
            f"and 'labels' (N,) (the layout of ../shared/data/cifar10);\n"
            f"  (b) torchvision layout: the folder '{variant.folder}/' "
            f"({', '.join(variant.train_files[:2])}{' ...' if len(variant.train_files) > 2 else ''}, "
            f"{variant.test_file}) extracted from {variant.url}, or the folder that contains it.\n"
            f"Either may also sit in <data-dir>/{variant.name}/. Or pass --download (build_data(..., download=True)) "
            f"to fetch it with torchvision into --data-dir (needs internet and torchvision).")


def default_data_dir() -> Path:
    """``$PRUNEKIT_DATA_DIR`` if set, else ``~/.cache/prunekit/data``: where downloads go without ``--data-dir``."""
    return Path(os.environ.get("PRUNEKIT_DATA_DIR") or Path.home() / ".cache" / "prunekit" / "data")


# ---------------------------------------------------------------------------------------------- detection
def _candidates(root: Path, variant: CifarVariant) -> list[Path]:
    return [root, root / variant.name]


def find_layout(root: Path, variant: CifarVariant) -> tuple[str, Path] | None:
    """``("npz", dir)`` or ``("pickle", dir)`` for the first layout found under ``root``, else ``None``."""
    for base in _candidates(root, variant):
        if (base / "test.npz").is_file() and any(base.glob("train_*.npz")):
            return "npz", base
        for folder in (base, base / variant.folder):
            if (folder / variant.test_file).is_file() and (folder / variant.train_files[0]).is_file():
                return "pickle", folder
    return None


# ---------------------------------------------------------------------------------------------- readers
def _check_arrays(images: np.ndarray, labels: np.ndarray, variant: CifarVariant, source: Path) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, 32, 32):
        raise DataError(f"{source}: expected {variant.title} images as uint8 32x32 RGB; got dtype {images.dtype}, "
                        f"shape {images.shape} (after conversion to NCHW)")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{source}: {images.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= variant.num_classes):
        raise DataError(f"{source}: labels must lie in 0..{variant.num_classes - 1} for {variant.title}; "
                        f"found {labels.min()}..{labels.max()} (is this a different dataset?)")


def _read_npz(path: Path, variant: CifarVariant) -> tuple[np.ndarray, np.ndarray]:
    """One npz chunk as (uint8 NCHW images, int64 labels), verified."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {sorted(missing)}; the npz layout needs 'images' uint8 "
                                f"(N, 32, 32, 3) and 'labels' (N,)")
            if "class_names" in z.files and len(z["class_names"]) != variant.num_classes:
                raise DataError(f"{path}: has {len(z['class_names'])} class_names but {variant.title} has "
                                f"{variant.num_classes} classes (is this a different dataset?)")
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError) as e:  # not a zip / corrupt chunk
        raise DataError(f"{path}: cannot read it as an npz file ({e})") from e
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: 'images' must be uint8 (N, 32, 32, 3) in HWC order; got {images.dtype} "
                        f"{images.shape}")
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = labels.astype(np.int64)
    _check_arrays(images, labels, variant, path)
    return images, labels


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python batches without running arbitrary code: only numpy arrays/dtypes resolve.

    The official files are Python 2 pickles naming ``numpy.core.*``; those names map to ``numpy._core.*``
    where numpy 2 moved them.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) in self._ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")


def _read_batch(path: Path, variant: CifarVariant) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch file as (uint8 NCHW images, int64 labels), verified."""
    try:
        with open(path, "rb") as f:
            raw = _ArrayUnpickler(f, encoding="latin1").load()
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}
        data, labels = batch["data"], batch[variant.label_key]
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: not a {variant.title} python batch (a pickled dict with 'data' (N, 3072) "
                        f"uint8 and {variant.label_key!r}): {type(e).__name__}: {e}") from e
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be (N, 3072); got {data.shape}")
    images = data.reshape(-1, 3, 32, 32)  # rows are stored channel-major: already NCHW
    labels = np.asarray(labels, dtype=np.int64)
    _check_arrays(images, labels, variant, path)
    return images, labels


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def read_layout(layout: str, folder: Path, variant: CifarVariant) -> ArrayData:
    """Read a detected layout into memory: uint8 NCHW train/test tensors and int64 labels."""
    if layout == "npz":
        train_parts = [_read_npz(p, variant) for p in sorted(folder.glob("train_*.npz"))]
        test_parts = [_read_npz(folder / "test.npz", variant)]
    else:
        missing = [f for f in variant.train_files if not (folder / f).is_file()]
        if missing:
            raise DataError(f"{folder}: incomplete {variant.title} python layout, missing {missing}.\n"
                            + layout_help(variant))
        train_parts = [_read_batch(folder / f, variant) for f in variant.train_files]
        test_parts = [_read_batch(folder / variant.test_file, variant)]
    x_train, y_train = _concat(train_parts)
    x_test, y_test = _concat(test_parts)
    return ArrayData(x_train, y_train, x_test, y_test, spec=variant.spec, crop_padding=4, flip=True)


# ---------------------------------------------------------------------------------------------- download
def download(variant: CifarVariant, root: Path) -> None:
    """Fetch and extract the official archive into ``root`` with torchvision (layout b)."""
    try:
        import torchvision.datasets as tvd
    except Exception as e:  # ImportError, or a torchvision built for another torch
        raise DataError(f"--download of {variant.title} needs a working torchvision "
                        f"(pip install 'prunekit[vision]'): {e}") from e
    cls = getattr(tvd, variant.torchvision_class)
    root.mkdir(parents=True, exist_ok=True)
    try:
        cls(root=str(root), train=True, download=True)
    except Exception as e:  # network errors, checksum mismatch, ...
        raise DataError(f"downloading {variant.title} into {root} failed ({type(e).__name__}: {e}).\n"
                        f"Download {cls.url} by hand, extract it, and point --data-dir at the result.") from e


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 5000) -> torch.Tensor:
    """uint8 (N, C, H, W) images resized to ``size`` x ``size``: area averaging when shrinking (an integer factor
    averages exact pixel blocks), bilinear when enlarging; rounded to the nearest uint8. Works in chunks of
    ``chunk`` images so a 50k-image set never needs a full float copy."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrink = size < images.shape[-1]
    out = []
    for part in images.split(chunk):
        x = part.float()
        x = (torch.nn.functional.interpolate(x, size=(size, size), mode="area") if shrink else
             torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out).contiguous()


def resize_arrays(data: ArrayData, image_size: int) -> ArrayData:
    """``data`` with every image resized to ``image_size`` once (see :func:`resize_uint8`); ``spec.image_size``
    and the crop padding (4 px at 32, scaled, at least 1) follow."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size={image_size!r} must be a positive integer")
    if image_size == data.spec.image_size:
        return data
    scale = image_size / data.spec.image_size
    spec = DataSpec(data.spec.name, data.spec.num_classes, data.spec.in_channels, image_size, data.spec.mean,
                    data.spec.std)
    padding = max(1, round(data.crop_padding * scale)) if data.crop_padding else 0
    return ArrayData(resize_uint8(data.train_images, image_size), data.train_labels,
                     resize_uint8(data.test_images, image_size), data.test_labels, spec=spec,
                     pixel_scale=data.pixel_scale, crop_padding=padding, flip=data.flip)


def load_cifar(name: str, data_dir: str | Path | None, download_missing: bool = False,
               image_size: int | None = None) -> ArrayData:
    """CIFAR-10/100 from ``data_dir`` in the npz or the torchvision layout (detected), downloading if asked.

    Returns uint8 (N, 3, 32, 32) images (50,000 train / 10,000 test for the full sets) and int64 labels;
    with ``image_size`` (e.g. 16) the images are resized once here (:func:`resize_arrays`) and
    ``spec.image_size`` says so. Raises ``DataError`` naming the directory and both layouts when nothing usable
    is found.
    """
    variant = VARIANTS[name]
    if data_dir is None and not download_missing:
        raise DataError(f"dataset {name!r} needs --data-dir (data_dir=...): no directory was given.\n"
                        + layout_help(variant))
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    found = find_layout(root, variant)
    if found is None and download_missing:
        download(variant, root)
        found = find_layout(root, variant)
    if found is None:
        state = "does not exist" if not root.exists() else (
            "is not a directory" if not root.is_dir() else f"holds no {variant.title} files")
        raise DataError(f"no {variant.title} data in --data-dir '{root}' (it {state}).\n" + layout_help(variant))
    data = read_layout(*found, variant)
    return data if image_size is None else resize_arrays(data, image_size)
