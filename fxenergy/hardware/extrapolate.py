"""Profiles from few measurements: one-point extrapolation and few-clock fits.

A computation measured at **one** clock (any clock, not only the max) is modelled as the
calibration's two-part mix (:func:`fxenergy.hardware.calibrate.two_part_mix`): a compute part
(time ∝ 1/f) and a memory part (time flat), with a share ``a`` of the SMs at work. One
measurement gives one number besides the time, its power, and the mix is read from it as the
calibration reads a sweep: every SM at work (a = 1), compute share ρ = 1 - θ. The model's power at
the reference clock falls with θ; θ is the most probable one given the reading (power known to
``POWER_TOLERANCE``) and the board's prior (its ``typical_compute_share``, give or take
``PRIOR_WIDTH``):

* below the power cap, where power is steep in θ, the reading decides; where it is flat (low
  clocks, or a board whose stalled SMs draw nearly what busy ones do) the prior does;
* at the cap (within 5 %: the max clock of most training workloads), every heavy mix draws the
  cap power and runs at whatever clock the cap allows: the row says nothing about the mix, so the
  board's prior decides, and the model reads the row as "ran at the throttled clock", not at the
  nominal one;
* below the power of any mix with every SM at work (small or latency-bound kernels), the split is
  the prior's and the share of SMs at work ``a`` is lowered until the power matches (time still
  ∝ 1/f for the compute part).

The mix is scaled so the model reproduces the measured time at the reference clock, and energies
by measured / modelled energy there, so the measured row is reproduced exactly.

A computation measured at **two or more** clocks is *fitted* instead (its C and M by least
squares, :func:`fxenergy.hardware.calibrate.fit_mix`). docs/dvfs.md gives the errors and which
clock to measure at.
"""

from __future__ import annotations

from dataclasses import dataclass

from fxenergy.errors import ProfileError
from fxenergy.hardware.calibrate import fit_mix, two_part_mix
from fxenergy.hardware.dvfs import DVFSModel, Work, get_dvfs_model
from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.hardware.specs import GPUSpec

_BISECT_STEPS = 40
#: Relative uncertainty of a measured power: the model's own energy fit error (~1.5 % RMS,
#: docs/dvfs.md) plus NVML's (A100/H100 power readings sample ~25 % of the time: Yang et al.,
#: "Part-time Power Measurements: nvidia-smi's Lack of Attention", arXiv 2312.02741).
POWER_TOLERANCE = 0.02
#: A reference row is "at the cap" when the model's effective clock is this far below it.
_CAPPED = 0.99
#: Spread of compute shares across workloads on one board (the prior's standard deviation;
#: GPT-3 alone spans 0.24-0.56 on the A40).
PRIOR_WIDTH = 0.3
_GRID = 50
#: A measured power at or above this fraction of the cap may be the cap itself (the controller
#: holds the average a few % under the limit): any heavier mix is consistent with it.
_NEAR_CAP = 0.95
#: The lowest share of SMs at work one-point inference assumes.
_MIN_ACTIVITY = 0.1
#: The recommended reference keeps the board's typical computation this far under the cap.
_REFERENCE_HEADROOM = 0.9

Key = tuple[int, str]


@dataclass(frozen=True)
class OnePointFit:
    """What the measured row(s) of one computation say about it."""

    compute_share: float  #: ρ: fraction of the uncapped max-clock time that scales with 1/f
    mix: tuple[Work, Work]  #: the scaled two-part mix
    energy_scale: float  #: measured / modelled energy at the reference (1 unless clipped)
    clipped: str  #: "" or "compute" / "memory" when the power was outside the model's range
    reference_mhz: int = 0  #: the clock of the measured row (0: fitted on several clocks)
    capped: bool = False  #: the reference row ran at the power cap (prior decided the mix)
    clocks: tuple[int, ...] = ()  #: the measured clocks used


def _unit_mix(theta: float, activity: float = 1.0) -> tuple[Work, Work]:
    """The mix with compute share 1 - θ, total time 1 s at the max clock uncapped."""
    return two_part_mix(1.0 - theta, theta, activity=activity)


def _unit_power(model: DVFSModel, theta: float, freq_mhz: float, activity: float = 1.0) -> float:
    return model.mix_power_w(_unit_mix(theta, activity), freq_mhz)


def _solve_activity(model: DVFSModel, power_w: float, theta: float, freq_mhz: float) -> float:
    """The activity in [_MIN_ACTIVITY, 1] at which the mix θ draws ``power_w`` (clipped)."""
    lo, hi = _MIN_ACTIVITY, 1.0  # power rises with activity
    if _unit_power(model, theta, freq_mhz, lo) >= power_w:
        return lo
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _unit_power(model, theta, freq_mhz, mid) < power_w else (lo, mid)
    return 0.5 * (lo + hi)


