"""``NvmlBackend``: lock a real GPU's SM clock through nvidia-ml-py and read its energy counter.

The SM clock is locked with ``nvmlDeviceSetGpuLockedClocks(min=max=f)``; the memory clock is
locked at its maximum the first time (where the GPU supports it) so that only the SM clock
moves. Locking needs root or CAP_SYS_ADMIN; without it the first ``set_clock`` raises
:class:`~fxenergy.errors.NvmlPermissionError` and nothing is changed.

``reset`` puts back what NVML lets us read back. NVML has **no getter for locked clocks**
(``nvmlDeviceSetGpuLockedClocks`` / ``SetMemoryLockedClocks`` can be set and reset, not read), so
whether the clocks were locked before this backend started is unknown: ``reset`` unlocks only
what this backend locked, and re-locks the range you pass as ``found_locked_mhz`` if you know
one was set. Applications clocks are readable (``nvmlDeviceGetApplicationsClock``): they are
read at start and, if they differ at reset, set back (``nvmlDeviceSetApplicationsClocks``).
The clocks are put back at exit and on SIGINT/SIGTERM even if the backend object was freed: a
small unlocker holding only the device handle is registered strongly with ``restore``.
Energy is the board's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta
and newer), which NVML refreshes about every 100 ms.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from fxenergy.errors import NvmlError, NvmlPermissionError, UnknownGPUError
from fxenergy.hardware import GPUSpec, get_gpu
from fxenergy.runtime import restore
from fxenergy.runtime.backend import FrequencyBackend, SwitchEvent, nearest_clock_mhz

try:
    import pynvml
except ImportError:  # nvidia-ml-py is an optional dependency
    pynvml = None  # type: ignore[assignment]

log = logging.getLogger("fxenergy.runtime")

# Captured from the real module so that code keeps catching the real exception class and
# comparing real codes even while tests replace ``pynvml`` with an autospec mock.
_NVMLError: type[Exception] = pynvml.NVMLError if pynvml is not None else OSError
_NO_PERMISSION: int = getattr(pynvml, "NVML_ERROR_NO_PERMISSION", 4)
_NOT_SUPPORTED: int = getattr(pynvml, "NVML_ERROR_NOT_SUPPORTED", 3)
_FUNCTION_NOT_FOUND: int = getattr(pynvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)  # old driver

_SIM_HINT = "use get_backend('sim', gpu=...) to run on the simulated GPU instead"
_PERMISSION_HINT = (
    "changing GPU clocks needs root or CAP_SYS_ADMIN: run as root, or grant the capability "
    "(e.g. `docker run --cap-add SYS_ADMIN`); or " + _SIM_HINT
)


def _api() -> Any:
    if pynvml is None:
        raise NvmlError(
            "NVML needs the nvidia-ml-py package: `pip install nvidia-ml-py` "
            f"(or `pip install fxenergy[nvml]`); or {_SIM_HINT}"
        )
    return pynvml


def _code(exc: BaseException) -> int | None:
    return getattr(exc, "value", None)


def _torch_cuda_uuid() -> str | None:
    """NVML-style UUID of torch's current CUDA device; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
    except (AttributeError, RuntimeError) as exc:  # older torch, or a broken CUDA setup
        log.info("cannot read the CUDA device's UUID: %s", exc)
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


class _Unlocker:
    """What to put back on one device, and how; holds no reference to the backend or a model."""

    def __init__(self, handle: Any, name: str, found_locked_mhz: tuple[int, int] | None) -> None:
        self.handle = handle
        self.name = name
        self.found_locked_mhz = found_locked_mhz
        self.gpu_locked = False
        self.mem_locked = False
        self.app_clocks = self._read_app_clocks()

    def _read_app_clocks(self) -> tuple[int, int] | None:
        """(memory, graphics) applications clocks now; None where NVML cannot say."""
        api = _api()
        try:
            mem = api.nvmlDeviceGetApplicationsClock(self.handle, api.NVML_CLOCK_MEM)
            graphics = api.nvmlDeviceGetApplicationsClock(self.handle, api.NVML_CLOCK_GRAPHICS)
        except _NVMLError as exc:
            log.debug("%s: applications clocks not readable (%s)", self.name, exc)
            return None
        return int(mem), int(graphics)

    def restore(self) -> None:
        api = _api()
        if self.gpu_locked:
            if self.found_locked_mhz is not None:
                lo, hi = self.found_locked_mhz
                self._call(api.nvmlDeviceSetGpuLockedClocks, "re-lock the SM clock", lo, hi)
            else:
                self._call(api.nvmlDeviceResetGpuLockedClocks, "reset the SM clock")
            self.gpu_locked = False
        if self.mem_locked:
            self._call(api.nvmlDeviceResetMemoryLockedClocks, "reset the memory clock")
            self.mem_locked = False
        if self.app_clocks is not None and self._read_app_clocks() != self.app_clocks:
            self._call(
                api.nvmlDeviceSetApplicationsClocks, "restore applications clocks", *self.app_clocks
            )

    def _call(self, fn: Any, what: str, *args: int) -> None:
        try:
            fn(self.handle, *args)
        except _NVMLError as exc:
            log.error("fxenergy: could not %s of %s: %s", what, self.name, exc)


