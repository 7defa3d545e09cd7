"""Registrations of the built-in models (imported by :func:`fxenergy.models.list_models`)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fxenergy.models import ModelSpec, register_model
from fxenergy.models.cnn import SmallResNet
from fxenergy.models.gpt import GPTConfig, TinyGPT

_HF = ("transformers",)
_SEQ = 128


register_model(
    ModelSpec(
        name="gpt-tiny",
        description="4-layer GPT (d=256, 4 heads, SDPA causal attention), seq 128, plain torch",
        factory=TinyGPT,
        input_shapes=((1, GPTConfig().block_size),),
        input_dtype=torch.int64,
        vocab_size=GPTConfig().vocab_size,
    )
)
register_model(
    ModelSpec(
        name="cnn-small",
        description="ResNet-style CNN (3 stages x 2 basic blocks, 32-128 ch), 64x64, plain torch",
        factory=SmallResNet,
        input_shapes=((1, 3, 64, 64),),
    )
)


# --- transformers-backed (random weights from configs; no downloads) ----------------------------


def _llama_7b() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig())  # the default config is Llama-2-7B's shape


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config())


def _resnet50() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    return ResNetForImageClassification(ResNetConfig(num_labels=1000))


def _vit_b16() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(num_labels=1000))


def _bert_base() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(), add_pooling_layer=True)


_NO_CACHE = {"use_cache": False}
for _spec in (
    ModelSpec("llama-7b", "transformers LlamaForCausalLM, default LlamaConfig() (6.7B params), "
              "seq 128", _llama_7b, ((1, _SEQ),), torch.int64, _NO_CACHE, "meta", _HF, 32000),
    ModelSpec("gpt2", "transformers GPT2LMHeadModel, default GPT2Config() (124M), seq 128",
              _gpt2, ((1, _SEQ),), torch.int64, _NO_CACHE, "meta", _HF, 50257),
    ModelSpec("resnet50", "transformers ResNetForImageClassification, ResNet-50, 224x224",
              _resnet50, ((1, 3, 224, 224),), torch.float32, {}, "meta", _HF),
    ModelSpec("vit-b16", "transformers ViTForImageClassification, ViT-B/16, 224x224",
              _vit_b16, ((1, 3, 224, 224),), torch.float32, {}, "meta", _HF),
    ModelSpec("bert-base", "transformers BertModel, default BertConfig() (110M), seq 128",
              _bert_base, ((1, _SEQ),), torch.int64, {}, "meta", _HF, 30522),
):  # fmt: skip
    # transformers' forward() has Python control flow symbolic_trace cannot follow: go to export.
    register_model(dataclasses.replace(_spec, capture_method="export"))
