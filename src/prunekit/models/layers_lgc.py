"""Learned group convolution (CondenseNet, Huang et al., CVPR 2018) and its inference form.

:class:`LearnedGroupConv` is the training form: ``BN(in) -> ReLU -> [Dropout] -> Conv2d 1x1 (in -> out)`` with a
0/1 ``mask`` buffer of the weight's shape. The layer computes with ``weight * mask``: condensing zeroes the
removed weights, and :class:`~prunekit.methods.condensenet.Condensation` (the Trainer callback) keeps them at zero
(their gradients and optimizer state are masked). The conv itself is a plain ``nn.Conv2d``, so the dependency
graph, the MAC count and every pruning method see an ordinary 1x1 convolution. The ``out`` filters are split into ``G``
groups, **filter o belonging to group ``o mod G``** (the official code's interleaved ``mask[g::G]`` layout, an
implicit channel shuffle). Condensation (:meth:`LearnedGroupConv.condense_to`) runs in ``C - 1`` stages; each
removes, *per group*, the ``in // C`` still-connected input channels with the smallest L1 norm over that group's
(masked) weights, for every filter of the group, until ``in / C`` inputs per group remain. The ``stage`` buffer
counts the stages done; ``mask`` and ``stage`` are in the state dict, so a checkpoint resumes mid-schedule.

:meth:`LearnedGroupConv.condensed` returns the exact inference form, :class:`CondensedConv`: ``index_select``
of the ``G * kept`` input channels the groups still read (group-major, increasing within a group; an input read
by several groups appears several times) -> BN of those channels -> ReLU -> ``Conv2d(G * kept -> out,
groups=G)`` -> :class:`ChannelShuffle` back to the interleaved output order. :class:`CondensedLinear` is the
upstream classifier pruning: ``index_select`` of the input features with the largest column L1 norm ->
``Linear``.

The inference form exports to ONNX (Gather, Conv, Reshape/Transpose). ``prunekit.save``/``load`` store these
layers as layers of their own once :mod:`prunekit.methods.condensenet` is imported (it registers their specs:
``models`` sits below ``io`` in the package's layers, so this module cannot).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.errors import ConfigError


class LearnedGroupConv(nn.Module):
    """``(N, in_channels, H, W) -> (N, out_channels, H, W)``: BN -> ReLU -> [Dropout(dropout)] -> masked 1x1 conv.

    ``groups`` G (filter o is in group ``o % G``), ``condense_factor`` C (default G): after the ``C - 1``
    condensing stages each group reads ``in_channels / C`` inputs. ``in_channels`` must be a multiple of G and
    of C, ``out_channels`` a multiple of G.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 4, condense_factor: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        condense_factor = groups if condense_factor is None else condense_factor
        if groups < 1 or condense_factor < 1:
            raise ConfigError(f"LearnedGroupConv: groups={groups} and condense_factor={condense_factor} must be >= 1")
        if in_channels % groups or in_channels % condense_factor or out_channels % groups:
            raise ConfigError(f"LearnedGroupConv({in_channels} -> {out_channels}): in_channels must be a multiple "
                              f"of groups={groups} and of condense_factor={condense_factor}, out_channels a "
                              f"multiple of groups")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"LearnedGroupConv: dropout={dropout} must lie in [0, 1)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.groups, self.condense_factor, self.dropout = groups, condense_factor, float(dropout)
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.register_buffer("mask", torch.ones_like(self.conv.weight))
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.drop(self.relu(self.norm(x))))

    # ---- the schedule ---------------------------------------------------------------------------------------
    @property
    def final_stage(self) -> int:
        """``C - 1``: the number of condensing stages."""
        return self.condense_factor - 1

    @property
    def delta(self) -> int:
        """Input channels each condensing stage removes per group: ``in_channels // C``."""
        return self.in_channels // self.condense_factor

    @property
    def kept_per_group(self) -> int:
        """Input channels each group still reads: ``in_channels - stage * delta``."""
        return self.in_channels - int(self.stage) * self.delta

    def kept_fraction(self) -> float:
        """Fraction of the 1x1 weights still connected."""
        return self.kept_per_group / self.in_channels

    def group_mask(self) -> torch.Tensor:
        """``[G, in]`` bool: which input channels each group reads (every filter of a group reads the same)."""
        m = self.mask[:, :, 0, 0]
        return m[: self.groups].bool()  # row g is a filter of group g; all filters of a group share its columns

    def importance(self) -> torch.Tensor:
        """``[G, in]``: the L1 norm of each input column over the group's (masked) filters."""
        w = (self.conv.weight * self.mask)[:, :, 0, 0].detach().abs()
        return w.reshape(self.out_channels // self.groups, self.groups, self.in_channels).sum(0)

    @torch.no_grad()
    def condense_to(self, stage: int) -> int:
        """Run condensing stages until ``stage`` (at most ``C - 1``) are done; returns how many ran now."""
        target = min(int(stage), self.final_stage)
        ran = 0
        while int(self.stage) < target:
            score = self.importance().float()
            live = self.group_mask()
            score = torch.where(live, score, torch.full_like(score, float("inf")))
            # the ``delta`` weakest live columns of each group (ties: the lower index first)
            drop = torch.sort(score, dim=1, stable=True).indices[:, : self.delta]
            cols = torch.ones_like(live)
            cols.scatter_(1, drop, False)
            rows = cols.repeat(self.out_channels // self.groups, 1)  # row k*G + g <- group g
            self.mask.mul_(rows[:, :, None, None].to(self.mask.dtype))
            self.conv.weight.mul_(self.mask)
            self.stage.add_(1)
            ran += 1
        return ran

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the weights outside the mask (the callback keeps them at zero during training)."""
        self.conv.weight.mul_(self.mask)

    def lasso(self) -> torch.Tensor:
        """Group lasso ``sum_g sum_j sqrt(max(sum_{o in g} W_oj^2, 1e-6))`` on the masked weights (0 once every
        stage has run, as upstream)."""
        w = self.conv.weight * self.mask
        if int(self.stage) >= self.final_stage:
            return w.sum() * 0.0
        w = w[:, :, 0, 0].reshape(self.out_channels // self.groups, self.groups, self.in_channels)
        return w.pow(2).sum(0).clamp(min=1e-6).sqrt().sum()

    # ---- the inference form ---------------------------------------------------------------------------------
    @torch.no_grad()
    def condensed(self) -> "CondensedConv":
        """The :class:`CondensedConv` computing the same function in eval mode (dropout is dropped)."""
        g, kept, d_out = self.groups, self.kept_per_group, self.out_channels // self.groups
        live = self.group_mask()
        if self.mask.shape != self.conv.weight.shape or not bool((live.sum(1) == kept).all()):
            raise ConfigError("LearnedGroupConv: the mask does not match its weight or its stage (pruned or edited "
                              "by hand?)")
        if bool((self.conv.weight * (1 - self.mask)).any()):
            raise ConfigError("LearnedGroupConv: weights outside the mask are non-zero: the layer was trained after "
                              "condensing without the Condensation callback (which keeps them at zero); "
                              "call apply_mask() to re-zero them (this changes the function)")
        index = torch.cat([live[i].nonzero().flatten() for i in range(g)])  # group-major, increasing
        p = self.conv.weight
        out = CondensedConv(self.in_channels, self.out_channels, g, kept).to(device=p.device, dtype=p.dtype)
        out.index.copy_(index)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out.norm, name).copy_(getattr(self.norm, name)[index])
        out.norm.num_batches_tracked.copy_(self.norm.num_batches_tracked)
        out.norm.eps, out.norm.momentum = self.norm.eps, self.norm.momentum
        w = p[:, :, 0, 0]
        new = torch.empty(self.out_channels, kept, dtype=p.dtype, device=p.device)
        for i in range(g):  # converted filter i*d_out + k is original filter k*G + i
            cols = index[i * kept:(i + 1) * kept]
            new[i * d_out:(i + 1) * d_out] = w[i::g][:, cols]
        out.conv.weight.copy_(new[:, :, None, None])
        out.train(self.training)
        return out


class ChannelShuffle(nn.Module):
    """``(N, G * d, H, W) -> (N, d * G, H, W)``: channel ``g * d + k`` moves to ``k * G + g`` (ShuffleNet's
    shuffle, written with reshape/transpose so that it exports to ONNX)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


class CondensedConv(nn.Module):
    """The inference form of a condensed :class:`LearnedGroupConv`: ``index_select(in -> G * in_per_group)``
    -> BN -> ReLU -> ``Conv2d(G * in_per_group -> out, 1x1, groups=G)`` -> :class:`ChannelShuffle` (G)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, in_per_group: int):
        super().__init__()
        self.in_channels, self.out_channels, self.groups, self.in_per_group = (in_channels, out_channels, groups,
                                                                              in_per_group)
        width = groups * in_per_group
        self.register_buffer("index", torch.arange(width) % in_channels)
        self.norm = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(width, out_channels, 1, groups=groups, bias=False)
        self.shuffle = ChannelShuffle(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.index_select(x, 1, self.index)
        return self.shuffle(self.conv(self.relu(self.norm(x))))


class CondensedLinear(nn.Module):
    """``Linear`` on a fixed subset of its input features: ``linear(index_select(x, 1, index))``."""

    def __init__(self, in_features: int, out_features: int, kept_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.kept_features = in_features, out_features, kept_features
        self.register_buffer("index", torch.arange(kept_features))
        self.linear = nn.Linear(kept_features, out_features, bias=bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, keep: float = 0.5) -> "CondensedLinear":
        """Keep the ``round(keep * in_features)`` input features whose weight columns have the largest L1 norm
        (upstream ``CondensingLinear`` with drop rate ``1 - keep``: no retraining)."""
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"keep={keep} must lie in (0, 1]")
        n = max(1, int(round(keep * linear.in_features)))
        idx = linear.weight.abs().sum(0).argsort(descending=True, stable=True)[:n].sort().values
        w = linear.weight
        out = cls(linear.in_features, linear.out_features, n, linear.bias is not None).to(w.device, w.dtype)
        out.index.copy_(idx)
        out.linear.weight.copy_(w[:, idx])
        if linear.bias is not None:
            out.linear.bias.copy_(linear.bias)
        out.train(linear.training)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.index_select(x, 1, self.index))


__all__ = ["ChannelShuffle", "CondensedConv", "CondensedLinear", "LearnedGroupConv"]
