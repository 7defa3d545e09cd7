"""``fxenergy profile ...``: work with time/energy profiles (Perseus CSV format).

``fxenergy profile extrapolate PROFILE.csv --gpu A100-SXM4-80GB --out FULL.csv`` fills a profile
measured at the max SM clock only with modelled rows at every supported clock (one-point
profiling, fxenergy.hardware.extrapolate; docs/dvfs.md gives its measured error).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fxenergy.cli._common import add_command, check_input_file, check_output_path
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.hardware.extrapolate import extrapolate_profile, fit_one_point
from fxenergy.hardware.profiles import Profile, read_profile, write_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "profile",
        "work with time/energy profiles (Perseus CSV format)",
        "A profile lists each pipeline computation's time and energy per SM clock "
        "(stage,instruction,frequency,time,energy). `extrapolate` fills one measured at the max "
        "clock only with modelled rows at every supported clock.",
        ["fxenergy profile extrapolate measured.csv --gpu A100-SXM4-80GB --out full.csv"],
    )
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    ex = add_command(
        psub,
        "extrapolate",
        "predict every supported clock from rows measured at the max clock",
        "One-point profiling: from each computation's (time, energy) at the GPU's max SM "
        "clock, model its time and energy at every supported clock.\n\nThe summary's t×@F and "
        "E×@F columns are the modelled time and energy at the lowest clock F (MHz) divided by "
        "the measured ones at the max clock (1.3 = 30% longer).",
        ["fxenergy profile extrapolate measured.csv --gpu A100-SXM4-80GB --out full.csv"],
    )
    ex.add_argument("profile", type=Path, help="CSV with stage,instruction,frequency,time,energy")
    ex.add_argument("--gpu", required=True, help="GPU name (see `fxenergy gpus`)")
    ex.add_argument("--out", type=Path, required=True, help="where to write the full profile")
    ex.add_argument(
        "--no-keep-measured",
        dest="keep_measured",
        action="store_false",
        help="model every clock, even ones the input measured",
    )
    ex.set_defaults(func=run_extrapolate)


def _summary(profile: Profile, full: Profile, gpu: str) -> Table:
    model = get_dvfs_model(gpu)
    f_max, f_min = model.clocks_mhz()[0], model.clocks_mhz()[-1]
    table = Table(title=f"one-point profile on {model.spec.name} (rows below max clock: modelled)")
    for col in ("stage", "instruction", "W @max", "compute share", f"t×@{f_min}", f"E×@{f_min}"):
        table.add_column(col, justify="left" if col == "instruction" else "right")
    for stage, instr in full.keys():
        top = full.table(stage, instr)[f_max]
        low = full.table(stage, instr)[f_min]
        fit = fit_one_point(model, top.time_s, top.energy_j)
        table.add_row(
            str(stage),
            instr,
            f"{top.power_w:.0f}",
            f"{fit.compute_share:.2f}" + (f" ({fit.clipped}-clipped)" if fit.clipped else ""),
            f"{low.time_s / top.time_s:.3f}",
            f"{low.energy_j / top.energy_j:.3f}",
        )
    return table


def run_extrapolate(args: argparse.Namespace) -> int:
    from fxenergy.cli import console

    check_input_file(args.profile, "profile")
    check_output_path(args.out, "--out")
    profile = read_profile(args.profile)
    full = extrapolate_profile(profile, args.gpu, keep_measured=args.keep_measured)
    write_profile(full.rows, args.out)
    console.print(_summary(profile, full, args.gpu))
    console.print(
        "t×/E×@F: modelled time/energy at the lowest clock F MHz over the measured ones at the "
        "max clock",
        highlight=False,
    )
    console.print(
        f"wrote {len(full.rows)} rows ({len(full.keys())} computations x "
        f"{len(full.clocks_mhz())} clocks) to {args.out}; rows not in the input are modelled "
        "by the DVFS model, not measured"
    )
    return 0
