"""``digits``: the offline default dataset, scikit-learn's bundled 1,797 real handwritten digits.

8x8 grey images with values 0..16, 10 classes. They ship inside the scikit-learn wheel, so this dataset
works on a machine without internet. scikit-learn defines no test split; prunekit holds out a fixed,
stratified 20% (359 images) as the test set. It is the same on every run (its seed does not follow the
run's ``seed``), so test numbers of different runs are comparable.
"""

from __future__ import annotations

import numpy as np
import torch

from prunekit.data.sampling import stratified_split
from prunekit.data.spec import ArrayData, DataSpec
from prunekit.errors import DataError

TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0  # fixed: the test set never depends on a run's seed
PIXEL_MAX = 16  # sklearn's digits are 4-bit: 0..16
# Mean/std of the 1,438 training images (pixel/16), measured; a test checks them.
MEAN = (0.3050,)
STD = (0.3759,)

SPEC = DataSpec(name="digits", num_classes=10, in_channels=1, image_size=8, mean=MEAN, std=STD)


def load_digits_arrays() -> ArrayData:
    """The digits as uint8 (N, 1, 8, 8) tensors (values 0..16): 1,438 train / 359 test images.

    Augmentation: random shifts of up to one pixel (crop after 1-pixel zero padding); no flip (digits are not
    mirror-symmetric).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("dataset 'digits' needs scikit-learn (it carries the images): pip install scikit-learn") from e
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return ArrayData(train_images=x[train_idx], train_labels=y[train_idx],
                     test_images=x[test_idx], test_labels=y[test_idx], spec=SPEC,
                     pixel_scale=1.0 / PIXEL_MAX, crop_padding=1, flip=False)
