"""fxenergy.report data/rendering and the `fxenergy report` / `fxenergy models` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from fxenergy.cli import main
from fxenergy.graph import meta
from fxenergy.graph.capture import capture
from fxenergy.models import get_model
from fxenergy.report import (
    analysis_pipeline,
    analyze,
    build_report,
    render_json,
    render_tables,
    rollup,
)

REQUIRED_TOTALS = {
    "flops", "macs", "bytes_read", "bytes_written", "params", "nodes", "peak_memory_bytes",
    "roofline_time_s", "uncounted_ops", "critical_path_s",
}  # fmt: skip


@pytest.fixture(scope="module")
def gpt_gm() -> torch.fx.GraphModule:
    spec = get_model("gpt-tiny")
    args, kwargs = spec.example_inputs()
    return analyze(capture(spec.build(), args, kwargs, method="symbolic"), "H100-SXM5")


def test_pipeline_includes_registered_redundancy_pass() -> None:
    text = analysis_pipeline("L4")
    assert text.startswith("annotate-cost{gpu=L4},critical-path,memory-timeline")
    from fxenergy.graph.pass_infra import registered_passes

    assert ("find-redundancy" in text) == ("find-redundancy" in registered_passes())


def test_totals_agree_with_node_rows(gpt_gm: torch.fx.GraphModule) -> None:
    report = build_report(gpt_gm, title="gpt-tiny")
    t = report.totals
    assert REQUIRED_TOTALS <= t.keys()
    ops = [r for r in report.nodes if "flops" in r]
    assert t["flops"] == sum(r["flops"] for r in ops)
    assert t["bytes_read"] == sum(r["bytes_read"] for r in ops)
    assert t["nodes"] == len(report.nodes) == len(gpt_gm.graph.nodes)
    assert math.isclose(t["roofline_time_s"], sum(r["time_s"] for r in ops), rel_tol=1e-9)
    assert 0 < t["critical_path_s"] <= t["roofline_time_s"] * (1 + 1e-9)
    assert t["peak_memory_bytes"] == max(r["live_bytes"] for r in report.nodes)
    assert t["gpu"] == "H100-SXM5"
    path_time = sum(r["time_s"] for r in report.nodes if r["name"] in set(report.critical_path))
    assert math.isclose(path_time, t["critical_path_s"], rel_tol=1e-9)
    assert all(r["critical"] for r in report.nodes if r["name"] in set(report.critical_path))


@pytest.mark.parametrize("group_by", ["module", "op"])
def test_rollup_shares_sum_to_one(gpt_gm: torch.fx.GraphModule, group_by: str) -> None:
    report = build_report(gpt_gm, group_by=group_by)
    assert math.isclose(sum(g["time_share"] for g in report.groups), 1.0, rel_tol=1e-9)
    assert sum(g["nodes"] for g in report.groups) == sum(
        1 for r in report.nodes if r["kind"] not in ("placeholder", "output", "get_attr")
    )
    times = [g["time_s"] for g in report.groups]
    assert times == sorted(times, reverse=True)
    assert all(0.0 <= g["compute_share"] <= 1.0 for g in report.groups)


def test_rollup_depth_merges_module_paths(gpt_gm: torch.fx.GraphModule) -> None:
    rows = build_report(gpt_gm).nodes
    groups = {g["group"] for g in rollup(rows, "module", depth=2)}
    assert {"blocks.0", "blocks.3"} <= groups
    assert not any(g.count(".") > 1 for g in groups)
    with pytest.raises(ValueError, match="group_by"):
        rollup(rows, "layer")


def test_render_tables_and_json(gpt_gm: torch.fx.GraphModule) -> None:
    report = build_report(gpt_gm, title="gpt-tiny")
    console = Console(width=200, record=True)
    render_tables(report, console, top=5)
    text = console.export_text()
    assert "gpt-tiny: totals" in text and "Top 5 ops" in text and "Per-module rollup" in text
    data = json.loads(render_json(report))
    assert data["totals"]["macs"] == report.totals["macs"]
    assert data["nodes"][0]["kind"] == "placeholder"
    if gpt_gm.meta.get(meta.REDUNDANCY) is not None:
        assert "Redundant work" in text
        assert data["redundancy"]["flops_saved"] >= 0


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_json_on_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", "cnn-small", "--format", "json", "--gpu", "A100-SXM4-40GB"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert REQUIRED_TOTALS <= data["totals"].keys()
    assert data["totals"]["params"] == sum(
        p.numel() for p in get_model("cnn-small").build().parameters()
    )
    assert data["totals"]["uncounted_ops"] == {}
    assert all("name" in n and "kind" in n for n in data["nodes"])


def test_cli_table_user_file_with_shapes_and_kwargs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "net.py"
    file.write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.emb = torch.nn.Embedding(10, 8)\n"
        "        self.lin = torch.nn.Linear(8, 4)\n"
        "    def forward(self, ids, scale=1.0):\n"
        "        return self.lin(self.emb(ids)) * scale\n"
    )
    argv = ["report", f"{file}:Net", "--input-shape", "2,5", "--input-dtype", "int64",
            "--kwarg", "scale=2.0", "--group-by", "op", "--top", "3"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Per-op rollup" in out and "Linear" in out and "[2x5]" in out


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "cnn-small", "--gpu", "A101"]) == 1
    assert "Known GPUs" in capsys.readouterr().err
    assert main(["report", "cnn-small", "--input-shape", "1,5,64,64"]) == 1
    err = capsys.readouterr().err
    assert "(1, 5, 64, 64)" in err and "channels" in err
    assert main(["report", "torch.nn:Identity"]) == 1
    assert "--input-shape" in capsys.readouterr().err
    assert main(["report", "cnn-small", "--kwarg", "oops"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_untraceable_model_reports_dynamo_graphs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "branchy.py"
    file.write_text(
        "import torch\n"
        "class Branchy(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        if torch.compiler.is_exporting():\n"
        "            raise RuntimeError('refuses export')\n"
        "        for i in range(x.shape[0]):  # a Proxy is not an int\n"
        "            x = x + i\n"
        "        return x\n"
    )
    # one-graph capture fails both ways; torch.compile runs it, so the report falls back to
    # dynamo's graphs (issue 15) instead of failing
    assert main(["report", f"{file}:Branchy", "--input-shape", "2,3"]) == 0
    out = capsys.readouterr().out
    assert "graph 1 of 1" in out and "the model ran as 1 graph" in out


def test_cli_train_reports_backward(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "mlp.py"
    file.write_text(
        "import torch\n"
        "def mlp():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(32, 8))\n"
    )
    base = ["report", f"{file}:mlp", "--input-shape", "4,16", "--format", "json"]
    assert main([*base, "--train"]) == 0
    train = json.loads(capsys.readouterr().out)["totals"]
    assert main(base) == 0
    infer = json.loads(capsys.readouterr().out)["totals"]
    assert train["training"] is True and infer["training"] is False
    a, b = 4 * 16 * 32, 4 * 32 * 8  # forward MACs of the two layers
    assert infer["macs"] == a + b
    # backward: both weight gradients plus the gradient into the second layer's input
    assert train["macs"] == 2 * (a + b) + b


def test_cli_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--format", "json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)]
    assert "gpt-tiny" in names and "cnn-small" in names
