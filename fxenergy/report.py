"""The cost report: totals, top ops, a per-module (or per-op) rollup and redundant work.

The data is built from an analysed graph (:func:`analyze` runs ``annotate-cost``,
``critical-path``, ``memory-timeline`` and, when registered, ``find-redundancy``) into a
:class:`Report` of plain dicts, then rendered as rich tables (:func:`render_tables`) or JSON
(:func:`render_json`). The table builders (:func:`totals_table`, :func:`top_ops_table`,
:func:`rollup_table`, :func:`redundancy_table`) take that plain data, so other reports reuse them.

Times are roofline estimates at the maximum SM clock of the chosen GPU, not measurements.

Example::

    >>> from fxenergy.models import get_model
    >>> from fxenergy.graph.capture import capture
    >>> spec = get_model("gpt-tiny")
    >>> args, kwargs = spec.example_inputs()
    >>> report = build_report(analyze(capture(spec.build(), args, kwargs)))
    >>> report.totals["macs"] > 0
    True
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from rich.console import Console
from rich.table import Table

from fxenergy.cost.totals import graph_totals
from fxenergy.graph import meta
from fxenergy.graph.pass_infra import Pipeline, registered_passes

GROUP_BY = ("module", "op")
_SKIP_OPS = ("placeholder", "output", "get_attr")


@dataclass
class Report:
    """Plain, JSON-able report data.

    Attributes:
        title: what was analysed (model name, GPU, capture method).
        totals: whole-graph numbers (see :func:`report_totals`).
        nodes: one dict per graph node (see :func:`node_rows`), in graph order.
        groups: the rollup (see :func:`rollup`), slowest first.
        group_by: ``"module"`` or ``"op"``.
        redundancy: ``find-redundancy``'s findings, or None if the pass is not available.
    """

    title: str
    totals: dict[str, Any]
    nodes: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    group_by: str = "module"
    redundancy: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    critical_path: list[str] = field(default_factory=list)  #: node names, in order

    def to_dict(self) -> dict[str, Any]:
        """The JSON view: ``title``, ``totals``, ``groups``, ``redundancy``, ``nodes``."""
        return {
            "title": self.title,
            "totals": self.totals,
            "group_by": self.group_by,
            "groups": self.groups,
            "redundancy": self.redundancy,
            "notes": self.notes,
            "critical_path": self.critical_path,
            "nodes": self.nodes,
        }


# --- analysis ----------------------------------------------------------------------------------


def analysis_pipeline(gpu: str | None = None) -> str:
    """The report's pipeline string (``find-redundancy`` only where a teammate registered it)."""
    cost = f"annotate-cost{{gpu={gpu}}}" if gpu else "annotate-cost"
    names = [cost, "critical-path", "memory-timeline"]
    if "find-redundancy" in registered_passes():
        names.append("find-redundancy")
    return ",".join(names)


def analyze(gm: torch.fx.GraphModule, gpu: str | None = None) -> torch.fx.GraphModule:
    """Run the report's analyses on a captured graph (``gpu``: a name from ``fxenergy gpus``)."""
    return Pipeline.parse(analysis_pipeline(gpu))(gm).graph_module


# --- data --------------------------------------------------------------------------------------


def op_label(node: torch.fx.Node) -> str:
    """Short op name: ``aten.mm`` for aten overloads, the module class for ``call_module``."""
    target = node.target
    if node.op == "call_module":
        mod = node.graph.owning_module
        return type(mod.get_submodule(str(target))).__name__ if mod is not None else str(target)
    if isinstance(target, torch._ops.OpOverload):
        return str(target.overloadpacket).replace("aten::", "aten.")
    if isinstance(target, str):
        return f"Tensor.{target}" if node.op == "call_method" else target
    return getattr(target, "__name__", str(target))


def node_rows(gm: torch.fx.GraphModule) -> list[dict[str, Any]]:
    """Every node's cost, roofline, timing and live bytes as a flat dict (graph order)."""
    return [_node_row(n) for n in gm.graph.nodes]


