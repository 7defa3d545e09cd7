"""01: capture a built-in model, run the analysis passes and print its cost report.

Runs on a CPU in seconds; no GPU is needed (times are roofline estimates for the chosen GPU).

    python examples/01_report.py [MODEL] [GPU]

The same report from the command line: ``fxenergy report gpt-tiny --gpu H100-SXM5``.
"""

from __future__ import annotations

import sys

from rich.console import Console

from fxenergy.graph import meta
from fxenergy.graph.capture import capture
from fxenergy.models import get_model
from fxenergy.report import analyze, build_report, fmt_count, fmt_time, render_tables


def main(model_name: str = "gpt-tiny", gpu: str = "H100-SXM5") -> None:
    spec = get_model(model_name)
    args, kwargs = spec.example_inputs()
    gm = capture(spec.build(), args, kwargs)  # fx graph with fake tensors on every node
    gm = analyze(gm, gpu)  # annotate-cost, critical-path, memory-timeline, find-redundancy

    console = Console(width=140)
    render_tables(build_report(gm, title=model_name, group_by="op"), console, top=8)

    # The analyses are plain metadata on the graph, for your own passes to read.
    cp: meta.CriticalPathSummary = gm.meta[meta.CRITICAL_PATH]
    mem: meta.MemoryTimeline = gm.meta[meta.MEMORY]
    ops = [n for n in gm.graph.nodes if n.meta[meta.TIMING].duration_s > 0]
    slackest = max(ops, key=lambda n: n.meta[meta.TIMING].slack_s)
    console.print(
        f"critical path: {len(cp.nodes)} of {len(gm.graph.nodes)} nodes, "
        f"{fmt_time(cp.length_s)} of {fmt_time(cp.serial_time_s)} serial; most slack: "
        f"{slackest.name} ({fmt_time(slackest.meta[meta.TIMING].slack_s)})"
    )
    console.print(
        f"peak activations: {fmt_count(mem.peak_bytes, 'B')} after {mem.peak_node}, "
        f"{len(mem.live_at_peak)} tensors live"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
