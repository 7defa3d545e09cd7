"""Fit the DVFS model to the shared measured profiles (or any sweep) and print the fit error.

    python bench/calibrate_dvfs.py                        # both shared profiles, as shipped
    python bench/calibrate_dvfs.py SWEEP.csv --gpu A10G   # any Perseus-format sweep
    python bench/calibrate_dvfs.py --fixed                # shipped board parameters, fit only
                                                          # each computation's C and M
    python bench/calibrate_dvfs.py --plot docs/img/dvfs_fit.png

The shipped calibration (fxenergy.hardware.power_params._CALIBRATIONS) is what this prints: the
A40 first, with every board field free (its forward and backward differ in memory share, which
separates stalled from busy SM power); then the A100-SXM4-80GB with the stalled/busy power ratio
tied to the A40's (every A100 computation is ~85-92 % compute: the ratio is not identifiable
there). Each fit is restarted once from its result. Needs scipy (and matplotlib for --plot).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fxenergy.hardware.calibrate import FIT_FIELDS, CalibrationResult, fit_profile
from fxenergy.hardware.dvfs import DVFSModel
from fxenergy.hardware.power_params import get_power_params
from fxenergy.hardware.profiles import Profile, read_profile
from fxenergy.hardware.specs import get_gpu

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "perseus"
SHARED = {
    "A40": DATA / "gpt3-175b+a40_bf16.csv",
    "A100-SXM4-80GB": DATA / "gpt3-175b+a100_sxm_bf16.csv",
}


def report(res: CalibrationResult, gpu: str, seconds: float) -> None:
    shipped = get_power_params(gpu)
    print(f"points: {res.points}   fit time: {seconds:.1f} s")
    print(f"time   RMS {res.time_rms_pct:.2f} %   max |err| {res.time_max_pct:.2f} %")
    print(f"energy RMS {res.energy_rms_pct:.2f} %   max |err| {res.energy_max_pct:.2f} %")
    print(f"{'parameter':<22}{'fitted':>10}{'shipped':>10}")
    for f in (*FIT_FIELDS, "typical_compute_share"):
        print(f"{f:<22}{getattr(res.params, f):>10.3f}{getattr(shipped, f):>10.3f}")
    print(f"{'computation':<16}{'C ms':>8}{'M ms':>8}{'share':>7}")
    seen = set()
    for (stage, instr), (comp, mem) in sorted(res.mixes.items()):
        if (comp, mem) in seen:
            continue  # identical stages
        seen.add((comp, mem))
        share = comp.compute_s / (comp.compute_s + mem.memory_s)
        print(
            f"{stage:>3} {instr:<12}{comp.compute_s * 1e3:>8.2f}{mem.memory_s * 1e3:>8.2f}"
            f"{share:>7.3f}"
        )


def calibrate(
    profile: Profile, gpu: str, fixed: bool, stall_fraction: float | None
) -> CalibrationResult:
    fields = () if fixed else FIT_FIELDS
    res = fit_profile(profile, gpu, fields=fields, stall_fraction=stall_fraction)
    if fixed:
        return res
    return fit_profile(profile, gpu, fields=fields, start=res.params, stall_fraction=stall_fraction)


def plot(results: list[tuple[str, Profile, CalibrationResult]], out: Path) -> None:
    """Measured (dots) vs calibrated model (lines), time and energy vs clock, per profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4 * len(results)), squeeze=False)
    for (gpu, profile, res), (ax_t, ax_e) in zip(results, axes, strict=True):
        model = DVFSModel(get_gpu(gpu), res.params)
        for i, key in enumerate(k for k in profile.keys() if k[0] in (0, max(profile.stages()))):
            table = profile.table(*key)
            clocks = sorted(table)
            kw = {"color": f"C{i}"}
            ax_t.plot(clocks, [table[c].time_s * 1e3 for c in clocks], "o", ms=2.5, **kw)
            ax_e.plot(clocks, [table[c].energy_j for c in clocks], "o", ms=2.5, **kw)
            pred = [model.mix_time_energy(res.mixes[key], c) for c in clocks]
            label = f"stage {key[0]} {key[1]}"
            ax_t.plot(clocks, [p[0] * 1e3 for p in pred], "-", label=label, **kw)
            ax_e.plot(clocks, [p[1] for p in pred], "-", **kw)
        ax_t.set(xlabel="SM clock (MHz)", ylabel="ms per microbatch")
        ax_e.set(xlabel="SM clock (MHz)", ylabel="J per microbatch")
        ax_t.set_title(f"{gpu}: time, fit RMS {res.time_rms_pct:.2f} %", fontsize=9)
        ax_e.set_title(f"{gpu}: energy, fit RMS {res.energy_rms_pct:.2f} %", fontsize=9)
        ax_t.legend(fontsize=7)
    fig.suptitle("measured (dots) vs calibrated DVFS model (lines)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", nargs="?", type=Path, help="default: both shared profiles")
    ap.add_argument("--gpu", default=None, help="board of PROFILE (spec-table name)")
    ap.add_argument("--fixed", action="store_true", help="keep the shipped board parameters")
    ap.add_argument("--plot", type=Path, help="write a PNG of measured vs modelled")
    args = ap.parse_args(argv)
    jobs = [(args.gpu or "A100-SXM4-80GB", args.profile)] if args.profile else list(SHARED.items())
    jobs = [(g, (p or SHARED[g]).resolve()) for g, p in jobs]
    results = []
    tie = None
    for gpu, path in jobs:
        profile = read_profile(path)
        t0 = time.perf_counter()
        stall = tie if (gpu == "A100-SXM4-80GB" and not args.profile) else None
        res = calibrate(profile, gpu, args.fixed, stall)
        if gpu == "A40":
            tie = res.params.stall_dyn_w / res.params.compute_dyn_w
        print(f"\nprofile: {path.name}  gpu: {gpu}  ({'fixed' if args.fixed else 'free'} board)")
        if stall is not None:
            print(f"stall_dyn_w tied to {stall:.3f} x compute_dyn_w (the A40's fitted ratio)")
        report(res, gpu, time.perf_counter() - t0)
        results.append((gpu, profile, res))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
