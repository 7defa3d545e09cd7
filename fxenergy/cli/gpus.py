"""``fxenergy gpus``: the GPU spec table and each GPU's power-model parameters."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from fxenergy.hardware import GPUSpec, get_gpu, known_gpus
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S, DVFSModel, get_dvfs_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpus", help="list the GPU spec table and power-model parameters")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument(
        "--switch-latency-ms",
        type=float,
        default=DEFAULT_SWITCH_LATENCY_S * 1e3,
        help="clock-switch latency to show (default: %(default)s ms)",
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


def _power_table(models: list[DVFSModel]) -> Table:
    cols = ("idle W", "blocked W", "static W", "cap W", "knee MHz", "switch s")
    table = _new_table("DVFS power model (docs/dvfs.md)", models, cols)
    for m in models:
        p = m.params
        table.add_row(
            m.spec.name,
            f"{p.idle_power_w:.0f}",
            f"{p.blocked_power_w:.1f}",
            f"{p.static_power_w:.1f}",
            f"{p.power_cap_w:.0f}",
            f"{p.knee_mhz:.0f}",
            f"{m.switch_latency_s:g}",
        )
    return table


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console

    latency_s = args.switch_latency_ms / 1e3
    models = [get_dvfs_model(get_gpu(n), switch_latency_s=latency_s) for n in known_gpus()]
    if args.format == "json":
        console.print_json(json.dumps([_spec_json(m.spec, m) for m in models]))
        return 0
    console.print(_spec_table(models))
    console.print(_power_table(models))
    console.print("sources of every number: `fxenergy gpus --format json`, docs/gpus.md")
    return 0
