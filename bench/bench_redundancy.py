"""Redundant work in transformers models exported with torch.export, and what removing it saves.

For small GPT-2, Llama, BERT- and T5-style configs (random weights, eval mode, use_cache=False,
batch 2 × 32 tokens) this exports each model non-strict with :func:`fxenergy.graph.capture.capture`,
annotates costs, runs ``eliminate-redundancy`` and reports nodes, FLOPs and bytes removed (from
annotate-cost's records of the removed nodes) against the graph's totals, per rule, and checks
that every output is bit-for-bit identical before and after.

Run: ``python bench/bench_redundancy.py [--models gpt2,llama]``; prints markdown tables (the ones
in docs/redundancy.md).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.utils._pytree as pytree

from fxenergy.cost import graph_totals
from fxenergy.graph import meta
from fxenergy.graph.capture import capture
from fxenergy.graph.pass_infra import Pipeline

SEQ, BATCH, VOCAB = 32, 2, 1000


def _gpt2() -> torch.nn.Module:
    import transformers as tf

    cfg = tf.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=VOCAB, n_positions=128)
    cfg.bos_token_id = cfg.eos_token_id = 0
    return tf.GPT2LMHeadModel(cfg)


def _llama() -> torch.nn.Module:
    import transformers as tf

    cfg = tf.LlamaConfig(
        num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return tf.LlamaForCausalLM(cfg)


def _bert() -> torch.nn.Module:
    import transformers as tf

    cfg = tf.BertConfig(
        num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=4,
        vocab_size=VOCAB, max_position_embeddings=128,
    )  # fmt: skip
    return tf.BertModel(cfg)


def _t5() -> torch.nn.Module:
    import transformers as tf

    cfg = tf.T5Config(
        num_layers=2, num_decoder_layers=2, d_model=128, d_ff=256, d_kv=32, num_heads=4,
        vocab_size=VOCAB, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return tf.T5ForConditionalGeneration(cfg)


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[str, ...]]] = {
    "gpt2": (_gpt2, ("input_ids",)),
    "llama": (_llama, ("input_ids",)),
    "bert": (_bert, ("input_ids", "attention_mask")),
    "t5": (_t5, ("input_ids", "decoder_input_ids")),
}


def _inputs(names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in names:
        if name == "attention_mask":
            out[name] = torch.ones(BATCH, SEQ, dtype=torch.long)
        else:
            out[name] = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    return out


def _identical(a: object, b: object) -> bool:
    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    return len(la) == len(lb) and all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(la, lb, strict=True)
    )


def bench_one(name: str) -> dict[str, object]:
    """Capture, annotate, eliminate; the numbers of one model."""
    torch.manual_seed(0)
    build, input_names = MODELS[name]
    model = build().eval()
    kwargs = _inputs(input_names)
    if name != "bert":
        kwargs["use_cache"] = False
    gm = capture(model, (), kwargs, method="export")
    gm = Pipeline.parse("annotate-cost")(gm).graph_module
    totals = graph_totals(gm)
    nodes_before = len(gm.graph.nodes)
    with torch.no_grad():
        ref = gm(**kwargs)
    t0 = time.perf_counter()
    gm = Pipeline.parse("eliminate-redundancy")(gm).graph_module
    elapsed = time.perf_counter() - t0
    report: meta.RedundancyReport = gm.meta[meta.REDUNDANCY]
    with torch.no_grad():
        out = gm(**kwargs)
    return {
        "model": name,
        "nodes": nodes_before,
        "removed": len(report.removed),
        "flops": totals.flops,
        "flops_saved": report.flops_saved,
        "bytes": totals.bytes_read + totals.bytes_written,
        "bytes_saved": report.bytes_saved,
        "identical": _identical(ref, out),
        "seconds": elapsed,
        "rules": Counter(rule for rule, _ in report.removed),
    }


def markdown(rows: list[dict[str, object]]) -> str:
    """Totals table and per-rule table."""
    lines = [
        "| model | nodes | removed | FLOPs saved | FLOPs saved % | bytes saved | bytes saved % "
        "| outputs identical | pass s |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        f, fs, b, bs = (int(r[k]) for k in ("flops", "flops_saved", "bytes", "bytes_saved"))
        lines.append(
            f"| {r['model']} | {r['nodes']} | {r['removed']} | {fs:,} | {100 * fs / f:.3f}% "
            f"| {bs:,} | {100 * bs / b:.2f}% | {'yes' if r['identical'] else 'NO'} "
            f"| {float(r['seconds']):.2f} |"
        )
    rules = sorted({k for r in rows for k in r["rules"]})  # type: ignore[attr-defined]
    lines += ["", "| model | " + " | ".join(rules) + " |", "|" + "---|" * (len(rules) + 1)]
    for r in rows:
        counts = r["rules"]
        lines.append(f"| {r['model']} | " + " | ".join(str(counts[k]) for k in rules) + " |")  # type: ignore[index]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows = [bench_one(name) for name in args.models.split(",")]
    print(markdown(rows))
    if not all(r["identical"] for r in rows):
        raise SystemExit("outputs changed: eliminate-redundancy is wrong on some model")


if __name__ == "__main__":
    main()
