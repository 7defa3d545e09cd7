"""GPU spec table and the DVFS (time and power vs SM clock) model."""

from fxenergy.hardware import specs_boards  # noqa: F401 - registers more boards
from fxenergy.hardware.specs import GPUSpec, dtype_key, get_gpu, known_gpus, register_gpu

__all__ = ["GPUSpec", "dtype_key", "get_gpu", "known_gpus", "register_gpu"]