def _node_row(node: torch.fx.Node) -> dict[str, Any]:
    cost: meta.CostRecord | None = node.meta.get(meta.COST)
    roof: meta.RooflineRecord | None = node.meta.get(meta.ROOFLINE)
    timing: meta.TimingRecord | None = node.meta.get(meta.TIMING)
    row: dict[str, Any] = {
        "name": node.name,
        "kind": node.op,
        "op": op_label(node) if node.op not in _SKIP_OPS else node.op,
        "module": node.meta.get(meta.MODULE, ""),
    }
    if cost is not None:
        row |= {
            "flops": cost.flops,
            "macs": cost.macs,
            "bytes_read": cost.bytes_read,
            "bytes_written": cost.bytes_written,
            "arithmetic_intensity": cost.arithmetic_intensity,
            "dtype": cost.dtype,
            "kernels": cost.kernels,
            "aten_ops": list(cost.aten_ops),
            "uncounted_ops": list(cost.uncounted_ops),
        }
    if roof is not None:
        row |= {
            "time_s": roof.time_s,
            "compute_time_s": roof.compute_time_s,
            "memory_time_s": roof.memory_time_s,
            "bound": roof.bound,
        }
    if timing is not None:
        row |= {
            "earliest_start_s": timing.earliest_start_s,
            "latest_start_s": timing.latest_start_s,
            "slack_s": timing.slack_s,
            "critical": timing.critical,
        }
    if meta.LIVE_BYTES in node.meta:
        row["live_bytes"] = node.meta[meta.LIVE_BYTES]
    return row


def report_totals(gm: torch.fx.GraphModule) -> dict[str, Any]:
    """Whole-graph totals: cost sums, params, peak memory, serial and critical-path time."""
    t = graph_totals(gm)
    cp: meta.CriticalPathSummary | None = gm.meta.get(meta.CRITICAL_PATH)
    mem: meta.MemoryTimeline | None = gm.meta.get(meta.MEMORY)
    capture: meta.CaptureInfo | None = gm.meta.get(meta.CAPTURE)
    return {
        "gpu": t.gpu,
        "flops": t.flops,
        "macs": t.macs,
        "matmul_flops": t.matmul_flops,
        "bytes_read": t.bytes_read,
        "bytes_written": t.bytes_written,
        "params": t.params,
        "nodes": t.nodes,
        "kernels": t.kernels,
        "peak_memory_bytes": mem.peak_bytes if mem else None,
        "peak_memory_node": mem.peak_node if mem else None,
        "live_at_peak": list(mem.live_at_peak) if mem else None,
        "roofline_time_s": t.roofline_time_s,
        "critical_path_s": cp.length_s if cp else None,
        "critical_path_nodes": len(cp.nodes) if cp else None,
        "uncounted_ops": t.uncounted_ops,
        "capture_method": capture.method if capture else None,
        "training": capture.training if capture else None,
    }


def _group_key(row: dict[str, Any], group_by: str, depth: int | None) -> str:
    if group_by == "op":
        return row["op"]
    module = row["module"] or "(root)"
    return ".".join(module.split(".")[:depth]) if depth else module


