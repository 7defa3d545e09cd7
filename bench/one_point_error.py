"""One-point and few-clock profiling error on the shared measured profiles, and generality checks.

    python bench/one_point_error.py                    # both shared profiles, shipped params
    python bench/one_point_error.py --held-out         # + refits scored on unseen computations
    python bench/one_point_error.py --cross            # + each board with the other's shape
    python bench/one_point_error.py --prior            # + modelled mixes vs the board prior
    python bench/one_point_error.py --plot docs/img/dvfs_one_point.png

Every line: input = each computation's row at the reference clock (or a few clocks), errors over
every other measured row (time and energy, RMS and max, %). Held-out refits use stage 0 as the
representative of stages 0-6 (identical in both profiles). Needs scipy for fits.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fxenergy.hardware.calibrate import fit_profile
from fxenergy.hardware.dvfs import DVFSModel, get_dvfs_model
from fxenergy.hardware.extrapolate import (
    fit_profile_rows,
    one_point_errors,
    predict,
    recommended_reference_mhz,
)
from fxenergy.hardware.power_params import borrowed_power_params
from fxenergy.hardware.profiles import Profile, read_profile

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "perseus"
PROFILES = {
    "A100-SXM4-80GB": DATA / "gpt3-175b+a100_sxm_bf16.csv",
    "A40": DATA / "gpt3-175b+a40_bf16.csv",
}


def rms(xs: list[float]) -> float:
    return 100 * math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else 0.0


def worst(xs: list[float]) -> float:
    return 100 * max(map(abs, xs), default=0.0)


def line(name: str, t: list[float], e: list[float]) -> None:
    print(f"  {name:<44}{rms(t):>7.2f}{worst(t):>7.2f}{rms(e):>8.2f}{worst(e):>7.2f}{len(t):>6}")


def header(title: str) -> None:
    print(f"{title}\n  {'':<44}{'t RMS':>7}{'t max':>7}{'E RMS':>8}{'E max':>7}{'rows':>6}")


def subset(profile: Profile, keep: set[tuple[int, str]]) -> Profile:
    return Profile(tuple(r for r in profile.rows if (r.stage, r.instruction) in keep))


def by_reference(profile: Profile, model: DVFSModel, step: int) -> None:
    clocks = profile.clocks_mhz()
    rec = recommended_reference_mhz(model)
    for ref in sorted({*clocks[::step], rec, clocks[-1]}, reverse=True):
        if ref not in clocks:
            continue
        t, e = one_point_errors(profile, model.spec, model, ref)
        line(f"one point @{ref} MHz{' (recommended)' if ref == rec else ''}", t, e)


def few_clocks(profile: Profile, model: DVFSModel, n: int) -> None:
    """Fit each computation on ``n`` evenly spaced clocks; score the rest."""
    clocks = profile.clocks_mhz()
    pick = {clocks[round(i * (len(clocks) - 1) / (n - 1))] for i in range(n)}
    fits = fit_profile_rows(subset_clocks(profile, pick), model)
    t_err, e_err = [], []
    for r in profile.rows:
        if r.freq_mhz in pick:
            continue
        t, e = predict(fits[(r.stage, r.instruction)], model, r.freq_mhz)
        t_err.append(t / r.time_s - 1)
        e_err.append(e / r.energy_j - 1)
    line(f"{n} clocks fitted {sorted(pick, reverse=True)}", t_err, e_err)


def subset_clocks(profile: Profile, clocks: set[int]) -> Profile:
    return Profile(tuple(r for r in profile.rows if r.freq_mhz in clocks))


def held_out(profile: Profile, model: DVFSModel) -> None:
    last = max(profile.stages())
    keys = set(profile.keys())
    # one kind of computation cannot separate stalled from busy SM power: tie it as shipped
    tie = model.params.stall_dyn_w / model.params.compute_dyn_w
    splits = {
        f"stage {last} (board refit on stage 0)": ({k for k in keys if k[0] == 0}, last),
        "backward (board refit on forward)": ({(0, "forward"), (last, "forward")}, "backward"),
        "forward (board refit on backward)": ({(0, "backward"), (last, "backward")}, "forward"),
    }
    for name, (train, test) in splits.items():
        res = fit_profile(subset(profile, train), model.spec, stall_fraction=tie)
        refit = DVFSModel(model.spec, res.params)
        unseen = {k for k in keys if test in k}
        for ref in (model.spec.max_clock_mhz, recommended_reference_mhz(refit)):
            t, e = one_point_errors(subset(profile, unseen), model.spec, refit, ref)
            line(f"held out {name} @{ref}", t, e)


def cross(profile: Profile, gpu: str, step: int) -> None:
    other = next(g for g in PROFILES if g != gpu)
    model = DVFSModel(get_dvfs_model(gpu).spec, borrowed_power_params(gpu, other))
    print(f"  -- {gpu} with only its board constants, shape borrowed from {other}:")
    by_reference(profile, model, step)


def prior_sensitivity(gpu: str) -> None:
    """One-point error on mixes the model itself generates: what one reading can tell."""
    from fxenergy.hardware.calibrate import two_part_mix
    from fxenergy.hardware.extrapolate import fit_one_point

    m = get_dvfs_model(gpu)
    clocks = [c for c in m.clocks_mhz() if c >= 855]
    refs = (m.spec.max_clock_mhz, recommended_reference_mhz(m))
    print(f"  -- {gpu}: modelled mixes (prior {m.params.typical_compute_share}), one point at")
    for share in (1.0, 0.8, 0.6, 0.4, 0.2):
        mix = two_part_mix(share, 1 - share)
        for ref in refs:
            fit = fit_one_point(m, *m.mix_time_energy(mix, ref), freq_mhz=ref)
            pred = [predict(fit, m, c) for c in clocks]
            true = [m.mix_time_energy(mix, c) for c in clocks]
            t = [p[0] / q[0] - 1 for p, q in zip(pred, true, strict=True)]
            e = [p[1] / q[1] - 1 for p, q in zip(pred, true, strict=True)]
            cap = " (at the cap)" if fit.capped else ""
            line(f"compute share {share:.1f} @{ref}{cap}", t, e)


def plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, (gpu, path) in enumerate(PROFILES.items()):
        profile, model = read_profile(path), get_dvfs_model(gpu)
        ref = recommended_reference_mhz(model)
        fits = fit_profile_rows(profile, model, ref)
        ax_t, ax_e = axes[row]
        for i, key in enumerate(k for k in profile.keys() if k[0] in (0, max(profile.stages()))):
            table = profile.table(*key)
            clocks = sorted(table)
            pred = [predict(fits[key], model, c) for c in clocks]
            kw = {"color": f"C{i}"}
            ax_t.plot(clocks, [table[c].time_s * 1e3 for c in clocks], "o", ms=2.5, **kw)
            ax_e.plot(clocks, [table[c].energy_j for c in clocks], "o", ms=2.5, **kw)
            ax_t.plot(
                clocks, [p[0] * 1e3 for p in pred], "-", label=f"stage {key[0]} {key[1]}", **kw
            )
            ax_e.plot(clocks, [p[1] for p in pred], "-", **kw)
        t, e = one_point_errors(profile, gpu, model, ref)
        ax_t.set(xlabel="SM clock (MHz)", ylabel="ms per microbatch")
        ax_e.set(xlabel="SM clock (MHz)", ylabel="J per microbatch")
        ax_t.set_title(f"{gpu}: one point @{ref} MHz, RMS t {rms(t):.2f} %", fontsize=9)
        ax_e.set_title(f"{gpu}: RMS E {rms(e):.2f} %", fontsize=9)
        ax_t.legend(fontsize=7)
    fig.suptitle("measured (dots) vs one-point prediction from the recommended clock (lines)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", choices=list(PROFILES), action="append")
    ap.add_argument("--step", type=int, default=5, help="every n-th clock as a reference")
    ap.add_argument("--held-out", action="store_true", help="refit on part, score the rest")
    ap.add_argument("--cross", action="store_true", help="each board with the other's shape")
    ap.add_argument("--prior", action="store_true", help="modelled mixes vs the board prior")
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    for gpu in args.gpu or list(PROFILES):
        profile, model = read_profile(PROFILES[gpu]), get_dvfs_model(gpu)
        header(f"{gpu}: {PROFILES[gpu].name}, shipped parameters (errors in %)")
        by_reference(profile, model, args.step)
        for n in (2, 3):
            few_clocks(profile, model, n)
        if args.held_out:
            held_out(profile, model)
        if args.cross:
            cross(profile, gpu, args.step * 2)
        if args.prior:
            prior_sensitivity(gpu)
    if args.prior:
        prior_sensitivity("A100-PCIe-80GB")
    if args.plot:
        plot(args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
