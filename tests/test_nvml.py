"""NvmlBackend against ``pynvml`` mocked with autospec (the real module's signatures)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from unittest import mock

import pynvml
import pytest

from fxenergy.errors import NvmlError, NvmlPermissionError, UnknownGPUError
from fxenergy.runtime import nvml, restore
from fxenergy.runtime.factory import get_backend
from fxenergy.runtime.nvml import NvmlBackend
from fxenergy.runtime.sim import SimulatedBackend

HANDLE = object()
A100_CLOCKS = list(range(210, 1411, 15))  # NVML lists them lowest first on some drivers
MEM_CLOCKS = [1593, 1512, 810]


@pytest.fixture(scope="module")
def _autospec() -> mock.MagicMock:
    # create_autospec of the whole module takes ~1 s: build it once, reset it per test.
    return mock.create_autospec(pynvml)


@pytest.fixture
def fake(_autospec: mock.MagicMock) -> Iterator[mock.MagicMock]:
    _autospec.reset_mock(return_value=True, side_effect=True)
    _autospec.nvmlDeviceGetCount.return_value = 1
    _autospec.nvmlDeviceGetHandleByIndex.return_value = HANDLE
    _autospec.nvmlDeviceGetName.return_value = "NVIDIA A100-SXM4-80GB"
    _autospec.nvmlDeviceGetSupportedMemoryClocks.return_value = MEM_CLOCKS
    _autospec.nvmlDeviceGetSupportedGraphicsClocks.return_value = A100_CLOCKS
    _autospec.nvmlDeviceGetTotalEnergyConsumption.return_value = 123_456
    _autospec.NVML_CLOCK_GRAPHICS, _autospec.NVML_CLOCK_MEM = 0, 2
    app = {0: 1095, 2: 1593}  # applications clocks as found (graphics, memory)
    _autospec.nvmlDeviceGetApplicationsClock.side_effect = lambda handle, kind: app[kind]
    with mock.patch.object(nvml, "pynvml", _autospec):
        yield _autospec


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    yield
    restore.uninstall()


def _clock_calls(fake: mock.MagicMock) -> list[tuple]:
    """Every lock/reset call, in order, as (name, *args)."""
    return [(c[0], *c[1]) for c in fake.mock_calls if "LockedClocks" in c[0]]


def test_set_and_reset_sequence(fake: mock.MagicMock) -> None:
    b = NvmlBackend()
    assert b.gpu.name == "A100-SXM4-80GB"
    assert b.supported_clocks_mhz()[0] == 1410 and b.supported_clocks_mhz()[-1] == 210
    fake.nvmlDeviceGetSupportedGraphicsClocks.assert_called_once_with(HANDLE, 1593)
    assert b.set_clock(1200, "p0") == 1200
    assert b.set_clock(1200, "p1") == 1200  # no-op: NVML not called again
    assert b.set_clock(900, "p2") == 900
    b.reset()
    assert _clock_calls(fake) == [
        ("nvmlDeviceSetGpuLockedClocks", HANDLE, 1200, 1200),
        ("nvmlDeviceSetMemoryLockedClocks", HANDLE, 1593, 1593),
        ("nvmlDeviceSetGpuLockedClocks", HANDLE, 900, 900),
        ("nvmlDeviceResetGpuLockedClocks", HANDLE),
        ("nvmlDeviceResetMemoryLockedClocks", HANDLE),
    ]
    assert [(e.from_mhz, e.to_mhz, e.label) for e in b.trace] == [
        (1410, 1200, "p0"),
        (1200, 900, "p2"),
    ]
    assert b.current_clock_mhz == 1410
    b.reset()  # idempotent: nothing locked, nothing called
    assert len(_clock_calls(fake)) == 5
    b.close()
    fake.nvmlShutdown.assert_called_once_with()


def test_each_backend_pairs_one_nvml_init_with_one_shutdown(fake: mock.MagicMock) -> None:
    """NVML counts inits itself: two backends init twice, and each close releases once."""
    a, b = NvmlBackend(), NvmlBackend()
    assert fake.nvmlInit.call_count == 2
    a.close()
    a.close()  # idempotent
    assert fake.nvmlShutdown.call_count == 1
    b.close()
    assert fake.nvmlShutdown.call_count == 2


def test_energy_counter_is_in_joules(fake: mock.MagicMock) -> None:
    assert NvmlBackend().energy_j() == pytest.approx(123.456)
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = pynvml.NVMLError(
        pynvml.NVML_ERROR_NOT_SUPPORTED
    )
    with pytest.raises(NvmlError, match="energy counter"):
        NvmlBackend().energy_j()


def test_no_permission_changes_nothing(fake: mock.MagicMock) -> None:
    fake.nvmlDeviceSetGpuLockedClocks.side_effect = pynvml.NVMLError(
        pynvml.NVML_ERROR_NO_PERMISSION
    )
    b = NvmlBackend()
    with pytest.raises(NvmlPermissionError, match="root or CAP_SYS_ADMIN") as info:
        b.set_clock(900)
    assert "Nothing was changed" in str(info.value)
    fake.nvmlDeviceSetMemoryLockedClocks.assert_not_called()
    assert b.current_clock_mhz == 1410 and b.trace == []
    assert restore.protected() == []  # nothing locked, so nothing to restore at exit
    b.reset()
    fake.nvmlDeviceResetGpuLockedClocks.assert_not_called()


def test_memory_lock_refused_undoes_the_sm_lock(fake: mock.MagicMock) -> None:
    fake.nvmlDeviceSetMemoryLockedClocks.side_effect = pynvml.NVMLError(
        pynvml.NVML_ERROR_NO_PERMISSION
    )
    b = NvmlBackend()
    with pytest.raises(NvmlPermissionError, match="Nothing was changed"):
        b.set_clock(900)
    fake.nvmlDeviceResetGpuLockedClocks.assert_called_once_with(HANDLE)
    assert b.current_clock_mhz == 1410 and b.trace == []


def test_memory_lock_unsupported_is_skipped(fake: mock.MagicMock) -> None:
    fake.nvmlDeviceSetMemoryLockedClocks.side_effect = pynvml.NVMLError(
        pynvml.NVML_ERROR_NOT_SUPPORTED
    )
    b = NvmlBackend()
    b.set_clock(900)
    b.set_clock(600)
    b.reset()
    assert fake.nvmlDeviceSetMemoryLockedClocks.call_count == 1  # tried once, then left alone
    fake.nvmlDeviceResetMemoryLockedClocks.assert_not_called()
    assert [e.to_mhz for e in b.trace] == [900, 600]


def test_unsupported_clock_goes_to_nearest_and_says_so(
    fake: mock.MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    b = NvmlBackend()
    with caplog.at_level(logging.WARNING, "fxenergy.runtime"):
        with pytest.warns(UserWarning, match="nearest supported clock, 1005 MHz"):
            assert b.set_clock(1000) == 1005
    assert "1000 MHz is not a supported SM clock" in caplog.text
    fake.nvmlDeviceSetGpuLockedClocks.assert_called_once_with(HANDLE, 1005, 1005)
    assert b.trace[-1].requested_mhz == 1000 and b.trace[-1].to_mhz == 1005
    with pytest.warns(UserWarning):
        assert b.set_clock(5000) == 1410  # above the range: the top clock


def test_unknown_gpu_names_known_ones_and_register_gpu(fake: mock.MagicMock) -> None:
    fake.nvmlDeviceGetName.return_value = "NVIDIA Imaginary X9"
    with pytest.raises(UnknownGPUError) as info:
        NvmlBackend()
    msg = str(info.value)
    assert "NVIDIA Imaginary X9" in msg and "register_gpu" in msg and "A100-SXM4-80GB" in msg
    fake.nvmlShutdown.assert_called_once_with()  # NVML released on the failed construction


def test_gpu_override_and_bad_index(fake: mock.MagicMock) -> None:
    fake.nvmlDeviceGetName.return_value = "NVIDIA Imaginary X9"
    assert NvmlBackend(gpu="A100-SXM4-80GB").gpu.name == "A100-SXM4-80GB"
    with pytest.raises(NvmlError, match="no GPU at NVML index 3: NVML sees 1"):
        NvmlBackend(device_index=3)


def test_default_device_is_torchs_cuda_device_by_uuid(
    fake: mock.MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.nvmlDeviceGetIndex.return_value = 2  # CUDA_VISIBLE_DEVICES=2: cuda:0 is NVML's GPU 2
    monkeypatch.setattr(nvml, "_torch_cuda_uuid", lambda: "GPU-1234")
    b = NvmlBackend()
    fake.nvmlDeviceGetHandleByUUID.assert_called_once_with("GPU-1234")
    assert b.device_index == 2
    fake.nvmlDeviceGetHandleByIndex.assert_not_called()
    monkeypatch.setattr(nvml, "_torch_cuda_uuid", lambda: None)  # no CUDA in torch: index 0
    assert NvmlBackend().device_index == 0
    fake.nvmlDeviceGetHandleByIndex.assert_called_once_with(0)


def test_nvml_missing_or_no_driver(
    fake: mock.MagicMock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake.nvmlInit.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(NvmlError, match="get_backend\\('sim'"):
        get_backend("nvml")
    with caplog.at_level(logging.WARNING, "fxenergy.runtime"):
        sim = get_backend("auto", gpu="A100-SXM4-40GB")
    assert isinstance(sim, SimulatedBackend) and sim.gpu.name == "A100-SXM4-40GB"
    assert "SIMULATED" in caplog.text and "NVML is not usable" in caplog.text
    monkeypatch.setattr(nvml, "pynvml", None)
    with pytest.raises(NvmlError, match="nvidia-ml-py"):
        get_backend("nvml")


def test_auto_picks_nvml_when_usable(fake: mock.MagicMock) -> None:
    backend = get_backend("auto")
    assert isinstance(backend, NvmlBackend) and not backend.simulated


def test_locked_clocks_are_protected_until_reset_even_if_the_backend_is_freed(
    fake: mock.MagicMock,
) -> None:
    b = NvmlBackend()
    b.set_clock(900)
    assert len(restore.protected()) == 1
    del b
    gc.collect()  # the backend is gone; its unlocker (the device handle only) is not
    assert restore.restore_all() == 1  # what atexit / a signal would do
    fake.nvmlDeviceResetGpuLockedClocks.assert_called_once_with(HANDLE)
    fake.nvmlDeviceResetMemoryLockedClocks.assert_called_once_with(HANDLE)
    assert restore.protected() == []


def test_reset_puts_back_what_it_found(fake: mock.MagicMock) -> None:
    b = NvmlBackend(found_locked_mhz=(1005, 1005))  # an admin had locked 1005 (unreadable)
    b.set_clock(900)
    # something changed the applications clocks meanwhile: they are put back as found
    changed = {0: 1410, 2: 1593}
    fake.nvmlDeviceGetApplicationsClock.side_effect = lambda handle, kind: changed[kind]
    b.reset()
    assert _clock_calls(fake)[-2:] == [
        ("nvmlDeviceSetGpuLockedClocks", HANDLE, 1005, 1005),  # re-locked, not unlocked
        ("nvmlDeviceResetMemoryLockedClocks", HANDLE),
    ]
    fake.nvmlDeviceResetGpuLockedClocks.assert_not_called()
    fake.nvmlDeviceSetApplicationsClocks.assert_called_once_with(HANDLE, 1593, 1095)


def test_applications_clocks_unreadable_are_left_alone(fake: mock.MagicMock) -> None:
    fake.nvmlDeviceGetApplicationsClock.side_effect = pynvml.NVMLError(3)  # not supported
    b = NvmlBackend()
    b.set_clock(900)
    b.reset()
    fake.nvmlDeviceSetApplicationsClocks.assert_not_called()
    fake.nvmlDeviceResetGpuLockedClocks.assert_called_once_with(HANDLE)


def _real_nvml_gpu() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
@pytest.mark.skipif(not _real_nvml_gpu(), reason="needs an NVIDIA GPU with NVML")
def test_real_gpu_clocks_and_energy_counter() -> None:
    import time

    b = NvmlBackend()
    try:
        clocks = b.supported_clocks_mhz()
        assert clocks == tuple(sorted(clocks, reverse=True)) and len(clocks) > 1
        e0 = b.energy_j()
        time.sleep(0.3)  # > the counter's ~100 ms update period
        assert b.energy_j() > e0
    finally:
        b.close()
