"""A newcomer's error paths: each must exit non-zero with a one-line message that says what to
do, and no traceback. Most run the CLI in-process (`main([...])`, fast); a few run it exactly as a
user does, `python -m fxenergy ...` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fxenergy.plans.plan import SCHEMA_VERSION

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, as a user runs it."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FXENERGY_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "fxenergy", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def main_cli(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """The CLI in this process; an exception escaping ``main`` fails the test (a traceback)."""
    from fxenergy.cli import main

    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), rc, out.out, out.err)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    message = lines[-1]
    assert message.startswith("error:") or ": error: " in message, res.stderr
    # an fxenergy error is one line; an argparse one is the usage line(s) plus one error line
    assert len([ln for ln in lines if "error:" in ln]) == 1, res.stderr
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--input-shape", "2,x,32,32"], ["bad shape", "positive integers"]),
        (["--input-shape", "0,3,32,32"], ["at least 1"]),
        (["--max-slowdown", "5.0"], ["500% slower", "5%"]),
        (["--max-slowdown", "-0.01"], [">= 0"]),
        (["--max-slowdown", "fast"], ["fraction", "percentage"]),
        (["--gpu", "A100"], ["A100-SXM4-40GB or A100-SXM4-80GB"]),
        (["--out", "/nonexistent/dir/plan.json"], ["/nonexistent/dir", "does not exist"]),
        (["--trace", "/nonexistent/dir/t.json"], ["--trace", "does not exist"]),
        (["--backend", "nvml"], ["--backend sim"]),
    ],
    ids=[
        "x-in-shape",
        "zero-batch",
        "absurd-budget",
        "negative",
        "word",
        "gpu",
        "out",
        "trace",
        "nvml",
    ],
)
def test_optimize_refuses_before_capture(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, args: list[str], needles: list
) -> None:
    if args[0] == "--backend" and _has_nvml_gpu():
        pytest.skip("a usable NVIDIA GPU is present")
    import fxenergy.cli.report  # binds the real load_model first: both names are patched below
    import fxenergy.models.loader

    def no_load(*a: object, **k: object) -> None:
        raise AssertionError("loaded the model before refusing the command line")

    monkeypatch.setattr(fxenergy.models.loader, "load_model", no_load)
    monkeypatch.setattr(fxenergy.cli.report, "load_model", no_load)
    assert_one_line_error(main_cli(capsys, "optimize", "gpt-tiny", *args), *needles)


def test_as_a_user_runs_it() -> None:
    """In a subprocess: a library error and an argparse error, each one line, no traceback."""
    assert_one_line_error(run_cli("optimize", "gpt-tiny", "--gpu", "A100"), "A100-SXM4-40GB")
    assert_one_line_error(
        run_cli("pipeline", "nosuch.csv", "--blocked-power-w", "75"), "nosuch.csv", "not found"
    )


def _has_nvml_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def test_pipeline_and_profile_missing_files_and_folders(capsys: pytest.CaptureFixture) -> None:
    def run_cli(*args: str) -> subprocess.CompletedProcess:
        return main_cli(capsys, *args)

    assert_one_line_error(
        run_cli("profile", "extrapolate", "nosuch.csv", "--gpu", "A100-SXM4-80GB", "--out", "x"),
        "nosuch.csv",
    )
    res = run_cli(
        "pipeline", str(DATA), "--blocked-power-w", "75", "--out", "/nonexistent/dir/p.json"
    )
    assert_one_line_error(res, "/nonexistent/dir", "does not exist")
    res = run_cli("pipeline", str(DATA), "--blocked-power-w", "75", "--max-slowdown=-1%")
    assert_one_line_error(res, ">= 0")


def test_plan_files_are_checked_with_their_name(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    def run_cli(*args: str) -> subprocess.CompletedProcess:
        return main_cli(capsys, *args)

    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"fingerprint": "abc", "gpu": ')
    assert_one_line_error(run_cli("plan", "show", str(truncated)), "truncated.json", "not valid")
    no_parts = tmp_path / "noparts.json"
    no_parts.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "gpu": "A100-SXM4-80GB"}))
    assert_one_line_error(run_cli("plan", "show", str(no_parts)), "noparts.json", "'partitions'")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema_version": 1, "gpu": "A100-SXM4-80GB"}))
    assert_one_line_error(run_cli("plan", "show", str(old)), "old.json", "version 1", "re-plan")
    res = run_cli("optimize", "gpt-tiny", "--plan", str(tmp_path / "missing.json"))
    assert_one_line_error(res, "missing.json", "not found")


def test_capture_hint_names_cli_options() -> None:
    from fxenergy.cli._common import cli_words

    text = cli_words(
        "Try: method='export' or 'symbolic' alone to see one failure in full; pass non-tensor "
        "arguments (flags such as use_cache=False) through example_kwargs; use method='export'"
    )
    assert "--method export or --method symbolic" in text and "--kwarg KEY=VALUE" in text
    assert "method=" not in text and "example_kwargs" not in text
    nvml = "is there a GPU? use get_backend('sim', gpu=...) to run on the simulated GPU instead"
    assert "pass --backend sim" in cli_words(nvml)
    # the library's own hints, as they stand: no Python argument survives the rewording
    from fxenergy.graph import capture
    from fxenergy.runtime import nvml as nvml_backend

    for hint in (capture._HINT, nvml_backend._SIM_HINT):
        worded = cli_words(hint)
        assert "method=" not in worded and "example_kwargs" not in worded, worded
        assert "get_backend(" not in worded, worded


def test_gpu_names_are_printed_canonically() -> None:
    from fxenergy.cli._common import canonical_gpu

    assert canonical_gpu("h100-sxm5") == "H100-SXM5"
    assert canonical_gpu("a100 sxm4 80gb") == "A100-SXM4-80GB"
