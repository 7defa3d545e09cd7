"""Clock options of pipeline computations, read from a profile (split backward included).

:class:`StageCosts` holds, per ``(stage, kind)``, the time and energy of each SM clock and the
power of a GPU blocked on communication. Kinds are ``forward``, ``backward`` and the
zero-bubble split ``backward_input`` / ``backward_weight``: measured when the profile has rows
for them, derived from ``backward`` otherwise (:meth:`Profile.with_split_backward`), and the
way they were obtained is kept in ``StageCosts.backward_split``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fxenergy.errors import ProfileError
from fxenergy.hardware.profiles import DEFAULT_INPUT_SHARE, Profile

#: (stage, kind, microbatch)
Computation = tuple[int, str, int]
_KINDS = ("forward", "backward", "backward_input", "backward_weight")


@dataclass(frozen=True)
class ClockOption:
    """One way to run a computation: at ``freq_mhz`` it takes ``time_s`` and ``energy_j``."""

    freq_mhz: int
    time_s: float
    energy_j: float


@dataclass(frozen=True)
class ClockSplit:
    """A computation run at two clocks: its last ``share`` of work at ``then_mhz``.

    The computation starts at its planned clock and switches to ``then_mhz`` once
    ``1 - share`` of its work is done, so its time and energy are the ``share``-weighted mix
    of the two clocks' measured ones: the LP relaxation's point between two hull vertices,
    made real (with discrete clocks the optimum uses at most two adjacent ones per task:
    Ishihara & Yasuura, ISLPED 1998).
    """

    then_mhz: int
    share: float  #: fraction of the work run at ``then_mhz``, in (0, 1)
    #: when the second clock takes over, seconds after the computation starts (the first
    #: part's time at the first clock); what a runtime times the switch by
    after_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"a clock split's share must lie in (0, 1), got {self.share}")


@dataclass(frozen=True)
class StageCosts:
    """Per (stage, kind) clock options, and the power a GPU draws while blocked."""

    options: Mapping[tuple[int, str], Mapping[int, ClockOption]]
    blocked_power_w: float
    backward_split: str = "none"  #: how I/W costs were obtained ("measured", "derived ...")
    _candidates: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        num_stages: int,
        blocked_power_w: float,
        profile_stages: Sequence[int] | None = None,
        input_share: float | Mapping[int, float] = DEFAULT_INPUT_SHARE,
    ) -> StageCosts:
        """Costs for ``num_stages`` stages from a Perseus profile.

        Args:
            profile: forward/backward rows for every stage at the same set of clocks.
            num_stages: stages of the DAG.
            blocked_power_w: power of a GPU blocked on communication (W).
            profile_stages: which profile stage plays each DAG stage (defaults to 0..n-1);
                lets a 4-stage DAG borrow stages of an 8-stage profile.
            input_share: where the profile has no ``backward_input``/``backward_weight``
                rows, the share of ``backward`` that computes input gradients (per profile
                stage, or one for all); see :meth:`Profile.with_split_backward`.

        Raises:
            ProfileError: missing stages, kinds or clocks, or a stage-count mismatch.
        """
        if not (math.isfinite(blocked_power_w) and blocked_power_w >= 0):
            raise ProfileError(f"blocked power must be >= 0 W, got {blocked_power_w}")
        profile, split = profile.with_split_backward(input_share)
        profile.require_complete()
        have = profile.stages()
        if profile_stages is None:
            if len(have) != num_stages:
                raise ProfileError(
                    f"profile has {len(have)} stages but the schedule has {num_stages}; "
                    "profile one row set per stage or map stages with --profile-stages"
                )
            profile_stages = have
        if len(profile_stages) != num_stages or not set(profile_stages) <= set(have):
            raise ProfileError(
                f"profile_stages {list(profile_stages)} must name {num_stages} stages of {have}"
            )
        opts: dict[tuple[int, str], dict[int, ClockOption]] = {}
        for stage, src in enumerate(profile_stages):
            for kind in _KINDS:
                if (src, kind) not in profile.keys():
                    raise ProfileError(f"profile stage {src} has no {kind!r} rows")
                table = profile.table(src, kind)
                opts[(stage, kind)] = {
                    f: ClockOption(f, r.time_s, r.energy_j) for f, r in table.items()
                }
        return cls(opts, blocked_power_w, split)

    def clocks_mhz(self, c: Computation) -> list[int]:
        """Clocks available to a computation, highest first."""
        return sorted(self.options[(c[0], c[1])], reverse=True)

    def option(self, c: Computation, freq_mhz: int) -> ClockOption:
        try:
            return self.options[(c[0], c[1])][freq_mhz]
        except KeyError:
            raise ProfileError(
                f"no profile row for stage {c[0]} {c[1]} at {freq_mhz} MHz"
            ) from None

    def split(self, c: Computation, freq_mhz: int, then_mhz: int, share: float) -> ClockSplit:
        """``c`` started at ``freq_mhz`` with its last ``share`` of work at ``then_mhz``."""
        return ClockSplit(then_mhz, share, (1 - share) * self.option(c, freq_mhz).time_s)

    def run(self, c: Computation, freq_mhz: int, split: ClockSplit | None = None) -> ClockOption:
        """Time and energy of ``c`` at ``freq_mhz``, or split between it and a second clock."""
        first = self.option(c, freq_mhz)
        if split is None:
            return first
        then, w = self.option(c, split.then_mhz), split.share
        return ClockOption(
            freq_mhz,
            (1 - w) * first.time_s + w * then.time_s,
            (1 - w) * first.energy_j + w * then.energy_j,
        )

    def fastest(self, c: Computation) -> ClockOption:
        return min(self.options[(c[0], c[1])].values(), key=lambda o: (o.time_s, -o.freq_mhz))

    def candidates(self, c: Computation) -> list[ClockOption]:
        """Options not dominated in (time, energy - P_blocked * time), fastest first.

        A slower option lowers its GPU's blocked time by the same amount, so the right
        measure is the effective energy; an option both slower and effectively dearer is never
        worth taking (Perseus's Pareto filter, applied after the blocked-power shift).
        """
        key = (c[0], c[1])
        if key in self._candidates:
            return self._candidates[key]
        p = self.blocked_power_w
        out: list[ClockOption] = []
        for o in sorted(self.options[(c[0], c[1])].values(), key=lambda o: (o.time_s, o.energy_j)):
            if not out or o.energy_j - p * o.time_s < out[-1].energy_j - p * out[-1].time_s:
                out.append(o)
        self._candidates[key] = out
        return out
