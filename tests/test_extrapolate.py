"""One-point profiling: extrapolate_profile, fit_one_point and `fxenergy profile extrapolate`."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxenergy.cli import main
from fxenergy.errors import ProfileError, UnknownGPUError
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.hardware.extrapolate import (
    _unit_mix,
    extrapolate_profile,
    fit_one_point,
    fit_profile_rows,
    one_point_errors,
    predict,
    recommended_reference_mhz,
)
from fxenergy.hardware.profiles import Profile, ProfileRow, read_profile, write_profile

SHARED = Path(__file__).parent / "data" / "perseus" / "gpt3-175b+a100_sxm_bf16.csv"
A40_SHARED = SHARED.with_name("gpt3-175b+a40_bf16.csv")
A100 = "A100-SXM4-80GB"
ONE = Profile(
    (
        ProfileRow(0, "forward", 1410, 0.0502, 23.81),
        ProfileRow(0, "backward", 1410, 0.0930, 44.58),
        ProfileRow(1, "forward", 1410, 0.0300, 8.0),  # 267 W: memory-heavy
        ProfileRow(1, "backward", 1410, 0.0600, 22.0),  # 367 W
    )
)


def test_output_has_every_clock_and_keeps_the_measured_row() -> None:
    full = extrapolate_profile(ONE, A100)
    full.require_complete()
    clocks = get_dvfs_model(A100).clocks_mhz()
    assert full.clocks_mhz() == list(clocks)
    for row in ONE.rows:
        got = full.table(row.stage, row.instruction)[1410]
        assert (got.time_s, got.energy_j) == (row.time_s, row.energy_j)


def test_prediction_reproduces_the_measured_point_when_modelled() -> None:
    full = extrapolate_profile(ONE, A100, keep_measured=False)
    for row in ONE.rows:
        got = full.table(row.stage, row.instruction)[1410]
        assert got.time_s == pytest.approx(row.time_s, rel=1e-6)
        assert got.energy_j == pytest.approx(row.energy_j, rel=1e-6)


def test_compute_heavy_slows_more_than_memory_heavy() -> None:
    """Below the cap the power tells the mixes apart."""
    model = get_dvfs_model(A100)
    rows = []
    for stage, theta in enumerate((0.05, 0.7)):
        mix = _unit_mix(theta)
        t, e = model.mix_time_energy(mix, 1200)
        rows.append(ProfileRow(stage, "forward", 1200, t, e))
    full = extrapolate_profile(Profile(tuple(rows)), A100)
    slow = {k: full.table(*k)[855].time_s / full.table(*k)[1200].time_s for k in full.keys()}
    assert slow[(0, "forward")] > 1.3
    assert slow[(1, "forward")] < slow[(0, "forward")] - 0.15


def test_at_the_cap_the_board_prior_decides() -> None:
    """A max-clock row at the cap ran throttled: the effective clock, not the nominal one."""
    model = get_dvfs_model(A100)
    fit = fit_one_point(model, 0.0502, 23.81)  # 474 W: at the 473.7 W cap
    assert fit.capped and fit.compute_share == pytest.approx(model.params.typical_compute_share)
    assert model.effective_clock_mhz(fit.mix, 1410) < 1400


def test_below_every_busy_mix_fewer_sms_are_at_work() -> None:
    model = get_dvfs_model(A100)
    fit = fit_one_point(model, 0.0300, 8.0)  # 267 W: below any mix with every SM at work
    assert fit.mix[0].activity < 1.0
    assert fit.compute_share == pytest.approx(model.params.typical_compute_share)
    assert predict(fit, model, 1410)[1] == pytest.approx(8.0, rel=1e-6)


def test_time_falls_and_energy_stays_positive_with_clock() -> None:
    full = extrapolate_profile(ONE, A100)
    for key in full.keys():
        table = full.table(*key)
        times = [table[c].time_s for c in sorted(table)]
        assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(times))
        assert all(r.energy_j > 0 for r in table.values())


def test_reference_at_any_clock() -> None:
    other = Profile((ProfileRow(0, "forward", 1200, 0.06, 20.0),))
    full = extrapolate_profile(other, A100)
    assert full.table(0, "forward")[1200].time_s == 0.06
    assert full.table(0, "forward")[1410].time_s < 0.06 < full.table(0, "forward")[855].time_s
    with pytest.raises(ProfileError, match="reference clock 1410 MHz"):
        extrapolate_profile(other, A100, reference_mhz=1410)


def test_few_clocks_are_fitted_not_extrapolated() -> None:
    pytest.importorskip("scipy")
    model = get_dvfs_model(A100)
    mix = _unit_mix(0.3)
    rows = tuple(
        ProfileRow(0, "forward", f, *model.mix_time_energy(mix, f)) for f in (1410, 1140, 855)
    )
    fit = fit_profile_rows(Profile(rows), model)[(0, "forward")]
    assert fit.reference_mhz == 0 and fit.clocks == (1410, 1140, 855)
    assert fit.compute_share == pytest.approx(0.7, abs=0.01)
    t, e = predict(fit, model, 1000)
    assert t == pytest.approx(model.mix_time_s(mix, 1000), rel=1e-3)
    assert e == pytest.approx(model.mix_energy_j(mix, 1000), rel=1e-3)


def test_unknown_gpu() -> None:
    with pytest.raises(UnknownGPUError):
        extrapolate_profile(ONE, "A1000000")


@given(theta=st.floats(0.0, 1.0), ref=st.sampled_from([1290, 1050, 900]))
def test_one_point_recovers_a_modelled_mix(theta: float, ref: int) -> None:
    """A computation generated by the model below the cap is recovered (zero tolerance)."""
    model = get_dvfs_model(A100)
    mix = _unit_mix(theta)
    t, e = model.mix_time_energy(mix, ref)
    fit = fit_one_point(model, t * 3.0, e * 3.0, power_tolerance=0.0, freq_mhz=ref)
    assert fit.compute_share == pytest.approx(1.0 - theta, abs=1e-6)
    assert model.mix_time_s(fit.mix, 900) == pytest.approx(3.0 * model.mix_time_s(mix, 900))


def test_cli_round_trip(tmp_path: Path) -> None:
    src, out = tmp_path / "one.csv", tmp_path / "full.csv"
    write_profile(ONE.rows, src)
    assert main(["profile", "extrapolate", str(src), "--gpu", A100, "--out", str(out)]) == 0
    full = read_profile(out)
    full.require_complete()
    assert len(full.rows) == 4 * len(get_dvfs_model(A100).clocks_mhz())


def test_cli_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "one.csv"
    write_profile(ONE.rows, src)
    args = ["profile", "extrapolate", str(src), "--gpu", "A40", "--out", str(tmp_path / "x.csv")]
    assert main([*args, "--reference-mhz", "1740"]) == 1
    assert "1740 MHz" in capsys.readouterr().err
    assert main(["profile", "extrapolate", str(src), "--gpu", "nope", "--out", str(src)]) == 1
    assert "unknown GPU" in capsys.readouterr().err


def _rms(xs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in xs) / len(xs))


def test_one_point_error_on_the_measured_profile() -> None:
    """Measured GPT-3 / A100 profile: docs/dvfs.md reports these numbers."""
    profile = read_profile(SHARED)
    model = get_dvfs_model(A100)
    for ref in (1410, recommended_reference_mhz(model), 1110):
        t, e = one_point_errors(profile, A100, model, ref)
        assert _rms(t) < 0.025 and _rms(e) < 0.025, ref
        assert max(map(abs, t)) < 0.05 and max(map(abs, e)) < 0.05, ref


def test_one_point_error_on_the_a40_profile() -> None:
    """A40: the max-clock row is at the cap; the recommended reference is below it."""
    profile = read_profile(A40_SHARED)
    model = get_dvfs_model("A40")
    ref = recommended_reference_mhz(model)
    assert ref < 1440  # below where GPT-3 throttles on this board
    t, e = one_point_errors(profile, "A40", model, ref)
    assert _rms(t) < 0.035 and _rms(e) < 0.03
