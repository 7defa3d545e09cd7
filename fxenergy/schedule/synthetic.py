"""Simulated transformer-like scheduling problems, for benchmarks and tests.

Everything here is *simulated*: per-task FLOPs and bytes follow a Llama-style block (norms,
projections, rotary, attention, SwiGLU MLP, residual adds, dropout in training), and times and
energies come from an A100-like roofline and power curve, not from measurements:

* time at clock ``f``: ``max(flops / (peak_flops · f / f_max), bytes / bandwidth) + launch``;
* power: ``P_static + P_mem · u_mem + P_sm · u_sm · (f / f_max) · (V(f) / V_max)²`` with the
  voltage flat below a knee (``V = V_min`` for ``f ≤ f_knee``, linear above), ``u`` the
  utilisations implied by the roofline.

Backward blocks mirror the forward with twice the matmul work; dropout (RNG) tasks are chained by
order edges, and the loss/optimizer tail reads every layer's weights-gradient task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.schedule.problem import Problem, SwitchModel, Task


@dataclass(frozen=True)
class SimulatedGPU:
    """An A100-SXM-like device (datasheet peaks; the power split is an assumption)."""

    clocks_mhz: tuple[int, ...] = (1410, 1305, 1200, 1095, 990, 885, 780)
    matmul_flops: float = 312e12  # bf16 tensor cores at 1410 MHz
    vector_flops: float = 39e12
    bandwidth: float = 1.555e12  # HBM2e, bytes/s
    launch_s: float = 4e-6
    static_w: float = 90.0
    memory_w: float = 70.0
    sm_w: float = 240.0
    knee_mhz: int = 1000
    v_min: float = 0.70


def _power(gpu: SimulatedGPU, f: int, u_sm: float, u_mem: float) -> float:
    f_max = gpu.clocks_mhz[0]
    v = (
        gpu.v_min
        if f <= gpu.knee_mhz
        else gpu.v_min + (1 - gpu.v_min) * (f - gpu.knee_mhz) / (f_max - gpu.knee_mhz)
    )
    return gpu.static_w + gpu.memory_w * u_mem + gpu.sm_w * u_sm * (f / f_max) * v * v


def op_task(
    gpu: SimulatedGPU,
    name: str,
    flops: float,
    nbytes: float,
    matmul: bool,
    out_bytes: int,
    time_unit_s: float,
    energy_unit_j: float,
    is_output: bool = False,
) -> Task:
    """One simulated op as a :class:`Task` (durations and energies per clock, rounded)."""
    peak = gpu.matmul_flops if matmul else gpu.vector_flops
    durations, energies = [], []
    for f in gpu.clocks_mhz:
        compute = flops / (peak * f / gpu.clocks_mhz[0])
        memory = nbytes / gpu.bandwidth
        busy = max(compute, memory)
        t = busy + gpu.launch_s
        u_sm = compute / t if t else 0.0
        u_mem = memory / t if t else 0.0
        durations.append(max(1, round(t / time_unit_s)))
        energies.append(max(1, round(_power(gpu, f, u_sm, u_mem) * t / energy_unit_j)))
    return Task(name, tuple(durations), tuple(energies), out_bytes, is_output)


def transformer_problem(
    num_tasks: int,
    hidden: int = 4096,
    tokens: int = 8192,
    training: bool = True,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    gpu: SimulatedGPU | None = None,
    time_unit_s: float = 1e-6,
    energy_unit_j: float = 1e-4,
) -> Problem:
    """A simulated Llama-like graph with about ``num_tasks`` tasks (forward, then backward)."""
    gpu = gpu or SimulatedGPU()
    b = _Builder(gpu, time_unit_s, energy_unit_j)
    act = tokens * hidden * 2  # bf16 activations
    x = b.add("embed", 0, 2 * act, False, act, [])
    per_layer = len(_FORWARD) + (len(_FORWARD) if training else 0)
    layers = max(1, num_tasks // per_layer)
    saved = []
    for layer in range(layers):
        x = b.block(f"l{layer}", x, hidden, tokens, act, backward=False, rng=training)
        saved.append(x)
    if training:
        for layer in reversed(range(layers)):
            x = b.block(
                f"l{layer}.bw", x, hidden, tokens, act, backward=True, rng=False, extra=saved[layer]
            )
    tasks = list(b.tasks)
    last = tasks[-1]
    tasks[-1] = Task(last.name, last.durations, last.energies, last.output_bytes, True)
    switch = SwitchModel(latency=math.ceil(switch_latency_s / time_unit_s))
    return Problem(
        tasks=tuple(tasks),
        clocks_mhz=gpu.clocks_mhz,
        data_edges=tuple(b.data),
        order_edges=tuple(b.order),
        switch=switch,
        memory_baseline_bytes=14 * 2**30,
        time_unit_s=time_unit_s,
        energy_unit_j=energy_unit_j,
    )


# (name, inputs as offsets into the block's values (-1 = block input), kind, width factor)
_FORWARD: tuple[tuple[str, tuple[int, ...], str, float], ...] = (
    ("norm1", (-1,), "vec", 1),
    ("q", (0,), "mm", 1),
    ("k", (0,), "mm", 1),
    ("v", (0,), "mm", 1),
    ("rope_q", (1,), "vec", 1),
    ("rope_k", (2,), "vec", 1),
    ("scores", (4, 5), "attn", 1),
    ("softmax", (6,), "vec", 1),
    ("dropout", (7,), "rng", 1),
    ("attn_v", (8, 3), "attn", 1),
    ("o", (9,), "mm", 1),
    ("add1", (-1, 10), "vec", 1),
    ("norm2", (11,), "vec", 1),
    ("gate", (12,), "mm", 2.7),
    ("up", (12,), "mm", 2.7),
    ("silu", (13,), "vec", 2.7),
    ("mul", (15, 14), "vec", 2.7),
    ("down", (16,), "mm", 2.7),
    ("add2", (11, 17), "vec", 1),
)


class _Builder:
    def __init__(self, gpu: SimulatedGPU, time_unit_s: float, energy_unit_j: float) -> None:
        self.gpu, self.tu, self.eu = gpu, time_unit_s, energy_unit_j
        self.tasks: list[Task] = []
        self.data: list[tuple[int, int]] = []
        self.order: list[tuple[int, int]] = []
        self.last_rng: int | None = None

    def add(
        self, name: str, flops: float, nbytes: float, mm: bool, out: int, inputs: list[int]
    ) -> int:
        idx = len(self.tasks)
        self.tasks.append(op_task(self.gpu, name, flops, nbytes, mm, out, self.tu, self.eu))
        self.data += [(i, idx) for i in inputs]
        return idx

    def block(
        self,
        prefix: str,
        x: int,
        hidden: int,
        tokens: int,
        act: int,
        backward: bool,
        rng: bool,
        extra: int | None = None,
    ) -> int:
        vals: list[int] = []
        scale = 2.0 if backward else 1.0
        for name, ins, kind, width in _FORWARD:
            if kind == "rng" and not rng:
                kind = "vec"
            inputs = [x if i < 0 else vals[i] for i in ins]
            if extra is not None and name == "norm1":
                inputs.append(extra)
            out = int(act * width)
            if kind == "mm":
                flops = scale * 2 * tokens * hidden * hidden * width
                idx = self.add(f"{prefix}.{name}", flops, 3 * out, True, out, inputs)
            elif kind == "attn":
                flops = scale * 2 * tokens * 2048 * hidden
                idx = self.add(f"{prefix}.{name}", flops, 4 * out, True, out, inputs)
            else:
                idx = self.add(
                    f"{prefix}.{name}",
                    8 * tokens * hidden * width,
                    scale * 3 * out,
                    False,
                    out,
                    inputs,
                )
                if kind == "rng":
                    if self.last_rng is not None:
                        self.order.append((self.last_rng, idx))
                    self.last_rng = idx
            vals.append(idx)
        return vals[-1]
