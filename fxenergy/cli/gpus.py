"""``fxenergy gpus``: the GPU spec table and each GPU's power-model parameters.

Also the ``--gpu-params board.json`` option that every subcommand taking ``--gpu`` gets
(:func:`add_gpu_params_options`): it loads a calibrated board file (``fxenergy profile
calibrate``) and makes ``--gpu`` name that board.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from fxenergy.cli._common import add_command
from fxenergy.hardware import GPUSpec, get_gpu, known_gpus
from fxenergy.hardware.boards import resolve_gpu
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S, DVFSModel, get_dvfs_model
from fxenergy.hardware.power_params import calibration_note


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += _parsers(sub)
    return out


def add_gpu_params_options(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)parser that has ``--gpu`` a ``--gpu-params BOARD.json`` option."""
    for p in _parsers(parser):
        opts = {o for a in p._actions for o in a.option_strings}
        if "--gpu" in opts and "--gpu-params" not in opts:
            p.add_argument(
                "--gpu-params",
                type=Path,
                default=None,
                metavar="BOARD.json",
                help="a calibrated board (`fxenergy profile calibrate`); replaces --gpu",
            )


def apply_gpu_params(args: argparse.Namespace) -> None:
    """Load ``args.gpu_params`` (if given) and point ``args.gpu`` at that board."""
    if getattr(args, "gpu_params", None) is not None:
        args.gpu = resolve_gpu(getattr(args, "gpu", None), args.gpu_params)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "gpus",
        "list the GPU spec table and power-model parameters",
        "Every GPU fxenergy can plan for (--gpu NAME), with its datasheet figures, SM clock "
        "range and the DVFS power model's parameters.",
        ["fxenergy gpus", "fxenergy gpus --format markdown"],
    )
    p.add_argument(
        "--format", choices=["table", "json", "markdown"], default="table", help="output format"
    )
    p.add_argument(
        "--switch-latency-ms",
        type=float,
        default=DEFAULT_SWITCH_LATENCY_S * 1e3,
        help="clock-switch latency to show, ms",
    )
    p.set_defaults(func=run)


def _spec_json(s: GPUSpec, m: DVFSModel) -> dict[str, object]:
    return {
        "name": s.name,
        "arch": s.arch,
        "sm_count": s.sm_count,
        "peak_flops": s.peak_flops,
        "mem_bandwidth_bps": s.mem_bandwidth_bps,
        "memory_bytes": s.memory_bytes,
        "tdp_w": s.tdp_w,
        "min_clock_mhz": s.min_clock_mhz,
        "max_clock_mhz": s.max_clock_mhz,
        "sources": list(s.sources),
        "power_model": {**m.params.as_dict(), "switch_latency_s": m.switch_latency_s},
        "calibrated": m.params.calibrated,
        "calibration_note": calibration_note(s, m.params),
    }


def _new_table(title: str, models: list[DVFSModel], cols: tuple[str, ...]) -> Table:
    table = Table(title=title)
    width = max(len(m.spec.name) for m in models)
    table.add_column("GPU", no_wrap=True, min_width=width)
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)
    return table


def _spec_table(models: list[DVFSModel]) -> Table:
    cols = ("SMs", "BF16 TF", "FP32 TF", "mem GB/s", "SM MHz", "TDP W")
    table = _new_table("GPU spec table (dense peak FLOP/s at boost clock)", models, cols)
    for m in models:
        s = m.spec
        table.add_row(
            s.name,
            str(s.sm_count),
            f"{s.peak_flops['bf16'] / 1e12:.0f}",
            f"{s.peak_flops['fp32'] / 1e12:.1f}",
            f"{s.mem_bandwidth_bps / 1e9:.0f}",
            f"{s.min_clock_mhz}-{s.max_clock_mhz}",
            f"{s.tdp_w:.0f}",
        )
    return table


def _calibration(m: DVFSModel) -> str:
    p = m.params
    return "yes" if p.calibrated else "no"


def _power_table(models: list[DVFSModel]) -> Table:
    cols = ("calib.", "idle W", "blocked W", "static W", "cap W", "knee MHz")
    table = _new_table("DVFS power model (docs/dvfs.md)", models, cols)
    for m in models:
        p = m.params
        table.add_row(
            m.spec.name,
            _calibration(m),
            f"{p.idle_power_w:.0f}",
            f"{p.blocked_power_w:.1f}",
            f"{p.static_power_w:.1f}",
            f"{p.power_cap_w:.0f}",
            f"{p.knee_mhz:.0f}",
        )
    return table


