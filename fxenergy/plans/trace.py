"""Predicted timelines of plans, written as Chrome trace-event JSON (Perfetto, chrome://tracing).

A :class:`Timeline` is plain data — tracks of slices, counters and instants in seconds — built
from a plan's own figures, never from the switch or DVFS physics again:

* a graph :class:`~fxenergy.plans.plan.Plan` (:func:`graph_timeline`): one track for the GPU; a
  slice per partition with a slice per op nested in it (its predicted time, FLOPs, bytes and
  roofline bound in ``args``; ops on the critical path flagged); the stall of a clock switch is
  what the plan's predicted time holds beyond its partitions, spread over its switches;
  counters: the SM clock and each partition's mean power (its energy over its time);
* a :class:`~fxenergy.pipeline.dag.PipelinePlan` (:func:`pipeline_timeline`): one track per
  rank (GPU), a slice per computation at its evaluated start, clock and power counters per rank
  (a computation's energy over its time; the blocked power while waiting).

:func:`write_trace` writes the trace-event format (``ph``/``ts``/``pid``/``tid``/``name``, times in
microseconds); :func:`fxenergy.plans.timeline_plot.plot_timeline` draws the same data as a PNG.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fxenergy.pipeline.dag import PipelinePlan, StageCosts
    from fxenergy.plans.plan import NodeCost, Plan


@dataclass(frozen=True)
class Slice:
    """A span of time on one track (``kind``: "op", "partition", "switch" or "compute")."""

    track: int
    name: str
    start_s: float
    dur_s: float
    kind: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Instant:
    """A point event on one track (a clock switch)."""

    track: int
    name: str
    t_s: float
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Counter:
    """A step function on one track: ``points`` are ``(time_s, value)``, value held until the
    next point."""

    track: int
    name: str
    unit: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Timeline:
    """Everything a trace or a timeline plot shows; times in seconds from the start."""

    title: str
    tracks: dict[int, str]
    slices: tuple[Slice, ...]
    counters: tuple[Counter, ...]
    instants: tuple[Instant, ...]
    end_s: float


# --- graph plan -> timeline -----------------------------------------------------------------------


def graph_timeline(plan: Plan) -> Timeline:
    """The predicted timeline of a graph plan (see the module docstring)."""
    switches = max(plan.predicted.switches, 0)
    parts_s = sum(p.time_s for p in plan.partitions)
    stall_s = max(plan.predicted.time_s - parts_s, 0.0) / switches if switches else 0.0
    costs = {n.name: n for n in plan.nodes}
    slices: list[Slice] = []
    instants: list[Instant] = []
    clock: list[tuple[float, float]] = []
    power: list[tuple[float, float]] = []
    t, prev = 0.0, _initial_clock(plan)
    for part in plan.partitions:
        switched = prev is not None and part.clock_mhz != prev and stall_s > 0
        dur = part.time_s + (stall_s if switched else 0.0)
        slices.append(_partition_slice(part, t, dur))
        if switched:
            name = f"switch {prev}→{part.clock_mhz} MHz"
            instants.append(Instant(0, name, t, {"from_mhz": prev, "to_mhz": part.clock_mhz}))
            slices.append(Slice(0, "clock switch", t, stall_s, "switch", {"stall_s": stall_s}))
        clock.append((t, float(part.clock_mhz)))
        power.append((t, part.energy_j / part.time_s if part.time_s > 0 else 0.0))
        slices.extend(_op_slices(part, t + dur - part.time_s, costs))
        t, prev = t + dur, part.clock_mhz
    sim = "predicted by the DVFS model"
    return Timeline(
        title=f"plan for {plan.gpu} ({sim}): {plan.predicted.time_s * 1e3:.4g} ms, "
        f"{plan.predicted.energy_j:.4g} J, {plan.predicted.switches} switches",
        tracks={0: f"GPU 0: {plan.gpu} (predicted)"},
        slices=tuple(slices),
        counters=(
            Counter(0, "SM clock", "MHz", tuple(clock)),
            Counter(0, "power", "W", tuple(power)),
        ),
        instants=tuple(instants),
        end_s=t,
    )


def _initial_clock(plan: Plan) -> int | None:
    """Clock before the first partition: a cyclic plan starts where it ended, else the maximum."""
    if not plan.partitions:
        return None
    if plan.extra.get("cyclic"):
        return plan.partitions[-1].clock_mhz
    clocks = plan.extra.get("clocks_mhz")
    return int(clocks[0]) if clocks else None


def _partition_slice(part: Any, t: float, dur: float) -> Slice:
    args = {"clock_mhz": part.clock_mhz, "nodes": len(part.nodes), "energy_j": part.energy_j}
    return Slice(0, f"partition {part.index} @ {part.clock_mhz} MHz", t, dur, "partition", args)


def _op_slices(part: Any, t0: float, costs: dict[str, NodeCost]) -> list[Slice]:
    """Op slices laid end to end, scaled to fill the partition exactly (the plan's figure)."""
    known = [costs[n] for n in part.nodes if n in costs]
    total = sum(c.time_s for c in known)
    if not known or total <= 0:
        return []
    scale = part.time_s / total
    out, t = [], t0
    for c in known:
        dur = c.time_s * scale
        args = {
            "op": c.op,
            "flops": c.flops,
            "bytes": c.bytes,
            "predicted_time_us": c.time_s * 1e6,
            "energy_j": c.energy_j,
            "bound": c.bound,
            "critical": c.critical,
            "clock_mhz": part.clock_mhz,
        }
        out.append(Slice(0, c.name, t, dur, "op", args))
        t += dur
    return out


# --- pipeline plan -> timeline --------------------------------------------------------------------


def pipeline_timeline(plan: PipelinePlan, costs: StageCosts) -> Timeline:
    """The evaluated timeline of a pipeline plan: one track per rank."""
    from fxenergy.pipeline.dag import label

    ev, dag = plan.evaluation, plan.dag
    critical = set(ev.critical_path)
    slices, instants, counters = [], [], []
    blocked_w = costs.blocked_power_w
    for rank, order in enumerate(dag.rank_orders):
        clock: list[tuple[float, float]] = []
        power: list[tuple[float, float]] = []
        prev = None
        for c in order:
            f = plan.freqs_mhz[c]
            opt = costs.option(c, f)
            start = ev.start_s[c]
            args = {
                "clock_mhz": f,
                "energy_j": opt.energy_j,
                "predicted_time_us": opt.time_s * 1e6,
                "slack_us": ev.slack_s[c] * 1e6,
                "critical": c in critical,
            }
            slices.append(Slice(rank, label(c), start, opt.time_s, c[1], args))
            if prev is not None and f != prev:
                instants.append(Instant(rank, f"switch {prev}→{f} MHz", start, {"to_mhz": f}))
            _step(clock, start, float(f))
            _step(power, start, opt.energy_j / opt.time_s if opt.time_s > 0 else 0.0)
            _step(power, start + opt.time_s, blocked_w)
            prev = f
        counters.append(Counter(rank, "SM clock", "MHz", tuple(clock)))
        counters.append(Counter(rank, "power", "W", tuple(power)))
    return Timeline(
        title=f"{dag.schedule}: {dag.num_stages} stages x {dag.num_microbatches} microbatches, "
        f"{ev.iteration_time_s:.4g} s, {ev.energy_j:.4g} J (planned)",
        tracks={r: f"rank {r}" for r in range(dag.num_ranks)},
        slices=tuple(slices),
        counters=tuple(counters),
        instants=tuple(instants),
        end_s=ev.horizon_s,
    )


def _step(points: list[tuple[float, float]], t: float, value: float) -> None:
    """Append a step, replacing one at the same time (a zero-length gap)."""
    if points and abs(points[-1][0] - t) <= 1e-15:
        points[-1] = (t, value)
    elif not points or points[-1][1] != value:
        points.append((t, value))


# --- trace-event JSON -----------------------------------------------------------------------------


def to_trace_events(timeline: Timeline) -> dict[str, Any]:
    """The trace-event JSON object (``traceEvents``, times in microseconds)."""
    events: list[dict[str, Any]] = []
    for track, name in timeline.tracks.items():
        events.append(_meta("process_name", track, {"name": name}))
        events.append(_meta("process_sort_index", track, {"sort_index": track}))
        events.append({**_meta("thread_name", track, {"name": "work"}), "tid": 0})
    # Parents before children at equal start (Perfetto nests by order), then by start.
    order = {"partition": 0, "switch": 1}
    for s in sorted(timeline.slices, key=lambda s: (s.track, s.start_s, order.get(s.kind, 2))):
        cat = s.kind + (",critical" if s.args.get("critical") else "")
        events.append(
            {
                "ph": "X",
                "name": s.name,
                "cat": cat,
                "pid": s.track,
                "tid": 0,
                "ts": _us(s.start_s),
                "dur": _us(s.dur_s),
                "args": s.args,
            }
        )
    for i in timeline.instants:
        events.append(
            {
                "ph": "i",
                "s": "p",
                "name": i.name,
                "cat": "switch",
                "pid": i.track,
                "tid": 0,
                "ts": _us(i.t_s),
                "args": i.args,
            }
        )
    for c in timeline.counters:
        for t, v in c.points:
            events.append(
                {
                    "ph": "C",
                    "name": f"{c.name} ({c.unit})",
                    "pid": c.track,
                    "tid": 0,
                    "ts": _us(t),
                    "args": {c.unit: v},
                }
            )
        events.append(
            {"ph": "C", "name": f"{c.name} ({c.unit})", "pid": c.track, "tid": 0,
             "ts": _us(timeline.end_s), "args": {c.unit: c.points[-1][1] if c.points else 0}}
        )  # fmt: skip
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"title": timeline.title, "source": "fxenergy (predicted, not measured)"},
    }


