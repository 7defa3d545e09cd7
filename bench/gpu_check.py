"""Real-GPU check of the cost and DVFS models that changes nothing on the GPU.

    python bench/gpu_check.py                      # ~3 s per workload, GPU 0
    python bench/gpu_check.py --seconds 5 --json out.json
    python bench/gpu_check.py --from-json out.json # re-print a recorded run (no GPU needed)

Read-only: it never locks, sets or resets clocks or power limits. NVML is used only for the
board name, the current and max SM clocks, the power limit, power readings and the total-energy
counter; kernel times come from CUDA events. Four workloads run at whatever clock the GPU picks:
a bf16 GEMM, an element-wise add, a GPT-2-small forward and a GPT-2-small training step
(forward, backward, AdamW). Each is printed beside

* the cost model: the roofline at peak rates at the observed clock (``fxenergy report``);
* the DVFS model at the observed clock (time, energy, power), and the clock the DVFS model says
  the power cap allows when the GPU runs unlocked (compare with the observed clock).

For the GPT-2 forward it also times every fx node with CUDA events and lists the ops that take
longest beside the model's per-op time. The board's calibration status is printed with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = "fxenergy-gpu-check/1"
WORKLOADS = ("gemm", "elementwise", "gpt2-forward", "gpt2-train-step")
#: NVML calls this script may make. Anything else (Set*, Reset*, Lock*) is never called.
READ_ONLY_NVML = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption",
)


class ReadOnlyNvml:
    """The few read-only NVML queries the check needs (``api`` is the ``pynvml`` module)."""

    def __init__(self, api: Any, index: int = 0) -> None:
        self.api = api
        api.nvmlInit()
        self.handle = api.nvmlDeviceGetHandleByIndex(index)

    def name(self) -> str:
        name = self.api.nvmlDeviceGetName(self.handle)
        return name.decode() if isinstance(name, bytes) else str(name)

    def sm_clock_mhz(self) -> int:
        return int(self.api.nvmlDeviceGetClockInfo(self.handle, self.api.NVML_CLOCK_SM))

    def max_sm_clock_mhz(self) -> int:
        return int(self.api.nvmlDeviceGetMaxClockInfo(self.handle, self.api.NVML_CLOCK_SM))

    def power_limit_w(self) -> float:
        return self.api.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1000.0

    def power_w(self) -> float:
        return self.api.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def energy_j(self) -> float:
        return self.api.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0

    def close(self) -> None:
        self.api.nvmlShutdown()


class Sampler:
    """Samples SM clock and power every ``period_s`` on a thread while a workload runs."""

    def __init__(self, nvml: ReadOnlyNvml, period_s: float = 0.02) -> None:
        self.nvml, self.period_s = nvml, period_s
        self.clocks: list[int] = []
        self.powers: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.clocks.append(self.nvml.sm_clock_mhz())
            self.powers.append(self.nvml.power_w())
            self._stop.wait(self.period_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _mean(xs: list[float] | list[int]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def measure(
    fn: Callable[[], object],
    nvml: ReadOnlyNvml,
    timer: Callable[[Callable[[], object], int], float],
    seconds: float,
    batch: int = 5,
) -> dict[str, float]:
    """Run ``fn`` in batches for ``seconds``; GPU time by ``timer(fn, n) -> ms``, energy by NVML."""
    timer(fn, 2)  # warm-up (allocator, cuBLAS heuristics, autotuning)
    iters, gpu_ms = 0, 0.0
    e0 = nvml.energy_j()
    start = time.perf_counter()
    with Sampler(nvml) as s:
        while time.perf_counter() - start < seconds:
            gpu_ms += timer(fn, batch)
            iters += batch
    wall_s = time.perf_counter() - start
    energy = nvml.energy_j() - e0
    return {
        "iters": iters,
        "gpu_ms_per_iter": gpu_ms / iters,
        "wall_s": wall_s,
        "energy_j_per_iter": energy / iters,
        "power_w": energy / wall_s,
        "sampled_power_w": _mean(s.powers),
        "sm_clock_mhz": _mean(s.clocks),
        "sm_clock_min_mhz": min(s.clocks, default=0),
        "sm_clock_max_mhz": max(s.clocks, default=0),
    }


def cuda_timer(fn: Callable[[], object], n: int) -> float:
    """Milliseconds of ``n`` calls of ``fn`` between two CUDA events (synchronizes once)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def predict(gm: Any, gpu: str, clock_mhz: float, extra: list[Any] = ()) -> dict[str, float]:
    """Cost-model and DVFS-model totals of an annotated graph (plus ``extra`` CostRecords)."""
    from fxenergy.cost.roofline import compute_time_s, memory_time_s
    from fxenergy.graph import meta
    from fxenergy.hardware.dvfs import get_dvfs_model

    model = get_dvfs_model(gpu)
    costs = [n.meta[meta.COST] for n in gm.graph.nodes if meta.COST in n.meta] + list(extra)
    f = float(clock_mhz)
    roof = sum(max(compute_time_s(c, model.spec, f), memory_time_s(c, model.spec)) for c in costs)
    works = tuple(model.work_of(c) for c in costs)
    t, e = model.mix_time_energy(works, f)
    f_max = model.spec.max_clock_mhz
    return {
        "roofline_ms": roof * 1e3,
        "dvfs_ms": t * 1e3,
        "dvfs_j": e,
        "dvfs_w": e / t if t > 0 else 0.0,
        "dvfs_unlocked_clock_mhz": model.effective_clock_mhz(works, f_max),
    }