def _init() -> None:
    """Start NVML for one backend. NVML counts ``nvmlInit`` calls itself (and is thread-safe):
    each backend pairs its one ``nvmlInit`` with one :func:`_shutdown`."""
    try:
        _api().nvmlInit()
    except _NVMLError as exc:
        raise NvmlError(
            f"NVML could not start ({exc}): is there an NVIDIA GPU and driver on this "
            f"machine? {_SIM_HINT}"
        ) from exc


def _shutdown() -> None:
    """Release one backend's ``nvmlInit`` (NVML shuts down when the last one is released)."""
    try:
        _api().nvmlShutdown()
    except _NVMLError as exc:  # shutting down cannot be helped by raising
        log.debug("nvmlShutdown failed: %s", exc)


class NvmlBackend(FrequencyBackend):
    """One real GPU's SM clock and energy counter, through NVML.

    Args:
        device_index: NVML device index (NVML ignores ``CUDA_VISIBLE_DEVICES``); default: the
            GPU behind torch's current CUDA device (matched by UUID), else index 0.
        gpu: spec-table name to treat the GPU as; default: looked up from NVML's device name.
        lock_memory: also lock the memory clock at its maximum while the SM clock is locked.
        found_locked_mhz: the SM clock range an administrator had locked before (NVML cannot
            report it): ``reset`` locks it again instead of unlocking.

    Raises:
        NvmlError: nvidia-ml-py missing, no driver/GPU, or no GPU at ``device_index``.
        UnknownGPUError: the GPU is not in the spec table (the message says how to add it).
    """

    name = "nvml"
    simulated = False
    counter_update_period_s = 0.1

    def __init__(
        self,
        device_index: int | None = None,
        gpu: str | GPUSpec | None = None,
        *,
        lock_memory: bool = True,
        found_locked_mhz: tuple[int, int] | None = None,
    ) -> None:
        _init()
        self._open = True
        try:
            self._handle, self.device_index = self._device(device_index)
            self.nvml_name: str = str(_api().nvmlDeviceGetName(self._handle))
            self.gpu: GPUSpec = self._identify(gpu)
            self._mem_max_mhz, self._clocks = self._query_clocks()
        except BaseException:
            _shutdown()
            raise
        self.lock_memory = lock_memory
        self._current = self._clocks[0]
        self._unlocker = _Unlocker(self._handle, self.nvml_name, found_locked_mhz)
        self._trace: list[SwitchEvent] = []

    # --- setup ---------------------------------------------------------------------------------
    def _device(self, index: int | None) -> tuple[Any, int]:
        api = _api()
        if index is None:
            uuid = _torch_cuda_uuid()
            if uuid is not None:  # NVML numbers GPUs ignoring CUDA_VISIBLE_DEVICES; UUIDs agree
                try:
                    handle = api.nvmlDeviceGetHandleByUUID(uuid)
                    return handle, int(api.nvmlDeviceGetIndex(handle))
                except _NVMLError as exc:
                    log.info("NVML does not know CUDA device %s (%s); using index 0", uuid, exc)
            index = 0
        count = api.nvmlDeviceGetCount()
        if not 0 <= index < count:
            raise NvmlError(f"no GPU at NVML index {index}: NVML sees {count}; {_SIM_HINT}")
        return api.nvmlDeviceGetHandleByIndex(index), index

    def _identify(self, gpu: str | GPUSpec | None) -> GPUSpec:
        try:
            return get_gpu(gpu if gpu is not None else self.nvml_name)
        except UnknownGPUError as exc:
            raise UnknownGPUError(
                f"NVML reports GPU {self.nvml_name!r}, which fxenergy's spec table lacks "
                f"(pass gpu=NAME to treat it as a known one). {exc} Put {self.nvml_name!r} in "
                "the new spec's nvml_names so it is found automatically."
            ) from exc

    def _query_clocks(self) -> tuple[int | None, tuple[int, ...]]:
        api = _api()
        try:
            mem = sorted({int(c) for c in api.nvmlDeviceGetSupportedMemoryClocks(self._handle)})
            graphics = api.nvmlDeviceGetSupportedGraphicsClocks(self._handle, mem[-1])
        except _NVMLError as exc:
            if _code(exc) != _NOT_SUPPORTED:
                raise NvmlError(f"NVML could not list supported clocks: {exc}") from exc
            log.info("%s does not list its clocks; using the spec table's", self.nvml_name)
            return None, self.gpu.supported_clocks_mhz()
        return mem[-1], tuple(sorted({int(c) for c in graphics}, reverse=True))

    # --- FrequencyBackend ----------------------------------------------------------------------
    def supported_clocks_mhz(self) -> tuple[int, ...]:
        return self._clocks

    @property
    def current_clock_mhz(self) -> int:
        """The locked SM clock; while unlocked, the highest supported clock (the GPU's default)."""
        return self._current

    @property
    def trace(self) -> list[SwitchEvent]:
        return self._trace

    def set_clock(self, mhz: int, label: str = "") -> int:
        """Lock the SM clock at the supported clock nearest ``mhz`` (a change is warned about).

        Raises:
            NvmlPermissionError: no root/CAP_SYS_ADMIN; nothing was changed.
            NvmlError: the GPU refused for another reason.
        """
        target = nearest_clock_mhz(self._clocks, mhz)
        requested = None
        if target != mhz:
            requested = round(float(mhz))
            msg = (
                f"{mhz} MHz is not a supported SM clock on {self.nvml_name}; "
                f"using the nearest supported clock, {target} MHz"
            )
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
        if self._unlocker.gpu_locked and target == self._current:
            return target  # a no-op switch: NVML is not called
        start = self.now_s()
        self._lock_gpu(target)
        self._lock_memory()
        latency = self.now_s() - start
        self._trace.append(
            SwitchEvent(start, self._current, target, latency, 0.0, label, requested)
        )
        self._current = target
        return target

    def _lock_gpu(self, mhz: int) -> None:
        try:
            _api().nvmlDeviceSetGpuLockedClocks(self._handle, mhz, mhz)
        except _NVMLError as exc:
            raise self._refused(f"lock the SM clock at {mhz} MHz", exc) from exc
        if not self._unlocker.gpu_locked:
            self._unlocker.gpu_locked = True
            restore.protect(self._unlocker, strong=True)

    def _lock_memory(self) -> None:
        if not self.lock_memory or self._unlocker.mem_locked or self._mem_max_mhz is None:
            return
        mhz = self._mem_max_mhz
        try:
            _api().nvmlDeviceSetMemoryLockedClocks(self._handle, mhz, mhz)
        except _NVMLError as exc:
            if _code(exc) in (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND):
                log.info("%s cannot lock its memory clock; leaving it free", self.nvml_name)
                self.lock_memory = False
                return
            self.reset()  # keep the promise: a refused call leaves nothing changed
            raise self._refused(f"lock the memory clock at {mhz} MHz", exc) from exc
        self._unlocker.mem_locked = True

    def _refused(self, action: str, exc: BaseException) -> NvmlError:
        where = f"GPU {self.device_index} ({self.nvml_name})"
        if _code(exc) == _NO_PERMISSION:
            return NvmlPermissionError(
                f"NVML refused to {action} on {where}: {_PERMISSION_HINT}. Nothing was changed."
            )
        if _code(exc) == _NOT_SUPPORTED:
            return NvmlError(f"{where} does not support locking clocks ({action}); {_SIM_HINT}")
        return NvmlError(f"NVML failed to {action} on {where}: {exc}")

    def reset(self) -> None:
        """Put back what this backend found (errors are logged: this runs on exit paths)."""
        self._unlocker.restore()
        self._current = self._clocks[0]
        restore.release(self._unlocker)

    def restore(self) -> None:
        """Restorer protocol (atexit, signals): same as :meth:`reset`."""
        self.reset()

    def energy_j(self) -> float:
        """The board's total-energy counter in joules since the driver loaded."""
        try:
            return _api().nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
        except _NVMLError as exc:
            raise NvmlError(
                f"{self.nvml_name} has no readable total-energy counter (Volta or newer "
                f"needed): {exc}"
            ) from exc

    def describe(self) -> str:
        return f"nvml: {self.nvml_name} (device {self.device_index}, spec {self.gpu.name})"

    def close(self) -> None:
        """Reset the clocks and release NVML."""
        if self._open:
            self.reset()
            self._open = False
            _shutdown()
