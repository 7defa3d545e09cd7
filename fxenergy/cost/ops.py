"""FLOP and byte formulas for one aten op call, on (fake) tensors.

Families, in the order :func:`op_cost` tries them:

* **metadata / views**: aliasing ops (``view``, ``transpose``, ``split``, ``detach``...), shape
  queries and allocations without a write (``empty``): 0 FLOPs, 0 bytes, no kernel.
* **matrix work** (tensor cores): torch's ``flop_registry`` (mm, addmm, bmm, baddbmm,
  convolution and its backward, the CUDA SDPA kernels) plus :data:`EXTRA_MATMUL`: the CPU
  SDPA kernels, the fused ``nn.MultiheadAttention`` / ``TransformerEncoderLayer`` fast paths.
  MACs = FLOPs / 2 of this family only.
* **vector work** (CUDA cores): pointwise ops (``torch.Tag.pointwise`` and seeded RNG ops) at
  1 FLOP per output element; reductions at 1 FLOP per input element (variance 3); softmax 5
  and its backward 3; layer/group norm 5 with affine (4 without), RMS norm 4, batch norm 5 in
  training (2 with running stats); pooling per window element; backward norms twice forward.
* **data movement** (:data:`DATA_MOVEMENT`): copies, concatenation, indexing, gather/scatter,
  embedding, padding, fills: 0 FLOPs, bytes only, *not* uncounted.
* anything else: memory-only and listed as uncounted.

Bytes: each distinct input tensor is read once (a stride-0 broadcast dimension is read once,
not per element), each output tensor written once. No cache modelling: a tensor read by two
ops is counted twice, and fusion is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


@dataclass(frozen=True)
class OpCost:
    """Cost of one aten op call."""

    name: str
    matmul_flops: int = 0
    vector_flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    kernel: bool = True
    counted: bool = True  #: False: does compute but no formula (memory-only)
    dtype: torch.dtype | None = None


# --- shapes ------------------------------------------------------------------------------------


def _numel(t: torch.Tensor) -> int:
    return math.prod(t.shape)


def _distinct_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel must fetch for ``t``: broadcast (stride-0) dimensions count once."""
    n = math.prod(s for s, st in zip(t.shape, t.stride(), strict=True) if st != 0)
    return n * t.element_size()


def _tensors(value: Any) -> list[torch.Tensor]:
    return [x for x in pytree.tree_leaves(value) if isinstance(x, torch.Tensor)]


# --- matrix work: additions to torch's flop_registry --------------------------------------------


