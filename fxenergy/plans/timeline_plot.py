"""Draw a :class:`~fxenergy.plans.trace.Timeline` as a PNG with matplotlib.

Three panels share the time axis: the work (one row per track: ops coloured compute- vs
memory-bound, or pipeline computations coloured forward/backward; critical work underlined in
red), the SM clock as a step line with switches marked, and the power below. Work too short to
see is aggregated: each track is cut into pixel-wide bins and each bin is drawn as the mix of
what ran in it, stacked by share of the bin's time (a 10k-node graph draws as one stepped band
per kind of work, not 10k bars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fxenergy.errors import FxEnergyError
from fxenergy.plans.trace import Slice, Timeline

#: colour per kind of work (ops by roofline bound; pipeline computations by direction)
COLOURS = {
    "compute": "#1f77b4",
    "memory": "#ff7f0e",
    "none": "#bbbbbb",
    "forward": "#2ca02c",
    "backward": "#9467bd",
    "switch": "#d62728",
}
BINS = 1500  #: aggregation bins across the time axis (about one per pixel column)
MAX_BARS = 400  #: a track with more slices than this is drawn binned


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FxEnergyError(
            "timelines need matplotlib: pip install 'fxenergy[plot]' (or drop --timeline)"
        ) from exc
    return plt


def plot_timeline(timeline: Timeline, path: str | Path, bins: int = BINS) -> None:
    """Write ``timeline`` as a PNG at ``path`` (see the module docstring)."""
    plt = _pyplot()
    tracks = sorted(timeline.tracks)
    scale, unit = _time_unit(timeline.end_s)
    fig, (ax_w, ax_c, ax_p) = plt.subplots(
        3, 1, figsize=(11, 2.2 + 0.45 * len(tracks) + 3.2), sharex=True,
        gridspec_kw={"height_ratios": [max(1.2, 0.5 * len(tracks)), 1, 1]},
    )  # fmt: skip
    width = timeline.end_s / bins if timeline.end_s > 0 else 1.0
    kinds_seen: set[str] = set()
    for row, track in enumerate(tracks):
        work = [s for s in timeline.slices if s.track == track and s.kind not in ("partition",)]
        kinds_seen |= _draw_work(ax_w, work, row, width, scale)
    ax_w.set_yticks(range(len(tracks)), [timeline.tracks[t] for t in tracks], fontsize=8)
    ax_w.set_ylim(len(tracks) - 0.4, -0.6)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[k]) for k in COLOURS if k in kinds_seen]
    labels = [f"{k}-bound" if k in ("compute", "memory") else k for k in COLOURS if k in kinds_seen]
    handles.append(plt.Line2D([], [], color="red", lw=2))
    labels.append("critical path")
    ax_w.legend(handles, labels, fontsize=7, loc="upper right", ncols=len(labels))
    _draw_counters(ax_c, timeline, "SM clock", scale, tracks)
    _draw_counters(ax_p, timeline, "power", scale, tracks)
    for i in timeline.instants:  # clock switches: a line through the clock and power panels
        for ax in (ax_c, ax_p):
            ax.axvline(i.t_s * scale, color=COLOURS["switch"], lw=0.8, ls="--", alpha=0.6)
    ax_c.set_ylabel("SM clock (MHz)")
    ax_p.set_ylabel("power (W)")
    ax_p.set_xlabel(f"time ({unit}; predicted; red dashed lines: clock switches)")
    ax_p.set_xlim(0, timeline.end_s * scale)
    fig.suptitle(timeline.title, fontsize=10, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _time_unit(end_s: float) -> tuple[float, str]:
    if end_s >= 1.0:
        return 1.0, "s"
    if end_s >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def _draw_work(ax: Any, work: list[Slice], row: int, width: float, scale: float) -> set[str]:
    """One track's work: each slice as a bar when few, else binned (see :func:`_binned`)."""
    if len(work) <= MAX_BARS:
        for s in work:
            colour = COLOURS.get(_colour_key(s), "#999999")
            ax.barh(row, s.dur_s * scale, left=s.start_s * scale, height=0.7, color=colour,
                    edgecolor="white", lw=0.4)  # fmt: skip
            if s.args.get("critical"):
                _underline(ax, row, s.start_s * scale, (s.start_s + s.dur_s) * scale)
        return {_colour_key(s) for s in work}
    keys, share, critical = _binned(work, width)
    # one stepped band per kind of work (a polygon each): cheap for any number of bins
    edges = np.arange(len(share) + 1) * width * scale
    lower = np.full(len(share) + 1, row - 0.35)
    for k, key in enumerate(keys):
        upper = lower + 0.7 * np.append(share[:, k], share[-1, k])
        ax.fill_between(edges, lower, upper, step="post", color=COLOURS.get(key, "#999999"), lw=0)
        lower = upper
    crit = np.flatnonzero(critical)
    ax.hlines(
        np.full(len(crit), row + 0.38),
        crit * width * scale,
        (crit + 1) * width * scale,
        color="red",
        lw=2,
    )  # fmt: skip (one collection, not a line per bin)
    return set(keys)


def _binned(work: list[Slice], width: float) -> tuple[list[str], Any, Any]:
    """Time of each kind of work per bin (slices split across the bins they overlap), as a
    share of the bin; and which bins hold critical work."""
    keys = sorted({_colour_key(s) for s in work})
    end = max(s.start_s + s.dur_s for s in work)
    bins = max(int(np.ceil(end / width)), 1)
    share = np.zeros((bins, len(keys)))
    critical = np.zeros(bins, dtype=bool)
    for s in work:
        k = keys.index(_colour_key(s))
        lo, hi = s.start_s / width, (s.start_s + s.dur_s) / width
        first, last = int(lo), min(int(np.ceil(hi)), bins)
        for b in range(first, max(last, first + 1)):
            share[min(b, bins - 1), k] += max(min(hi, b + 1) - max(lo, b), 0.0)
        if s.args.get("critical"):
            critical[first : max(last, first + 1)] = True
    return keys, np.clip(share, 0.0, 1.0), critical


def _underline(ax: Any, row: int, x0: float, x1: float) -> None:
    ax.plot([x0, x1], [row + 0.38] * 2, color="red", lw=2, solid_capstyle="butt")


def _colour_key(s: Slice) -> str:
    if s.kind == "op":
        return str(s.args.get("bound", "none"))
    return s.kind


def _draw_counters(ax: Any, timeline: Timeline, name: str, scale: float, tracks: list) -> None:
    for c in timeline.counters:
        if c.name != name or not c.points:
            continue
        xs = [t * scale for t, _ in c.points] + [timeline.end_s * scale]
        ys = [v for _, v in c.points] + [c.points[-1][1]]
        label = timeline.tracks[c.track] if len(tracks) > 1 else None
        ax.step(xs, ys, where="post", lw=1, label=label)
    if len(tracks) > 1:
        ax.legend(fontsize=7, loc="lower right", ncols=min(len(tracks), 4))
    ax.grid(alpha=0.3)
