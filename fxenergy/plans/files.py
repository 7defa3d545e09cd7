"""Reading any saved plan: a graph :class:`~fxenergy.plans.plan.Plan` or a pipeline plan.

A pipeline plan is the JSON document ``PipelinePlan.to_json()`` writes (schema
``fxenergy.pipeline-plan/1``); :func:`load_pipeline_plan` checks it on load (schema, fields, a
known clock for every computation) so a runner never meets a bare ``KeyError``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fxenergy.errors import InvalidPlanError, UnknownGPUError
from fxenergy.plans.plan import Plan, _plan_from_dict, read_plan_text

PIPELINE_SCHEMA = "fxenergy.pipeline-plan/1"
_PIPELINE_KEYS = ("schedule", "num_stages", "num_microbatches", "dag_fingerprint", "ranks")
_ACTION = re.compile(r"\d+[FB]\d+")


def _read_json(path: str | Path) -> Any:
    try:
        return json.loads(read_plan_text(path))
    except json.JSONDecodeError as exc:
        raise InvalidPlanError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
            "the file is truncated or corrupt; save the plan again"
        ) from None


def load_plan_file(path: str | Path) -> Plan | dict[str, Any]:
    """A checked graph plan (:class:`Plan`) or pipeline plan (dict), whichever ``path`` holds."""
    data = _read_json(path)
    if isinstance(data, dict) and "schema" in data:
        return check_pipeline_plan(data, str(path))
    plan = _plan_from_dict(data, str(path))
    plan.validate(str(path))
    return plan


def load_pipeline_plan(path: str | Path, gpu: str | None = None) -> dict[str, Any]:
    """A pipeline plan read from ``path`` and checked (clocks against ``gpu`` if given)."""
    return check_pipeline_plan(_read_json(path), str(path), gpu)


def check_pipeline_plan(doc: Any, source: str, gpu: str | None = None) -> dict[str, Any]:
    """``doc`` if it is a well-formed pipeline plan, else :class:`InvalidPlanError`."""
    if not isinstance(doc, dict) or doc.get("schema") != PIPELINE_SCHEMA:
        found = doc.get("schema", doc.get("schema_version")) if isinstance(doc, dict) else None
        raise InvalidPlanError(
            f"{source} is not a pipeline plan (schema {found!r}, expected {PIPELINE_SCHEMA!r}); "
            "write one with `fxenergy pipeline ... --out plan.json`"
        )
    missing = [k for k in _PIPELINE_KEYS if k not in doc]
    if missing:
        raise InvalidPlanError(f"{source} lacks {', '.join(map(repr, missing))}; plan again")
    for rank, entries in enumerate(doc["ranks"]):
        for e in entries:
            ok = isinstance(e, dict) and _ACTION.fullmatch(str(e.get("action", "")))
            if not ok or not isinstance(e.get("freq_mhz"), int) or e["freq_mhz"] <= 0:
                raise InvalidPlanError(
                    f"{source}: rank {rank} has a malformed entry {e!r}; plan again"
                )
    if gpu is not None:
        _check_clocks(doc, source, gpu)
    return doc


def _check_clocks(doc: dict[str, Any], source: str, gpu: str) -> None:
    from fxenergy.hardware.specs import get_gpu

    try:
        spec = get_gpu(gpu)
    except UnknownGPUError as exc:
        raise InvalidPlanError(f"{source}: {exc}") from None
    supported = set(spec.supported_clocks_mhz())
    bad = sorted({e["freq_mhz"] for r in doc["ranks"] for e in r} - supported)
    if bad:
        raise InvalidPlanError(
            f"{source} asks for SM clock(s) {', '.join(map(str, bad))} MHz, which the "
            f"{spec.name} does not support; plan again for this GPU"
        )
