"""bench/gpu_check.py on CPU: read-only NVML use, measurement arithmetic, predictions, report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import pynvml
import pytest
import torch
from torch import nn

from fxenergy.api import annotate
from fxenergy.graph.capture import capture

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/data/gpu_check_format.json"


@pytest.fixture(scope="module")
def gc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_nvml() -> mock.MagicMock:
    api = mock.create_autospec(pynvml)
    api.NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    api.nvmlDeviceGetName.return_value = b"NVIDIA H200"
    api.nvmlDeviceGetClockInfo.return_value = 1755
    api.nvmlDeviceGetMaxClockInfo.return_value = 1980
    api.nvmlDeviceGetEnforcedPowerLimit.return_value = 700_000
    api.nvmlDeviceGetPowerUsage.return_value = 650_000
    counter = iter(range(10_000_000, 10**12, 3_000_000))  # mJ: +3 kJ per read
    api.nvmlDeviceGetTotalEnergyConsumption.side_effect = lambda h: next(counter)
    return api


def test_nvml_use_is_read_only(gc: ModuleType, fake_nvml: mock.MagicMock) -> None:
    nv = gc.ReadOnlyNvml(fake_nvml)
    assert nv.name() == "NVIDIA H200" and nv.sm_clock_mhz() == 1755
    assert nv.max_sm_clock_mhz() == 1980 and nv.power_limit_w() == 700.0
    assert nv.power_w() == 650.0 and nv.energy_j() == 10_000.0
    gc.measure(lambda: None, nv, lambda fn, n: 1.0 * n, seconds=0.05)
    nv.close()
    called = {c[0].split(".")[0] for c in fake_nvml.mock_calls}
    assert called <= set(gc.READ_ONLY_NVML)
    assert not any(w in name for name in called for w in ("Set", "Reset", "Lock"))


def test_measure_arithmetic(gc: ModuleType, fake_nvml: mock.MagicMock) -> None:
    nv = gc.ReadOnlyNvml(fake_nvml)
    calls: list[int] = []

    def timer(fn: object, n: int) -> float:
        calls.append(n)
        return 2.0 * n  # 2 ms per call

    m = gc.measure(lambda: None, nv, timer, seconds=0.05, batch=4)
    assert calls[0] == 2  # warm-up first, not counted
    assert m["iters"] == 4 * (len(calls) - 1)
    assert m["gpu_ms_per_iter"] == pytest.approx(2.0)
    assert m["energy_j_per_iter"] == pytest.approx(3000.0 / m["iters"])  # one counter step
    assert m["sm_clock_mhz"] == pytest.approx(1755.0)
    assert m["power_w"] == pytest.approx(3000.0 / m["wall_s"])


def test_predict_a_gemm_on_cpu(gc: ModuleType) -> None:
    class Mm(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.mm(x, y)

    a = torch.empty(4096, 4096, dtype=torch.bfloat16, device="meta")
    gm = annotate(capture(Mm(), (a, a)), "H200-SXM")
    lo, hi = gc.predict(gm, "H200-SXM", 900.0), gc.predict(gm, "H200-SXM", 1980.0)
    assert 0 < hi["roofline_ms"] <= hi["dvfs_ms"] < lo["dvfs_ms"]
    assert hi["dvfs_j"] == pytest.approx(hi["dvfs_ms"] / 1e3 * hi["dvfs_w"])
    assert hi["dvfs_unlocked_clock_mhz"] <= 1980.0 + 1e-6


def test_report_of_a_recorded_run(gc: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    text = gc.report(gc.load_record(FIXTURE))
    assert "NVIDIA H200 (table: H200-SXM)" in text and "uncalibrated" in text
    assert "clocks were not changed" in text
    gemm = next(line for line in text.splitlines() if line.startswith("gemm"))
    assert gemm.split()[1:4] == ["1750", "1804", "1.500"]
    assert "matmul_47 (aten.mm)" in text and "1.25" in text  # op row, ratio 2.0/1.6
    assert gc.main(["--from-json", str(FIXTURE)]) == 0
    assert "gpt2-forward" in capsys.readouterr().out


def test_report_rejects_other_files(gc: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a gpu_check record"):
        gc.load_record(bad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU with NVML")
def test_on_a_real_gpu_read_only(gc: ModuleType, tmp_path: Path) -> None:
    """Safe on a lent GPU: measures at the current clock, changes nothing."""
    out = tmp_path / "run.json"
    assert (
        gc.main(["--seconds", "0.5", "--only", "gemm", "--only", "elementwise", "--json", str(out)])
        == 0
    )
    record = gc.load_record(out)
    for w in record["workloads"]:
        assert w["measured"]["gpu_ms_per_iter"] > 0 and w["measured"]["energy_j_per_iter"] > 0
        assert w["predicted"]["dvfs_ms"] > 0
