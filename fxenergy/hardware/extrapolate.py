"""One-point profiling: from one (time, energy) at the max clock, predict every supported clock.

One measurement cannot tell how a computation splits into clock-bound and memory-bound work, so
the split is inferred from its *power*. The computation is modelled as the calibration's
two-part mix (:func:`fxenergy.hardware.calibrate.two_part_mix`): a compute part (time ∝ 1/f,
activity a) and a memory part (time flat, SMs stalled, DRAM busy). A lower power at the max clock
can mean more memory-bound time (time flatter in f) or less busy SMs (time still ∝ 1/f); one point
cannot tell them apart, so both move together along a path θ ∈ [0, 1]: compute share ρ = 1 - θ,
activity a = 1 - θ/2. The model's max-clock power falls monotonically along it, and θ is found by
bisection where it equals the measured ``energy / time``, within ``POWER_TOLERANCE``; the midpoint
of the consistent interval is taken:

* away from the cap power is steep in θ: the interval is narrow, θ is pinned down;
* at the board cap the interval is wide (the cap hides how compute-heavy the work is): the
  computation is compute-heavy and throttled at the top clocks (time flat there);
* at (or below) a pure memory-bound mix: θ = 1, time barely changes with the clock.

The mix is then scaled so the model reproduces the measured time at the max clock, and energies
are scaled by ``measured / modelled`` energy at the max clock (1 unless θ was clipped or the
tolerance moved it), so the measured row is reproduced exactly. docs/dvfs.md has the error.
"""

from __future__ import annotations

from dataclasses import dataclass

from fxenergy.errors import ProfileError
from fxenergy.hardware.calibrate import two_part_mix
from fxenergy.hardware.dvfs import DVFSModel, Work, get_dvfs_model
from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.hardware.specs import GPUSpec

_BISECT_STEPS = 40
#: Relative uncertainty of a measured power: the model's own energy fit error (0.9 % RMS, 2.2 %
#: max, docs/dvfs.md) plus NVML's (A100/H100 power readings sample ~25 % of the time: Yang et al.,
#: "Part-time Power Measurements: nvidia-smi's Lack of Attention", arXiv 2312.02741).
POWER_TOLERANCE = 0.02


@dataclass(frozen=True)
class OnePointFit:
    """What one measured point says about a computation."""

    compute_share: float  #: ρ: fraction of the (uncapped) max-clock time that scales with 1/f
    mix: tuple[Work, Work]  #: the scaled two-part mix
    energy_scale: float  #: measured / modelled energy at the max clock (1 unless clipped)
    clipped: str  #: "" or "compute" / "memory" when the power was outside the model's range


def _path(theta: float) -> tuple[float, float]:
    """(compute share ρ, compute activity a) at position θ ∈ [0, 1] of the inference path.

    Both fall together from a dense compute-bound computation (θ = 0) towards pure memory
    traffic (θ = 1). The activity stops at 0.5 so power keeps falling along the whole path
    (latency-bound compute at very low activity draws less than streaming memory does).
    """
    return 1.0 - theta, 1.0 - 0.5 * theta


def _unit_mix(theta: float) -> tuple[Work, Work]:
    """The mix at position θ on the inference path, total time 1 s at the max clock uncapped."""
    share, activity = _path(theta)
    return two_part_mix(share, 1.0 - share, activity=activity)


def _unit_power(model: DVFSModel, theta: float) -> float:
    return model.mix_power_w(_unit_mix(theta), model.spec.max_clock_mhz)


def _solve_theta(model: DVFSModel, power_w: float) -> float:
    """The path position θ in [0, 1] whose max-clock power is ``power_w`` (clipped)."""
    if power_w >= _unit_power(model, 0.0):
        return 0.0
    if power_w <= _unit_power(model, 1.0):
        return 1.0
    lo, hi = 0.0, 1.0  # power falls as θ rises
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _unit_power(model, mid) > power_w else (lo, mid)
    return 0.5 * (lo + hi)


