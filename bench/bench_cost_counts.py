"""MACs/params/bytes of standard models: fxenergy's annotate-cost vs torch's FlopCounterMode.

Prints the markdown rows of the "Measured vs published" table in docs/cost-model.md.

    python bench/bench_cost_counts.py            # all four models (~1-2 min on 2 cores)
    python bench/bench_cost_counts.py ViT        # only rows whose name contains "ViT"

Needs transformers. Llama runs on the ``meta`` device (no weights); the others on CPU with
real weights, captured and counted on fake tensors (no real compute either way).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from fxenergy.cost import graph_totals
from fxenergy.graph.capture import capture
from fxenergy.graph.fake import fake_mode, fakeify, run_with_fake_state


def flop_counter_macs(model: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> float:
    """torch's FlopCounterMode on an eager fake-tensor run of the same model, FLOPs / 2."""
    mode, counter = fake_mode(), FlopCounterMode(display=False)

    def run(*a: Any, **kw: Any) -> None:
        with counter:
            model(*a, **kw)

    run_with_fake_state(model, mode, run, *fakeify(mode, args), **fakeify(mode, kwargs))
    return counter.get_total_flops() / 2


def cases() -> list[tuple[str, str, Callable[[], torch.nn.Module], tuple, dict]]:
    import transformers as tf

    ids = torch.zeros(1, 1024, dtype=torch.long)
    img = torch.zeros(1, 3, 224, 224)
    return [
        ("ResNet-50", "cpu",
         lambda: tf.ResNetForImageClassification(tf.ResNetConfig(num_labels=1000)), (img,), {}),
        ("ViT-B/16", "cpu",
         lambda: tf.ViTForImageClassification(tf.ViTConfig(num_labels=1000)), (img,), {}),
        ("GPT-2 (124M), 1024 tokens", "cpu",
         lambda: tf.GPT2LMHeadModel(tf.GPT2Config()), (ids,), {"use_cache": False}),
        ("Llama-2-7B config, 128 tokens", "meta",
         lambda: tf.LlamaForCausalLM(tf.LlamaConfig()), (ids[:, :128],), {"use_cache": False}),
    ]  # fmt: skip


def main(selected: list[str]) -> None:
    print("| model | device | params | GMACs | FlopCounterMode GMACs | GFLOPs | GB moved "
          "| A100 roofline ms | capture | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, device, build, args, kwargs in cases():
        if selected and not any(s in name for s in selected):
            continue
        with torch.device(device):
            model = build().eval()
        args = tuple(a.to(device) for a in args)
        t0 = time.perf_counter()
        gm = capture(model, args, kwargs)
        t = graph_totals(gm)
        seconds = time.perf_counter() - t0
        peer = flop_counter_macs(model, args, kwargs)
        print(
            f"| {name} | {device} | {t.params:,} | {t.macs / 1e9:.4f} | {peer / 1e9:.4f} "
            f"| {t.flops / 1e9:.3f} | {t.bytes_total / 1e9:.3f} | {t.roofline_time_s * 1e3:.3f} "
            f"| {gm.meta['fxenergy.capture'].method} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
