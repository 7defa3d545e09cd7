"""GPU spec table and the DVFS (time and power vs SM clock) model."""

from fxenergy.hardware.specs import GPUSpec, dtype_key, get_gpu, known_gpus, register_gpu

__all__ = ["GPUSpec", "dtype_key", "get_gpu", "known_gpus", "register_gpu"]
