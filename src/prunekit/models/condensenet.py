"""CondenseNet for CIFAR (Huang, Liu, van der Maaten, Weinberger, CVPR 2018; official ShichenLiu/CondenseNet).

A 3x3 stem conv to ``2 * growth[0]`` channels, three dense blocks, **average-pool transitions only** (no 1x1
conv, no compression: every layer sees all earlier features, pooled — "fully dense" connectivity), and
**increasing growth** (8-16-32). A dense layer is ``LearnedGroupConv(c -> bottleneck * k, G = 4, C = 4)`` ->
``BN -> ReLU -> Conv2d 3x3 (k, groups=4)`` whose output is concatenated to its input; the head is ``BN -> ReLU
-> global average pool -> Linear``. ``one_by_one="fixed"`` replaces every learned group conv by a fixed
``Conv2d(groups=G)`` + channel shuffle of the same inference cost (the paper's ablation baseline).

=================  ==========  ==========  =====================  ======================  =================
model              stages      growth      params (official)      "FLOPs" (official)      paper C-10 error
=================  ==========  ==========  =====================  ======================  =================
condensenet50      8-8-8       8-16-32     0.22M                  28.6M                   6.22 %
condensenet86      14-14-14    8-16-32     0.52M                  65.8M                   5.06 %
condensenet122     20-20-20    8-16-32     0.95M                  116.7M                  4.48 %
condensenet182     30-30-30    12-24-48    4.2M                   513M                    3.76 % (600 ep)
=================  ==========  ==========  =====================  ======================  =================

**Two counting conventions.** The paper's FLOPs are the official ``utils.measure_model``: conv
multiply-accumulates with each learned group conv counted at ``1/C`` of its dense cost, **plus** one op per
ReLU input element, per pooled input element and per linear bias; params count each learned group conv's
weights ``/C`` and the uncondensed classifier. :func:`official_count` reproduces that convention (it gives the
table's figures exactly). prunekit's own convention (``prunekit.count``: conv + linear MACs only, the layers as
they compute) gives, for CondenseNet-86 at 32 px: **174.0M MACs** for the training form (the masked 1x1 convs
compute densely) and **62.4M MACs** for the converted inference form (``prunekit.methods.condensenet.convert``,
classifier not pruned; 62.4M with it pruned too: the classifier is 8K MACs).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn as nn

from prunekit.errors import ConfigError
from prunekit.models.layers import ClassifierHead, init_weights
from prunekit.models.layers_lgc import ChannelShuffle, LearnedGroupConv
from prunekit.models.registry import register_model

OneByOne = Literal["learned", "fixed"]


class FixedGroupConv(nn.Module):
    """``BN -> ReLU -> Conv2d 1x1 (groups=G) -> ChannelShuffle(G)``: the fixed group convolution with the
    cost of a condensed :class:`LearnedGroupConv` whose C equals G."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 4):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)
        self.shuffle = ChannelShuffle(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(self.relu(self.norm(x))))


class CondenseLayer(nn.Module):
    """``(N, C, H, W) -> (N, C + growth, H, W)``: ``cat([x, conv3x3(lgc(x))])``."""

    def __init__(self, in_channels: int, growth: int, *, bottleneck: int = 4, groups_1x1: int = 4,
                 groups_3x3: int = 4, condense_factor: int | None = None, dropout: float = 0.0,
                 one_by_one: OneByOne = "learned"):
        super().__init__()
        width = bottleneck * growth
        if one_by_one == "learned":
            self.lgc = LearnedGroupConv(in_channels, width, groups_1x1, condense_factor, dropout)
        elif one_by_one == "fixed":
            self.lgc = FixedGroupConv(in_channels, width, groups_1x1)
        else:
            raise ConfigError(f"one_by_one={one_by_one!r} must be 'learned' or 'fixed'")
        self.conv = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, growth, 3, 1, 1, groups=groups_3x3, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.lgc(x))], 1)