def report(record: dict[str, Any]) -> str:
    """The printed table of a recorded run (the format :func:`main` writes with ``--json``)."""
    if record.get("format") != FORMAT:
        raise ValueError(f"not a gpu_check record: format {record.get('format')!r}")
    b = record["board"]
    out = [
        f"{b['nvml_name']} (table: {b['gpu']}), power limit {b['power_limit_w']:.0f} W, max SM "
        f"clock {b['max_sm_clock_mhz']} MHz, idle clock {b['idle_sm_clock_mhz']} MHz",
        f"DVFS model: {b['calibration']}",
        "clocks were not changed: every row ran at the clock the GPU picked",
        "",
        f"{'workload':<17}{'MHz obs':>8}{'MHz mdl':>8}{'ms meas':>9}{'ms roof':>9}{'ms dvfs':>9}"
        f"{'J meas':>9}{'J dvfs':>9}{'W meas':>8}{'W dvfs':>8}",
    ]
    for w in record["workloads"]:
        m, p = w["measured"], w["predicted"]
        out.append(
            f"{w['name']:<17}{m['sm_clock_mhz']:>8.0f}{p['dvfs_unlocked_clock_mhz']:>8.0f}"
            f"{m['gpu_ms_per_iter']:>9.3f}{p['roofline_ms']:>9.3f}{p['dvfs_ms']:>9.3f}"
            f"{m['energy_j_per_iter']:>9.3f}{p['dvfs_j']:>9.3f}{m['power_w']:>8.0f}"
            f"{p['dvfs_w']:>8.0f}"
        )
    out.append(
        "MHz obs: mean sampled SM clock under load; MHz mdl: the clock the DVFS model says the "
        "power cap allows unlocked; ms/J dvfs: DVFS model at the observed clock"
    )
    for w in record["workloads"]:
        if w.get("ops"):
            out += ["", f"{w['name']}: slowest ops (CUDA events per fx node)"]
            out.append(f"  {'op':<44}{'ms meas':>9}{'ms dvfs':>9}{'ratio':>7}")
            for op in w["ops"]:
                ratio = op["measured_ms"] / op["dvfs_ms"] if op["dvfs_ms"] > 0 else float("nan")
                out.append(
                    f"  {op['op'][:44]:<44}{op['measured_ms']:>9.3f}{op['dvfs_ms']:>9.3f}"
                    f"{ratio:>7.2f}"
                )
    return "\n".join(out)


def load_record(path: str | Path) -> dict[str, Any]:
    """Read a recorded run; raises ValueError if it is not one."""
    record = json.loads(Path(path).read_text())
    report(record)  # validates
    return record


# --- the GPU part (needs CUDA, pynvml and transformers) ----------------------------------------
GPT2_BATCH, GPT2_SEQ = 8, 1024


def _gpt2(device: str) -> tuple[Any, Any]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config()
    with torch.device(device):
        model = GPT2LMHeadModel(cfg).to(torch.bfloat16)
        ids = torch.randint(0, cfg.vocab_size, (GPT2_BATCH, GPT2_SEQ))
    return model, ids


def _adamw_cost(model: Any) -> Any:
    """AdamW over every parameter: reads p, g, m, v, writes p, m, v; ~12 flops per element."""
    from fxenergy.graph.meta import CostRecord

    n = sum(p.numel() for p in model.parameters())
    size = next(model.parameters()).element_size()
    return CostRecord(
        flops=12 * n,
        macs=0,
        bytes_read=4 * n * size,
        bytes_written=3 * n * size,
        dtype="bfloat16",
        kernels=5,
    )


