"""Time/energy profiles in the Perseus CSV format: ``stage,instruction,frequency,time,energy``.

One row is one computation (a pipeline stage's ``forward`` or ``backward`` of one microbatch, the
zero-bubble split of a backward into ``backward_input`` and ``backward_weight``, or any named
partition) measured or predicted at one SM clock: ``frequency`` in MHz, ``time`` in
seconds, ``energy`` in joules (GPU only). This module reads, validates and writes them; the DVFS
model fills in clocks that were not measured.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fxenergy.errors import ProfileError

COLUMNS = ("stage", "instruction", "frequency", "time", "energy")
#: Share of a backward that computes input gradients when nothing better is known: a dense
#: layer's backward is two GEMMs of equal size, dX = dY W^T (input) and dW = X^T dY (weight).
DEFAULT_INPUT_SHARE = 0.5
_SPLIT = ("backward_input", "backward_weight")


@dataclass(frozen=True)
class ProfileRow:
    """One measured (or predicted) computation at one SM clock."""

    stage: int
    instruction: str
    freq_mhz: int
    time_s: float
    energy_j: float

    @property
    def power_w(self) -> float:
        return self.energy_j / self.time_s if self.time_s > 0 else 0.0


@dataclass(frozen=True)
class Profile:
    """A set of rows, indexed by (stage, instruction) and clock."""

    rows: tuple[ProfileRow, ...]
    #: where the rows come from: "measured" (a CSV, a run), or e.g. "predicted (cost model +
    #: DVFS model)"; says what a split backward read from the rows is
    source: str = "measured"

    def stages(self) -> list[int]:
        return sorted({r.stage for r in self.rows})

    def instructions(self) -> list[str]:
        return sorted({r.instruction for r in self.rows})

    def keys(self) -> list[tuple[int, str]]:
        return sorted({(r.stage, r.instruction) for r in self.rows})

    def clocks_mhz(self, stage: int | None = None, instruction: str | None = None) -> list[int]:
        """Clocks present (for one computation if given), highest first."""
        return sorted(
            {
                r.freq_mhz
                for r in self.rows
                if (stage is None or r.stage == stage)
                and (instruction is None or r.instruction == instruction)
            },
            reverse=True,
        )

    def table(self, stage: int, instruction: str) -> dict[int, ProfileRow]:
        """Rows of one computation by clock."""
        out = {
            r.freq_mhz: r for r in self.rows if r.stage == stage and r.instruction == instruction
        }
        if not out:
            raise ProfileError(f"profile has no rows for stage {stage} {instruction!r}")
        return out

    def require_complete(self) -> None:
        """Every (stage, instruction) has the same set of clocks; stages are 0..n-1."""
        stages = self.stages()
        if stages != list(range(len(stages))):
            missing = sorted(set(range(max(stages) + 1)) - set(stages))
            raise ProfileError(f"profile stages must be 0..{max(stages)}; missing {missing}")
        expected = set(self.clocks_mhz())
        for stage, instr in self.keys():
            have = set(self.clocks_mhz(stage, instr))
            if have != expected:
                gaps = sorted(expected - have, reverse=True)
                raise ProfileError(
                    f"stage {stage} {instr!r} lacks clocks {gaps[:8]}"
                    f"{' ...' if len(gaps) > 8 else ''}; measure them or fill them with "
                    "`fxenergy profile extrapolate`"
                )
        for instr in self.instructions():
            lacking = [s for s in stages if (s, instr) not in set(self.keys())]
            if lacking:
                raise ProfileError(f"stages {lacking} have no {instr!r} rows")

    def with_split_backward(
        self, input_share: float | Mapping[int, float] = DEFAULT_INPUT_SHARE
    ) -> tuple[Profile, str]:
        """This profile with ``backward``, ``backward_input`` and ``backward_weight`` rows.

        Measured ``backward_input``/``backward_weight`` rows are kept (and ``backward`` is
        their sum where it is missing); otherwise each ``backward`` row is split: the input
        part takes ``input_share`` of its time and energy at every clock, the weight part the
        rest. ``input_share`` may be per stage (e.g. from the cost model's split of each
        stage's backward graph, :func:`fxenergy.pipeline.stage_costs.backward_input_shares`).

        Returns:
            The profile and how the split was obtained: the profile's ``source`` (``"measured"``,
            or ``"predicted (...)"`` for rows from the cost model), ``"derived (...)"`` or
            ``"none"`` (no backward rows at all).
        """
        keys = set(self.keys())
        stages = self.stages()
        if all((s, k) in keys for s in stages for k in _SPLIT):
            rows = list(self.rows)
            for s in stages:
                if (s, "backward") not in keys:
                    rows += _summed(self.table(s, _SPLIT[0]), self.table(s, _SPLIT[1]))
            return Profile(tuple(rows), self.source), self.source
        if any(k in _SPLIT for _, k in keys):
            raise ProfileError(
                "profile has backward_input/backward_weight rows for some stages only; "
                "measure both for every stage or give only backward rows"
            )
        if not any(k == "backward" for _, k in keys):
            return self, "none"
        shares = (
            input_share if isinstance(input_share, Mapping) else dict.fromkeys(stages, input_share)
        )
        rows = list(self.rows)
        for r in self.rows:
            if r.instruction != "backward":
                continue
            a = float(shares.get(r.stage, DEFAULT_INPUT_SHARE))
            if not 0.0 < a < 1.0:
                raise ProfileError(f"backward input share must be in (0, 1), got {a}")
            rows.append(ProfileRow(r.stage, _SPLIT[0], r.freq_mhz, a * r.time_s, a * r.energy_j))
            b = 1.0 - a
            rows.append(ProfileRow(r.stage, _SPLIT[1], r.freq_mhz, b * r.time_s, b * r.energy_j))
        what = sorted({round(float(shares.get(s, DEFAULT_INPUT_SHARE)), 3) for s in stages})
        return Profile(
            tuple(rows), self.source
        ), f"derived (input share {', '.join(map(str, what))})"


def _summed(inp: dict[int, ProfileRow], wgt: dict[int, ProfileRow]) -> list[ProfileRow]:
    return [
        ProfileRow(r.stage, "backward", f, r.time_s + wgt[f].time_s, r.energy_j + wgt[f].energy_j)
        for f, r in inp.items()
        if f in wgt
    ]


def _parse_row(raw: dict[str, str], where: str) -> ProfileRow:
    try:
        row = ProfileRow(
            stage=int(raw["stage"]),
            instruction=raw["instruction"].strip(),
            freq_mhz=round(float(raw["frequency"])),
            time_s=float(raw["time"]),
            energy_j=float(raw["energy"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: cannot parse row {raw!r}: {exc}") from exc
    if not (math.isfinite(row.time_s) and row.time_s > 0):
        raise ProfileError(f"{where}: time must be a positive number of seconds, got {row.time_s}")
    if not (math.isfinite(row.energy_j) and row.energy_j >= 0):
        raise ProfileError(f"{where}: energy must be non-negative joules, got {row.energy_j}")
    return row


def read_profile(path: str | Path) -> Profile:
    """Read a Perseus-format CSV; raises :class:`ProfileError` naming the bad line."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ProfileError(
                f"{path}: missing columns {missing}; expected header {','.join(COLUMNS)}"
            )
        rows = tuple(_parse_row(raw, f"{path}:{i + 2}") for i, raw in enumerate(reader))
    if not rows:
        raise ProfileError(f"{path}: no rows")
    return Profile(rows)


def write_profile(rows: Iterable[ProfileRow], path: str | Path) -> None:
    """Write rows in the Perseus column order."""
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.stage, r.instruction, r.freq_mhz, repr(r.time_s), repr(r.energy_j)])
