"""More boards for the spec table: A100 PCIe, H200, L40S, A10G, V100 PCIe (sources per number).

Registered on import (``fxenergy.hardware`` imports this module), after the boards of
:mod:`fxenergy.hardware.specs`; docs/gpus.md lists every number with its source.
"""

from __future__ import annotations

from fxenergy.hardware.specs import _A100_FLOPS, _A100_SRC, _H100_SXM_FLOPS, GPUSpec, register_gpu

_GiB = 1024**3
_MiB = 1024**2
T = 1e12

for _spec in (
    GPUSpec(
        name="A100-PCIe-40GB",
        arch="ampere",
        sm_count=108,
        peak_flops=dict(_A100_FLOPS),
        mem_bandwidth_bps=1555e9,
        memory_bytes=40 * _GiB,
        l2_bytes=40 * _MiB,
        tdp_w=250,
        min_clock_mhz=210,
        max_clock_mhz=1410,
        boost_clock_mhz=1410,
        mem_clock_mhz=1215,
        nvml_names=("NVIDIA A100-PCIE-40GB", "A100-PCIE-40GB"),
        sources=(*_A100_SRC, "NVIDIA A100 datasheet: PCIe 40GB board 250 W, 1,555 GB/s"),
    ),
    GPUSpec(
        name="A100-PCIe-80GB",
        arch="ampere",
        sm_count=108,
        peak_flops=dict(_A100_FLOPS),
        mem_bandwidth_bps=1935e9,
        memory_bytes=80 * _GiB,
        l2_bytes=40 * _MiB,
        tdp_w=300,
        min_clock_mhz=210,
        max_clock_mhz=1410,
        boost_clock_mhz=1410,
        mem_clock_mhz=1512,
        nvml_names=("NVIDIA A100 80GB PCIe", "A100 80GB PCIe", "A100-PCIe-80GB"),
        sources=(
            *_A100_SRC,
            "NVIDIA A100 80GB PCIe datasheet (2021): 300 W, 1,935 GB/s HBM2e, memory 1512 MHz",
        ),
    ),
    GPUSpec(
        name="H200-SXM",
        arch="hopper",
        sm_count=132,
        peak_flops=dict(_H100_SXM_FLOPS),
        mem_bandwidth_bps=4.8e12,
        memory_bytes=141 * 10**9,
        l2_bytes=50 * _MiB,
        tdp_w=700,
        min_clock_mhz=345,
        max_clock_mhz=1980,
        boost_clock_mhz=1980,
        mem_clock_mhz=3201,
        nvml_names=("NVIDIA H200", "H200", "H200-SXM"),
        sources=(
            "NVIDIA H200 Tensor Core GPU datasheet (2024): SXM 141 GB HBM3e, 4.8 TB/s, up to "
            "700 W; FP64 34 TF, FP32 67 TF, TF32 989 TF / BF16 1,979 TF / INT8 3,958 TOPS with "
            "sparsity (dense = half)",
            "same GH100 die as H100 SXM5 (132 SMs, 1980 MHz max boost, 50 MB L2: H100 "
            "architecture whitepaper); memory clock 3201 MHz as nvidia-smi reports on H200",
        ),
    ),
    GPUSpec(
        name="L40S",
        arch="ada",
        sm_count=142,
        peak_flops={
            "fp64": 1.431 * T,
            "fp32": 91.6 * T,
            "tf32": 183 * T,
            "fp16": 362.05 * T,
            "bf16": 362.05 * T,
            "int8": 733 * T,
        },
        mem_bandwidth_bps=864e9,
        memory_bytes=48 * _GiB,
        l2_bytes=96 * _MiB,
        tdp_w=350,
        min_clock_mhz=210,
        max_clock_mhz=2520,
        boost_clock_mhz=2520,
        mem_clock_mhz=9001,
        nvml_names=("NVIDIA L40S", "L40S"),
        sources=(
            "NVIDIA L40S datasheet (2023), dense = half the sparse figures: FP32 91.6 TF, "
            "TF32 183 TF, BF16/FP16 362.05 TF, INT8 733 TOPS, 864 GB/s GDDR6, 48 GB, 350 W",
            "NVIDIA Ada Lovelace whitepaper: AD102, 142 SMs in L40S, 2520 MHz boost, 96 MB L2; "
            "FP64 at 1/64 of FP32 (not in the datasheet)",
        ),
    ),
    GPUSpec(
        name="A10G",
        arch="ampere",
        sm_count=80,
        peak_flops={
            "fp64": 0.4875 * T,
            "fp32": 31.2 * T,
            "tf32": 62.5 * T,
            "fp16": 125 * T,
            "bf16": 125 * T,
            "int8": 250 * T,
        },
        mem_bandwidth_bps=600e9,
        memory_bytes=24 * _GiB,
        l2_bytes=6 * _MiB,
        tdp_w=300,
        min_clock_mhz=210,
        max_clock_mhz=1710,
        boost_clock_mhz=1710,
        mem_clock_mhz=6251,
        nvml_names=("NVIDIA A10G", "A10G"),
        sources=(
            "NVIDIA publishes no A10G datasheet (AWS g5 part); compute and memory from the A10 "
            "datasheet (same GA102 configuration, 80 SMs): FP32 31.2 TF, TF32 62.5 TF, BF16/FP16 "
            "125 TF, INT8 250 TOPS (dense), 600 GB/s GDDR6, 24 GB, 6 MB L2",
            "nvidia-smi on AWS g5 instances (user reports): power limit 300 W, max SM clock "
            "1710 MHz, memory 6251 MHz; approximate",
        ),
    ),
    GPUSpec(
        name="V100-PCIe",
        arch="volta",
        sm_count=80,
        peak_flops={
            "fp64": 7 * T,
            "fp32": 14 * T,
            "tf32": 14 * T,
            "fp16": 112 * T,
            "bf16": 14 * T,
            "int8": 56 * T,
        },
        mem_bandwidth_bps=900e9,
        memory_bytes=32 * _GiB,
        l2_bytes=6 * _MiB,
        tdp_w=250,
        min_clock_mhz=135,
        max_clock_mhz=1380,
        boost_clock_mhz=1380,
        mem_clock_mhz=877,
        nvml_names=("Tesla V100-PCIE-32GB", "Tesla V100-PCIE-16GB", "V100-PCIe"),
        sources=(
            "NVIDIA Tesla V100 datasheet: PCIe FP64 7 TF, FP32 14 TF, tensor 112 TF, 900 GB/s "
            "HBM2, 250 W; 1380 MHz boost (Volta whitepaper); BF16/TF32 run at the FP32 rate",
        ),
    ),
):
    register_gpu(_spec)
