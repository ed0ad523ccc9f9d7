"""MetaPruning's PruningNet, built from any dependency graph: one weight generator per layer, any width
configuration run without building a module.

For a model and its :class:`~prunekit.graph.DependencyGraph`, :class:`PruningNet` replaces the weight of every
conv / linear layer whose output channels are prunable by a **generator**
``Linear(2, hidden) → ReLU → Linear(hidden, numel of the full weight)`` (PyTorch's default init, no output
activation, as upstream). Its input is the pair ``(kept/full output channels, kept/full input channels)`` of that
weight — upstream's two-ratio (MobileNetV1) input, chosen because it is defined for every layer of every graph;
upstream's per-block 3-vector needs a block structure a generic graph does not have. The generated weight is
the **prefix crop** of the full one (the first k channels of each dimension; every group's kept channels are a
prefix, plus pinned channels where a group has them): only the rows of the last generator layer that the crop
keeps are gathered before the matmul, so the full tensor is never formed. Layers whose outputs are not prunable
(the classifier) keep one shared weight, cropped on its input side if needed; biases are shared and cropped.

BatchNorm: every BatchNorm is affine-free (``affine=False`` as upstream). Upstream keeps one BatchNorm per (position,
width level); with no affine parameters those hold only running statistics, which training never reads (train
mode normalises with batch statistics) and the search resets before every candidate. Here the statistics of one
width configuration at a time are estimated by :meth:`PruningNet.calibrate_bn` and kept beside the net — the same
numbers, without 31 BatchNorms per position, and valid for BatchNorms that see several groups (DenseNet concats),
where per-level modules would have to exist for every combination of levels.

``net.set_widths(widths)`` then ``net(x)`` runs that configuration (a :class:`~prunekit.graph.plan.PruningPlan`
view of the shared base module: differentiable, so one optimizer step trains the generators of every layer);
``net.materialize(widths)`` returns the physically pruned ordinary model carrying the generated weights and the
calibrated statistics — the same outputs, tested.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.graph.plan import PruningPlan
from prunekit.train import distributed as dist_utils

_BN = nn.modules.batchnorm._BatchNorm
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


class WeightGenerator(nn.Module):
    """``Linear(inputs, hidden) → ReLU → Linear(hidden, numel(shape))``: the full weight of one layer as a
    function of its width ratios; :meth:`forward` generates only the entries of a crop."""

    def __init__(self, shape: Iterable[int], hidden: int = 32, inputs: int = 2):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        numel = 1
        for s in self.shape:
            numel *= s
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, numel)
        strides, acc = [], 1
        for s in reversed(self.shape):
            strides.append(acc)
            acc *= s
        self.strides = tuple(reversed(strides))

    def flat_index(self, index: list[torch.Tensor | None]) -> torch.Tensor | None:
        """Flat positions (row-major) of the crop keeping ``index[d]`` along dimension ``d`` (None: all);
        None when nothing is cropped."""
        if all(i is None for i in index):
            return None
        device = self.fc2.weight.device
        flat = torch.zeros((), dtype=torch.long, device=device)
        for d, (size, stride) in enumerate(zip(self.shape, self.strides)):
            i = torch.arange(size, device=device) if index[d] is None else index[d].to(device)
            shape = [1] * len(self.shape)
            shape[d] = -1
            flat = flat + (i * stride).view(shape)
        return flat.reshape(-1)

    def forward(self, ratios: torch.Tensor, index: list[torch.Tensor | None]) -> torch.Tensor:
        """The cropped weight for width ratios ``ratios`` (shape ``[inputs]``) keeping ``index[d]`` along each
        dimension ``d`` (None: all); shape ``[len(index[d]) or shape[d] for d]``."""
        h = F.relu(self.fc1(ratios))
        flat = self.flat_index(index)
        out_shape = [self.shape[d] if i is None else int(i.numel()) for d, i in enumerate(index)]
        if flat is None:
            return self.fc2(h).view(out_shape)
        w = F.linear(h, self.fc2.weight.index_select(0, flat), self.fc2.bias.index_select(0, flat))
        return w.view(out_shape)


def _module_key(name: str) -> str:
    return name.replace(".", "__")


class PruningNet(nn.Module):
    """Weight-generating supernet over the width configurations of ``graph``'s groups (see the module docstring).

    ``model``: the full-width network (only its architecture and its shared tensors — classifier, biases — are
    used; it is copied, not modified); ``graph``: its dependency graph; ``hidden``: generator width (upstream 32;
    64 for MobileNetV2). ``widths`` given to :meth:`set_widths` map group names to channel counts; groups not named
    keep their full width.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, *, hidden: int = 32):
        super().__init__()
        object.__setattr__(self, "graph", graph)
        self.base = copy.deepcopy(model).cpu()
        out_prunable = _out_prunable(graph)
        modules = dict(self.base.named_modules())
        self.generated: list[str] = []
        self.generators = nn.ModuleDict()
        for name, m in modules.items():
            if isinstance(m, _WEIGHTED) and out_prunable.get(name, False) and m.weight is not None:
                self.generators[_module_key(name)] = WeightGenerator(m.weight.shape, hidden)
                m.register_parameter("weight", None)
                self.generated.append(name)
        self.norms: list[str] = []
        for name, m in modules.items():
            if isinstance(m, _BN):
                m.register_parameter("weight", None)
                m.register_parameter("bias", None)
                m.affine = False
                self.norms.append(name)
        self._full = {g.name: g.size for g in graph.prunable_groups}
        self._widths: dict[str, int] = {}
        self._plan_cache: tuple[tuple, PruningPlan] | None = None
        self._stats: tuple[tuple, dict[str, list[torch.Tensor]]] | None = None

    # ---- configuration ----------------------------------------------------------------------------------------
    def _key(self, widths: Mapping[str, int]) -> tuple:
        return tuple(sorted((k, int(v)) for k, v in widths.items() if int(v) != self._full.get(k)))

    def set_widths(self, widths: Mapping[str, int]) -> None:
        """Run the configuration ``widths`` ({group name: channels}) from now on."""
        self._widths = {k: int(v) for k, v in widths.items()}

    @property
    def widths(self) -> dict[str, int]:
        return dict(self._widths)

    def plan(self, widths: Mapping[str, int] | None = None) -> PruningPlan:
        """The prefix-keep plan of ``widths`` (default: the current configuration); the last one is cached."""
        widths = self._widths if widths is None else widths
        key = self._key(widths)
        if self._plan_cache is None or self._plan_cache[0] != key:
            self._plan_cache = (key, self.graph.plan(dict(key), keep="prefix"))
        return self._plan_cache[1]

    # ---- forward ----------------------------------------------------------------------------------------------
    def _generated(self, plan: PruningPlan, full: bool = False) -> dict[str, torch.Tensor]:
        index = plan.index_map()
        out: dict[str, torch.Tensor] = {}
        for name in self.generated:
            gen = self.generators[_module_key(name)]
            dims = dict(index.get(f"{name}.weight", []))
            crop = [None if full else dims.get(d) for d in range(len(gen.shape))]
            kept = [gen.shape[d] if dims.get(d) is None else int(dims[d].numel()) for d in range(2)]
            ratios = torch.tensor([kept[0] / gen.shape[0], kept[1] / gen.shape[1]],
                                  device=gen.fc1.weight.device, dtype=gen.fc1.weight.dtype)
            out[f"{name}.weight"] = gen(ratios, crop)
        return out

    def _norm_sizes(self, plan: PruningPlan) -> dict[str, int]:
        index = plan.index_map()
        sizes: dict[str, int] = {}
        modules = dict(self.base.named_modules())
        for name in self.norms:
            dims = dict(index.get(f"{name}.running_mean", []))
            sizes[name] = int(dims[0].numel()) if 0 in dims else modules[name].num_features
        return sizes

    def forward(self, *inputs: Any) -> Any:
        plan = self.plan()
        sliced = self._generated(plan)
        if not self.training:
            sliced.update(_stat_tensors(self._stats_for(plan)))
        return plan.forward(self.base, *inputs, sliced=sliced)

    def _stats_for(self, plan: PruningPlan) -> dict[str, list[torch.Tensor]]:
        key = self._key(self._widths)
        if self._stats is None or self._stats[0] != key:
            raise ConfigError("PruningNet: evaluation needs BatchNorm statistics of this width configuration; "
                              "call calibrate_bn(widths, loader, batches) first (training mode needs none)")
        return self._stats[1]

    @torch.no_grad()
    def calibrate_bn(self, widths: Mapping[str, int], loader: Iterable, batches: int) -> None:
        """Estimate the BatchNorm statistics of configuration ``widths`` from ``batches`` batches of ``loader``
        (items ``(x, y)``; train mode, no gradients; cumulative averages: each statistic is the mean of its
        per-batch values) and select the configuration. Under torch.distributed each rank calibrates on its own
        batches and the statistics are averaged over the ranks. Upstream resets its width-BatchNorms the same way
        before it scores a candidate (there with a 0.1-momentum average of 100 batches)."""
        if batches < 1:
            raise ConfigError(f"calibrate_bn: batches={batches} must be >= 1")
        self.set_widths(widths)
        plan = self.plan()
        device = next(self.parameters()).device
        stats = {name: [torch.zeros(k, device=device), torch.ones(k, device=device),
                        torch.zeros((), dtype=torch.long, device=device)]
                 for name, k in self._norm_sizes(plan).items()}
        modules = dict(self.base.named_modules())
        momenta = {name: modules[name].momentum for name in self.norms}
        was_training = self.training
        sliced = {**self._generated(plan), **_stat_tensors(stats)}
        seen = 0
        try:
            for name in self.norms:
                modules[name].momentum = None
            self.train()
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                plan.forward(self.base, x.to(device, non_blocking=True), sliced=sliced)
                seen += 1
        finally:
            for name, momentum in momenta.items():
                modules[name].momentum = momentum
            self.train(was_training)
        if seen == 0:
            raise ConfigError("calibrate_bn: the loader yielded no batch")
        world = dist_utils.current().world_size
        if world > 1:  # data-parallel calibration: every rank ends with the mean of the ranks' statistics
            for mean, var, count in stats.values():
                for t in (mean, var):
                    dist_utils.all_reduce_sum(t).div_(world)
                dist_utils.all_reduce_sum(count)
        self._stats = (self._key(widths), stats)

    # ---- the pruned network -----------------------------------------------------------------------------------
    @torch.no_grad()
    def materialize(self, widths: Mapping[str, int]) -> nn.Module:
        """The physically pruned ordinary network of configuration ``widths``: generated weights, shared tensors
        cropped, BatchNorms affine with weight 1 and bias 0 and the statistics of :meth:`calibrate_bn` (when
        ``widths`` was the configuration calibrated last; else reset statistics). On the CPU."""
        plan = self.plan(widths)
        model = copy.deepcopy(self.base).cpu()
        modules = dict(model.named_modules())
        for name, w in self._generated(plan, full=True).items():
            modules[name.rpartition(".")[0]].weight = nn.Parameter(w.detach().cpu().clone())
        for name in self.norms:
            m = modules[name]
            m.affine = True
            m.weight = nn.Parameter(torch.ones(m.num_features))
            m.bias = nn.Parameter(torch.zeros(m.num_features))
        plan.apply(model)
        calibrated = self._stats is not None and self._stats[0] == self._key(widths)
        for name in self.norms:
            m = modules[name]
            if calibrated:
                mean, var, count = self._stats[1][name]
                m.running_mean.copy_(mean.cpu())
                m.running_var.copy_(var.cpu())
                m.num_batches_tracked.copy_(count.cpu())
            else:
                m.reset_running_stats()
        return model.train(self.training)

    def generator_params(self) -> int:
        """Parameters of all generators (upstream's PruningNets are ~33× their network's conv weights)."""
        return sum(p.numel() for p in self.generators.parameters())


