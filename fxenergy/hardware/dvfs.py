"""The DVFS model: time and power of a node's work as a function of the SM clock.

Time (one kernel, or one node's worth of kernels)::

    t_c(f) = C · f_max / f_eff          compute time; C = compute time at f_max, achieved rate
    t_m    = M                          memory time; HBM/GDDR clocks do not follow the SM clock
    t(f)   = (t_c^p + t_m^p)^(1/p) + kernels · t_launch

The p-norm (``overlap_p``) makes partially memory-bound work still slow down a little at lower
clocks. Power while a kernel runs::

    P(f) = P_static + g(f_eff) · a · (u_c · D_c + (1 - u_c) · D_s) + u_m · D_m
    g(f) = (f / f_max) · (V(f) / V(f_max))²        V flat below the knee, linear above it
    u_c = t_c / t,  u_m = t_m / t                  how busy the SMs and the memory are
    a                                              activity: share of the SMs at work (1 = all)

and ``P_static`` during launch gaps. The board power cap: if the work would draw more than
``power_cap_w`` at the requested clock, the GPU's power controller lowers the clock; ``f_cap``
solves ``P(f_cap) = cap`` and ``f_eff`` is a smooth minimum of the requested clock and ``f_cap``
(``cap_sharpness``), which matches the measured flattening of time at the top clocks.

A computation that is a sequence of kernels (a pipeline stage's forward) is a tuple of
:class:`Work` parts: times and energies add, and the cap acts on their average power (the power
controller averages over far longer windows than one kernel). Every parameter and its source is
in :mod:`fxenergy.hardware.power_params` and docs/dvfs.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fxenergy.cost.roofline import compute_time_s, memory_time_s
from fxenergy.errors import FxEnergyError
from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.power_params import PowerParams, get_power_params
from fxenergy.hardware.specs import GPUSpec, get_gpu

__all__ = ["DVFSModel", "PowerParams", "Work", "get_dvfs_model"]

#: Default clock-switch latency: the GPU stalls this long (at idle power) on every switch.
DEFAULT_SWITCH_LATENCY_S = 0.010
_BISECT_STEPS = 48
#: The cap search looks this far above f_max (V keeps rising linearly) before calling it uncapped.
_CAP_SEARCH_LIMIT = 3.0


@dataclass(frozen=True)
class Work:
    """Frequency-independent description of some GPU work, in seconds at the max clock.

    Attributes:
        compute_s: time of the arithmetic at ``f_max`` at the achieved (not peak) rate.
        memory_s: time of the memory traffic at the achieved bandwidth.
        kernels: kernel launches (each adds ``launch_overhead_s`` at static power).
        activity: the share of SMs at work (occupancy), 1 = every SM busy (dense tensor-core
            work, or every SM stalled on memory); lower for small or latency-bound kernels
            (time still ∝ 1/f, SM power scaled down).
    """

    compute_s: float
    memory_s: float
    kernels: int = 0
    activity: float = 1.0


Mix = tuple[Work, ...]


class DVFSModel:
    """Time, power and energy of work on one GPU at a given SM clock.

    Args:
        spec: the GPU's datasheet record.
        params: its power-model parameters (defaults to the calibrated table entry).
        switch_latency_s: how long a clock switch stalls the GPU (spent at ``idle_power_w``).
    """

    def __init__(
        self,
        spec: GPUSpec,
        params: PowerParams | None = None,
        switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    ) -> None:
        if switch_latency_s < 0:
            raise FxEnergyError(f"switch_latency_s must be >= 0, got {switch_latency_s}")
        self.spec = spec
        self.params = params if params is not None else get_power_params(spec)
        self.switch_latency_s = float(switch_latency_s)
        self._cap_cache: dict[Mix, float] = {}

    def __repr__(self) -> str:
        return f"DVFSModel({self.spec.name!r}, switch_latency_s={self.switch_latency_s})"

    # --- public API on CostRecords --------------------------------------------------------
    @property
    def idle_power_w(self) -> float:
        """Power of the GPU with nothing to run (also the power during a clock switch)."""
        return self.params.idle_power_w

    @property
    def blocked_power_w(self) -> float:
        """Power while blocked on communication (a pipeline stage waiting for its peer)."""
        return self.params.blocked_power_w

    def clocks_mhz(self) -> tuple[int, ...]:
        """Supported SM clocks, highest first."""
        return self.spec.supported_clocks_mhz()

    def work_of(self, cost: CostRecord) -> Work:
        """The :class:`Work` of a node's cost on this GPU (achieved, not peak, rates)."""
        p = self.params
        return Work(
            compute_s=compute_time_s(cost, self.spec, self.spec.max_clock_mhz)
            / p.compute_efficiency,
            memory_s=memory_time_s(cost, self.spec) / p.memory_efficiency,
            kernels=cost.kernels,
        )

    def time_s(self, cost: CostRecord, freq_mhz: float) -> float:
        """Seconds the node takes at SM clock ``freq_mhz``."""
        return self.mix_time_s((self.work_of(cost),), freq_mhz)

    def energy_j(self, cost: CostRecord, freq_mhz: float) -> float:
        """GPU joules the node takes at SM clock ``freq_mhz`` (== time_s * power_w)."""
        return self.mix_energy_j((self.work_of(cost),), freq_mhz)

    def power_w(self, cost: CostRecord, freq_mhz: float) -> float:
        """Average GPU power while the node runs at SM clock ``freq_mhz``."""
        return self.mix_power_w((self.work_of(cost),), freq_mhz)

    def switch_energy_j(self) -> float:
        """Energy of one clock switch: ``switch_latency_s`` at ``idle_power_w``."""
        return self.switch_latency_s * self.idle_power_w

    # --- public API on Work mixes -----------------------------------------------------------
    def mix_time_s(self, mix: Sequence[Work], freq_mhz: float) -> float:
        """Seconds of a sequence of work parts at ``freq_mhz``."""
        return self._time_energy(tuple(mix), freq_mhz)[0]

    def mix_energy_j(self, mix: Sequence[Work], freq_mhz: float) -> float:
        """Joules of a sequence of work parts at ``freq_mhz``."""
        return self._time_energy(tuple(mix), freq_mhz)[1]

    def mix_time_energy(self, mix: Sequence[Work], freq_mhz: float) -> tuple[float, float]:
        """(seconds, joules) of a sequence of work parts at ``freq_mhz`` (one cap solve)."""
        return self._time_energy(tuple(mix), freq_mhz)

    def mix_power_w(self, mix: Sequence[Work], freq_mhz: float) -> float:
        """Average watts of a sequence of work parts at ``freq_mhz``."""
        t, e = self._time_energy(tuple(mix), freq_mhz)
        return e / t if t > 0 else self.params.static_power_w

    def effective_clock_mhz(self, mix: Sequence[Work] | CostRecord, freq_mhz: float) -> float:
        """The clock the GPU actually runs ``mix`` at when ``freq_mhz`` is locked (power cap)."""
        if isinstance(mix, CostRecord):
            mix = (self.work_of(mix),)
        return self._effective(tuple(mix), float(freq_mhz))

    def at_effective_clock(self, mix: Sequence[Work], f_eff_mhz: float) -> tuple[float, float]:
        """(seconds, joules) of ``mix`` running at ``f_eff_mhz`` with no cap applied here: pass
        the :meth:`effective_clock_mhz` of the window the power cap averages over (e.g. a
        whole training step), so a node in that window is slowed by the window's cap, not its own.
        """
        if f_eff_mhz <= 0:
            raise FxEnergyError(f"SM clock must be positive, got {f_eff_mhz} MHz")
        return self._raw(tuple(mix), float(f_eff_mhz))

    def voltage_ratio(self, freq_mhz: float) -> float:
        """V(f) / V(f_max): flat at ``v_min_ratio`` below the knee, linear above it."""
        p = self.params
        f_max = self.spec.max_clock_mhz
        if freq_mhz <= p.knee_mhz or f_max <= p.knee_mhz:
            return p.v_min_ratio
        return p.v_min_ratio + (1.0 - p.v_min_ratio) * (freq_mhz - p.knee_mhz) / (
            f_max - p.knee_mhz
        )

    def dynamic_scale(self, freq_mhz: float) -> float:
        """g(f) = (f / f_max) · (V(f) / V(f_max))²: dynamic power relative to f_max."""
        return freq_mhz / self.spec.max_clock_mhz * self.voltage_ratio(freq_mhz) ** 2

    # --- internals --------------------------------------------------------------------------
    def _part(self, w: Work, f: float) -> tuple[float, float]:
        """(time, energy) of one part at effective clock ``f`` (no cap applied here)."""
        p = self.params
        t_c = w.compute_s * self.spec.max_clock_mhz / f
        t_m = w.memory_s
        gap = w.kernels * p.launch_overhead_s
        if t_c <= 0 and t_m <= 0:
            return gap, gap * p.static_power_w
        q = p.overlap_p
        big = max(t_c, t_m)  # scale before the power so tiny/huge times do not under/overflow
        t_k = big * ((t_c / big) ** q + (t_m / big) ** q) ** (1.0 / q)
        u_c, u_m = t_c / t_k, t_m / t_k
        sm_w = w.activity * (u_c * p.compute_dyn_w + (1.0 - u_c) * p.stall_dyn_w)
        sm_w *= self.dynamic_scale(f)
        p_k = p.static_power_w + sm_w + u_m * p.memory_dyn_w
        return t_k + gap, p_k * t_k + p.static_power_w * gap

    def _raw(self, mix: Mix, f: float) -> tuple[float, float]:
        t = e = 0.0
        for w in mix:
            dt, de = self._part(w, f)
            t += dt
            e += de
        return t, e

    def _cap_clock(self, mix: Mix) -> float:
        """The clock at which ``mix`` draws exactly the power cap (inf if it never does)."""
        if mix in self._cap_cache:
            return self._cap_cache[mix]
        cap = self.params.power_cap_w

        def over(f: float) -> bool:
            t, e = self._raw(mix, f)
            return t > 0 and e / t > cap

        lo, hi = float(self.spec.min_clock_mhz), self.spec.max_clock_mhz * _CAP_SEARCH_LIMIT
        if not over(hi):
            result = math.inf
        elif over(lo):
            result = lo  # cannot stay under the cap at any clock: run at the lowest
        else:
            for _ in range(_BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if over(mid) else (mid, hi)
            result = lo
        if len(self._cap_cache) < 65536:
            self._cap_cache[mix] = result
        return result

    def _effective(self, mix: Mix, f: float) -> float:
        if f <= 0:
            raise FxEnergyError(f"SM clock must be positive, got {f} MHz")
        f_cap = self._cap_clock(mix)
        if math.isinf(f_cap):
            return f
        s = self.params.cap_sharpness
        return f * (1.0 + (f / f_cap) ** s) ** (-1.0 / s)

    def _time_energy(self, mix: Mix, f: float) -> tuple[float, float]:
        return self._raw(mix, self._effective(mix, float(f)))


def get_dvfs_model(
    gpu: str | GPUSpec,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    params: PowerParams | None = None,
    power_cap_w: float | None = None,
) -> DVFSModel:
    """The DVFS model of a GPU from the spec table (by name, NVML name, or :class:`GPUSpec`).

    Args:
        gpu: the GPU.
        switch_latency_s: stall per clock switch (spent at idle power).
        params: power parameters to use instead of the table's.
        power_cap_w: the board's actual power limit, where it differs from the table's (e.g. an
            A100-SXM4-80GB on a 400 W board, or ``nvmlDeviceGetPowerManagementLimit`` / 1000).

    Raises:
        UnknownGPUError: the GPU is not in the spec table (the message says how to add it).
    """
    spec = get_gpu(gpu)
    params = params or get_power_params(spec)
    if power_cap_w is not None:
        if power_cap_w <= params.static_power_w:
            raise FxEnergyError(
                f"power_cap_w={power_cap_w} W is below {spec.name}'s static power "
                f"{params.static_power_w:.0f} W; pass the board limit in watts"
            )
        params = params.replace(power_cap_w=float(power_cap_w))
    return DVFSModel(spec, params=params, switch_latency_s=switch_latency_s)
