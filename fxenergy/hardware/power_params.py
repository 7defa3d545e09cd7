"""Power-model parameters of every GPU in the spec table, each with its source.

Two boards are *calibrated* against measured clock sweeps (bench/calibrate_dvfs.py, docs/dvfs.md
has the fit): the A100-SXM4-80GB and the A40 (Perseus GPT-3 profiles). Every other board is
*uncalibrated*: it borrows the shape (voltage curve, stall-to-busy power ratio, cap sharpness,
typical compute share) of the calibrated board closest to it, on its own datasheet numbers (board
power limit, memory bandwidth, max clock) and published idle readings. A board on the same die as
its donor (A100 PCIe/SXM, 40/80 GB) keeps the donor's watts and MHz and only changes its power
limit. :func:`calibration_note` says which case a board is in; every output that depends on an
uncalibrated board prints it. A user calibrates a board once with ``fxenergy profile calibrate``
(:mod:`fxenergy.hardware.boards`). docs/gpus.md lists every value.
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
        typical_compute_share: compute share C / (C + M) of the calibration's computations; the
            one-point prior where one measurement cannot tell (a row at the power cap).
        calibration: where the calibration came from ("" = uncalibrated).
        shape_from: the calibrated board whose shape an uncalibrated board borrows.
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
    typical_compute_share: float = 0.85
    calibration: str = ""
    shape_from: str = ""
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

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> PowerParams:
        """Inverse of :meth:`as_dict` (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown power-parameter fields {unknown}")
        kw = dict(d)
        kw["sources"] = tuple(dict(kw.get("sources") or {}).items())  # type: ignore[arg-type]
        return cls(**kw)  # type: ignore[arg-type]

    @property
    def calibrated(self) -> bool:
        """True when fitted to a measured sweep of this board."""
        return bool(self.calibration)


# --- calibrations: fitted to measured clock sweeps (bench/calibrate_dvfs.py, docs/dvfs.md) ---
#: Board parameters a fit to a measured sweep moves (the rest stay at their published values).
FIT_FIELDS = (
    "static_power_w",
    "compute_dyn_w",
    "stall_dyn_w",
    "knee_mhz",
    "v_min_ratio",
    "power_cap_w",
    "cap_sharpness",
)
#: What a calibration records: the fitted parameters and the board's typical compute share.
_CALIBRATED_FIELDS = (*FIT_FIELDS, "typical_compute_share")
_CALIBRATIONS: dict[str, tuple[str, dict[str, float]]] = {
    "A100-SXM4-80GB": (
        "Perseus gpt3-175b+a100_sxm_bf16 (608 rows, 855-1410 MHz; fit 0.93 % time / 1.17 % "
        "energy RMS); stall_dyn_w tied to the A40's measured stall/busy ratio 0.668",
        {
            "static_power_w": 43.1,
            "compute_dyn_w": 471.1,
            "stall_dyn_w": 314.9,
            "knee_mhz": 1115.0,
            "v_min_ratio": 0.816,
            "power_cap_w": 473.7,
            "cap_sharpness": 114.5,
            "typical_compute_share": 0.88,
        },
    ),
    "A40": (
        "Perseus gpt3-175b+a40_bf16 (960 rows, 855-1740 MHz; fit 1.40 % time / 1.49 % energy RMS)",
        {
            "static_power_w": 62.0,
            "compute_dyn_w": 365.6,
            "stall_dyn_w": 244.3,
            "knee_mhz": 1146.0,
            "v_min_ratio": 0.790,
            "power_cap_w": 295.1,
            "cap_sharpness": 80.7,
            "typical_compute_share": 0.40,
        },
    ),
}
#: The calibrated board whose shape each uncalibrated board borrows (nearest in die and memory).
_DONOR = {
    "A100-SXM4-40GB": "A100-SXM4-80GB",
    "A100-PCIe-40GB": "A100-SXM4-80GB",
    "A100-PCIe-80GB": "A100-SXM4-80GB",
    "H100-SXM5": "A100-SXM4-80GB",
    "H100-PCIe": "A100-SXM4-80GB",
    "H200-SXM": "A100-SXM4-80GB",
    "V100-SXM2": "A100-SXM4-80GB",
    "V100-PCIe": "A100-SXM4-80GB",
    "L40S": "A40",
    "A10G": "A40",
    "L4": "A40",
    "RTX-4090": "A40",
}

# --- per-GPU published inputs -------------------------------------------------------------------
_IDLE_SRC = "typical nvidia-smi idle reading (approximate; published measurements vary +-20%)"
_IDLE_W = {
    "A100-SXM4-40GB": 50.0,
    "A100-SXM4-80GB": 60.0,
    "A100-PCIe-40GB": 35.0,
    "A100-PCIe-80GB": 45.0,
    "H100-SXM5": 70.0,
    "H100-PCIe": 45.0,
    "H200-SXM": 75.0,
    "A40": 30.0,
    "L40S": 35.0,
    "A10G": 25.0,
    "V100-SXM2": 40.0,
    "V100-PCIe": 35.0,
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
_GDDR6 = ("A40", "L40S", "A10G", "L4")
#: Measured blocked-on-communication power (Perseus artifact's emulation constants).
_BLOCKED_W = {"A100-SXM4-80GB": 83.64, "A40": 70.38}
_BLOCKED_SRC = "Perseus (SOSP'24) artifact emulation: power of a GPU blocked on communication"
_CAP_SRC_TDP = "default board power limit = datasheet TDP (spec table)"
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


def _memory_kind(spec: GPUSpec) -> str:
    if spec.name == "RTX-4090":
        return "gddr6x"
    return "gddr6" if spec.name in _GDDR6 else "hbm"


def _same_die(a: GPUSpec, b: GPUSpec) -> bool:
    return (a.arch, a.sm_count, a.max_clock_mhz) == (b.arch, b.sm_count, b.max_clock_mhz)


def _shape(spec: GPUSpec, donor: GPUSpec, fit: dict[str, float]) -> dict[str, tuple[float, str]]:
    """An uncalibrated board's shape fields from its donor's calibration."""
    tag = f"uncalibrated: shape borrowed from {donor.name}"
    if _same_die(spec, donor):
        same = f"{tag} (same die: same watts and MHz)"
        out = {k: (fit[k], same) for k in _CALIBRATED_FIELDS if k != "power_cap_w"}
        out["static_power_w"] = (fit["static_power_w"], same)
        return out
    d_c = fit["compute_dyn_w"] * spec.tdp_w / donor.tdp_w
    idle_ratio = _IDLE_W[spec.name] / _IDLE_W[donor.name]
    return {
        "compute_dyn_w": (d_c, f"{tag}: its busy dynamic power x TDP / {donor.tdp_w:g} W"),
        "stall_dyn_w": (
            d_c * fit["stall_dyn_w"] / fit["compute_dyn_w"],
            f"{tag}: its stall/busy power ratio",
        ),
        "static_power_w": (fit["static_power_w"] * idle_ratio, f"{tag}: its static x idle ratio"),
        "knee_mhz": (
            round(fit["knee_mhz"] / donor.max_clock_mhz * spec.max_clock_mhz),
            f"{tag}: knee at the same fraction of the max clock",
        ),
        "v_min_ratio": (fit["v_min_ratio"], tag),
        "cap_sharpness": (fit["cap_sharpness"], tag),
        "typical_compute_share": (fit["typical_compute_share"], tag),
    }


def borrowed_power_params(gpu: str | GPUSpec, donor: str) -> PowerParams:
    """``gpu``'s parameters as if uncalibrated, with the shape of the calibrated ``donor``.

    What every uncalibrated board gets; on a calibrated board it measures how well the shape
    transfers (bench/one_point_error.py --cross).
    """
    if donor not in _CALIBRATIONS:
        raise UnknownGPUError(f"{donor!r} is not calibrated; calibrated: {list(_CALIBRATIONS)}")
    return _derive(get_gpu(gpu), donor)


def _blocked(spec: GPUSpec, donor: GPUSpec, idle: float) -> tuple[float, str]:
    """Power while blocked on communication: measured, the same die's, or scaled by idle."""
    if spec.name in _BLOCKED_W:
        return _BLOCKED_W[spec.name], _BLOCKED_SRC
    measured = _BLOCKED_W[donor.name]
    if _same_die(spec, donor):
        return measured, f"{donor.name}'s measured {measured} W (same die)"
    return (
        measured * idle / _IDLE_W[donor.name],
        f"{donor.name}'s measured {measured} W x idle / its idle",
    )


def _derive(spec: GPUSpec, force_donor: str | None = None) -> PowerParams:
    """Parameters for ``spec``: its own calibration, or its donor's shape on its numbers."""
    own = None if force_donor else _CALIBRATIONS.get(spec.name)
    donor_name = spec.name if own else (force_donor or _DONOR[spec.name])
    where, fit = _CALIBRATIONS[donor_name]
    donor = get_gpu(donor_name)
    if own:
        values = {k: (fit[k], f"calibrated on {where}") for k in _CALIBRATED_FIELDS}
    else:
        values = _shape(spec, donor, fit)
        values["power_cap_w"] = (spec.tdp_w, _CAP_SRC_TDP)
    idle = _IDLE_W[spec.name]
    values["idle_power_w"] = (idle, _IDLE_SRC)
    values["blocked_power_w"] = _blocked(spec, donor, idle)
    kind = _memory_kind(spec)
    values["memory_dyn_w"] = (
        spec.mem_bandwidth_bps * 8 * _PJ_PER_BIT[kind] * 1e-12,
        _PJ_SRC[kind],
    )
    values.update(_COMMON)
    return PowerParams(
        gpu=spec.name,
        **{k: v for k, (v, _) in values.items()},  # type: ignore[arg-type]
        calibration=f"calibrated on {where}" if own else "",
        shape_from="" if own else donor_name,
        sources=tuple((k, s) for k, (_, s) in values.items()),
    )


_CUSTOM: dict[str, PowerParams] = {}


def register_power_params(params: PowerParams) -> PowerParams:
    """Use ``params`` for GPU ``params.gpu`` (a GPU added with ``register_gpu`` needs this)."""
    _CUSTOM[get_gpu(params.gpu).name] = params
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
            f"GPU {spec.name!r} has no power-model parameters. Calibrate it from a measured "
            "clock sweep (`fxenergy profile calibrate SWEEP.csv --gpu NAME --out board.json`, "
            "then pass --gpu-params board.json), or build a "
            "fxenergy.hardware.power_params.PowerParams and call register_power_params(params)."
        )
    return _derive(spec)


def calibration_note(gpu: str | GPUSpec, params: PowerParams | None = None) -> str:
    """One line saying whether ``gpu``'s DVFS model is calibrated, and on what.

    ``"calibrated on ..."`` or ``"uncalibrated: shape borrowed from X ..."``; print it beside
    every figure that depends on the model. Never raises.
    """
    try:
        p = params or get_power_params(gpu)
        name = get_gpu(gpu).name
    except UnknownGPUError:
        return f"{gpu}: no DVFS power parameters (not in the table; see `fxenergy gpus`)"
    if p.calibrated:
        return f"{name}: DVFS model {p.calibration}"
    if p.shape_from:
        return (
            f"{name}: uncalibrated: shape borrowed from {p.shape_from} (calibrate with "
            "`fxenergy profile calibrate`; docs/dvfs.md)"
        )
    return f"{name}: uncalibrated: power parameters given by the caller, not fitted"