def _stat_tensors(stats: Mapping[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{BatchNorm buffer name: tensor} for per-configuration statistics ``{bn name: [mean, var, count]}``."""
    out: dict[str, torch.Tensor] = {}
    for name, (mean, var, count) in stats.items():
        out.update({f"{name}.running_mean": mean, f"{name}.running_var": var, f"{name}.num_batches_tracked": count})
    return out


def _out_prunable(graph: DependencyGraph) -> dict[str, bool]:
    """{layer name: whether some output channel of it sits in a prunable group}."""
    out: dict[str, bool] = {}
    for g in graph.groups:
        for gm in g.members:
            if gm.member.kind == "module" and gm.role == "out" and gm.member.producer:
                out[gm.name] = out.get(gm.name, False) or g.prunable
    return out


def classifier_groups(graph: DependencyGraph) -> list[str]:
    """The prunable groups read by a layer whose own outputs are not prunable (the classifier's input): kept at
    full width by default, as in every official MetaPruning network."""
    prunable_out = _out_prunable(graph)
    fixed: list[str] = []
    for g in graph.prunable_groups:
        for gm in g.members:
            if gm.member.kind == "module" and gm.role == "in" and not prunable_out.get(gm.name, True):
                fixed.append(g.name)
                break
    return fixed


def no_cudnn_benchmark(device: str | torch.device):
    """A context with ``cudnn.benchmark`` off on CUDA (conv shapes change every step; autotuning each new shape
    would dominate the run); a no-op elsewhere."""
    if torch.device(device).type != "cuda":
        return nullcontext()
    return torch.backends.cudnn.flags(enabled=True, benchmark=False)