def _markdown(models: list[DVFSModel]) -> str:
    """docs/gpus.md: both tables with every source (``fxenergy gpus --format markdown``)."""
    out = [
        "# GPUs: the spec table and the power model\n",
        "Generated by `fxenergy gpus --format markdown > docs/gpus.md` from",
        "`fxenergy.hardware.specs` (datasheet numbers) and `fxenergy.hardware.power_params` (the",
        "DVFS power model, docs/dvfs.md). Peak FLOP/s are dense (sparsity figures halved).\n",
        "## Datasheet numbers\n",
        "| GPU | arch | SMs | FP64 TF | FP32 TF | TF32 TF | BF16 TF | INT8 TOPS | mem GB/s "
        "| memory GiB | L2 MiB | TDP W | SM clocks MHz | mem MHz |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        s, f = m.spec, {k: v / 1e12 for k, v in m.spec.peak_flops.items()}
        out.append(
            f"| {s.name} | {s.arch} | {s.sm_count} | {f['fp64']:g} | {f['fp32']:g} | "
            f"{f['tf32']:g} | {f['bf16']:g} | {f['int8']:g} | {s.mem_bandwidth_bps / 1e9:g} | "
            f"{s.memory_bytes / 2**30:g} | {s.l2_bytes / 2**20:g} | {s.tdp_w:g} | "
            f"{s.min_clock_mhz}–{s.max_clock_mhz} step {s.clock_step_mhz} | {s.mem_clock_mhz} |"
        )
    out.append("\nSources of the datasheet numbers:\n")
    out += [f"- **{m.spec.name}**: " + "; ".join(m.spec.sources) for m in models]
    out += [
        "\n## Power-model parameters\n",
        "Symbols as in docs/dvfs.md; D_c, D_s, D_m are dynamic watts at the max clock. `switch` is",
        "the default clock-switch latency (`get_dvfs_model(gpu, switch_latency_s=...)`).\n",
        "| GPU | calibrated | idle W | blocked W | static W | cap W | knee MHz | V_floor/V_max "
        "| D_c W | D_s W | D_m W | cap sharpness | typical share | switch s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        p = m.params
        out.append(
            f"| {m.spec.name} | {_calibration(m)} | {p.idle_power_w:g} | "
            f"{p.blocked_power_w:.1f} | {p.static_power_w:.1f} | {p.power_cap_w:g} | "
            f"{p.knee_mhz:g} | {p.v_min_ratio:g} | {p.compute_dyn_w:.1f} | {p.stall_dyn_w:.1f} | "
            f"{p.memory_dyn_w:.1f} | {p.cap_sharpness:g} | {p.typical_compute_share:g} | "
            f"{m.switch_latency_s:g} |"
        )
    out.append(
        "\nEvery GPU also has: "
        + ", ".join(
            f"`{k}` = {getattr(models[0].params, k):g}"
            for k in ("overlap_p", "launch_overhead_s", "compute_efficiency", "memory_efficiency")
        )
        + ".\n"
    )
    out += ["### Calibration status\n"]
    out += [f"- {calibration_note(m.spec, m.params)}" for m in models]
    out.append("")
    out += _source_table(models)
    return "\n".join(out) + "\n"


def _source_table(models: list[DVFSModel]) -> list[str]:
    out = ["### Where each power parameter comes from\n"]
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for m in models:
        groups.setdefault(m.params.sources, []).append(m.spec.name)
    for sources, names in groups.items():
        out.append(f"**{', '.join(names)}**\n")
        out += [f"- `{k}`: {src}" for k, src in sources]
        out.append("")
    return out


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console

    latency_s = args.switch_latency_ms / 1e3
    models = [get_dvfs_model(get_gpu(n), switch_latency_s=latency_s) for n in known_gpus()]
    if args.format == "markdown":
        print(_markdown(models), end="")
        return 0
    if args.format == "json":
        console.print_json(json.dumps([_spec_json(m.spec, m) for m in models]))
        return 0
    console.print(_spec_table(models))
    console.print(_power_table(models))
    console.print(f"clock-switch latency: {latency_s:g} s", highlight=False)
    borrowed: dict[str, list[str]] = {}
    for m in models:
        if not m.params.calibrated:
            borrowed.setdefault(m.params.shape_from or "the caller", []).append(m.spec.name)
    for donor, names in borrowed.items():
        console.print(
            f"uncalibrated, shape borrowed from {donor}: {', '.join(names)}", highlight=False
        )
    console.print(
        "calibrate a board once with `fxenergy profile calibrate SWEEP.csv --gpu NAME --out "
        "board.json`, then pass --gpu-params board.json"
    )
    console.print("sources of every number: `fxenergy gpus --format json`, docs/gpus.md")
    return 0
