"""GPU datasheet numbers, as data. Every number's source is in ``GPUSpec.sources`` and docs/gpus.md.

Peak FLOP/s are *dense* (NVIDIA quotes tensor-core numbers "with sparsity" at twice the dense
rate; we halve those) and are quoted at ``boost_clock_mhz``. Supported SM clocks are the range NVML
reports (``nvmlDeviceGetSupportedGraphicsClocks``), spaced by ``clock_step_mhz``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch

from fxenergy.errors import UnknownGPUError

_GiB = 1024**3
_MiB = 1024**2
T = 1e12

#: dtype keys of GPUSpec.peak_flops: "fp64", "fp32" (CUDA cores), "tf32", "fp16", "bf16", "int8"
#: (the last four on tensor cores; fp16/bf16 with fp32 accumulation).
DTYPE_KEYS = ("fp64", "fp32", "tf32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class GPUSpec:
    """Datasheet facts about one GPU model."""

    name: str
    arch: str
    sm_count: int
    peak_flops: dict[str, float]  #: dense FLOP/s at boost clock, by DTYPE_KEYS
    mem_bandwidth_bps: float  #: bytes/s
    memory_bytes: int
    l2_bytes: int
    tdp_w: float
    min_clock_mhz: int
    max_clock_mhz: int
    boost_clock_mhz: int
    mem_clock_mhz: int
    clock_step_mhz: int = 15
    nvml_names: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default_factory=tuple)

    def supported_clocks_mhz(self) -> tuple[int, ...]:
        """Supported SM clocks, highest first (NVML's order)."""
        clocks = range(self.max_clock_mhz, self.min_clock_mhz - 1, -self.clock_step_mhz)
        return tuple(clocks)

    def nearest_clock_mhz(self, mhz: float) -> int:
        """The supported clock nearest to ``mhz``."""
        return min(self.supported_clocks_mhz(), key=lambda c: (abs(c - mhz), -c))

    def matmul_flops(self, dtype: torch.dtype | str, allow_tf32: bool = False) -> float:
        """Peak FLOP/s of matrix work (tensor cores where the dtype has them)."""
        key = dtype_key(dtype)
        if key == "fp32" and allow_tf32:
            key = "tf32"
        return self.peak_flops.get(key, self.peak_flops["fp32"])

    def vector_flops(self, dtype: torch.dtype | str) -> float:
        """Peak FLOP/s of element-wise work (CUDA cores; fp64 at its own rate)."""
        return self.peak_flops["fp64"] if dtype_key(dtype) == "fp64" else self.peak_flops["fp32"]


def dtype_key(dtype: torch.dtype | str) -> str:
    """Map a torch dtype (or its name) to a DTYPE_KEYS entry."""
    name = str(dtype).replace("torch.", "")
    return {
        "float64": "fp64",
        "double": "fp64",
        "float32": "fp32",
        "float": "fp32",
        "float16": "fp16",
        "half": "fp16",
        "bfloat16": "bf16",
        "int8": "int8",
        "uint8": "int8",
    }.get(name, name if name in DTYPE_KEYS else "fp32")


_A100_SRC = (
    "NVIDIA A100 Tensor Core GPU datasheet (2021): FP64 9.7 TF, FP32 19.5 TF, TF32 156 TF, "
    "FP16/BF16 312 TF, INT8 624 TOPS, 400 W SXM, HBM2e 1,555 GB/s (40GB) / 2,039 GB/s (80GB)",
    "NVIDIA A100 Tensor Core GPU Architecture whitepaper: 108 SMs, 1410 MHz boost, 40 MB L2",
    "nvidia-smi -q -d SUPPORTED_CLOCKS on A100-SXM4: 1410..210 MHz in 15 MHz steps; memory "
    "1215 MHz (40GB) / 1593 MHz (80GB)",
)
_H100_SRC = (
    "NVIDIA H100 Tensor Core GPU datasheet (2023), dense = half the 'with sparsity' figures: "
    "SXM5 FP64 34 TF, FP32 67 TF, TF32 494.7 TF, FP16/BF16 989.4 TF, INT8 1,979 TOPS, "
    "3.35 TB/s, up to 700 W; PCIe FP64 26 TF, FP32 51 TF, TF32 378 TF, FP16/BF16 756 TF, "
    "INT8 1,513 TOPS, 2.0 TB/s, 350 W",
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper: 132 SMs (SXM5) / 114 SMs (PCIe), "
    "50 MB L2, max boost 1980 MHz (SXM5) / 1755 MHz (PCIe)",
    "nvidia-smi -q -d SUPPORTED_CLOCKS on H100: max..345 MHz in 15 MHz steps; memory "
    "2619 MHz (SXM5) / 1593 MHz (PCIe)",
)

_A100_FLOPS = {
    "fp64": 9.7 * T,
    "fp32": 19.5 * T,
    "tf32": 156 * T,
    "fp16": 312 * T,
    "bf16": 312 * T,
    "int8": 624 * T,
}
_H100_SXM_FLOPS = {
    "fp64": 34 * T,
    "fp32": 67 * T,
    "tf32": 494.7 * T,
    "fp16": 989.4 * T,
    "bf16": 989.4 * T,
    "int8": 1978.9 * T,
}

_SPECS: dict[str, GPUSpec] = {}


def register_gpu(spec: GPUSpec) -> GPUSpec:
    """Add a GPU to the table (how to support a GPU we do not ship)."""
    _SPECS[spec.name] = spec
    return spec


for _spec in (
    GPUSpec(
        name="A100-SXM4-40GB",
        arch="ampere",
        sm_count=108,
        peak_flops=dict(_A100_FLOPS),
        mem_bandwidth_bps=1555e9,
        memory_bytes=40 * _GiB,
        l2_bytes=40 * _MiB,
        tdp_w=400,
        min_clock_mhz=210,
        max_clock_mhz=1410,
        boost_clock_mhz=1410,
        mem_clock_mhz=1215,
        nvml_names=("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"),
        sources=_A100_SRC,
    ),
    GPUSpec(
        name="A100-SXM4-80GB",
        arch="ampere",
        sm_count=108,
        peak_flops=dict(_A100_FLOPS),
        mem_bandwidth_bps=2039e9,
        memory_bytes=80 * _GiB,
        l2_bytes=40 * _MiB,
        tdp_w=400,
        min_clock_mhz=210,
        max_clock_mhz=1410,
        boost_clock_mhz=1410,
        mem_clock_mhz=1593,
        nvml_names=("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
        sources=_A100_SRC,
    ),
    GPUSpec(
        name="H100-SXM5",
        arch="hopper",
        sm_count=132,
        peak_flops=dict(_H100_SXM_FLOPS),
        mem_bandwidth_bps=3.35e12,
        memory_bytes=80 * _GiB,
        l2_bytes=50 * _MiB,
        tdp_w=700,
        min_clock_mhz=345,
        max_clock_mhz=1980,
        boost_clock_mhz=1980,
        mem_clock_mhz=2619,
        nvml_names=("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB", "H100-SXM5"),
        sources=_H100_SRC,
    ),
    GPUSpec(
        name="H100-PCIe",
        arch="hopper",
        sm_count=114,
        peak_flops={
            "fp64": 26 * T,
            "fp32": 51 * T,
            "tf32": 378 * T,
            "fp16": 756 * T,
            "bf16": 756 * T,
            "int8": 1513 * T,
        },
        mem_bandwidth_bps=2.0e12,
        memory_bytes=80 * _GiB,
        l2_bytes=50 * _MiB,
        tdp_w=350,
        min_clock_mhz=345,
        max_clock_mhz=1755,
        boost_clock_mhz=1755,
        mem_clock_mhz=1593,
        nvml_names=("NVIDIA H100 PCIe", "H100-PCIe"),
        sources=_H100_SRC,
    ),
    GPUSpec(
        name="A40",
        arch="ampere",
        sm_count=84,
        peak_flops={
            "fp64": 0.5845 * T,
            "fp32": 37.4 * T,
            "tf32": 74.8 * T,
            "fp16": 149.7 * T,
            "bf16": 149.7 * T,
            "int8": 299.3 * T,
        },
        mem_bandwidth_bps=696e9,
        memory_bytes=48 * _GiB,
        l2_bytes=6 * _MiB,
        tdp_w=300,
        min_clock_mhz=210,
        max_clock_mhz=1740,
        boost_clock_mhz=1740,
        mem_clock_mhz=7251,
        nvml_names=("NVIDIA A40", "A40"),
        sources=(
            "NVIDIA A40 datasheet (2021): FP32 37.4 TF, TF32 74.8 TF, BF16/FP16 149.7 TF, "
            "INT8 299.3 TOPS (dense), 696 GB/s GDDR6, 48 GB, 300 W",
            "NVIDIA Ampere GA102 whitepaper: 84 SMs, 1740 MHz boost, 6 MB L2, FP64 1/64 rate",
        ),
    ),
    GPUSpec(
        name="V100-SXM2",
        arch="volta",
        sm_count=80,
        peak_flops={
            "fp64": 7.8 * T,
            "fp32": 15.7 * T,
            "tf32": 15.7 * T,
            "fp16": 125 * T,
            "bf16": 15.7 * T,
            "int8": 62.8 * T,
        },
        mem_bandwidth_bps=900e9,
        memory_bytes=32 * _GiB,
        l2_bytes=6 * _MiB,
        tdp_w=300,
        min_clock_mhz=135,
        max_clock_mhz=1530,
        boost_clock_mhz=1530,
        mem_clock_mhz=877,
        nvml_names=("Tesla V100-SXM2-32GB", "Tesla V100-SXM2-16GB", "V100-SXM2"),
        sources=(
            "NVIDIA Tesla V100 datasheet: SXM2 FP64 7.8 TF, FP32 15.7 TF, tensor 125 TF, "
            "900 GB/s HBM2, 300 W",
            "NVIDIA Tesla V100 (Volta) whitepaper: 80 SMs, 1530 MHz boost, 6 MB L2; no TF32 or "
            "BF16 tensor cores (those dtypes run at the FP32 rate); INT8 via dp4a at 4x FP32",
            "nvidia-smi -q -d SUPPORTED_CLOCKS on V100-SXM2: 1530..135 MHz; memory 877 MHz",
        ),
    ),
    GPUSpec(
        name="L4",
        arch="ada",
        sm_count=58,
        peak_flops={
            "fp64": 0.473 * T,
            "fp32": 30.3 * T,
            "tf32": 60 * T,
            "fp16": 121 * T,
            "bf16": 121 * T,
            "int8": 242.5 * T,
        },
        mem_bandwidth_bps=300e9,
        memory_bytes=24 * _GiB,
        l2_bytes=48 * _MiB,
        tdp_w=72,
        min_clock_mhz=210,
        max_clock_mhz=2040,
        boost_clock_mhz=2040,
        mem_clock_mhz=6251,
        nvml_names=("NVIDIA L4", "L4"),
        sources=(
            "NVIDIA L4 datasheet (2023), dense = half the sparse figures: FP32 30.3 TF, "
            "TF32 60 TF, FP16/BF16 121 TF, INT8 242.5 TOPS, 300 GB/s, 24 GB, 72 W",
            "NVIDIA Ada Lovelace whitepaper: AD104 L4 58 SMs, 2040 MHz boost, 48 MB L2",
        ),
    ),
    GPUSpec(
        name="RTX-4090",
        arch="ada",
        sm_count=128,
        peak_flops={
            "fp64": 1.29 * T,
            "fp32": 82.6 * T,
            "tf32": 82.6 * T,
            "fp16": 165.2 * T,
            "bf16": 165.2 * T,
            "int8": 660.6 * T,
        },
        mem_bandwidth_bps=1008e9,
        memory_bytes=24 * _GiB,
        l2_bytes=72 * _MiB,
        tdp_w=450,
        min_clock_mhz=210,
        max_clock_mhz=2520,
        boost_clock_mhz=2520,
        mem_clock_mhz=10501,
        nvml_names=("NVIDIA GeForce RTX 4090", "RTX-4090"),
        sources=(
            "NVIDIA Ada Lovelace GPU architecture whitepaper v2.1, appendix table 2 (RTX 4090): "
            "128 SMs, 2520 MHz boost, FP32 82.6 TF, TF32 82.6 TF, FP16/BF16 tensor with FP32 "
            "accumulate 165.2 TF, INT8 660.6 TOPS, 1008 GB/s GDDR6X, 72 MB L2, 450 W",
        ),
    ),
):
    register_gpu(_spec)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def known_gpus() -> list[str]:
    """Names of every GPU in the spec table."""
    return list(_SPECS)


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    """Look a GPU up by table name or NVML name (case and punctuation ignored).

    Raises:
        UnknownGPUError: listing the known GPUs and how to add one.
    """
    if isinstance(name, GPUSpec):
        return name
    key = _norm(name)
    for spec in _SPECS.values():
        if key == _norm(spec.name) or key in {_norm(n) for n in spec.nvml_names}:
            return spec
    close = difflib.get_close_matches(name, list(_SPECS), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownGPUError(
        f"unknown GPU {name!r}.{hint} Known GPUs: {', '.join(_SPECS)}. To add one, build a "
        "fxenergy.hardware.GPUSpec from its datasheet and call "
        "fxenergy.hardware.register_gpu(spec) (see docs/gpus.md)."
    )