class CondenseNet(nn.Module):
    """CIFAR CondenseNet: ``(N, in_channels, H, W) -> (N, num_classes)`` (H, W: 32 by design; any multiple of 4).

    ``stages``: dense layers per block; ``growth``: growth rate per block; ``bottleneck``: 1x1 width factor;
    ``groups_1x1`` G and ``condense_factor`` C (default G) of the learned group convs; ``groups_3x3``: groups of
    the 3x3 convs; ``dropout``: before each learned 1x1 conv (upstream default 0); ``one_by_one``: ``learned``
    (CondenseNet) or ``fixed`` (group conv + shuffle, the ablation baseline).
    """

    def __init__(self, stages: Sequence[int] = (14, 14, 14), growth: Sequence[int] = (8, 16, 32),
                 num_classes: int = 10, in_channels: int = 3, bottleneck: int = 4, groups_1x1: int = 4,
                 groups_3x3: int = 4, condense_factor: int | None = None, dropout: float = 0.0,
                 one_by_one: OneByOne = "learned"):
        super().__init__()
        stages, growth = [int(s) for s in stages], [int(g) for g in growth]
        if len(stages) != len(growth) or not stages or min(stages) < 1 or min(growth) < 1:
            raise ConfigError(f"CondenseNet: stages={stages} and growth={growth} must be positive and of the "
                              "same length")
        channels = 2 * growth[0]
        feats: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)]
        for b, (n, k) in enumerate(zip(stages, growth)):
            if b:
                feats.append(nn.AvgPool2d(2))
            layers = []
            for _ in range(n):
                layers.append(CondenseLayer(channels, k, bottleneck=bottleneck, groups_1x1=groups_1x1,
                                            groups_3x3=groups_3x3, condense_factor=condense_factor,
                                            dropout=dropout, one_by_one=one_by_one))
                channels += k
            feats.append(nn.Sequential(*layers))
        feats += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*feats)
        self.head = ClassifierHead(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _variant(stages: int, growth: tuple[int, int, int]):
    def build(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CondenseNet:
        kwargs.setdefault("stages", (stages,) * 3)
        kwargs.setdefault("growth", growth)
        return CondenseNet(num_classes=num_classes, in_channels=in_channels, **kwargs)
    return build


for _depth, _n, _k, _p, _f in ((50, 8, (8, 16, 32), "0.22M", "28.6M"), (86, 14, (8, 16, 32), "0.52M", "65.8M"),
                               (122, 20, (8, 16, 32), "0.95M", "116.7M"), (182, 30, (12, 24, 48), "4.2M", "513M")):
    register_model(f"condensenet{_depth}",
                   description=f"CondenseNet-{_depth} (stages {_n}x3, growth {'-'.join(map(str, _k))}, G=C=4), "
                               f"{_p} params / {_f} FLOPs (official count)")(_variant(_n, _k))


# ------------------------------------------------------------------------------- the official count
def official_count(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> tuple[int, int]:
    """``(flops, params)`` of ``model`` in the official CondenseNet convention (``utils.measure_model``; see the
    module docstring): conv MACs with learned group convs at ``1/C``, plus ReLU inputs, pooled inputs and linear
    biases; params with learned group conv weights ``/C``. One image of ``input_size``; eval mode."""
    ops = [0.0]
    params = [0.0]
    inside: set[int] = set()
    for m in model.modules():
        if isinstance(m, LearnedGroupConv):
            inside.update(id(c) for c in m.modules() if c is not m)

    def numel(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters(recurse=False))

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        if isinstance(m, LearnedGroupConv):
            ops[0] += x.numel()  # its ReLU
            ops[0] += out.numel() * m.in_channels / m.condense_factor
            params[0] += numel(m.norm) + m.conv.weight.numel() / m.condense_factor
        elif isinstance(m, nn.Conv2d):
            ops[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            params[0] += numel(m)
        elif isinstance(m, nn.ReLU):
            ops[0] += x.numel()
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            ops[0] += out.numel() * k * k
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            ops[0] += x.numel()
        elif isinstance(m, nn.Linear):
            ops[0] += x.shape[0] * (m.weight.numel() + (m.bias.numel() if m.bias is not None else 0))
            params[0] += numel(m)
        else:
            params[0] += numel(m)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if id(m) not in inside and (isinstance(m, LearnedGroupConv) or not list(m.children()))]
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return int(round(ops[0])), int(round(params[0]))


__all__ = ["CondenseLayer", "CondenseNet", "FixedGroupConv", "official_count"]