def _solve_theta(model: DVFSModel, power_w: float, freq_mhz: float) -> float:
    """The path position θ in [0, 1] whose power at ``freq_mhz`` is ``power_w`` (clipped)."""
    if power_w >= _unit_power(model, 0.0, freq_mhz):
        return 0.0
    if power_w <= _unit_power(model, 1.0, freq_mhz):
        return 1.0
    lo, hi = 0.0, 1.0  # power falls as θ rises
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _unit_power(model, mid, freq_mhz) > power_w else (lo, mid)
    return 0.5 * (lo + hi)


def _map_theta(
    model: DVFSModel, power_w: float, tolerance: float, prior: float, freq_mhz: float
) -> float:
    """Most probable θ: power ~ N(model, tolerance·power), θ ~ N(prior, PRIOR_WIDTH), on a grid.

    Where power is steep in θ the reading decides; where it is flat (low clocks, or a board whose
    stalled SMs draw nearly what busy ones do) the prior does.
    """
    sigma = tolerance * power_w
    if sigma <= 0:
        return _solve_theta(model, power_w, freq_mhz)

    def cost(theta: float) -> float:
        miss = (_unit_power(model, theta, freq_mhz) - power_w) / sigma
        return miss * miss + ((theta - prior) / PRIOR_WIDTH) ** 2

    grid = [i / _GRID for i in range(_GRID + 1)]
    best = min(grid, key=cost)
    lo, hi = max(0.0, best - 1.0 / _GRID), min(1.0, best + 1.0 / _GRID)
    for _ in range(_BISECT_STEPS // 2):  # ternary search around the grid minimum
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (lo, b) if cost(a) < cost(b) else (a, hi)
    return 0.5 * (lo + hi)


def fit_one_point(
    model: DVFSModel,
    time_s: float,
    energy_j: float,
    power_tolerance: float = POWER_TOLERANCE,
    freq_mhz: float | None = None,
) -> OnePointFit:
    """Infer a computation's mix from one (time, energy) measured at ``freq_mhz``.

    Args:
        model: the board's DVFS model.
        time_s: measured seconds. energy_j: measured joules.
        power_tolerance: relative uncertainty of the measured power.
        freq_mhz: the locked clock of the measurement (default: the max clock).
    """
    if time_s <= 0 or energy_j <= 0:
        raise ProfileError(f"need positive time and energy, got {time_s} s, {energy_j} J")
    f = float(freq_mhz or model.spec.max_clock_mhz)
    power = energy_j / time_s
    prior = 1.0 - model.params.typical_compute_share
    if power >= _NEAR_CAP * model.params.power_cap_w:
        # at the cap any heavier mix reads the same (the controller holds it there): the prior,
        # unless it is too light to reach the reading
        theta = min(prior, _solve_theta(model, power * (1.0 - power_tolerance), f))
    else:
        theta = _map_theta(model, power, power_tolerance, prior, f)
    activity = 1.0
    clipped = ""
    if power > _unit_power(model, 0.0, f) * (1.0 + power_tolerance):
        clipped = "compute"
    elif power < _unit_power(model, 1.0, f) * (1.0 - power_tolerance):
        # less power than any mix with every SM at work: fewer SMs busy, split from the prior
        theta, activity = prior, _solve_activity(model, power, prior, f)
        clipped = "memory" if activity <= _MIN_ACTIVITY else ""
    unit = _unit_mix(theta, activity)
    scale = time_s / model.mix_time_s(unit, f)
    share = 1.0 - theta
    mix = two_part_mix(share * scale, (1.0 - share) * scale, activity=activity)
    energy_scale = energy_j / model.mix_energy_j(mix, f)
    capped = model.effective_clock_mhz(mix, f) < _CAPPED * f
    return OnePointFit(share, mix, energy_scale, clipped, round(f), capped, (round(f),))


def fit_rows(model: DVFSModel, rows: list[ProfileRow]) -> OnePointFit:
    """A computation from its measured rows: one-point for one clock, a fit for several."""
    clocks = tuple(sorted({r.freq_mhz for r in rows}, reverse=True))
    if len(clocks) == 1:
        return fit_one_point(model, rows[0].time_s, rows[0].energy_j, freq_mhz=rows[0].freq_mhz)
    mix = fit_mix(model, rows)
    share = mix[0].compute_s / (mix[0].compute_s + mix[1].memory_s)
    return OnePointFit(share, mix, 1.0, "", 0, False, clocks)


def predict(fit: OnePointFit, model: DVFSModel, freq_mhz: float) -> tuple[float, float]:
    """(time_s, energy_j) of a fitted computation at ``freq_mhz``."""
    t, e = model.mix_time_energy(fit.mix, freq_mhz)
    return t, e * fit.energy_scale


def recommended_reference_mhz(model: DVFSModel) -> int:
    """The clock to measure a one-point profile at on this board.

    The highest supported clock at which the board's typical computation draws at most 90 % of
    the power cap: below the cap the measured power tells the mix apart, and the clock is the one
    that was locked (at the cap the GPU throttles to a workload-dependent clock and the row is
    noisier). Falls back to the lowest clock.
    """
    share = model.params.typical_compute_share
    mix = two_part_mix(share, 1.0 - share)
    cap = model.params.power_cap_w
    for f in model.clocks_mhz():
        if model.mix_power_w(mix, f) <= _REFERENCE_HEADROOM * cap:
            return f
    return model.clocks_mhz()[-1]


def _input_rows(
    profile: Profile, spec: GPUSpec, reference_mhz: int | None
) -> dict[Key, list[ProfileRow]]:
    """Each computation's input rows: all of them, or the one at ``reference_mhz``."""
    out: dict[Key, list[ProfileRow]] = {}
    for r in profile.rows:
        if reference_mhz is None or r.freq_mhz == reference_mhz:
            out.setdefault((r.stage, r.instruction), []).append(r)
    lacking = [k for k in profile.keys() if k not in out]
    if lacking:
        have = sorted({r.freq_mhz for r in profile.rows}, reverse=True)
        raise ProfileError(
            f"no rows at the reference clock {reference_mhz} MHz for {len(lacking)} computations "
            f"(e.g. stage {lacking[0][0]} {lacking[0][1]!r}); the profile has clocks "
            f"{have[:6]}{' ...' if len(have) > 6 else ''}. Pick one of them with "
            f"--reference-mhz, or check --gpu ({spec.name})."
        )
    return out


def fit_profile_rows(
    profile: Profile, model: DVFSModel, reference_mhz: int | None = None
) -> dict[Key, OnePointFit]:
    """Every computation of ``profile`` fitted from its rows (or its ``reference_mhz`` row)."""
    rows = _input_rows(profile, model.spec, reference_mhz)
    return {k: fit_rows(model, rs) for k, rs in sorted(rows.items())}


def extrapolate_profile(
    profile: Profile,
    gpu: str | GPUSpec,
    clocks_mhz: tuple[int, ...] | None = None,
    keep_measured: bool = True,
    reference_mhz: int | None = None,
    model: DVFSModel | None = None,
) -> Profile:
    """Fill a profile measured at one or a few clocks with rows at every supported clock.

    Args:
        profile: rows in the Perseus format. A computation with rows at one clock (any clock) is
            extrapolated from it; one with rows at two or more clocks is fitted to them.
        gpu: spec-table name, NVML name or :class:`GPUSpec`.
        clocks_mhz: clocks to predict (default: every supported clock).
        keep_measured: keep measured rows instead of predicting over them.
        reference_mhz: use only the rows at this clock as input (one-point from it).
        model: the DVFS model to use (default: ``get_dvfs_model(gpu)``).

    Raises:
        ProfileError: a computation lacks a row at ``reference_mhz``.
        UnknownGPUError: ``gpu`` is not in the spec table.
    """
    model = model or get_dvfs_model(gpu)
    fits = fit_profile_rows(profile, model, reference_mhz)
    return profile_from_fits(fits, model, profile if keep_measured else None, clocks_mhz)


def profile_from_fits(
    fits: dict[Key, OnePointFit],
    model: DVFSModel,
    measured: Profile | None = None,
    clocks_mhz: tuple[int, ...] | None = None,
) -> Profile:
    """Rows at ``clocks_mhz`` (default: every supported clock) from fitted computations; rows of
    ``measured`` are kept where they exist."""
    kept = {(r.stage, r.instruction, r.freq_mhz): r for r in (measured.rows if measured else ())}
    out: list[ProfileRow] = []
    for (stage, instr), fit in fits.items():
        for f in clocks_mhz or model.clocks_mhz():
            if (stage, instr, f) in kept:
                out.append(kept[(stage, instr, f)])
                continue
            t, e = predict(fit, model, f)
            out.append(ProfileRow(stage, instr, int(f), t, e))
    source = measured.source if measured else "measured"
    return Profile(tuple(out), f"{source}, extrapolated to other clocks by the DVFS model")


def one_point_errors(
    profile: Profile,
    gpu: str | GPUSpec,
    model: DVFSModel | None = None,
    reference_mhz: int | None = None,
) -> tuple[list[float], list[float]]:
    """Relative time and energy errors of one-point extrapolation on a fully measured profile.

    Uses only each computation's row at ``reference_mhz`` (default: the max clock) as input and
    compares the predictions with every other measured row (the reference rows are exact by
    design and excluded).
    """
    model = model or get_dvfs_model(gpu)
    ref = reference_mhz or model.spec.max_clock_mhz
    fits = fit_profile_rows(profile, model, ref)
    t_err: list[float] = []
    e_err: list[float] = []
    for row in profile.rows:
        if row.freq_mhz == ref:
            continue
        t, e = predict(fits[(row.stage, row.instruction)], model, row.freq_mhz)
        t_err.append(t / row.time_s - 1.0)
        e_err.append(e / row.energy_j - 1.0)
    return t_err, e_err
