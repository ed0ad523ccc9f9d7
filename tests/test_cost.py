"""Cost models: MAC/parameter counting against hand-computed figures, measured latency and peak memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunekit.cost import Cost, LatencyResult, count, format_count, measure_latency, peak_memory
from prunekit.errors import ConfigError


def _macs(layer: nn.Module, *shape: int) -> int:
    return count(layer, torch.randn(*shape)).macs


def test_conv_macs() -> None:
    # out 8 x 10 x 10 elements, each 3 in-channels x 3 x 3 taps
    assert _macs(nn.Conv2d(3, 8, 3, padding=1), 1, 3, 10, 10) == 8 * 10 * 10 * 3 * 9
    assert _macs(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), 1, 3, 10, 10) == 8 * 5 * 5 * 3 * 9
    assert _macs(nn.Conv1d(4, 6, 5), 1, 4, 20) == 6 * 16 * 4 * 5
    assert _macs(nn.Conv3d(2, 3, 3), 1, 2, 5, 5, 5) == 3 * 27 * 2 * 27


def test_grouped_and_depthwise_conv_macs() -> None:
    assert _macs(nn.Conv2d(8, 16, 3, padding=1, groups=4), 1, 8, 8, 8) == 16 * 64 * 2 * 9
    assert _macs(nn.Conv2d(8, 8, 3, padding=1, groups=8), 1, 8, 8, 8) == 8 * 64 * 1 * 9


def test_conv_transpose_macs() -> None:
    # every input element is multiplied by out_channels/groups x 2 x 2 weights
    assert _macs(nn.ConvTranspose2d(4, 6, 2, stride=2), 1, 4, 5, 5) == 4 * 25 * 6 * 4
    assert _macs(nn.ConvTranspose2d(4, 6, 3, groups=2), 1, 4, 5, 5) == 4 * 25 * 3 * 9


def test_linear_macs_and_params() -> None:
    cost = count(nn.Linear(20, 5), torch.randn(1, 20))
    assert (cost.macs, cost.params) == (100, 105)
    assert _macs(nn.Linear(20, 5), 1, 7, 20) == 7 * 100  # applied to each of 7 tokens


class _Net(nn.Module):
    """conv -> BN -> ReLU -> pool -> fc, with ``fc`` applied twice (shared module)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(self.fc(x) + x)


def test_count_is_per_image_and_counts_shared_module_twice() -> None:
    net = _Net()
    conv, fc = 4 * 6 * 6 * 3 * 9, 16
    for n in (1, 3):
        cost = count(net, torch.randn(n, 3, 6, 6))
        assert cost.macs == conv + 2 * fc  # BN, ReLU, mean, add: not counted
        assert cost.per_layer == {"conv": conv, "fc": 2 * fc}
        assert cost.params == 4 * 27 + 2 * 4 + 4 * 4 + 4


def test_shared_parameters_count_once() -> None:
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    assert count(nn.Sequential(a, b), torch.randn(2, 4)).params == 16 + 4 + 4


def test_count_restores_training_flags_and_takes_tuples() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(5, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            assert not self.training
            return self.a(x) + self.b(y)

    net = TwoInputs().train()
    net.b.eval()
    cost = count(net, (torch.randn(4, 3), torch.randn(4, 5)))
    assert cost.macs == 6 + 10
    assert net.training and net.a.training and not net.b.training
    with pytest.raises(ConfigError):
        count(net, torch.tensor(1.0))


def test_cost_str_and_format() -> None:
    assert str(Cost(params=855_770, macs=125_747_840)) == "0.856M params, 125.7M MACs"
    assert [format_count(v) for v in (12, 3_400, 20_035_018, 4.1e9)] == ["12", "3.400K", "20.04M", "4.100G"]


def test_measure_latency_cpu_pins_and_restores_threads() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10)).train()
    threads = torch.get_num_threads()
    seen: list[int] = []
    net.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    r = measure_latency(net, torch.randn(4, 3, 16, 16), warmup=2, repeats=7, threads=1, retries=0)
    assert isinstance(r, LatencyResult)
    assert r.clock == "wall" and r.attempts == 1 and r.start_s < r.end_s and r.cpus >= 1
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms < 1000
    assert (r.batch_size, r.device, r.threads, r.repeats, r.method) == (4, "cpu", 1, 7, "cpu eager 1 thread")
    assert set(seen) == {1}
    assert torch.get_num_threads() == threads
    assert net.training


def test_measure_latency_conversions_leave_model_untouched() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    weight = net[0].weight
    r = measure_latency(net, torch.randn(1, 3, 8, 8), warmup=1, repeats=3, channels_last=True,
                        dtype=torch.float64)
    assert r.median_ms > 0
    assert net[0].weight is weight and weight.dtype == torch.float32 and weight.is_contiguous()


def test_measure_latency_bad_options() -> None:
    net = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="cuda_graph"):
        measure_latency(net, torch.randn(1, 2), cuda_graph=True)
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(net, torch.randn(1, 2), repeats=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            measure_latency(net, torch.randn(1, 2), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_measure_latency_cuda(cuda_graph: bool) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    r = measure_latency(net, torch.randn(2, 3, 16, 16), device="cuda", warmup=3, repeats=5, cuda_graph=cuda_graph)
    assert r.median_ms > 0 and r.method == ("cuda graph" if cuda_graph else "cuda events eager")
    assert next(net.parameters()).device.type == "cpu"


def test_peak_memory_cpu_sees_a_large_activation() -> None:
    net = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    activation = 8 * 64 * 128 * 128 * 4  # bytes of the output: 33.5 MB
    assert peak_memory(net, torch.randn(8, 3, 128, 128)) >= 0.5 * activation


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_peak_memory_cuda() -> None:
    net = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    assert peak_memory(net, torch.randn(8, 3, 128, 128), device="cuda") >= 8 * 64 * 128 * 128 * 4
