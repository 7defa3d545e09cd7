"""``fxenergy gpus``: the GPU spec table."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from fxenergy.hardware import get_gpu, known_gpus


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpus", help="list the GPU spec table")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console

    specs = [get_gpu(n) for n in known_gpus()]
    if args.format == "json":
        rows = [
            {
                "name": s.name,
                "sm_count": s.sm_count,
                "peak_flops": s.peak_flops,
                "mem_bandwidth_bps": s.mem_bandwidth_bps,
                "tdp_w": s.tdp_w,
                "min_clock_mhz": s.min_clock_mhz,
                "max_clock_mhz": s.max_clock_mhz,
                "sources": list(s.sources),
            }
            for s in specs
        ]
        console.print_json(json.dumps(rows))
        return 0
    table = Table(title="GPU spec table (dense peak FLOP/s at boost clock)")
    for col in ("GPU", "SMs", "FP32 TF", "TF32 TF", "BF16 TF", "HBM GB/s", "TDP W", "SM MHz"):
        table.add_column(col, justify="right" if col != "GPU" else "left")
    for s in specs:
        table.add_row(
            s.name,
            str(s.sm_count),
            f"{s.peak_flops['fp32'] / 1e12:.1f}",
            f"{s.peak_flops['tf32'] / 1e12:.1f}",
            f"{s.peak_flops['bf16'] / 1e12:.1f}",
            f"{s.mem_bandwidth_bps / 1e9:.0f}",
            f"{s.tdp_w:.0f}",
            f"{s.min_clock_mhz}-{s.max_clock_mhz}",
        )
    console.print(table)
    return 0
