"""DVFS model: time and power vs SM clock, the power cap, parameters for every GPU."""

from __future__ import annotations

import itertools
import math

import pytest

from fxenergy.errors import FxEnergyError, UnknownGPUError
from fxenergy.hardware import known_gpus
from fxenergy.hardware.dvfs import DVFSModel, PowerParams, Work, get_dvfs_model
from fxenergy.meta import CostRecord

N = 8192
GEMM = CostRecord(
    flops=2 * N**3,
    macs=N**3,
    bytes_read=2 * 2 * N * N,
    bytes_written=2 * N * N,
    dtype="bfloat16",
    kernels=1,
    matmul_flops=2 * N**3,
)
ADD = CostRecord(
    flops=N * N, macs=0, bytes_read=4 * N * N, bytes_written=2 * N * N, dtype="bfloat16", kernels=1
)


@pytest.fixture(params=known_gpus())
def model(request: pytest.FixtureRequest) -> DVFSModel:
    return get_dvfs_model(request.param)


def test_api_shape(model: DVFSModel) -> None:
    assert isinstance(model.params, PowerParams)
    clocks = model.clocks_mhz()
    assert clocks[0] == model.spec.max_clock_mhz and list(clocks) == sorted(clocks, reverse=True)
    assert model.switch_latency_s == pytest.approx(0.010)
    assert 0 < model.idle_power_w < model.params.power_cap_w
    assert 0 < model.blocked_power_w < model.params.power_cap_w


def test_energy_is_time_times_power(model: DVFSModel) -> None:
    for f in model.clocks_mhz()[::7]:
        for cost in (GEMM, ADD):
            t, p, e = model.time_s(cost, f), model.power_w(cost, f), model.energy_j(cost, f)
            assert e == pytest.approx(t * p, rel=1e-9)


def test_every_parameter_has_a_source(model: DVFSModel) -> None:
    numeric = [k for k, v in model.params.as_dict().items() if isinstance(v, float | int)]
    for field in numeric:
        assert model.params.source(field), field


def test_unknown_gpu_is_a_clear_error() -> None:
    with pytest.raises(UnknownGPUError, match="register_gpu"):
        get_dvfs_model("Z9000")


def test_compute_bound_time_scales_with_inverse_clock_below_cap() -> None:
    m = get_dvfs_model("A100-SXM4-80GB")
    t_900, t_1000 = m.mix_time_s([Work(1.0, 0.0)], 900), m.mix_time_s([Work(1.0, 0.0)], 1000)
    assert t_900 / t_1000 == pytest.approx(1000 / 900, rel=1e-3)


def test_memory_bound_time_barely_moves() -> None:
    m = get_dvfs_model("A100-SXM4-80GB")
    assert m.time_s(ADD, 900) / m.time_s(ADD, 1410) < 1.01


def test_power_cap_flattens_the_top_clocks() -> None:
    m = get_dvfs_model("A100-SXM4-40GB")  # 400 W: a big bf16 GEMM cannot hold 1410 MHz
    assert m.power_w(GEMM, 1410) <= m.params.power_cap_w * 1.001
    assert m.effective_clock_mhz(GEMM, 1410) < 1350
    assert m.time_s(GEMM, 1395) / m.time_s(GEMM, 1410) < 1.002


def test_power_rises_with_clock_and_is_bounded(model: DVFSModel) -> None:
    powers = [model.power_w(GEMM, f) for f in reversed(model.clocks_mhz())]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(powers))
    assert powers[-1] <= model.params.power_cap_w * 1.001
    assert not any(math.isnan(p) for p in powers)


def test_switch_latency_is_configurable() -> None:
    m = get_dvfs_model("A100-SXM4-80GB", switch_latency_s=0.002)
    assert m.switch_latency_s == 0.002
    assert m.switch_energy_j() == pytest.approx(0.002 * m.idle_power_w)


def test_power_cap_override() -> None:
    m = get_dvfs_model("A100-SXM4-80GB", power_cap_w=400)
    assert m.params.power_cap_w == 400
    assert "overridden" in m.params.source("power_cap_w")
    assert m.power_w(GEMM, 1410) <= 400.5
    with pytest.raises(FxEnergyError, match="static power"):
        get_dvfs_model("A100-SXM4-80GB", power_cap_w=0.4)
