"""Fit the DVFS model to a measured profile and print the fit error (RMS %).

    python bench/calibrate_dvfs.py                       # the shared GPT-3 / A100 profile
    python bench/calibrate_dvfs.py PROFILE.csv --gpu A40 # any Perseus-format profile
    python bench/calibrate_dvfs.py --fixed               # shipped GPU parameters, fit only
                                                         # each computation's C, M, A
    python bench/calibrate_dvfs.py --plot docs/img/dvfs_fit.png

Free GPU parameters: fxenergy.hardware.calibrate.FIT_FIELDS. Each computation (stage,
instruction) also gets its compute time C, memory time M and compute activity A. Needs scipy.
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

SHARED = Path(__file__).resolve().parents[1] / "../shared/data/perseus/gpt3-175b+a100_sxm_bf16.csv"


def report(res: CalibrationResult, gpu: str, seconds: float) -> None:
    shipped = get_power_params(gpu)
    print(f"points: {res.points}   fit time: {seconds:.1f} s")
    print(f"time   RMS {res.time_rms_pct:.2f} %   max |err| {res.time_max_pct:.2f} %")
    print(f"energy RMS {res.energy_rms_pct:.2f} %   max |err| {res.energy_max_pct:.2f} %")
    print(f"{'parameter':<16}{'fitted':>10}{'shipped':>10}")
    for f in FIT_FIELDS:
        print(f"{f:<16}{getattr(res.params, f):>10.3f}{getattr(shipped, f):>10.3f}")
    print(f"{'computation':<16}{'C ms':>8}{'M ms':>8}{'A':>6}{'share':>7}")
    for (stage, instr), (comp, mem) in sorted(res.mixes.items()):
        share = comp.compute_s / (comp.compute_s + mem.memory_s)
        print(
            f"{stage:>3} {instr:<12}{comp.compute_s * 1e3:>8.2f}{mem.memory_s * 1e3:>8.2f}"
            f"{comp.activity:>6.3f}{share:>7.3f}"
        )


def plot(res: CalibrationResult, profile: Profile, gpu: str, out: Path) -> None:
    """Measured (dots) vs modelled (lines) time and energy vs clock, a few computations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = DVFSModel(get_gpu(gpu), res.params)
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = [k for k in profile.keys() if k[0] in (0, max(profile.stages()))]
    for i, key in enumerate(keys):
        table = profile.table(*key)
        clocks = sorted(table)
        color = f"C{i}"
        label = f"stage {key[0]} {key[1]}"
        ax_t.plot(clocks, [table[c].time_s * 1e3 for c in clocks], "o", ms=3, color=color)
        ax_e.plot(clocks, [table[c].energy_j for c in clocks], "o", ms=3, color=color)
        mix = res.mixes[key]
        ax_t.plot(
            clocks, [model.mix_time_s(mix, c) * 1e3 for c in clocks], "-", color=color, label=label
        )
        ax_e.plot(clocks, [model.mix_energy_j(mix, c) for c in clocks], "-", color=color)
    ax_t.set(xlabel="SM clock (MHz)", ylabel="time per microbatch (ms)")
    ax_e.set(xlabel="SM clock (MHz)", ylabel="energy per microbatch (J)")
    ax_t.legend(fontsize=8)
    fig.suptitle(
        f"{gpu}: measured (dots) vs calibrated DVFS model (lines); RMS time "
        f"{res.time_rms_pct:.2f} %, energy {res.energy_rms_pct:.2f} %",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", nargs="?", type=Path, default=SHARED.resolve())
    ap.add_argument("--gpu", default="A100-SXM4-80GB")
    ap.add_argument("--fixed", action="store_true", help="keep the shipped GPU parameters")
    ap.add_argument("--plot", type=Path, help="write a PNG of measured vs modelled")
    args = ap.parse_args(argv)
    profile = read_profile(args.profile)
    t0 = time.perf_counter()
    res = fit_profile(profile, args.gpu, fields=() if args.fixed else FIT_FIELDS)
    print(
        f"profile: {args.profile}  gpu: {args.gpu}  ({'fixed' if args.fixed else 'free'} GPU "
        "parameters)"
    )
    report(res, args.gpu, time.perf_counter() - t0)
    if args.plot:
        plot(res, profile, args.gpu, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
