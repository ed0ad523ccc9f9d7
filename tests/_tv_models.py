"""The torchvision models the tests run (issue 3's list): one list, shared by every test module that needs it."""

from __future__ import annotations

# Built with ``torchvision.models.get_model(name, ...)`` (random weights, nothing downloaded).
TORCHVISION = ("resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "densenet121", "efficientnet_b0",
               "convnext_tiny")

# Left out of the slower per-model checks (ONNX export, inference export) for time, not coverage: each repeats
# the layers and ops of a model that stays in.
SAME_OPS_AS = {
    "resnet50": "resnet18",      # bottleneck blocks: resnet18's ops
    "vgg16_bn": "resnet18",      # 0.5 GB of weights; conv-BN-ReLU and linear layers, as in resnet18
    "densenet121": "densenet40",  # 30 s; prunekit's densenet40 has the same concat / pre-activation pattern
}

# One model per kind of graph: the models whose graphs differ in kind.
TORCHVISION_DISTINCT = tuple(n for n in TORCHVISION if n not in SAME_OPS_AS)