def _meta(name: str, pid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"ph": "M", "name": name, "pid": pid, "tid": 0, "ts": 0, "args": args}


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 6)


def write_trace(timeline: Timeline, path: str | Path) -> None:
    """Write ``timeline`` as trace-event JSON (open it in https://ui.perfetto.dev)."""
    Path(path).write_text(json.dumps(to_trace_events(timeline)))


def check_trace(doc: dict[str, Any]) -> list[str]:
    """Problems of a trace-event document (empty when it follows the format we write): required
    keys, numeric times, monotone timestamps per track and phase, and X slices that nest."""
    problems: list[str] = []
    events: Sequence[dict[str, Any]] = doc.get("traceEvents", [])
    last: dict[tuple[Any, Any, str], float] = {}
    stacks: dict[tuple[Any, Any], list[float]] = {}
    for k, e in enumerate(events):
        missing = [key for key in ("ph", "ts", "pid", "tid", "name") if key not in e]
        if missing:
            problems.append(f"event {k} lacks {missing}")
            continue
        if not isinstance(e["ts"], (int, float)) or e["ts"] < 0:
            problems.append(f"event {k} has a bad ts {e['ts']!r}")
            continue
        key = (e["pid"], e["tid"], e["ph"] + (e["name"] if e["ph"] == "C" else ""))
        if e["ts"] < last.get(key, 0.0):
            problems.append(f"event {k} ({e['name']}) goes back in time on its track")
        last[key] = e["ts"]
        if e["ph"] == "X":
            problems += _nest(stacks.setdefault((e["pid"], e["tid"]), []), e, k)
    return problems


def _nest(stack: list[float], e: dict[str, Any], k: int) -> list[str]:
    """Pop finished parents; the slice must end within the one it starts in."""
    eps = 1e-3  # µs: rounding of ts and dur to 1 ps
    if not isinstance(e.get("dur"), (int, float)) or e["dur"] < 0:
        return [f"event {k} ({e['name']}) has a bad dur"]
    while stack and stack[-1] <= e["ts"] + eps:
        stack.pop()
    end = e["ts"] + e["dur"]
    if stack and end > stack[-1] + eps:
        return [f"event {k} ({e['name']}) overlaps its parent without nesting"]
    stack.append(end)
    return []
