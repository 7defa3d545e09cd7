"""Fit the DVFS model's free power parameters to a measured time/energy profile.

Each computation in the profile (a stage's forward or backward) is modelled as a two-part mix:
``Work(compute_s=C, activity=A)`` (time ∝ 1/f) then ``Work(memory_s=M)`` (time independent of
f). ``C``, ``M`` and ``A`` of every computation are fitted with the GPU's shared parameters
(:data:`FIT_FIELDS`), by least squares on relative time and energy errors. The GPU parameters
are what carries over to other computations; the per-computation ``C, M, A`` are what one-point
profiling (:mod:`fxenergy.hardware.extrapolate`) has to infer from a single measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fxenergy.errors import FxEnergyError
from fxenergy.hardware.dvfs import DVFSModel, Work
from fxenergy.hardware.power_params import PowerParams, get_power_params
from fxenergy.hardware.profiles import Profile
from fxenergy.hardware.specs import GPUSpec, get_gpu

#: GPU parameters the fit moves; the rest stay at their published values.
FIT_FIELDS = (
    "static_power_w",
    "compute_dyn_w",
    "knee_mhz",
    "v_min_ratio",
    "power_cap_w",
    "cap_sharpness",
)
_BOUNDS = {
    "static_power_w": (10.0, 300.0),
    "compute_dyn_w": (50.0, 2000.0),
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
    """The mix used for a whole computation: a compute-bound part, then a memory-bound part."""
    return (Work(compute_s, 0.0, activity=activity), Work(0.0, memory_s))


def profile_errors(
    model: DVFSModel, profile: Profile, mixes: dict[Key, tuple[Work, ...]]
) -> tuple[list[float], list[float]]:
    """Relative (predicted - measured) / measured errors of time and energy, every row."""
    t_err: list[float] = []
    e_err: list[float] = []
    for row in profile.rows:
        mix = mixes[(row.stage, row.instruction)]
        t_err.append(model.mix_time_s(mix, row.freq_mhz) / row.time_s - 1.0)
        e_err.append(model.mix_energy_j(mix, row.freq_mhz) / row.energy_j - 1.0)
    return t_err, e_err


def _rms_pct(errs: list[float]) -> float:
    return 100.0 * math.sqrt(sum(e * e for e in errs) / len(errs)) if errs else 0.0


def evaluate(
    model: DVFSModel, profile: Profile, mixes: dict[Key, tuple[Work, ...]]
) -> tuple[float, float, float, float]:
    """(time RMS %, energy RMS %, time max |%|, energy max |%|) of ``model`` on ``profile``."""
    t, e = profile_errors(model, profile, mixes)
    return (
        _rms_pct(t),
        _rms_pct(e),
        100 * max(map(abs, t), default=0.0),
        100 * max(map(abs, e), default=0.0),
    )


def _unpack(
    x: list[float], base: PowerParams, keys: list[Key], fields: tuple[str, ...]
) -> tuple[PowerParams, dict[Key, tuple[Work, Work]]]:
    params = base.replace(**{f: float(v) for f, v in zip(fields, x, strict=False)})
    rest = x[len(fields) :]
    mixes = {
        k: two_part_mix(math.exp(rest[3 * i]), math.exp(rest[3 * i + 1]), rest[3 * i + 2])
        for i, k in enumerate(keys)
    }
    return params, mixes


def _initial(profile: Profile, keys: list[Key], spec: GPUSpec) -> list[float]:
    """Start: 95% of the max-clock time is compute, 5% memory."""
    x: list[float] = []
    for k in keys:
        table = profile.table(*k)
        t = table[max(table)].time_s * min(1.0, max(table) / spec.max_clock_mhz)
        x += [math.log(0.95 * t), math.log(0.05 * t), 0.95]
    return x


def fit_profile(
    profile: Profile,
    gpu: str | GPUSpec,
    fields: tuple[str, ...] = FIT_FIELDS,
    start: PowerParams | None = None,
) -> CalibrationResult:
    """Least-squares fit of ``fields`` (plus each computation's C and M) to ``profile``.

    Needs scipy (``pip install scipy``). Raises :class:`FxEnergyError` if it is missing.
    """
    try:
        from scipy.optimize import least_squares
    except ImportError as exc:  # scipy is a bench-only dependency
        raise FxEnergyError("calibration needs scipy: pip install scipy") from exc
    spec = get_gpu(gpu)
    base = start or get_power_params(spec)
    keys = profile.keys()
    x0 = [getattr(base, f) for f in fields] + _initial(profile, keys, spec)
    lo = [_BOUNDS[f][0] for f in fields] + [-30.0, -30.0, 0.0] * len(keys)
    hi = [_BOUNDS[f][1] for f in fields] + [10.0, 10.0, 1.0] * len(keys)
    x0 = [min(max(v, a + 1e-9), b - 1e-9) for v, a, b in zip(x0, lo, hi, strict=True)]

    def residuals(x: list[float]) -> list[float]:
        params, mixes = _unpack(list(x), base, keys, fields)
        t, e = profile_errors(DVFSModel(spec, params), profile, mixes)
        return t + e

    sol = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac", max_nfev=400)
    params, mixes = _unpack(list(sol.x), base, keys, fields)
    t_rms, e_rms, t_max, e_max = evaluate(DVFSModel(spec, params), profile, mixes)
    return CalibrationResult(params, mixes, t_rms, e_rms, t_max, e_max, len(profile.rows))
