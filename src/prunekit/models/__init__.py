"""Model zoo: CIFAR ResNet/VGG/MobileNetV2/DenseNet, plus torchvision (``tv:``) and timm (``timm:``) models."""

from prunekit.models.registry import (ModelEntry, create, default_input_size, get_entry, list_models,
                                      register_model)

# Importing the modules registers their models (order = listing order).
from prunekit.models import resnet_cifar, vgg_cifar, mobilenetv2_cifar, densenet_cifar, small  # noqa: E402,F401
from prunekit.models import condensenet  # noqa: E402,F401

__all__ = ["ModelEntry", "create", "default_input_size", "get_entry", "list_models", "register_model"]