def rollup(
    rows: Iterable[dict[str, Any]], group_by: str = "module", depth: int | None = None
) -> list[dict[str, Any]]:
    """Sum node rows per module path (cut to ``depth`` parts) or per op, slowest group first.

    Each group has ``nodes``, ``flops``, ``bytes``, ``time_s``, ``time_share`` (of the serial
    roofline time), ``compute_share`` (share of its time in compute-bound nodes) and
    ``critical_time_s`` (time in nodes on the critical path).
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, not {group_by!r}")
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["kind"] in _SKIP_OPS or "time_s" not in row:
            continue
        g = groups.setdefault(_group_key(row, group_by, depth), _empty_group())
        g["nodes"] += 1
        g["flops"] += row["flops"]
        g["bytes"] += row["bytes_read"] + row["bytes_written"]
        g["time_s"] += row["time_s"]
        g["compute_time_s"] += row["time_s"] if row["bound"] == "compute" else 0.0
        g["critical_time_s"] += row["time_s"] if row.get("critical") else 0.0
    total = sum(g["time_s"] for g in groups.values()) or 1.0
    out = []
    for key, g in groups.items():
        share = g.pop("compute_time_s") / g["time_s"] if g["time_s"] else 0.0
        out.append({"group": key, **g, "time_share": g["time_s"] / total, "compute_share": share})
    return sorted(out, key=lambda g: (-g["time_s"], g["group"]))


def _empty_group() -> dict[str, Any]:
    return {"nodes": 0, "flops": 0, "bytes": 0, "time_s": 0.0, "compute_time_s": 0.0,
            "critical_time_s": 0.0}  # fmt: skip


def redundancy_data(gm: torch.fx.GraphModule) -> dict[str, Any] | None:
    """``find-redundancy``'s report as plain data (None when it did not run)."""
    rep: meta.RedundancyReport | None = gm.meta.get(meta.REDUNDANCY)
    if rep is None:
        return None
    return {
        "removed": [{"rule": rule, "node": name} for rule, name in rep.removed],
        "flops_saved": rep.flops_saved,
        "bytes_saved": rep.bytes_saved,
    }


def build_report(
    gm: torch.fx.GraphModule,
    title: str = "",
    group_by: str = "module",
    depth: int | None = None,
) -> Report:
    """Collect an analysed graph's report data (run :func:`analyze` first)."""
    rows = node_rows(gm)
    capture: meta.CaptureInfo | None = gm.meta.get(meta.CAPTURE)
    notes = list(capture.notes) if capture else []
    return Report(
        title=title or type(gm).__name__,
        totals=report_totals(gm),
        nodes=rows,
        groups=rollup(rows, group_by, depth),
        group_by=group_by,
        redundancy=redundancy_data(gm),
        notes=notes,
        critical_path=list(cp.nodes) if (cp := gm.meta.get(meta.CRITICAL_PATH)) else [],
    )


# --- rendering ---------------------------------------------------------------------------------


def fmt_count(x: float | None, unit: str = "") -> str:
    """``1.23 G`` style (SI prefixes); ``-`` for None."""
    if x is None:
        return "-"
    for div, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def fmt_time(s: float | None) -> str:
    """Seconds as ``12.3 µs`` / ``4.56 ms`` / ``1.20 s``."""
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def totals_table(totals: dict[str, Any], title: str = "Totals") -> Table:
    """Two-column table of the whole-graph totals."""
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    uncounted = totals.get("uncounted_ops") or {}
    rows = [
        ("GPU (roofline at max clock)", str(totals.get("gpu", ""))),
        ("parameters", fmt_count(totals["params"])),
        ("nodes / kernels", f"{totals['nodes']} / {totals.get('kernels', '-')}"),
        ("FLOPs", fmt_count(totals["flops"], "FLOP")),
        ("MACs", fmt_count(totals["macs"], "MAC")),
        ("bytes read / written", f"{fmt_count(totals['bytes_read'], 'B')} / "
                                 f"{fmt_count(totals['bytes_written'], 'B')}"),
        ("peak activation memory", fmt_count(totals.get("peak_memory_bytes"), "B")),
        ("roofline time (serial)", fmt_time(totals["roofline_time_s"])),
        ("critical path (unlimited parallelism)", fmt_time(totals.get("critical_path_s"))),
        ("uncounted ops", ", ".join(f"{k} x{v}" for k, v in uncounted.items()) or "none"),
    ]  # fmt: skip
    for k, v in rows:
        table.add_row(k, v)
    return table