def fit_one_point(
    model: DVFSModel, time_s: float, energy_j: float, power_tolerance: float = POWER_TOLERANCE
) -> OnePointFit:
    """Infer a computation's mix from one (time, energy) at the max clock.

    Every path position whose modelled power is within ``power_tolerance`` of the measured one
    is consistent with the measurement; the midpoint of that interval is taken. Where power is
    steep along the path the interval is narrow; at the power cap it is wide (the cap hides how
    compute-heavy the work is) and the midpoint bounds the worst-case error.
    """
    if time_s <= 0 or energy_j <= 0:
        raise ProfileError(f"need positive time and energy, got {time_s} s, {energy_j} J")
    power = energy_j / time_s
    theta = 0.5 * (
        _solve_theta(model, power * (1.0 + power_tolerance))
        + _solve_theta(model, power * (1.0 - power_tolerance))
    )
    clipped = ""
    if power > _unit_power(model, 0.0) * (1.0 + power_tolerance):
        clipped = "compute"
    elif power < _unit_power(model, 1.0) * (1.0 - power_tolerance):
        clipped = "memory"
    unit = _unit_mix(theta)
    scale = time_s / model.mix_time_s(unit, model.spec.max_clock_mhz)
    share, activity = _path(theta)
    mix = two_part_mix(share * scale, (1.0 - share) * scale, activity=activity)
    energy_scale = energy_j / model.mix_energy_j(mix, model.spec.max_clock_mhz)
    return OnePointFit(share, mix, energy_scale, clipped)


def predict(fit: OnePointFit, model: DVFSModel, freq_mhz: float) -> tuple[float, float]:
    """(time_s, energy_j) of a one-point-fitted computation at ``freq_mhz``."""
    t = model.mix_time_s(fit.mix, freq_mhz)
    return t, model.mix_energy_j(fit.mix, freq_mhz) * fit.energy_scale


def _max_clock_rows(profile: Profile, spec: GPUSpec) -> dict[tuple[int, str], ProfileRow]:
    f_max = spec.max_clock_mhz
    rows = {(r.stage, r.instruction): r for r in profile.rows if r.freq_mhz == f_max}
    lacking = [k for k in profile.keys() if k not in rows]
    if lacking:
        have = sorted({r.freq_mhz for r in profile.rows}, reverse=True)
        raise ProfileError(
            f"one-point extrapolation needs each computation measured at {spec.name}'s max SM "
            f"clock {f_max} MHz; {len(lacking)} (e.g. stage {lacking[0][0]} "
            f"{lacking[0][1]!r}) have only clocks {have[:6]}{' ...' if len(have) > 6 else ''}. "
            f"Measure them with the SM clock locked at {f_max} MHz, or check --gpu."
        )
    return rows


def extrapolate_profile(
    profile: Profile,
    gpu: str | GPUSpec,
    clocks_mhz: tuple[int, ...] | None = None,
    keep_measured: bool = True,
) -> Profile:
    """Fill a profile measured at the max clock only with predictions at every supported clock.

    Args:
        profile: rows in the Perseus format; every computation must have a row at the GPU's
            max clock (rows at other clocks are kept as measured if ``keep_measured``).
        gpu: spec-table name, NVML name or :class:`GPUSpec`.
        clocks_mhz: clocks to predict (default: every supported clock).
        keep_measured: keep measured rows instead of predicting over them.

    Raises:
        ProfileError: a computation lacks a max-clock row.
        UnknownGPUError: ``gpu`` is not in the spec table.
    """
    model = get_dvfs_model(gpu)
    base = _max_clock_rows(profile, model.spec)
    measured = {(r.stage, r.instruction, r.freq_mhz): r for r in profile.rows}
    out: list[ProfileRow] = []
    for (stage, instr), row in sorted(base.items()):
        fit = fit_one_point(model, row.time_s, row.energy_j)
        for f in clocks_mhz or model.clocks_mhz():
            if keep_measured and (stage, instr, f) in measured:
                out.append(measured[(stage, instr, f)])
                continue
            t, e = predict(fit, model, f)
            out.append(ProfileRow(stage, instr, int(f), t, e))
    return Profile(tuple(out))


def one_point_errors(
    profile: Profile, gpu: str | GPUSpec, model: DVFSModel | None = None
) -> tuple[list[float], list[float]]:
    """Relative time and energy errors of one-point extrapolation on a fully measured profile.

    Uses only each computation's max-clock row as input and compares the predictions with every
    other measured row (the max-clock rows themselves are excluded: they are exact by design).
    """
    model = model or get_dvfs_model(gpu)
    base = _max_clock_rows(profile, model.spec)
    fits = {k: fit_one_point(model, r.time_s, r.energy_j) for k, r in base.items()}
    t_err: list[float] = []
    e_err: list[float] = []
    for row in profile.rows:
        if row.freq_mhz == model.spec.max_clock_mhz:
            continue
        t, e = predict(fits[(row.stage, row.instruction)], model, row.freq_mhz)
        t_err.append(t / row.time_s - 1.0)
        e_err.append(e / row.energy_j - 1.0)
    return t_err, e_err