def _sdpa_cpu(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


def _native_mha(query, key, value, embed_dim, num_head, *args, **kwargs) -> int:
    """In-projection, QK^T, AV and out-projection of nn.MultiheadAttention's fast path."""
    e = int(embed_dim)
    q_tokens = _numel(query) // query.shape[-1]
    kv_tokens = _numel(key) // key.shape[-1]
    batch = math.prod(query.shape[:-2]) if query.dim() > 2 else 1
    lq, lk = query.shape[-2], key.shape[-2]
    proj = 2 * q_tokens * e * e + 2 * 2 * kv_tokens * e * e + 2 * q_tokens * e * e
    attn = 2 * 2 * batch * lq * lk * e
    return proj + attn


def _encoder_layer(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                   use_gelu, norm_first, eps, nw1, nb1, nw2, nb2, ffn_weight_1, *args,
                   **kwargs) -> int:  # fmt: skip
    """Matrix work of nn.TransformerEncoderLayer's fused fast path."""
    e = int(embed_dim)
    tokens = _numel(src) // src.shape[-1]
    batch = math.prod(src.shape[:-2]) if src.dim() > 2 else 1
    length = src.shape[-2]
    ffn = ffn_weight_1.shape[0]
    return 2 * tokens * e * 4 * e + 4 * batch * length * length * e + 4 * tokens * e * ffn


def _encoder_layer_vector(src, embed_dim, num_heads, *args, **kwargs) -> int:
    """Vector work of the fused encoder layer: two norms, softmax, activation, residuals."""
    tokens = _numel(src) // src.shape[-1]
    length = src.shape[-2]
    ffn = args[11].shape[0] if len(args) > 11 else 4 * int(embed_dim)  # ffn_weight_1
    softmax = 5 * tokens * int(num_heads) * length
    return 2 * 5 * _numel(src) + softmax + tokens * ffn + 2 * _numel(src)


def _packet(name: str) -> Any:
    return getattr(aten, name, None)


#: Matrix-work formulas torch's flop_registry lacks: OverloadPacket -> f(*args, **kwargs) -> FLOPs.
EXTRA_MATMUL: dict[Any, Callable[..., int]] = {
    p: f
    for p, f in (
        (_packet("_scaled_dot_product_flash_attention_for_cpu"), _sdpa_cpu),
        (_packet("_scaled_dot_product_flash_attention_for_cpu_backward"), _sdpa_cpu_backward),
        (_packet("_scaled_dot_product_fused_attention_overrideable"), _sdpa_cpu),
        (_packet("_scaled_dot_product_fused_attention_overrideable_backward"), _sdpa_cpu_backward),
        (_packet("_native_multi_head_attention"), _native_mha),
        (_packet("_transformer_encoder_layer_fwd"), _encoder_layer),
    )
    if p is not None
}

#: Vector work that comes with a fused matrix op.
_FUSED_VECTOR: dict[Any, Callable[..., int]] = {
    p: f for p, f in ((_packet("_transformer_encoder_layer_fwd"), _encoder_layer_vector),) if p
}


def matmul_flops(packet: Any, args: tuple, kwargs: dict, out: Any) -> int | None:
    """FLOPs of matrix work, or None if ``packet`` is not a matrix op."""
    fn = EXTRA_MATMUL.get(packet)
    if fn is not None:
        return int(fn(*args, **kwargs))
    fn = flop_registry.get(packet)
    if fn is not None:
        return int(fn(*args, **kwargs, out_val=out))
    return None


# --- vector work --------------------------------------------------------------------------------


def _per_input(k: float) -> Callable[..., int]:
    def f(args: tuple, kwargs: dict, out: Any) -> int:
        ins = _tensors(args[:1])
        return int(k * _numel(ins[0])) if ins else 0

    return f


def _per_output(k: float) -> Callable[..., int]:
    def f(args: tuple, kwargs: dict, out: Any) -> int:
        outs = _tensors(out)
        return int(k * max((_numel(t) for t in outs), default=0))

    return f


def _layer_norm(args: tuple, kwargs: dict, out: Any) -> int:
    affine = len(args) > 2 and args[2] is not None
    return (5 if affine else 4) * _numel(args[0])


def _batch_norm(args: tuple, kwargs: dict, out: Any) -> int:
    # native_batch_norm(input, weight, bias, running_mean, running_var, training, ...)
    training = next((a for a in args[5:7] if isinstance(a, bool)), True)
    return (5 if training else 2) * _numel(args[0])


def _legit_no_training(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * _numel(args[0])


def _pool(spatial: int) -> Callable[..., int]:
    """Output elements x window size; a one-number kernel is square (cubic) as torch reads it."""

    def f(args: tuple, kwargs: dict, out: Any) -> int:
        kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size", [1])
        kernel = [kernel] if isinstance(kernel, int) else list(kernel)
        if len(kernel) == 1:
            kernel = kernel * spatial
        return _numel(_tensors(out)[0]) * math.prod(kernel)

    return f


def _sort(args: tuple, kwargs: dict, out: Any) -> int:
    x = args[0]
    dim = args[1] if len(args) > 1 and isinstance(args[1], int) else -1
    n = x.shape[dim] if x.dim() else 1
    return int(_numel(x) * max(1.0, math.log2(max(n, 1))))


_VECTOR_SPEC: dict[str, Callable[..., int]] = {
    **dict.fromkeys(
        "sum mean amax amin max min prod argmax argmin any all nansum cumsum cumprod "
        "logcumsumexp count_nonzero linalg_vector_norm norm aminmax topk kthvalue median "
        "nll_loss_forward nll_loss2d_forward".split(),
        _per_input(1),
    ),
    **dict.fromkeys("var std var_mean std_mean logsumexp mse_loss".split(), _per_input(3)),
    **dict.fromkeys(
        "_softmax _log_softmax _safe_softmax softmax log_softmax".split(), _per_input(5)
    ),
    **dict.fromkeys("_softmax_backward_data _log_softmax_backward_data".split(), _per_output(3)),
    **dict.fromkeys("native_layer_norm layer_norm".split(), _layer_norm),
    "native_group_norm": _per_input(5),
    **dict.fromkeys("_fused_rms_norm rms_norm".split(), _per_input(4)),
    **dict.fromkeys(
        "native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_functional "
        "batch_norm cudnn_batch_norm miopen_batch_norm".split(),
        _batch_norm,
    ),
    "_native_batch_norm_legit_no_training": _legit_no_training,
    **dict.fromkeys(
        "native_layer_norm_backward native_group_norm_backward native_batch_norm_backward "
        "cudnn_batch_norm_backward _fused_rms_norm_backward".split(),
        _per_output(8),
    ),
    **dict.fromkeys("max_pool1d avg_pool1d".split(), _pool(1)),
    **dict.fromkeys("max_pool2d_with_indices avg_pool2d".split(), _pool(2)),
    **dict.fromkeys("max_pool3d_with_indices avg_pool3d".split(), _pool(3)),
    **dict.fromkeys(
        "_adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_max_pool2d "
        "max_pool2d_with_indices_backward avg_pool2d_backward _adaptive_avg_pool2d_backward "
        "nll_loss_backward embedding_dense_backward index_add scatter_add scatter_reduce "
        "index_put_ index_put _index_put_impl_ upsample_bilinear2d upsample_bicubic2d "
        "upsample_linear1d grid_sampler_2d".split(),
        _per_output(1),
    ),
    **dict.fromkeys("sort argsort".split(), _sort),
    "native_dropout": _per_output(2),
    "native_dropout_backward": _per_output(1),
}


def _vector_formula(packet: Any) -> Callable[..., int] | None:
    return _VECTOR_SPEC.get(packet.__name__.split(".")[-1])


#: Data movement: 0 FLOPs, bytes only, not uncounted.
DATA_MOVEMENT = frozenset(
    "_to_copy copy copy_ clone contiguous cat stack index index_select gather scatter "
    "embedding slice_scatter select_scatter diagonal_scatter as_strided_scatter "
    "constant_pad_nd pad reflection_pad1d reflection_pad2d replication_pad2d fill fill_ zero_ "
    "zeros zeros_like ones ones_like full full_like new_zeros new_ones new_full arange "
    "scalar_tensor repeat repeat_interleave tile flip roll tril triu masked_select nonzero "
    "upsample_nearest2d upsample_nearest1d upsample_nearest3d _unsafe_index "
    "index_fill index_fill_ masked_scatter narrow_copy expand_copy permute_copy view_copy "
    "t_copy transpose_copy unsqueeze_copy squeeze_copy lift_fresh_copy resize_as_ "
    "_pin_memory pin_memory _to_dense to_dense im2col col2im _unsafe_index_put "
    "one_hot eye linspace bucketize searchsorted slice_backward select_backward diagonal_backward "
    "unfold_backward as_strided_backward index_select_backward".split()
)

#: Ops that neither compute nor move bytes (aliases, allocations without a write, checks).
METADATA = frozenset(
    "detach alias lift_fresh _unsafe_view empty empty_like empty_strided new_empty "
    "new_empty_strided _assert_tensor_metadata _assert_async _assert_scalar "
    "_functional_assert_async _functional_assert_scalar sym_size sym_stride sym_numel "
    "sym_storage_offset is_same_size _local_scalar_dense resize_ set_ _make_dep_token "
    "_nested_tensor_from_mask_left_aligned record_stream".split()
)


def _is_alias(func: torch._ops.OpOverload) -> bool:
    """True for view ops: every returned tensor aliases an input and nothing is written."""
    if func.is_view:
        return True
    rets = func._schema.returns
    return bool(rets) and all(r.alias_info is not None and not r.alias_info.is_write for r in rets)


def _is_pointwise(func: torch._ops.OpOverload) -> bool:
    tags = func.tags
    return torch.Tag.pointwise in tags or torch.Tag.nondeterministic_seeded in tags


# --- one op ------------------------------------------------------------------------------------


def _io_bytes(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    seen: dict[int, torch.Tensor] = {}
    for t in _tensors((args, kwargs)):
        seen.setdefault(id(t), t)
    read = sum(_distinct_bytes(t) for t in seen.values())
    written = sum(_numel(t) * t.element_size() for t in _tensors(out))
    return read, written


def _out_dtype(out: Any, args: tuple) -> torch.dtype | None:
    for t in _tensors(out) + _tensors(args):
        return t.dtype
    return None


def op_cost(func: torch._ops.OpOverload, args: tuple, kwargs: dict, out: Any) -> OpCost | None:
    """The cost of one aten op call; None for ops that are not tensor work at all (prims)."""
    packet = func.overloadpacket
    base = packet.__name__.split(".")[-1]
    name = f"aten.{base}" if func.namespace == "aten" else f"{func.namespace}.{base}"
    if func.namespace == "prim" or base in METADATA or _is_alias(func):
        return OpCost(name, kernel=False, dtype=_out_dtype(out, args)) if _tensors(out) else None
    read, written = _io_bytes(args, kwargs, out)
    dtype = _out_dtype(out, args)
    mm = matmul_flops(packet, args, kwargs, out)
    if mm is not None:
        fused = _FUSED_VECTOR.get(packet)
        vec = int(fused(*args, **kwargs)) if fused else 0
        return OpCost(name, mm, vec, read, written, dtype=dtype)
    formula = _vector_formula(packet)
    if formula is not None:
        return OpCost(name, 0, formula(args, kwargs, out), read, written, dtype=dtype)
    if _is_pointwise(func):
        return OpCost(name, 0, _per_output(1)(args, kwargs, out), read, written, dtype=dtype)
    if base in DATA_MOVEMENT or base.rstrip("_") in DATA_MOVEMENT:
        return OpCost(name, 0, 0, read, written, dtype=dtype)
    return OpCost(name, 0, 0, read, written, counted=False, dtype=dtype)
