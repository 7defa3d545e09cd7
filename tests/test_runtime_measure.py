"""measure() windows and the clock-sweep profiler (simulated, and measured on a fake meter)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fxenergy.errors import NvmlError, ProfileError
from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.hardware.profiles import read_profile
from fxenergy.runtime import (
    FrequencyRuntime,
    NullBackend,
    RuntimePartition,
    SimulatedBackend,
    measure,
    nvml,
    profile_clocks,
    restore,
)

GPU = "A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def _clean_restore_state() -> Iterator[None]:
    """Runtimes install exit/signal hooks: put the process back as it was after each test."""
    yield
    restore.uninstall()


MODEL = get_dvfs_model(GPU)
COST = CostRecord(
    flops=4 * 10**11,
    macs=2 * 10**11,
    bytes_read=2 * 10**8,
    bytes_written=10**8,
    dtype="bfloat16",
    kernels=4,
    matmul_flops=4 * 10**11,
)


class MeterBackend(NullBackend):
    """A fake real GPU: wall-clock time, and energy = (clock / 10) W integrated over it."""

    def __init__(self, period_s: float = 0.0) -> None:
        super().__init__(GPU)
        self.has_energy_counter = True
        self.counter_update_period_s = period_s
        self._energy = 0.0
        self._since = time.perf_counter()
        self.sets: list[int] = []
        self.resets = 0

    def energy_j(self) -> float:
        now = time.perf_counter()
        self._energy += (now - self._since) * self.current_clock_mhz / 10
        self._since = now
        return self._energy

    def set_clock(self, mhz: int, label: str = "") -> int:
        self.energy_j()  # integrate up to the switch at the old clock
        self.sets.append(mhz)
        return super().set_clock(mhz, label)

    def reset(self) -> None:
        self.energy_j()
        self.resets += 1
        super().reset()


def test_measure_on_the_simulator_is_the_model() -> None:
    sim = SimulatedBackend(GPU, model=MODEL)
    sim.set_clock(900)
    with measure(sim) as m:
        sim.execute(COST)
    assert m.time_s == pytest.approx(MODEL.time_s(COST, 900))
    assert m.energy_j == pytest.approx(MODEL.energy_j(COST, 900))
    assert m.simulated and "SIMULATED" in str(m)
    assert m.avg_power_w == pytest.approx(MODEL.power_w(COST, 900), rel=1e-9)


def test_measure_defaults_to_the_current_runtimes_backend() -> None:
    sim = SimulatedBackend(GPU, model=MODEL)
    with FrequencyRuntime(sim, [RuntimePartition(0, 1200, COST)]) as rt:
        with measure() as m:
            rt.enter_partition(0)
            sim.idle(0.5)
    # a late switch down: its window runs at 1200 MHz's speed (no time lost) at 1410's power
    assert m.time_s == pytest.approx(0.5)
    window = sim.trace[0].energy_j
    assert window > 0
    assert m.energy_j == pytest.approx(0.5 * MODEL.idle_power_w + window)


def test_measure_warns_on_a_window_shorter_than_the_counter_period() -> None:
    meter = MeterBackend(period_s=0.1)
    with pytest.warns(UserWarning, match="shorter than the energy counter's update period"):
        with measure(meter) as m:
            pass
    assert 0 <= m.time_s < 0.1


def test_measure_without_gpu_falls_back_to_the_simulator(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(nvml, "pynvml", None)
    with caplog.at_level(logging.INFO, "fxenergy.runtime"), measure() as m:
        pass
    assert m.simulated and m.time_s == 0 and m.energy_j == 0
    assert "SIMULATED" in caplog.text and "saw no simulated work" in caplog.text


def test_profile_on_the_simulator_gives_labelled_model_rows(tmp_path: Path) -> None:
    sim = SimulatedBackend(GPU, model=MODEL)
    out = tmp_path / "sim.csv"
    with pytest.warns(UserWarning, match="1000 MHz is not a supported SM clock"):
        rows = profile_clocks(None, [1410, 1000, 600], sim, cost=COST, stage=2, out=out)  # type: ignore[arg-type]
    assert rows.simulated and "SIMULATED" in rows.backend
    assert [r.freq_mhz for r in rows] == [1410, 1005, 600]  # 1000 is not supported: nearest
    for r in rows:
        assert r.time_s == pytest.approx(MODEL.time_s(COST, r.freq_mhz))
        assert r.energy_j == pytest.approx(MODEL.energy_j(COST, r.freq_mhz))
    back = read_profile(out)
    assert back.table(2, "forward")[600].energy_j == pytest.approx(rows[2].energy_j)
    assert sim.current_clock_mhz == 1410  # reset after the sweep
    with pytest.raises(ProfileError, match="cost="):
        profile_clocks(lambda: None, [900], sim)


def test_profile_without_gpu_offers_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "pynvml", None)
    with pytest.raises(NvmlError, match=r"SIMULATED rows.*get_backend\('sim'"):
        profile_clocks(lambda: None, [900])
    with pytest.raises(NvmlError, match="cannot profile"):
        profile_clocks(lambda: None, [900], NullBackend(GPU))


def test_profile_measures_each_clock_over_a_long_enough_window() -> None:
    meter = MeterBackend()
    calls = []

    def work() -> None:
        calls.append(meter.current_clock_mhz)
        time.sleep(0.002)

    rows = profile_clocks(work, [1410, 705], meter, repeats=3, warmup=1, min_window_s=0.03)
    assert meter.sets == [1410, 705] and meter.resets == 1
    assert not rows.simulated
    for row, clock in zip(rows, (1410, 705), strict=True):
        timed_calls = calls.count(clock) - 1  # less the warmup call
        assert timed_calls >= 3 and row.time_s >= 0.002
        assert timed_calls * row.time_s >= 0.03  # the window reached min_window_s
        assert row.power_w == pytest.approx(clock / 10, rel=0.05)


def test_profile_resets_clocks_when_the_work_fails() -> None:
    meter = MeterBackend()

    def broken() -> None:
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError, match="kernel failed"):
        profile_clocks(broken, [900], meter)
    assert meter.resets == 1 and meter.current_clock_mhz == 1410
