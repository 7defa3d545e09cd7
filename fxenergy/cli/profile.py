"""``fxenergy profile ...``: work with time/energy profiles (Perseus CSV format).

``fxenergy profile extrapolate PROFILE.csv --gpu A40 --out FULL.csv`` fills a profile measured at
one clock (any clock) or a few clocks with modelled rows at every supported clock (one-point or
few-clock fits, fxenergy.hardware.extrapolate; docs/dvfs.md gives their measured error).

``fxenergy profile calibrate SWEEP.csv --gpu NAME --out board.json`` fits a board's power
parameters to a measured clock sweep; pass ``--gpu-params board.json`` to any command after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fxenergy.cli._common import add_command, check_input_file, check_output_path
from fxenergy.hardware.dvfs import DVFSModel, get_dvfs_model
from fxenergy.hardware.extrapolate import (
    OnePointFit,
    fit_profile_rows,
    profile_from_fits,
    recommended_reference_mhz,
)
from fxenergy.hardware.power_params import calibration_note
from fxenergy.hardware.profiles import Profile, read_profile, write_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "profile",
        "work with time/energy profiles (Perseus CSV format)",
        "A profile lists each pipeline computation's time and energy per SM clock "
        "(stage,instruction,frequency,time,energy). `extrapolate` fills one measured at one or a "
        "few clocks with modelled rows at every supported clock.",
        ["fxenergy profile extrapolate measured.csv --gpu A100-SXM4-80GB --out full.csv"],
    )
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    ex = add_command(
        psub,
        "extrapolate",
        "predict every supported clock from rows measured at one or a few clocks",
        "From each computation's (time, energy) at one SM clock (any clock), model its time and "
        "energy at every supported clock; computations measured at two or more clocks are fitted "
        "to them instead.\n\nThe summary's t×@F and E×@F columns are the modelled time and "
        "energy at the lowest clock F (MHz) divided by those at the max clock (1.3 = 30% longer).",
        [
            "fxenergy profile extrapolate measured.csv --gpu A100-SXM4-80GB --out full.csv",
            "fxenergy profile extrapolate measured.csv --gpu A40 --reference-mhz 1365 --out f.csv",
        ],
    )
    ex.add_argument("profile", type=Path, help="CSV with stage,instruction,frequency,time,energy")
    ex.add_argument("--gpu", required=True, help="GPU name (see `fxenergy gpus`)")
    ex.add_argument("--out", type=Path, required=True, help="where to write the full profile")
    ex.add_argument(
        "--reference-mhz",
        type=int,
        default=None,
        help="use only the rows at this clock as input (default: every measured row)",
    )
    ex.add_argument(
        "--no-keep-measured",
        dest="keep_measured",
        action="store_false",
        help="model every clock, even ones the input measured",
    )
    ex.set_defaults(func=run_extrapolate)
    cal = add_command(
        psub,
        "calibrate",
        "fit a board's power parameters to a measured clock sweep",
        "Fit the DVFS model's board parameters (static, busy and stalled SM power, voltage "
        "curve, power cap) to a measured sweep and write a board file for --gpu-params.",
        [
            "fxenergy profile calibrate sweep.csv --gpu A100-PCIe-80GB --out board.json",
            "fxenergy optimize gpt-tiny --gpu A100-PCIe-80GB --gpu-params board.json",
        ],
    )
    cal.add_argument("profile", type=Path, help="sweep CSV (stage,instruction,frequency,...)")
    cal.add_argument("--gpu", required=True, help="the board's spec-table entry (datasheet)")
    cal.add_argument("--out", type=Path, required=True, help="board JSON to write")
    cal.add_argument(
        "--stall-fraction",
        type=float,
        default=None,
        help="tie stalled-SM power to this fraction of busy-SM power (default: fitted, or "
        "0.668, the A40's measured ratio, when the sweep's computations all have about the "
        "same memory share)",
    )
    cal.set_defaults(func=run_calibrate)


def _how(fit: OnePointFit) -> str:
    if fit.reference_mhz == 0:
        return f"fitted on {len(fit.clocks)} clocks"
    at = f"1 point @{fit.reference_mhz}"
    if fit.capped:
        return at + " (at the power cap: board prior)"
    return at + (f" ({fit.clipped}-clipped)" if fit.clipped else "")


def _summary(fits: dict[tuple[int, str], OnePointFit], full: Profile, model: DVFSModel) -> Table:
    f_max, f_min = model.clocks_mhz()[0], model.clocks_mhz()[-1]
    table = Table(title=f"profile on {model.spec.name} (rows not in the input: modelled)")
    for col in ("stage", "instruction", "input", "compute share", f"t×@{f_min}", f"E×@{f_min}"):
        table.add_column(col, justify="left" if col in ("instruction", "input") else "right")
    for (stage, instr), fit in fits.items():
        top, low = full.table(stage, instr)[f_max], full.table(stage, instr)[f_min]
        table.add_row(
            str(stage),
            instr,
            _how(fit),
            f"{fit.compute_share:.2f}",
            f"{low.time_s / top.time_s:.3f}",
            f"{low.energy_j / top.energy_j:.3f}",
        )
    return table


def run_extrapolate(args: argparse.Namespace) -> int:
    from fxenergy.cli import console

    check_input_file(args.profile, "profile")
    check_output_path(args.out, "--out")
    profile = read_profile(args.profile)
    model = get_dvfs_model(args.gpu)
    fits = fit_profile_rows(profile, model, args.reference_mhz)
    full = profile_from_fits(fits, model, profile if args.keep_measured else None)
    write_profile(full.rows, args.out)
    console.print(_summary(fits, full, model))
    console.print(calibration_note(model.spec, model.params), highlight=False)
    console.print(
        f"most reliable one-point reference on this board: {recommended_reference_mhz(model)} "
        "MHz (highest clock under the power cap; docs/dvfs.md)",
        highlight=False,
    )
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


def run_calibrate(args: argparse.Namespace) -> int:
    from fxenergy.cli import console
    from fxenergy.hardware.boards import save_board
    from fxenergy.hardware.calibrate import FIT_FIELDS, calibrate_board

    profile = read_profile(args.profile)
    model = get_dvfs_model(args.gpu)
    res, how = calibrate_board(profile, model.spec, args.stall_fraction)
    save_board(args.out, model.spec, res, args.profile.name, stall_note=how)
    table = Table(title=f"{model.spec.name} calibrated on {args.profile.name}")
    for col in ("parameter", "fitted", "before"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for f in FIT_FIELDS:
        table.add_row(f, f"{getattr(res.params, f):.3f}", f"{getattr(model.params, f):.3f}")
    console.print(table)
    console.print(
        f"fit over {res.points} rows: time {res.time_rms_pct:.2f} % RMS (max "
        f"{res.time_max_pct:.2f} %), energy {res.energy_rms_pct:.2f} % RMS (max "
        f"{res.energy_max_pct:.2f} %); {how}\nwrote {args.out}; use it with --gpu-params "
        f"{args.out} (CLI) or gpu_params= (Python API)",
        highlight=False,
    )
    return 0