def top_ops_table(rows: Sequence[dict[str, Any]], top: int = 20, title: str = "") -> Table:
    """The ``top`` slowest nodes by roofline time."""
    ops = [r for r in rows if r["kind"] not in _SKIP_OPS and "time_s" in r]
    ops.sort(key=lambda r: -r["time_s"])
    total = sum(r["time_s"] for r in ops) or 1.0
    table = Table(title=title or f"Top {min(top, len(ops))} ops by roofline time")
    for col in ("node", "op", "module", "FLOPs", "bytes", "time", "share", "bound", "slack"):
        table.add_column(col, justify="left" if col in ("node", "op", "module") else "right")
    for r in ops[:top]:
        table.add_row(
            r["name"],
            r["op"],
            r["module"] or "(root)",
            fmt_count(r["flops"]),
            fmt_count(r["bytes_read"] + r["bytes_written"], "B"),
            fmt_time(r["time_s"]),
            f"{100 * r['time_s'] / total:.1f}%",
            r["bound"],
            "critical" if r.get("critical") else fmt_time(r.get("slack_s")),
        )
    return table


def rollup_table(
    groups: Sequence[dict[str, Any]], group_by: str = "module", top: int = 20, title: str = ""
) -> Table:
    """The rollup: time share, compute- vs memory-bound and critical-path time per group."""
    table = Table(title=title or f"Per-{group_by} rollup (top {min(top, len(groups))})")
    for col in (group_by, "nodes", "FLOPs", "bytes", "time", "share", "bound", "on crit. path"):
        table.add_column(col, justify="left" if col == group_by else "right")
    for g in groups[:top]:
        cs = g["compute_share"]
        bound = "compute" if cs >= 0.5 else "memory"
        bound = f"{bound} ({100 * max(cs, 1 - cs):.0f}%)" if g["time_s"] else "-"
        crit = g["critical_time_s"] / g["time_s"] if g["time_s"] else 0.0
        table.add_row(
            g["group"],
            str(g["nodes"]),
            fmt_count(g["flops"]),
            fmt_count(g["bytes"], "B"),
            fmt_time(g["time_s"]),
            f"{100 * g['time_share']:.1f}%",
            bound,
            f"{100 * crit:.0f}%",
        )
    return table


def redundancy_table(redundancy: dict[str, Any], top: int = 20) -> Table:
    """The "redundant work" section: per rule, how many nodes find-redundancy would remove."""
    by_rule: dict[str, list[str]] = {}
    for item in redundancy["removed"]:
        by_rule.setdefault(item["rule"], []).append(item["node"])
    table = Table(title="Redundant work (find-redundancy)")
    table.add_column("rule")
    table.add_column("nodes", justify="right")
    table.add_column("examples")
    for rule, names in sorted(by_rule.items(), key=lambda kv: -len(kv[1]))[:top]:
        more = f" (+{len(names) - 4})" if len(names) > 4 else ""
        table.add_row(rule, str(len(names)), ", ".join(names[:4]) + more)
    table.caption = (
        f"removable: {fmt_count(redundancy['flops_saved'], 'FLOP')}, "
        f"{fmt_count(redundancy['bytes_saved'], 'B')} moved"
    )
    return table


def render_tables(report: Report, console: Console, top: int = 20) -> None:
    """Print the table view of ``report``."""
    console.print(totals_table(report.totals, title=f"{report.title}: totals"))
    console.print(top_ops_table(report.nodes, top))
    console.print(rollup_table(report.groups, report.group_by, top))
    if report.redundancy is not None and report.redundancy["removed"]:
        console.print(redundancy_table(report.redundancy, top))
    elif report.redundancy is not None:
        console.print("Redundant work (find-redundancy): none found")
    for note in report.notes:
        console.print(f"[dim]note: {note}[/]")


def render_json(report: Report, indent: int | None = 2) -> str:
    """The JSON view of ``report``."""
    return json.dumps(report.to_dict(), indent=indent)
