"""One-point profiling error: predict every clock from the max-clock row only.

    python bench/one_point_error.py                 # shared GPT-3 / A100 profile, shipped params
    python bench/one_point_error.py --leave-out     # + held-out checks (refits; needs scipy)
    python bench/one_point_error.py --plot docs/img/dvfs_one_point.png

Held-out checks: the GPU parameters are refitted on part of the profile and the one-point
extrapolation is scored only on computations the refit never saw (stage 7 from stages 0-6;
backward from forward; forward from backward). Stages 0-6 of the shared profile are identical,
so the refits use stage 0 as their representative (fewer rows, same information).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fxenergy.hardware.dvfs import DVFSModel, get_dvfs_model
from fxenergy.hardware.extrapolate import fit_one_point, one_point_errors, predict
from fxenergy.hardware.profiles import Profile, read_profile
from fxenergy.hardware.specs import get_gpu

SHARED = Path(__file__).resolve().parents[1] / "../shared/data/perseus/gpt3-175b+a100_sxm_bf16.csv"


def rms(xs: list[float]) -> float:
    return 100 * math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else 0.0


def worst(xs: list[float]) -> float:
    return 100 * max(map(abs, xs), default=0.0)


def subset(profile: Profile, keep: set[tuple[int, str]]) -> Profile:
    return Profile(tuple(r for r in profile.rows if (r.stage, r.instruction) in keep))


def line(name: str, t: list[float], e: list[float]) -> None:
    print(f"{name:<38}{rms(t):>7.2f}{worst(t):>7.2f}{rms(e):>8.2f}{worst(e):>7.2f}{len(t):>7}")


def per_computation(profile: Profile, model: DVFSModel) -> None:
    print(f"{'computation':<20}{'W@max':>7}{'share':>7}{'t RMS%':>8}{'E RMS%':>8}")
    for key in profile.keys():
        t, e = one_point_errors(subset(profile, {key}), model.spec, model)
        top = profile.table(*key)[model.spec.max_clock_mhz]
        fit = fit_one_point(model, top.time_s, top.energy_j)
        print(
            f"{key[0]:>3} {key[1]:<16}{top.power_w:>7.1f}{fit.compute_share:>7.3f}"
            f"{rms(t):>8.2f}{rms(e):>8.2f}"
        )


def held_out(profile: Profile, gpu: str) -> None:
    from fxenergy.hardware.calibrate import fit_profile

    last = max(profile.stages())
    keys = set(profile.keys())
    splits = {
        f"stage {last} (fit on stage 0)": (
            {k for k in keys if k[0] == 0},
            {k for k in keys if k[0] == last},
        ),
        "backward (fit on forward)": (
            {k for k in keys if k[1] == "forward" and k[0] in (0, last)},
            {k for k in keys if k[1] == "backward"},
        ),
        "forward (fit on backward)": (
            {k for k in keys if k[1] == "backward" and k[0] in (0, last)},
            {k for k in keys if k[1] == "forward"},
        ),
    }
    for name, (train, test) in splits.items():
        res = fit_profile(subset(profile, train), gpu)
        model = DVFSModel(get_gpu(gpu), res.params)
        t, e = one_point_errors(subset(profile, test), gpu, model)
        line(f"held out: {name}", t, e)


#: How far a transferred shape parameter might be off on another GPU.
PERTURB = {
    "knee_mhz": (0.9, 1.1),
    "v_min_ratio": (0.9, 1.1),
    "static_power_w": (0.7, 1.3),
    "compute_dyn_w": (0.85, 1.15),
    "power_cap_w": (0.95, 1.05),
    "cap_sharpness": (0.5, 2.0),
    "stall_dyn_w": (0.5, 1.5),
    "memory_dyn_w": (0.5, 1.5),
}


def sensitivity(profile: Profile, model: DVFSModel) -> None:
    """One-point error when one parameter is off by the factors in PERTURB."""
    print(f"{'parameter x factor':<38}{'t RMS':>7}{'t max':>7}{'E RMS':>8}{'E max':>7}")
    for field, factors in PERTURB.items():
        for k in factors:
            params = model.params.replace(**{field: getattr(model.params, field) * k})
            t, e = one_point_errors(profile, model.spec, DVFSModel(model.spec, params))
            line(f"{field} x {k:g}", t, e)


def plot(profile: Profile, model: DVFSModel, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f_max = model.spec.max_clock_mhz
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = [k for k in profile.keys() if k[0] in (0, max(profile.stages()))]
    for i, key in enumerate(keys):
        table = profile.table(*key)
        clocks = sorted(table)
        fit = fit_one_point(model, table[f_max].time_s, table[f_max].energy_j)
        pred = [predict(fit, model, c) for c in clocks]
        kw = {"color": f"C{i}"}
        ax_t.plot(clocks, [table[c].time_s * 1e3 for c in clocks], "o", ms=3, **kw)
        ax_e.plot(clocks, [table[c].energy_j for c in clocks], "o", ms=3, **kw)
        ax_t.plot(clocks, [p[0] * 1e3 for p in pred], "-", label=f"stage {key[0]} {key[1]}", **kw)
        ax_e.plot(clocks, [p[1] for p in pred], "-", **kw)
    ax_t.set(xlabel="SM clock (MHz)", ylabel="time per microbatch (ms)")
    ax_e.set(xlabel="SM clock (MHz)", ylabel="energy per microbatch (J)")
    ax_t.legend(fontsize=8)
    t, e = one_point_errors(profile, model.spec, model)
    fig.suptitle(
        f"{model.spec.name}: measured (dots) vs one-point prediction from the {f_max} MHz row "
        f"(lines); RMS time {rms(t):.2f} %, energy {rms(e):.2f} %",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", nargs="?", type=Path, default=SHARED.resolve())
    ap.add_argument("--gpu", default="A100-SXM4-80GB")
    ap.add_argument("--leave-out", action="store_true", help="also run held-out refits")
    ap.add_argument("--sensitivity", action="store_true", help="perturb each GPU parameter")
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    profile = read_profile(args.profile)
    model = get_dvfs_model(args.gpu)
    print(
        f"profile: {args.profile}  gpu: {args.gpu}  input: the {model.spec.max_clock_mhz} MHz "
        "row of each computation; errors over every other measured clock (%)"
    )
    print(f"{'':<38}{'t RMS':>7}{'t max':>7}{'E RMS':>8}{'E max':>7}{'rows':>7}")
    t, e = one_point_errors(profile, args.gpu, model)
    line("shipped parameters", t, e)
    if args.leave_out:
        held_out(profile, args.gpu)
    per_computation(profile, model)
    if args.sensitivity:
        sensitivity(profile, model)
    if args.plot:
        plot(profile, model, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
