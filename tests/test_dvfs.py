"""DVFS model: time and power vs SM clock, the power cap, parameters for every GPU."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxenergy.cli import main
from fxenergy.errors import FxEnergyError, UnknownGPUError
from fxenergy.graph.meta import CostRecord
from fxenergy.hardware import get_gpu, known_gpus
from fxenergy.hardware.calibrate import fit_profile, two_part_mix
from fxenergy.hardware.dvfs import DVFSModel, PowerParams, Work, get_dvfs_model
from fxenergy.hardware.power_params import get_power_params
from fxenergy.hardware.profiles import Profile, ProfileRow

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


costs = st.builds(
    CostRecord,
    flops=st.integers(0, 10**13),
    macs=st.just(0),
    bytes_read=st.integers(0, 10**10),
    bytes_written=st.integers(0, 10**10),
    dtype=st.sampled_from(["bfloat16", "float32", "float16"]),
    kernels=st.integers(0, 50),
    matmul_flops=st.integers(0, 10**13),
).filter(lambda c: c.matmul_flops <= c.flops and c.flops + c.bytes_total + c.kernels > 0)


@given(cost=costs, gpu=st.sampled_from(known_gpus()))
def test_properties_for_any_cost(cost: CostRecord, gpu: str) -> None:
    """Energy = time x power; time never rises with the clock; power never above the cap."""
    m = get_dvfs_model(gpu)
    clocks = m.clocks_mhz()[::9]
    times = [m.time_s(cost, f) for f in clocks]  # highest clock first
    assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(times))
    for f, t in zip(clocks, times, strict=True):
        p = m.power_w(cost, f)
        assert m.energy_j(cost, f) == pytest.approx(t * p, rel=1e-9)
        assert 0 < p <= m.params.power_cap_w * (1 + 1e-6)


def test_gpus_cli_shows_power_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == known_gpus()
    for r in rows:
        pm = r["power_model"]
        for key in ("idle_power_w", "blocked_power_w", "static_power_w", "power_cap_w"):
            assert pm[key] > 0 and pm["sources"][key]
        assert pm["switch_latency_s"] == pytest.approx(0.010)
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in known_gpus())  # names never truncated
    assert "blocked W" in out and "knee MHz" in out


def test_calibration_recovers_known_parameters() -> None:
    """A profile generated by the model with a changed static power is fitted back."""
    pytest.importorskip("scipy")
    true = get_power_params("A100-SXM4-80GB").replace(static_power_w=70.0, compute_dyn_w=450.0)
    model = DVFSModel(get_gpu("A100-SXM4-80GB"), true)
    mix = two_part_mix(0.05, 0.004)  # the calibration reads sweeps with every SM at work
    rows = tuple(
        ProfileRow(0, "forward", f, model.mix_time_s(mix, f), model.mix_energy_j(mix, f))
        for f in range(1410, 840, -45)
    )
    res = fit_profile(Profile(rows), "A100-SXM4-80GB", fields=("static_power_w", "compute_dyn_w"))
    assert res.time_rms_pct < 0.1 and res.energy_rms_pct < 0.1
    assert res.params.static_power_w == pytest.approx(70.0, rel=0.05)
    assert res.params.compute_dyn_w == pytest.approx(450.0, rel=0.05)


def test_activity_scales_sm_power_not_time() -> None:
    m = get_dvfs_model("A40")
    full, half = two_part_mix(0.6, 0.4, activity=1.0), two_part_mix(0.6, 0.4, activity=0.5)
    f = 1100  # below the cap: the clock is the locked one for both
    assert m.mix_time_s(half, f) == pytest.approx(m.mix_time_s(full, f))
    p = m.params
    t = m.mix_time_s(full, f)
    floor = p.static_power_w + 0.4 / t * p.memory_dyn_w  # SM power gone, DRAM and static left
    assert floor < m.mix_power_w(half, f) < m.mix_power_w(full, f)
    sm_full = m.mix_power_w(full, f) - floor
    assert m.mix_power_w(half, f) - floor == pytest.approx(0.5 * sm_full, rel=1e-6)


def test_the_cap_clock_depends_on_the_workload_power() -> None:
    """Throttling: a heavier computation runs at a lower effective clock under the same cap."""
    m = get_dvfs_model("A100-PCIe-80GB")
    heavy, light = two_part_mix(0.95, 0.05), two_part_mix(0.4, 0.6, activity=0.6)
    assert m.effective_clock_mhz(heavy, 1410) < m.effective_clock_mhz(light, 1410) <= 1410
    assert m.mix_power_w(heavy, 1410) == pytest.approx(m.params.power_cap_w, rel=0.02)


def test_recommended_reference_is_under_the_cap() -> None:
    from fxenergy.hardware.extrapolate import recommended_reference_mhz

    refs = {g: recommended_reference_mhz(get_dvfs_model(g)) for g in known_gpus()}
    assert refs["A100-PCIe-80GB"] < refs["A100-SXM4-80GB"] < 1410
    for g, f in refs.items():
        m = get_dvfs_model(g)
        share = m.params.typical_compute_share
        assert m.mix_power_w(two_part_mix(share, 1 - share), f) <= 0.9 * m.params.power_cap_w
