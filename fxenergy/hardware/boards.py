"""Calibrated board files: fit once with ``fxenergy profile calibrate``, use everywhere.

``fxenergy profile calibrate SWEEP.csv --gpu A100-PCIe-80GB --out board.json`` fits the board's
power parameters to a measured clock sweep (:func:`fxenergy.hardware.calibrate.fit_profile`) and
writes them, with the datasheet record and the fit error, to a JSON file. ``--gpu-params
board.json`` (CLI) or ``gpu_params="board.json"`` (Python API) loads it with :func:`load_board`,
which registers the spec and the parameters under the board's name, so every consumer of that
``gpu`` name (cost annotation, DVFS model, planners, simulator) uses the calibrated board.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

from fxenergy.errors import FxEnergyError
from fxenergy.hardware.calibrate import CalibrationResult
from fxenergy.hardware.power_params import PowerParams, register_power_params
from fxenergy.hardware.specs import GPUSpec, register_gpu

FORMAT = "fxenergy-board/1"


def board_dict(
    spec: GPUSpec, result: CalibrationResult, source: str, stall_note: str = ""
) -> dict[str, object]:
    """The JSON-able record of a calibration of ``spec`` on the sweep ``source``."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    where = (
        f"{source} ({result.points} rows, fit {result.time_rms_pct:.2f} % time / "
        f"{result.energy_rms_pct:.2f} % energy RMS, {when})"
    )
    params = result.params.replace(calibration=f"calibrated on {where}", shape_from="")
    srcs = dict(result.params.sources)
    for field, value in dict(result.params.sources).items():
        if value == "overridden by the caller":
            srcs[field] = f"calibrated on {where}"
    srcs["typical_compute_share"] = f"mean compute share of the fitted computations of {source}"
    if stall_note:
        srcs["stall_dyn_w"] = f"{stall_note}; calibrated on {where}"
    params = dataclasses.replace(params, sources=tuple(srcs.items()))
    return {
        "format": FORMAT,
        "spec": {**dataclasses.asdict(spec), "sources": list(spec.sources)},
        "power_params": params.as_dict(),
        "fit": {
            "profile": source,
            "rows": result.points,
            "time_rms_pct": result.time_rms_pct,
            "energy_rms_pct": result.energy_rms_pct,
            "time_max_pct": result.time_max_pct,
            "energy_max_pct": result.energy_max_pct,
        },
    }


def save_board(
    path: str | Path, spec: GPUSpec, result: CalibrationResult, source: str, stall_note: str = ""
) -> None:
    """Write a calibrated board file (see :func:`board_dict`)."""
    record = board_dict(spec, result, source, stall_note)
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


def load_board(path: str | Path) -> str:
    """Register the board in ``path`` (spec and power parameters); return its name.

    Raises:
        FxEnergyError: the file is missing or is not a board file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        raw = dict(data["spec"])
        raw["nvml_names"] = tuple(raw.get("nvml_names", ()))
        raw["sources"] = tuple(raw.get("sources", ()))
        spec = GPUSpec(**raw)
        params = PowerParams.from_dict(data["power_params"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FxEnergyError(
            f"cannot read board file {path}: {exc}. Write one with `fxenergy profile calibrate "
            "SWEEP.csv --gpu NAME --out board.json`."
        ) from exc
    register_gpu(spec)
    register_power_params(dataclasses.replace(params, gpu=spec.name))
    return spec.name


def resolve_gpu(gpu: str | None, gpu_params: str | Path | None) -> str | None:
    """The GPU name to use: ``gpu``, or the board in the file ``gpu_params`` (which wins).

    Loading the file registers the board, so the name it returns works wherever a spec-table
    name does.
    """
    return gpu if gpu_params is None else load_board(gpu_params)