def _workload(name: str, gpu: str) -> tuple[Callable[[], object], Callable[[float], dict]]:
    """(function to time on the GPU, clock -> predictions) of one workload."""
    import torch
    from torch import nn

    from fxenergy.api import annotate
    from fxenergy.graph.capture import capture, capture_training

    if name in ("gemm", "elementwise"):
        n = 8192 if name == "gemm" else 1 << 28
        shape, dtype = ((n, n), torch.bfloat16) if name == "gemm" else ((n,), torch.float32)
        a, b = (torch.randn(shape, device="cuda").to(dtype) for _ in range(2))
        out = torch.empty_like(a)
        op = torch.mm if name == "gemm" else torch.add

        class One(nn.Module):
            def forward(self, x: Any, y: Any) -> Any:
                return op(x, y)

        gm = annotate(capture(One(), (a.to("meta"), b.to("meta"))), gpu)
        return (lambda: op(a, b, out=out)), (lambda f: predict(gm, gpu, f))
    model, ids = _gpt2("cuda")
    meta_model, meta_ids = _gpt2("meta")
    if name == "gpt2-forward":
        gm = annotate(capture(meta_model, (meta_ids,), {"use_cache": False}), gpu)

        def forward() -> object:
            with torch.no_grad():
                return model(ids, use_cache=False)

        return forward, (lambda f: predict(gm, gpu, f))
    joint = capture_training(
        meta_model, (meta_ids,), lambda o: o.logits.float().mean(), {"use_cache": False}
    )
    gm = annotate(joint, gpu)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, foreach=True)
    extra = [_adamw_cost(model)]

    def step() -> object:
        opt.zero_grad(set_to_none=True)
        model(ids, use_cache=False).logits.float().mean().backward()
        opt.step()

    return step, (lambda f: predict(gm, gpu, f, extra))


def time_ops(gpu: str, clock_mhz: float, top: int = 12, runs: int = 3) -> list[dict]:
    """CUDA-event time of every fx node of the GPT-2 forward beside the DVFS model's."""
    import torch

    from fxenergy.api import annotate
    from fxenergy.graph import meta
    from fxenergy.graph.capture import capture
    from fxenergy.hardware.dvfs import get_dvfs_model

    model, ids = _gpt2("cuda")
    kwargs = {"use_cache": False}
    with torch.no_grad():
        gm = annotate(capture(model, (ids,), kwargs), gpu)
        names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
        inputs = [ids, *(kwargs.get(str(name)) for name in names[1:])]
        timings: dict[str, list[float]] = {}

        class OpTimer(torch.fx.Interpreter):
            def run_node(self, n: torch.fx.Node) -> Any:
                if n.op not in ("call_function", "call_method", "call_module"):
                    return super().run_node(n)
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                out = super().run_node(n)
                e.record()
                events.append((n, s, e))
                return out

        for i in range(runs + 1):
            events: list[tuple[Any, Any, Any]] = []
            OpTimer(gm).run(*inputs)
            torch.cuda.synchronize()
            if i:  # the first run is warm-up
                for n, s, e in events:
                    timings.setdefault(n.name, []).append(s.elapsed_time(e))
    dvfs = get_dvfs_model(gpu)
    nodes = {n.name: n for n in gm.graph.nodes}
    rows = []
    for name, ms in timings.items():
        cost = nodes[name].meta.get(meta.COST)
        pred = dvfs.time_s(cost, clock_mhz) * 1e3 if cost is not None else 0.0
        rows.append(
            {"op": f"{name} ({nodes[name].target})", "measured_ms": _mean(ms), "dvfs_ms": pred}
        )
    return sorted(rows, key=lambda r: -r["measured_ms"])[:top]


def run_all(device: int, seconds: float, names: list[str]) -> dict[str, Any]:
    """Measure every workload at the GPU's own clock; return the record :func:`report` prints."""
    import pynvml
    import torch

    from fxenergy.hardware.power_params import calibration_note
    from fxenergy.hardware.specs import get_gpu

    torch.cuda.set_device(device)
    nvml = ReadOnlyNvml(pynvml, device)
    try:
        gpu = get_gpu(nvml.name()).name
        board = {
            "nvml_name": nvml.name(),
            "gpu": gpu,
            "power_limit_w": nvml.power_limit_w(),
            "max_sm_clock_mhz": nvml.max_sm_clock_mhz(),
            "idle_sm_clock_mhz": nvml.sm_clock_mhz(),
            "calibration": calibration_note(gpu),
        }
        workloads = []
        for name in names:
            fn, predictor = _workload(name, gpu)
            measured = measure(fn, nvml, cuda_timer, seconds)
            entry = {
                "name": name,
                "measured": measured,
                "predicted": predictor(measured["sm_clock_mhz"]),
            }
            if name == "gpt2-forward":
                try:
                    entry["ops"] = time_ops(gpu, measured["sm_clock_mhz"])
                except Exception as exc:  # per-op timing is extra: keep the totals
                    entry["ops_error"] = f"{type(exc).__name__}: {exc}"
            workloads.append(entry)
            torch.cuda.empty_cache()
    finally:
        nvml.close()
    return {"format": FORMAT, "board": board, "workloads": workloads, "synthetic": False}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per workload")
    ap.add_argument("--device", type=int, default=0, help="CUDA device (same index in NVML)")
    ap.add_argument("--json", type=Path, help="also write the record here")
    ap.add_argument("--from-json", type=Path, help="print a recorded run; no GPU needed")
    ap.add_argument("--only", choices=WORKLOADS, action="append", help="run only these")
    args = ap.parse_args(argv)
    if args.from_json:
        print(report(load_record(args.from_json)))
        return 0
    record = run_all(args.device, args.seconds, args.only or list(WORKLOADS))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(report(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
