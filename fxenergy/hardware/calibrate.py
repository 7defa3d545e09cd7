"""Fit the DVFS model's board parameters (and each computation's mix) to a measured profile.

Each computation in the profile (a stage's forward or backward) is modelled as a two-part mix:
``Work(compute_s=C)`` (time ∝ 1/f, SMs busy) then ``Work(memory_s=M)`` (time independent of f,
SMs stalled, DRAM busy). ``C`` and ``M`` of every computation are fitted with the board's shared
parameters (:data:`FIT_FIELDS`), by least squares on relative time and energy errors. The board
parameters are what carries over to other computations; the per-computation ``C, M`` are what
one-point profiling (:mod:`fxenergy.hardware.extrapolate`) has to infer from a single
measurement, and what :func:`fit_mix` fits when a computation was measured at a few clocks.

Activity is held at 1 here: with the stalled-SM power ``stall_dyn_w`` free, a lower activity and
a larger memory share explain a measured sweep equally well (the fit cannot tell them apart), so
the board's stall power absorbs it and the mix stays two numbers.

Computations with identical measurements (stages 0-6 of the shared GPT-3 profiles) are fitted
once; they carry the same information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fxenergy.errors import FxEnergyError, ProfileError
from fxenergy.hardware.dvfs import DVFSModel, Work
from fxenergy.hardware.power_params import FIT_FIELDS, PowerParams, get_power_params
from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.hardware.specs import GPUSpec, get_gpu

_BOUNDS = {
    "static_power_w": (10.0, 300.0),
    "compute_dyn_w": (50.0, 2000.0),
    "stall_dyn_w": (0.0, 1000.0),
    "memory_dyn_w": (0.0, 500.0),
    "knee_mhz": (300.0, 3000.0),
    "v_min_ratio": (0.4, 1.0),
    "power_cap_w": (50.0, 2000.0),
    "cap_sharpness": (4.0, 200.0),
}
Key = tuple[int, str]


@dataclass(frozen=True)
class CalibrationResult:
    """A fitted parameter set and how well it reproduces the profile."""

    params: PowerParams
    mixes: dict[Key, tuple[Work, Work]]
    time_rms_pct: float
    energy_rms_pct: float
    time_max_pct: float
    energy_max_pct: float
    points: int


def two_part_mix(compute_s: float, memory_s: float, activity: float = 1.0) -> tuple[Work, Work]:
    """The mix used for a whole computation: a compute-bound part, then a memory-bound part.

    ``activity`` (the share of SMs at work) applies to both parts.
    """
    return (Work(compute_s, 0.0, activity=activity), Work(0.0, memory_s, activity=activity))


def profile_errors(
    model: DVFSModel, profile: Profile, mixes: dict[Key, tuple[Work, ...]]
) -> tuple[list[float], list[float]]:
    """Relative (predicted - measured) / measured errors of time and energy, every row."""
    return _row_errors(model, profile.rows, mixes)


def _row_errors(
    model: DVFSModel, rows: tuple[ProfileRow, ...], mixes: dict[Key, tuple[Work, ...]]
) -> tuple[list[float], list[float]]:
    t_err: list[float] = []
    e_err: list[float] = []
    for row in rows:
        mix = mixes[(row.stage, row.instruction)]
        t, e = model.mix_time_energy(mix, row.freq_mhz)
        t_err.append(t / row.time_s - 1.0)
        e_err.append(e / row.energy_j - 1.0)
    return t_err, e_err


def rms_pct(errs: list[float]) -> float:
    """Root-mean-square of relative errors, in percent."""
    return 100.0 * math.sqrt(sum(e * e for e in errs) / len(errs)) if errs else 0.0


def fit_error(
    model: DVFSModel, profile: Profile, mixes: dict[Key, tuple[Work, ...]]
) -> tuple[float, float, float, float]:
    """(time RMS %, energy RMS %, time max |%|, energy max |%|) of ``model`` on ``profile``."""
    t, e = profile_errors(model, profile, mixes)
    return (
        rms_pct(t),
        rms_pct(e),
        100 * max(map(abs, t), default=0.0),
        100 * max(map(abs, e), default=0.0),
    )


def distinct_computations(profile: Profile) -> dict[Key, Key]:
    """Map each computation to the first one with identical measured rows (itself if none)."""
    seen: dict[tuple[tuple[int, float, float], ...], Key] = {}
    out: dict[Key, Key] = {}
    for key in profile.keys():
        table = profile.table(*key)
        sig = tuple((f, table[f].time_s, table[f].energy_j) for f in sorted(table))
        out[key] = seen.setdefault(sig, key)
    return out


def _unpack(
    x: list[float],
    base: PowerParams,
    keys: list[Key],
    fields: tuple[str, ...],
    stall_fraction: float | None = None,
) -> tuple[PowerParams, dict[Key, tuple[Work, Work]]]:
    changes = {f: float(v) for f, v in zip(fields, x, strict=False)}
    if stall_fraction is not None:
        changes["stall_dyn_w"] = stall_fraction * changes.get("compute_dyn_w", base.compute_dyn_w)
    params = base.replace(**changes)
    rest = x[len(fields) :]
    mixes = {
        k: two_part_mix(math.exp(rest[2 * i]), math.exp(rest[2 * i + 1]))
        for i, k in enumerate(keys)
    }
    return params, mixes


def _initial(profile: Profile, keys: list[Key], spec: GPUSpec) -> list[float]:
    """Start: 80% of the top-clock time is compute (scaled to f_max), 20% memory."""
    x: list[float] = []
    for k in keys:
        table = profile.table(*k)
        top = max(table)
        t = table[top].time_s
        x += [math.log(0.8 * t * top / spec.max_clock_mhz), math.log(0.2 * t)]
    return x


def _least_squares():
    try:
        from scipy.optimize import least_squares
    except ImportError as exc:  # scipy is an optional dependency
        raise FxEnergyError(
            "calibration and few-clock profile fits need scipy (pip install scipy); to "
            "extrapolate from one clock instead pass --reference-mhz (reference_mhz=)"
        ) from exc
    return least_squares


def fit_profile(
    profile: Profile,
    gpu: str | GPUSpec,
    fields: tuple[str, ...] = FIT_FIELDS,
    start: PowerParams | None = None,
    stall_fraction: float | None = None,
) -> CalibrationResult:
    """Least-squares fit of ``fields`` (plus each computation's C, M and A) to ``profile``.

    Args:
        profile: a measured sweep (Perseus CSV format); the more clocks the better, and at least
            a few below the power cap so the voltage curve is visible.
        gpu: the board whose table entry gives the starting point and the fixed parameters.
        fields: board parameters to fit (``()``: only each computation's mix).
        start: parameters to start from instead of the table entry.
        stall_fraction: tie ``stall_dyn_w`` to this fraction of ``compute_dyn_w`` (for a sweep
            whose computations all have about the same memory share, which cannot separate
            them); ``stall_dyn_w`` is then not fitted on its own.

    Raises:
        FxEnergyError: scipy is missing. ProfileError: too few rows for the free parameters.

    The result's ``typical_compute_share`` is the mean compute share of the fitted (distinct)
    computations: the board's one-point prior.
    """
    least_squares = _least_squares()
    spec = get_gpu(gpu)
    base = start or get_power_params(spec)
    if stall_fraction is not None:
        fields = tuple(f for f in fields if f != "stall_dyn_w")
    alias = distinct_computations(profile)
    keys = sorted(set(alias.values()))
    rows = tuple(r for r in profile.rows if (r.stage, r.instruction) in set(keys))
    if 2 * len(rows) < len(fields) + 2 * len(keys):
        raise ProfileError(
            f"{len(rows)} rows cannot fit {len(fields)} board and {2 * len(keys)} computation "
            "parameters; measure more clocks (a sweep from the lowest to the highest clock)"
        )
    x0 = [getattr(base, f) for f in fields] + _initial(profile, keys, spec)
    lo = [_BOUNDS[f][0] for f in fields] + [-30.0, -30.0] * len(keys)
    hi = [_BOUNDS[f][1] for f in fields] + [10.0, 10.0] * len(keys)
    x0 = [min(max(v, a + 1e-9), b - 1e-9) for v, a, b in zip(x0, lo, hi, strict=True)]

    def residuals(x: list[float]) -> list[float]:
        params, mixes = _unpack(list(x), base, keys, fields, stall_fraction)
        t, e = _row_errors(DVFSModel(spec, params), rows, mixes)
        return t + e

    sol = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac", max_nfev=300)
    params, fitted = _unpack(list(sol.x), base, keys, fields, stall_fraction)
    shares = [c.compute_s / (c.compute_s + m.memory_s) for c, m in fitted.values()]
    params = params.replace(typical_compute_share=round(sum(shares) / len(shares), 3))
    mixes = {k: fitted[alias[k]] for k in profile.keys()}
    t_rms, e_rms, t_max, e_max = fit_error(DVFSModel(spec, params), profile, mixes)
    return CalibrationResult(params, mixes, t_rms, e_rms, t_max, e_max, len(profile.rows))


def fit_mix(model: DVFSModel, rows: list[ProfileRow]) -> tuple[Work, Work]:
    """One computation's mix (C, M) from its rows at two or more clocks, board fixed.

    Raises:
        ProfileError: fewer than two distinct clocks.
    """
    clocks = sorted({r.freq_mhz for r in rows})
    if len(clocks) < 2:
        raise ProfileError(f"a mix fit needs rows at two or more clocks, got {clocks}")
    least_squares = _least_squares()
    key = (rows[0].stage, rows[0].instruction)
    fake = Profile(tuple(rows))

    def residuals(x: list[float]) -> list[float]:
        mix = two_part_mix(math.exp(x[0]), math.exp(x[1]))
        t, e = _row_errors(model, fake.rows, {key: mix})
        return t + e

    x0 = _initial(fake, [key], model.spec)
    sol = least_squares(residuals, x0, bounds=([-30.0, -30.0], [10.0, 10.0]), x_scale="jac")
    return two_part_mix(math.exp(sol.x[0]), math.exp(sol.x[1]))


#: Stalled/busy SM power ratio measured on the A40 sweep, whose forward (55 % compute) and backward
#: (24 %) separate the two; used where a sweep cannot (bench/calibrate_dvfs.py, docs/dvfs.md).
MEASURED_STALL_FRACTION = 0.668
#: Below this spread of compute shares a sweep cannot separate stalled from busy SM power.
MIN_SHARE_SPREAD = 0.2


def _shares(res: CalibrationResult) -> list[float]:
    return [c.compute_s / (c.compute_s + m.memory_s) for c, m in res.mixes.values()]


def calibrate_board(
    profile: Profile, gpu: str | GPUSpec, stall_fraction: float | None = None
) -> tuple[CalibrationResult, str]:
    """Fit a board to a sweep (each fit restarted once); returns the result and how D_s was set.

    With ``stall_fraction`` None, ``stall_dyn_w`` is fitted when the sweep's computations differ
    in compute share by at least :data:`MIN_SHARE_SPREAD`, else tied to
    :data:`MEASURED_STALL_FRACTION` (a free fit would trade it against the mixes).
    """

    def fit(tie: float | None) -> CalibrationResult:
        res = fit_profile(profile, gpu, stall_fraction=tie)
        return fit_profile(profile, gpu, start=res.params, stall_fraction=tie)

    if stall_fraction is not None:
        return fit(stall_fraction), f"stall_dyn_w tied to {stall_fraction:g} x compute_dyn_w"
    res = fit(None)
    shares = _shares(res)
    spread = f"compute shares {min(shares):.2f}-{max(shares):.2f}"
    if max(shares) - min(shares) >= MIN_SHARE_SPREAD:
        return res, f"stall_dyn_w fitted ({spread})"
    note = (
        f"stall_dyn_w tied to {MEASURED_STALL_FRACTION} x compute_dyn_w (the A40's measured "
        f"ratio): the sweep's {spread} cannot separate stalled from busy SM power"
    )
    return fit(MEASURED_STALL_FRACTION), note
