"""``synthetic``: random images a model can learn, for tests and benchmarks that must not touch the disk.

Each class has a fixed smooth random pattern (left-right symmetric, so flips keep it; low-frequency, so crops
barely change it); an image is ``128 + pattern[class] + noise``, clipped to 0..255 and stored as uint8. The whole
dataset is a deterministic function of its seed and size options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prunekit.data.sampling import derive_seed
from prunekit.data.spec import ArrayData, DataSpec
from prunekit.errors import check_range

DEFAULTS = {"num_train": 5000, "num_test": 1000, "num_classes": 10, "in_channels": 3, "image_size": 32}
PATTERN_AMPLITUDE = 40.0  # pixel units
NOISE_STD = 48.0  # pixel units
_SYNTHETIC_STREAM = 7


def _class_patterns(gen: torch.Generator, num_classes: int, channels: int, size: int) -> torch.Tensor:
    """(K, C, size, size) float patterns: 4x4 Gaussian noise upsampled bicubically, mirrored and averaged."""
    coarse = torch.randn((num_classes, channels, 4, 4), generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    smooth = (smooth + smooth.flip(-1)) / 2
    return PATTERN_AMPLITUDE * smooth / smooth.std()


def _draw(gen: torch.Generator, patterns: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images (classes balanced, in random order) and their int64 labels."""
    k = patterns.shape[0]
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=gen)]
    noise = NOISE_STD * torch.randn((n, *patterns.shape[1:]), generator=gen)
    images = (128.0 + patterns[labels] + noise).round_().clamp_(0, 255).to(torch.uint8)
    return images, labels


def make_synthetic(*, seed: int = 0, num_train: int = DEFAULTS["num_train"], num_test: int = DEFAULTS["num_test"],
                   num_classes: int = DEFAULTS["num_classes"], in_channels: int = DEFAULTS["in_channels"],
                   image_size: int = DEFAULTS["image_size"]) -> ArrayData:
    """A learnable synthetic dataset: uint8 (N, C, S, S) images, int64 labels, deterministic in all arguments.

    Train and test share the class patterns and draw independent noise. ``spec.mean``/``std`` are measured on the
    training images. Augmentation: CIFAR's (crop with padding S/8, flip).
    """
    for name, value in (("num_train", num_train), ("num_test", num_test), ("num_classes", num_classes),
                        ("in_channels", in_channels), ("image_size", image_size)):
        check_range(name, value, 1)
    gen = torch.Generator().manual_seed(derive_seed(seed, _SYNTHETIC_STREAM))
    patterns = _class_patterns(gen, num_classes, in_channels, image_size)
    x_train, y_train = _draw(gen, patterns, num_train)
    x_test, y_test = _draw(gen, patterns, num_test)
    scaled = x_train.to(torch.float32).div_(255.0)
    mean = tuple(round(v, 4) for v in scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(round(v, 4) for v in scaled.std(dim=(0, 2, 3)).tolist())
    spec = DataSpec(name="synthetic", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    mean=mean, std=std)
    return ArrayData(train_images=x_train, train_labels=y_train, test_images=x_test, test_labels=y_test,
                     spec=spec, crop_padding=max(1, image_size // 8), flip=True)
