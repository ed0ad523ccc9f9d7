"""prunekit.data: datasets, layouts, splits, the tensor loader (augmentation, resume, sharding), errors."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.data import DataLoaders, DataSpec, TensorLoader, build_data, describe, list_datasets
from prunekit.data.augment import random_crop_flip
from prunekit.data.digits import load_digits_arrays
from prunekit.data.sampling import balanced_subset, stratified_split
from prunekit.errors import ConfigError, DataError

CIFAR10_PICKLE_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


# ------------------------------------------------------------------------------------------------ fixtures
def _fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 HWC 32x32x3 images, every image distinct, labels cycling over 10 classes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def write_npz_layout(folder: Path, per_chunk: int = 20, chunks: int = 2, n_test: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(chunks):
        x, y = _fake_images(per_chunk, seed=i)
        np.savez(folder / f"train_{i}.npz", images=x, labels=y, class_names=np.array([str(c) for c in range(10)]))
    x, y = _fake_images(n_test, seed=99)
    np.savez(folder / "test.npz", images=x, labels=y)
    return folder


def _batch_bytes(n: int, seed: int, label_key: str = "labels", num_classes: int = 10) -> bytes:
    """A python-layout batch as the official files are: a Python-2-style pickle naming numpy.core."""
    x, _ = _fake_images(n, seed)
    batch = {"batch_label": "fake", "data": x.transpose(0, 3, 1, 2).reshape(n, -1),
             label_key: [int(v) for v in np.arange(n) % num_classes], "filenames": [f"{i}.png" for i in range(n)]}
    return pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")


def write_pickle_layout(root: Path, n: int = 8) -> dict[str, bytes]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: _batch_bytes(n, seed=i) for i, name in enumerate(CIFAR10_PICKLE_FILES)}
    files["batches.meta"] = pickle.dumps({"label_names": [str(c) for c in range(10)]}, protocol=2)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return files


def _rows(images: torch.Tensor) -> list[bytes]:
    return sorted(bytes(r) for r in images.cpu().reshape(len(images), -1).numpy())


def _collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


# ------------------------------------------------------------------------------------------------ digits
def test_digits_shapes_classes_and_normalization():
    data = build_data("digits", batch_size=32, augment=False)
    assert isinstance(data, DataLoaders) and isinstance(data.spec, DataSpec)
    assert data.spec.input_shape == (1, 8, 8) and data.spec.num_classes == 10 and data.val is None
    assert data.train.dataset_size + data.test.dataset_size == 1797 and data.test.dataset_size == 359
    x, y = next(iter(data.train))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(torch.cat([b[1] for b in data.test]).tolist()) == set(range(10))
    # The hard-coded mean/std are those of the training images: normalised train pixels have mean 0, std 1.
    xs = _collect(data.train)[0]
    raw = load_digits_arrays().train_images.float() / 16
    assert raw.mean().item() == pytest.approx(data.spec.mean[0], abs=1e-3)
    assert raw.std().item() == pytest.approx(data.spec.std[0], abs=1e-3)
    assert abs(xs.mean().item()) < 0.1 and xs.std().item() == pytest.approx(1.0, abs=0.1)


def test_split_val_from_train_only_disjoint_and_seeded():
    arrays = load_digits_arrays()
    a = build_data("digits", val_split=0.2, seed=3, augment=False)
    assert a.val is not None and a.train.dataset_size + a.val.dataset_size == len(arrays.train_images)
    # train ∪ val is exactly the training set (as a multiset of images), test is untouched.
    assert _rows(torch.cat([a.train.images, a.val.images])) == _rows(arrays.train_images)
    assert _rows(a.test.images) == _rows(arrays.test_images)
    assert torch.equal(a.test.images.cpu(), arrays.test_images)
    # Stratified: every class is in val, in proportion.
    counts = a.val.labels.bincount(minlength=10)
    assert counts.min() >= 25 and counts.max() <= 31
    b = build_data("digits", val_split=0.2, seed=3)
    c = build_data("digits", val_split=0.2, seed=4)
    assert torch.equal(a.val.images, b.val.images) and not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the digits test split never follows the seed


def test_split_helpers_exact_sizes_and_balance():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    kept, held = stratified_split(labels, 0.1, seed=0)
    assert len(held) == 10 and len(kept) == 90 and not set(kept) & set(held)
    assert np.bincount(labels[held]).tolist() == [5, 3, 2]
    sub = balanced_subset(labels, 30, seed=0)
    assert len(set(sub)) == 30 and np.bincount(labels[sub]).tolist() == [10, 10, 10]
    assert np.array_equal(sub, balanced_subset(labels, 30, seed=0))
    sub = balanced_subset(labels, 76, seed=1)  # class 2 runs out at 20: the others share the rest evenly
    assert np.bincount(labels[sub]).tolist() == [28, 28, 20]


def test_train_subset_is_class_balanced_and_val_independent_of_it():
    d = build_data("digits", train_subset=50, val_split=0.1, batch_size=10)
    assert d.train.dataset_size == 50 and d.train.labels.bincount(minlength=10).tolist() == [5] * 10
    e = build_data("digits", train_subset=200, val_split=0.1, batch_size=10)
    assert torch.equal(d.val.images, e.val.images)


# ------------------------------------------------------------------------------------------------ CIFAR layouts
def test_cifar_npz_layout_detected_in_dir_and_subdir(tmp_path):
    write_npz_layout(tmp_path / "cifar10")
    for data_dir in (tmp_path / "cifar10", tmp_path):
        d = build_data("cifar10", data_dir=data_dir, batch_size=8, augment=False)
        assert d.train.dataset_size == 40 and d.test.dataset_size == 10
        assert d.spec.mean == (0.4914, 0.4822, 0.4465) and d.spec.input_shape == (3, 32, 32)
    x, _ = _fake_images(20, seed=0)
    assert torch.equal(d.train.images[:20], torch.from_numpy(x).permute(0, 3, 1, 2))  # HWC → CHW, file order


def test_cifar_pickle_layout_detected(tmp_path):
    write_pickle_layout(tmp_path)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        d = build_data("cifar10", data_dir=data_dir, batch_size=8, augment=False)
        assert d.train.dataset_size == 40 and d.test.dataset_size == 8
    x, _ = _fake_images(8, seed=0)
    assert torch.equal(d.train.images[:8], torch.from_numpy(x).permute(0, 3, 1, 2))
    assert d.train.labels[:8].tolist() == list(range(8))


def test_cifar100_pickle_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(_batch_bytes(12, 0, "fine_labels", 100))
    (folder / "test").write_bytes(_batch_bytes(4, 1, "fine_labels", 100))
    d = build_data("cifar100", data_dir=tmp_path, batch_size=4)
    assert d.spec.num_classes == 100 and d.train.dataset_size == 12


def test_missing_or_wrong_dir_explains_both_layouts(tmp_path):
    for data_dir in (tmp_path / "nope", tmp_path, None):
        with pytest.raises(DataError) as err:
            build_data("cifar10", data_dir=data_dir)
        msg = str(err.value)
        assert "npz" in msg and "train_0.npz" in msg and "cifar-10-batches-py" in msg and "--download" in msg
        assert data_dir is None or str(data_dir) in msg


def test_bad_cifar_contents_are_data_errors(tmp_path):
    folder = write_npz_layout(tmp_path / "a")
    np.savez(folder / "test.npz", images=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(2))
    with pytest.raises(DataError, match="test.npz"):
        build_data("cifar10", data_dir=folder)
    with pytest.raises(DataError, match="class_names"):  # a 10-class npz dir is not CIFAR-100
        build_data("cifar100", data_dir=write_npz_layout(tmp_path / "b"))
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in CIFAR10_PICKLE_FILES:
        (folder / name).write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}))
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        build_data("cifar10", data_dir=folder)


def test_pickle_reader_refuses_code(tmp_path):
    write_pickle_layout(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match="refusing"):
        build_data("cifar10", data_dir=tmp_path)


def test_download_from_mock_server(tmp_path, monkeypatch):
    tvd = pytest.importorskip("torchvision.datasets", reason="download goes through torchvision")
    serve = tmp_path / "serve"
    files = write_pickle_layout(serve / "src")
    archive = serve / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(serve / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")

    def md5(blob: bytes) -> str:
        return hashlib.md5(blob).hexdigest()

    handler_cls = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server_cls = type("QuietServer", (http.server.ThreadingHTTPServer,), {"handle_error": lambda *a: None})
    server = server_cls(("127.0.0.1", 0), lambda *a: handler_cls(*a, directory=str(serve)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        cls = tvd.CIFAR10
        monkeypatch.setattr(cls, "url", f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz")
        monkeypatch.setattr(cls, "tgz_md5", md5(archive.read_bytes()))
        monkeypatch.setattr(cls, "train_list", [[n, md5(files[n])] for n in CIFAR10_PICKLE_FILES[:5]])
        monkeypatch.setattr(cls, "test_list", [["test_batch", md5(files["test_batch"])]])
        monkeypatch.setattr(cls, "meta", dict(cls.meta, md5=md5(files["batches.meta"])))
        d = build_data("cifar10", data_dir=tmp_path / "dl", download=True, batch_size=8)
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "dl" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert d.train.dataset_size == 40 and d.test.dataset_size == 8


# ------------------------------------------------------------------------------------------------ augmentation
def test_random_crop_flip_is_a_padded_crop_or_its_mirror():
    b, c, h, w, p = 6, 2, 5, 7, 2
    x = torch.arange(b * c * h * w, dtype=torch.int32).view(b, c, h, w) + 1
    out = random_crop_flip(x, p, True, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(b):
        candidates = [padded[i, :, oy:oy + h, ox:ox + w] for oy in range(2 * p + 1) for ox in range(2 * p + 1)]
        assert any(torch.equal(out[i], cand) or torch.equal(out[i], cand.flip(-1)) for cand in candidates)
    big = random_crop_flip(torch.ones(400, 1, 4, 4), 1, True, torch.Generator().manual_seed(1))
    zero_rows = (big.sum(dim=(1, 3)) == 0).any(dim=1).float().mean().item()  # a zero-padded row came in
    assert 0.5 < zero_rows < 0.85  # P(vertical offset != centre) = 2/3


def test_augmentation_seeded_by_epoch_and_step():
    d = build_data("synthetic", batch_size=16, num_train=64, num_test=16, seed=1)
    tr = d.train
    tr.set_epoch(2)
    a = list(tr)
    tr.set_epoch(2)
    b = list(tr)
    tr.set_epoch(3)
    c = list(tr)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][0], c[0][0])
    assert a[0][0].shape == (16, 3, 32, 32) and len(a) == 4
    # Without set_epoch successive passes advance the epoch; eval loaders never change.
    assert tr.epoch == 3 and not torch.equal(list(tr)[0][1], c[0][1]) and tr.epoch == 4
    assert all(torch.equal(u[0], v[0]) for u, v in zip(d.test, d.test))


def test_no_augment_train_matches_plain_normalisation():
    d = build_data("synthetic", batch_size=8, num_train=16, num_test=8, augment=False)
    x, y = next(iter(d.test))
    mean = torch.tensor(d.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(d.spec.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (d.test.images[:8].float() / 255 - mean) / std, atol=1e-5)
    assert d.train.crop_padding == 0 and not d.train.flip


def test_iter_from_yields_the_tail_of_the_epoch():
    d = build_data("digits", batch_size=100, seed=5)
    d.train.set_epoch(7)
    full = list(d.train)
    d.train.set_epoch(7)
    tail = list(d.train.iter_from(5))
    assert len(full) == len(d.train) == 14 and len(tail) == 9
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(full[5:], tail))
    assert list(d.train.iter_from(len(d.train))) == []
    with pytest.raises(ConfigError, match="step"):
        d.train.iter_from(len(d.train) + 1)


def test_epoch_visits_each_sample_once_and_drop_last():
    n = 1438
    loader = TensorLoader(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.zeros(n, dtype=torch.long),
                          batch_size=100, mean=[0.0], std=[1.0], shuffle=True, seed=3)
    ids = _collect(loader)[0].flatten().long()
    assert len(loader) == 14 and len(ids) == 1400 and len(set(ids.tolist())) == 1400  # the partial batch dropped
    assert not torch.equal(ids, ids.sort().values)  # shuffled
    d = build_data("digits", batch_size=100)
    assert len(_collect(d.test)[1]) == 359 and len(d.test) == 4  # eval keeps the last partial batch


@pytest.mark.parametrize("shuffle", [True, False])
def test_rank_shards_disjoint_equal_and_complete(shuffle):
    n, world = 103, 3
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    ids = []
    for rank in range(world):
        loader = TensorLoader(images, torch.zeros(n, dtype=torch.long), batch_size=8, mean=[0.0], std=[1.0],
                              shuffle=shuffle, drop_last=False, seed=4, rank=rank, world_size=world)
        loader.set_epoch(1)
        ids.append(_collect(loader)[0].flatten().long().tolist())
        assert loader.num_samples == len(ids[-1])
    flat = [i for r in ids for i in r]
    assert len(flat) == len(set(flat))  # disjoint
    if shuffle:
        assert {len(r) for r in ids} == {n // world}  # equal shares, so equal batch counts
    else:
        assert sorted(flat) == list(range(n))  # eval: every sample exactly once


def test_channels_last_output():
    d = build_data("synthetic", batch_size=8, num_train=16, num_test=8, channels_last=True)
    x, _ = next(iter(d.train))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (8, 3, 32, 32)


# ------------------------------------------------------------------------------------------------ synthetic
def test_synthetic_is_deterministic_and_learnable():
    kw = dict(batch_size=64, num_train=640, num_test=320, image_size=8, seed=2)
    d, e = build_data("synthetic", **kw), build_data("synthetic", **kw)
    assert torch.equal(d.train.images, e.train.images) and d.spec.input_shape == (3, 8, 8)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        for x, y in d.train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in d.test)
    assert correct / d.test.num_samples > 0.9


# ------------------------------------------------------------------------------------------------ imagefolder
def _write_png_folder(root: Path, split: str, per_class: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(len(split))
    for cls in ("cat", "dog", "emu"):
        (root / split / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")


def test_imagefolder_loaders(tmp_path):
    pytest.importorskip("torchvision")
    _write_png_folder(tmp_path, "train", 4)
    _write_png_folder(tmp_path, "val", 2)
    d = build_data("imagefolder", data_dir=tmp_path, image_size=8, batch_size=4, num_workers=0, val_split=0.25)
    assert d.spec.num_classes == 3 and d.spec.input_shape == (3, 8, 8)
    assert d.train.num_samples == 9 and d.val.num_samples == 3 and d.test.num_samples == 6
    x, y = next(iter(d.test))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    d.train.set_epoch(1)
    full = list(d.train)
    d.train.set_epoch(1)
    tail = list(d.train.iter_from(1))
    assert len(full) == 2 and len(tail) == 1 and torch.equal(full[1][0], tail[0][0])
    # Augmentation is seeded per sample: worker processes reproduce the in-process batches exactly.
    w = build_data("imagefolder", data_dir=tmp_path, image_size=8, batch_size=4, num_workers=2, val_split=0.25)
    w.train.set_epoch(1)
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(full, w.train))
    # With both val/ and test/: test/ is the test set, val/ the validation set.
    _write_png_folder(tmp_path, "test", 1)
    d = build_data("imagefolder", data_dir=tmp_path, image_size=8, batch_size=4, num_workers=0)
    assert d.test.num_samples == 3 and d.val.num_samples == 6 and d.train.num_samples == 12
    with pytest.raises(DataError, match="train/"):
        build_data("imagefolder", data_dir=tmp_path / "train")


# ------------------------------------------------------------------------------------------------ options
def test_bad_options_are_config_errors():
    assert list_datasets()[0] == "digits" and {"cifar10", "cifar100", "synthetic", "imagefolder"} <= set(
        list_datasets())
    assert "cifar-10-batches-py" in describe() and "train_*.npz" in describe()
    with pytest.raises(ConfigError, match="Valid names: digits"):
        build_data("mnist")
    with pytest.raises(ConfigError, match="val_split"):
        build_data("digits", val_split=1.0)
    with pytest.raises(ConfigError, match="batch_size=5000"):
        build_data("digits", batch_size=5000)
    with pytest.raises(ConfigError, match="train_subset"):
        build_data("digits", train_subset=100000)
    with pytest.raises(ConfigError, match="num_train"):
        build_data("digits", num_train=5)
    with pytest.raises(ConfigError, match="image_size"):
        build_data("digits", image_size=32)
    with pytest.raises(ConfigError, match="rank"):
        build_data("digits", rank=2, world_size=2)


def test_cifar_image_size_downsamples_once_at_load(tmp_path):
    folder = write_npz_layout(tmp_path / "cifar10", per_chunk=20, chunks=1, n_test=10)
    full = build_data("cifar10", data_dir=folder, batch_size=10, augment=False)
    small = build_data("cifar10", data_dir=folder, batch_size=10, augment=False, image_size=16)
    assert small.spec.image_size == 16 and small.spec.input_shape == (3, 16, 16)
    x, _ = _collect(small.test)
    assert x.shape == (10, 3, 16, 16)
    # area averaging of the uint8 pixels: each 16x16 pixel is the rounded mean of a 2x2 block of the original
    with np.load(folder / "test.npz") as z:
        raw = z["images"].transpose(0, 3, 1, 2).astype(np.float64)
    expected = np.round(raw.reshape(10, 3, 16, 2, 16, 2).mean(axis=(3, 5)))
    mean = torch.tensor(small.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(small.spec.std).view(1, 3, 1, 1)
    pixels = ((x.cpu().double() * std + mean) * 255).numpy()
    assert np.abs(pixels - expected).max() < 1e-3
    xf, _ = _collect(full.test)
    assert xf.shape == (10, 3, 32, 32)
    # augmentation still works at 16 px (crop padding scaled to 2), and enlarging is bilinear
    aug = build_data("cifar10", data_dir=folder, batch_size=10, image_size=16)
    assert next(iter(aug.train))[0].shape == (10, 3, 16, 16)
    assert build_data("cifar10", data_dir=folder, batch_size=10, image_size=40).spec.image_size == 40
    with pytest.raises(DataError, match="image_size"):
        build_data("cifar10", data_dir=folder, image_size=0)
