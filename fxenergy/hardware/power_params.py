"""Power-model parameters of every GPU in the spec table, each with its source.

The A100-SXM4-80GB's shape parameters (static power, dynamic power of busy tensor cores, the
voltage knee and rise, the power cap and how sharply it bites) are calibrated against the
measured Perseus profile (bench/calibrate_dvfs.py; docs/dvfs.md has the fit error). The other
GPUs get the same *shape* (knee and voltage rise as fractions of the clock range, dynamic power as
a fraction of the board's TDP, static power as a multiple of idle power) applied to their own
datasheet numbers (TDP, memory bandwidth, max clock) and published idle-power readings. Memory
power comes from the DRAM's energy per bit times its bandwidth. docs/gpus.md lists every value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fxenergy.errors import UnknownGPUError
from fxenergy.hardware.specs import GPUSpec, get_gpu


@dataclass(frozen=True)
class PowerParams:
    """Parameters of :class:`fxenergy.hardware.dvfs.DVFSModel` for one GPU (watts, MHz, s).

    Attributes:
        gpu: spec-table name.
        idle_power_w: nothing running (also the power during a clock switch).
        blocked_power_w: a pipeline stage blocked on communication (NCCL kernel spinning).
        static_power_w: clock-independent power while kernels run (leakage, uncore, fans).
        power_cap_w: board power limit; the clock drops until power equals it.
        knee_mhz: SM clock below which the voltage stays at its floor.
        v_min_ratio: voltage floor relative to the voltage at the max clock.
        compute_dyn_w: dynamic SM power at the max clock with every SM busy on tensor cores.
        stall_dyn_w: dynamic SM power at the max clock while SMs wait on memory.
        memory_dyn_w: DRAM power at full bandwidth (memory clock fixed, so f-independent).
        cap_sharpness: exponent of the smooth min between the locked clock and the cap clock.
        overlap_p: p-norm exponent combining compute and memory time within a kernel.
        launch_overhead_s: GPU-side gap per kernel launch.
        compute_efficiency: achieved fraction of peak FLOP/s (uncapped).
        memory_efficiency: achieved fraction of peak memory bandwidth.
        sources: (field, source) pairs, one per numeric field.
    """

    gpu: str
    idle_power_w: float
    blocked_power_w: float
    static_power_w: float
    power_cap_w: float
    knee_mhz: float
    v_min_ratio: float
    compute_dyn_w: float
    stall_dyn_w: float
    memory_dyn_w: float
    cap_sharpness: float
    overlap_p: float
    launch_overhead_s: float
    compute_efficiency: float
    memory_efficiency: float
    sources: tuple[tuple[str, str], ...] = ()

    def source(self, field: str) -> str:
        """Where the value of ``field`` comes from ("" if not recorded)."""
        return dict(self.sources).get(field, "")

    def replace(self, **changes: float | str) -> PowerParams:
        """A copy with some fields changed (sources of changed fields say 'overridden')."""
        srcs = dict(self.sources)
        for k in changes:
            srcs[k] = "overridden by the caller"
        return dataclasses.replace(self, **changes, sources=tuple(srcs.items()))  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        """JSON-able view (sources as a mapping)."""
        d = dataclasses.asdict(self)
        d["sources"] = dict(self.sources)
        return d


# --- the calibration: A100-SXM4-80GB against the measured Perseus GPT-3 profile -------------
_CAL = "calibrated: bench/calibrate_dvfs.py on Perseus gpt3-175b+a100_sxm_bf16 (docs/dvfs.md)"
_A100_FIT = {
    "static_power_w": 44.4,
    "compute_dyn_w": 512.1,
    "knee_mhz": 1107.0,
    "v_min_ratio": 0.810,
    "power_cap_w": 479.7,
    "cap_sharpness": 117.0,
}
_A100_FIT_IDLE_W = 60.0
_A100_FIT_TDP_W = 400.0
_A100_FIT_MAX_MHZ = 1410.0

# --- per-GPU published inputs -------------------------------------------------------------------
#: Typical idle draw (nvidia-smi, P0, no process) reported by vendors' and users' measurements.
_IDLE_SRC = "typical nvidia-smi idle reading (approximate; published measurements vary +-20%)"
_IDLE_W = {
    "A100-SXM4-40GB": 50.0,
    "A100-SXM4-80GB": _A100_FIT_IDLE_W,
    "H100-SXM5": 70.0,
    "H100-PCIe": 45.0,
    "A40": 30.0,
    "V100-SXM2": 40.0,
    "L4": 16.0,
    "RTX-4090": 20.0,
}
#: DRAM access energy, pJ/bit (device + interface).
_PJ_PER_BIT = {"hbm": 3.9, "gddr6": 7.5, "gddr6x": 7.25}
_PJ_SRC = {
    "hbm": "HBM2 ~3.9 pJ/bit (O'Connor et al., 'Fine-Grained DRAM', MICRO 2017) x bandwidth",
    "gddr6": "GDDR6 ~7.5 pJ/bit (O'Connor et al., MICRO 2017) x bandwidth",
    "gddr6x": "GDDR6X ~7.25 pJ/bit (Micron GDDR6X product brief: 15% below GDDR6) x bandwidth",
}
_MEMORY_KIND = {
    "A100-SXM4-40GB": "hbm",
    "A100-SXM4-80GB": "hbm",
    "H100-SXM5": "hbm",
    "H100-PCIe": "hbm",
    "A40": "gddr6",
    "V100-SXM2": "hbm",
    "L4": "gddr6",
    "RTX-4090": "gddr6x",
}
#: Measured blocked-on-communication power (Perseus artifact's emulation constant).
_BLOCKED_W = {"A100-SXM4-80GB": 83.64}
_BLOCKED_SRC = "Perseus (SOSP'24) artifact: A100 blocked on pipeline communication draws 83.64 W"
#: Board power limit where it differs from the datasheet TDP in spec.tdp_w.
_CAP_SRC_TDP = "default power limit = datasheet TDP (spec table)"

_STALL_FRACTION = 0.3
_STALL_SRC = (
    "assumption: SMs stalled on memory keep ~30% of busy dynamic power (clock tree, schedulers, "
    "load/store units); not identifiable from compute-bound measurements"
)
_COMMON = {
    "overlap_p": (
        4.0,
        "assumption: compute and memory overlap within a kernel; p=4 adds 19% when equal",
    ),
    "launch_overhead_s": (
        4e-6,
        "NVIDIA 'Getting started with CUDA Graphs' (2019): ~3-4 us per launch of short kernels",
    ),
    "compute_efficiency": (
        0.8,
        "cuBLAS large GEMMs reach ~80% of dense tensor-core peak (NVIDIA cuBLAS perf notes)",
    ),
    "memory_efficiency": (
        0.9,
        "STREAM/BabelStream reach ~90% of peak HBM bandwidth on A100/H100 (published runs)",
    ),
}


def _derive(spec: GPUSpec) -> PowerParams:
    """Parameters for ``spec``: A100 calibration shape on this GPU's published numbers."""
    fit = _A100_FIT
    idle = _IDLE_W[spec.name]
    mem_kind = _MEMORY_KIND[spec.name]
    own = spec.name == "A100-SXM4-80GB"
    compute_dyn = fit["compute_dyn_w"] * (1.0 if own else spec.tdp_w / _A100_FIT_TDP_W)
    knee_frac = fit["knee_mhz"] / _A100_FIT_MAX_MHZ
    static = fit["static_power_w"] * (1.0 if own else idle / _A100_FIT_IDLE_W)
    blocked = _BLOCKED_W.get(spec.name, _BLOCKED_W["A100-SXM4-80GB"] * idle / _A100_FIT_IDLE_W)
    shape = "A100 calibration" if own else "A100 calibration shape scaled to this GPU"
    values: dict[str, tuple[float, str]] = {
        "idle_power_w": (idle, _IDLE_SRC),
        "blocked_power_w": (
            blocked,
            _BLOCKED_SRC if spec.name in _BLOCKED_W else "A100's 83.64 W x idle / A100 idle",
        ),
        "static_power_w": (static, _CAL if own else f"{shape}: A100 static x idle / A100 idle"),
        "power_cap_w": (
            fit["power_cap_w"] if own else spec.tdp_w,
            (
                _CAL + "; NVIDIA A100 80GB datasheet: up to 500 W on custom-thermal HGX boards"
                if own
                else _CAP_SRC_TDP
            ),
        ),
        "knee_mhz": (
            round(knee_frac * spec.max_clock_mhz),
            _CAL if own else f"{shape}: knee at {knee_frac:.3f} x max clock",
        ),
        "v_min_ratio": (fit["v_min_ratio"], _CAL if own else shape),
        "compute_dyn_w": (
            compute_dyn,
            _CAL if own else f"{shape}: A100 busy dynamic power x TDP / 400 W",
        ),
        "stall_dyn_w": (_STALL_FRACTION * compute_dyn, _STALL_SRC),
        "memory_dyn_w": (
            spec.mem_bandwidth_bps * 8 * _PJ_PER_BIT[mem_kind] * 1e-12,
            _PJ_SRC[mem_kind],
        ),
        "cap_sharpness": (fit["cap_sharpness"], _CAL if own else shape),
        **_COMMON,
    }
    return PowerParams(
        gpu=spec.name,
        **{k: v for k, (v, _) in values.items()},  # type: ignore[arg-type]
        sources=tuple((k, s) for k, (_, s) in values.items()),
    )


_CUSTOM: dict[str, PowerParams] = {}


def register_power_params(params: PowerParams) -> PowerParams:
    """Use ``params`` for GPU ``params.gpu`` (a GPU added with ``register_gpu`` needs this)."""
    _CUSTOM[params.gpu] = params
    return params


def get_power_params(gpu: str | GPUSpec) -> PowerParams:
    """The power-model parameters of a GPU in the spec table.

    Raises:
        UnknownGPUError: unknown GPU, or a registered GPU with no power parameters.
    """
    spec = get_gpu(gpu)
    if spec.name in _CUSTOM:
        return _CUSTOM[spec.name]
    if spec.name not in _IDLE_W:
        raise UnknownGPUError(
            f"GPU {spec.name!r} has no power-model parameters. Build a "
            "fxenergy.hardware.power_params.PowerParams for it (see docs/dvfs.md for what each "
            "field means and how to calibrate it with bench/calibrate_dvfs.py) and call "
            "register_power_params(params)."
        )
    return _derive(spec)
