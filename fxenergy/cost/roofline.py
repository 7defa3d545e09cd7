"""Roofline time of a node's work on a GPU: compute at the SM clock vs memory at full bandwidth.

Peak FLOP/s are quoted at the spec's boost clock and scale linearly with the SM clock; memory
bandwidth does not depend on the SM clock (memory clocks stay locked at max). Matrix work
(``CostRecord.matmul_flops``) runs at the tensor-core rate of its dtype, everything else at the
CUDA-core rate. The DVFS model (fxenergy.hardware.dvfs) builds its smooth time model on these two
terms; this module is the plain max() roofline used for bounds and critical paths.
"""

from __future__ import annotations

from fxenergy.graph.meta import CostRecord, RooflineRecord
from fxenergy.hardware.specs import GPUSpec


def compute_time_s(cost: CostRecord, spec: GPUSpec, freq_mhz: float | None = None) -> float:
    """Seconds of arithmetic at ``freq_mhz`` (default: the boost clock) at peak throughput."""
    scale = spec.boost_clock_mhz / (freq_mhz or spec.boost_clock_mhz)
    mm = cost.matmul_flops / spec.matmul_flops(cost.dtype, allow_tf32=cost.allow_tf32)
    vec = (cost.flops - cost.matmul_flops) / spec.vector_flops(cost.dtype)
    return (mm + vec) * scale


def memory_time_s(cost: CostRecord, spec: GPUSpec) -> float:
    """Seconds to move the node's bytes at peak memory bandwidth."""
    return cost.bytes_total / spec.mem_bandwidth_bps


def roofline(cost: CostRecord, spec: GPUSpec) -> RooflineRecord:
    """The roofline record of ``cost`` on ``spec`` at its maximum clock."""
    c = compute_time_s(cost, spec, spec.max_clock_mhz)
    m = memory_time_s(cost, spec)
    bound = "none" if c == m == 0 else ("compute" if c >= m else "memory")
    return RooflineRecord(spec.name, max(c, m), c, m, bound)
