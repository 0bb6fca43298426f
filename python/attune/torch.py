"""attune as torch operators: torch.ops.attune.attention, torch.ops.attune.sdpa, and for a paged
KV cache torch.ops.attune.paged_attention and torch.ops.attune.paged_append.

They are `torch.library` ops with a fake (meta) implementation, so they run in eager mode and
under torch.compile without graph breaks (the compiled graph calls the op as one node). They are
forward-only (inference): a backward through them raises. The Python functions `sdpa` and
`attention` call the op while torch.compile traces or autograd records, and the implementation
directly otherwise (same result, without the dispatcher's overhead).

- `attention(q, k, v, causal=False, scale=None, *, alibi_slopes=None, sinks=None, cu_seqlens_q=None,
  cu_seqlens_kv=None, top_k=0, window=0, softcap=0.0, causal_align="bottom_right", mask=None,
  kv_dtype=None, k_scales=None, v_scales=None)`: attune's own conventions (causal aligns the last
  query with the last key, as decoding with a KV cache needs; grouped-query heads always), every
  variant of attune.attention, quantized K/V codes with their scales.
- `sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)`:
  torch.nn.functional.scaled_dot_product_attention's conventions: `is_causal` is top-left aligned
  (query i sees keys j <= i; attune's CausalAlign::top_left), `attn_mask` is bool (True: take part)
  or float (added to the logits), broadcastable to [batch, heads_q, seq_q, seq_kv], and
  heads_q != heads_kv needs enable_gqa=True. Inputs are read in place with their strides. Keyword
  extras: `sinks` (gpt-oss's s_aux) and `softcap` (Gemma 2).
- `paged_attention(query, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, *, scale=None,
  causal=True, window=0, softcap=0.0, alibi_slopes=None, sinks=None, kv_dtype=None, k_scales=None,
  v_scales=None, layout="heads_first")`: attune.paged_attention (packed queries [total_q, heads_q, d]
  over block pools, read in place).
- `paged_append(k_cache, v_cache, key, value, slot_mapping, *, k_scales=None, v_scales=None,
  kv_dtype=None, layout="heads_first")`: attune.paged_append, a mutating op (its schema marks the
  caches and scales as written), so torch.compile keeps it in the graph in order.
"""

from __future__ import annotations

from typing import Optional

import torch

import attune as _attune
from attune import _attune as _bindings

__all__ = ["attention", "sdpa", "paged_attention", "paged_append"]


# Defined through torch.library.Library rather than the @custom_op decorator: the same op for the
# dispatcher and torch.compile, at about half the per-call overhead on small problems
# (bench/python_bench.py: the decorator's Python wrapping cost ~13 us more per call here).
_lib = torch.library.Library("attune", "DEF")  # kept alive: dropping it unregisters the ops
_lib.define("attention(Tensor query, Tensor key, Tensor value, bool causal, float? scale, Tensor? alibi_slopes=None, "
            "Tensor? sinks=None, Tensor? cu_seqlens_q=None, Tensor? cu_seqlens_kv=None, int top_k=0, int window=0, "
            "float softcap=0.0, str causal_align='bottom_right', Tensor? mask=None, str? kv_dtype=None, "
            "Tensor? k_scales=None, Tensor? v_scales=None) -> Tensor")
_lib.define("sdpa(Tensor query, Tensor key, Tensor value, Tensor? attn_mask, bool is_causal, float? scale, "
            "Tensor? sinks=None, float softcap=0.0) -> Tensor")
_lib.define("paged_attention(Tensor query, Tensor k_cache, Tensor v_cache, Tensor block_table, Tensor seq_lens, "
            "Tensor cu_seqlens_q, float? scale=None, bool causal=True, int window=0, float softcap=0.0, "
            "Tensor? alibi_slopes=None, Tensor? sinks=None, str? kv_dtype=None, Tensor? k_scales=None, "
            "Tensor? v_scales=None, str layout='heads_first') -> Tensor")
_lib.define("paged_append(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor key, Tensor value, Tensor slot_mapping, "
            "Tensor(c!)? k_scales=None, Tensor(d!)? v_scales=None, str? kv_dtype=None, "
            "str layout='heads_first') -> ()")


def _attention_impl(query, key, value, causal, scale, alibi_slopes=None, sinks=None, cu_seqlens_q=None,
                    cu_seqlens_kv=None, top_k=0, window=0, softcap=0.0, causal_align="bottom_right", mask=None,
                    kv_dtype=None, k_scales=None, v_scales=None):
    return _attune.attention(query, key, value, causal=causal, scale=scale, alibi_slopes=alibi_slopes, sinks=sinks,
                             cu_seqlens_q=cu_seqlens_q, cu_seqlens_kv=cu_seqlens_kv, top_k=top_k, window=window,
                             softcap=softcap, causal_align=causal_align, mask=mask, kv_dtype=kv_dtype,
                             k_scales=k_scales, v_scales=v_scales)


def _sdpa_impl(query, key, value, attn_mask, is_causal, scale, sinks=None, softcap=0.0):
    if attn_mask is not None and attn_mask.dtype not in (torch.bool, torch.float32):
        attn_mask = attn_mask.float()  # attune's additive masks are float32
    return _attune.attention(query, key, value, causal=is_causal, causal_align="top_left", scale=scale, mask=attn_mask,
                             sinks=sinks, softcap=softcap)


def _attention_fake(query, key, value, causal, scale, alibi_slopes=None, sinks=None, cu_seqlens_q=None,
                    cu_seqlens_kv=None, top_k=0, window=0, softcap=0.0, causal_align="bottom_right", mask=None,
                    kv_dtype=None, k_scales=None, v_scales=None):
    """Shape and type of the result, for meta tensors and torch.compile's tracing: q's shape with
    d_v, which int4 codes hold two to a byte."""
    d_v = value.shape[-1] * (2 if kv_dtype == "int4" else 1)
    return query.new_empty(query.shape[:-1] + (d_v,))


def _sdpa_fake(query, key, value, *args):
    return query.new_empty(query.shape[:-1] + value.shape[-1:])


def _paged_attention_impl(query, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale=None, causal=True,
                          window=0, softcap=0.0, alibi_slopes=None, sinks=None, kv_dtype=None, k_scales=None,
                          v_scales=None, layout="heads_first"):
    return _attune.paged_attention(query, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale=scale,
                                   causal=causal, window=window, softcap=softcap, alibi_slopes=alibi_slopes,
                                   sinks=sinks, kv_dtype=kv_dtype, k_scales=k_scales, v_scales=v_scales, layout=layout)


def _paged_attention_fake(query, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale=None, causal=True,
                          window=0, softcap=0.0, alibi_slopes=None, sinks=None, kv_dtype=None, k_scales=None,
                          v_scales=None, layout="heads_first"):
    """[total_q, heads_q, d_v]: q's shape with the pool's d_v (int4 codes hold two to a byte)."""
    d_v = v_cache.shape[-1] * (2 if kv_dtype == "int4" else 1)
    return query.new_empty(query.shape[:-1] + (d_v,))


def _paged_append_impl(k_cache, v_cache, key, value, slot_mapping, k_scales=None, v_scales=None, kv_dtype=None,
                       layout="heads_first"):
    _attune.paged_append(k_cache, v_cache, key, value, slot_mapping, k_scales=k_scales, v_scales=v_scales,
                         kv_dtype=kv_dtype, layout=layout)


def _paged_append_fake(*args, **kwargs):
    return None


def _no_backward(ctx, grad):
    raise NotImplementedError("attune's torch ops are forward-only (inference): no gradient; use "
                              "torch.nn.functional.scaled_dot_product_attention to train")


for _name, _impl, _fake in (("attention", _attention_impl, _attention_fake), ("sdpa", _sdpa_impl, _sdpa_fake)):
    _lib.impl(_name, _impl, "CPU")
    torch.library.register_fake("attune::" + _name, _fake, lib=_lib)
    # A clear error at backward time instead of torch's warning and a silently missing gradient.
    torch.library.register_autograd("attune::" + _name, _no_backward, lib=_lib)

_lib.impl("paged_attention", _paged_attention_impl, "CPU")
torch.library.register_fake("attune::paged_attention", _paged_attention_fake, lib=_lib)
torch.library.register_autograd("attune::paged_attention", _no_backward, lib=_lib)
_lib.impl("paged_append", _paged_append_impl, "CPU")
torch.library.register_fake("attune::paged_append", _paged_append_fake, lib=_lib)

_attention_op = torch.ops.attune.attention.default
_paged_attention_op = torch.ops.attune.paged_attention.default
_paged_append_op = torch.ops.attune.paged_append.default
_sdpa_op = torch.ops.attune.sdpa.default


_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_MASK_TYPES = (torch.bool, torch.float32)  # attune's boolean and (float32) additive masks


def _eager_direct(query, key, value, *extra):
    """True when the op's dispatch can be skipped: not tracing for torch.compile, and no autograd
    graph to record (the op's registration is what makes a backward raise). The dispatcher and that
    registration cost ~9 us a call, most of a small call (bench/python_bench.py). `extra`: further
    arguments that may be tensors requiring grad (sinks, say); None and non-tensors are skipped."""
    if _is_compiling():
        return False
    if not _grad_enabled():
        return True
    if query.requires_grad or key.requires_grad or value.requires_grad:
        return False
    for t in extra:
        if t is not None and getattr(t, "requires_grad", False):
            return False
    return True


def _refuse(query, key, dropout_p, attn_mask, is_causal):
    """The error for arguments sdpa() does not take (shapes and types are checked by attune)."""
    if dropout_p != 0.0:
        raise NotImplementedError(f"attune.torch.sdpa: dropout_p must be 0.0 (inference only), got {dropout_p}")
    if attn_mask is not None and is_causal:
        raise ValueError("attune.torch.sdpa: attn_mask and is_causal=True together (as torch's SDPA refuses them)")
    raise ValueError(f"attune.torch.sdpa: query has {query.shape[-3]} heads and key {key.shape[-3]}; "
                     "grouped-query attention needs enable_gqa=True (as in torch's SDPA)")


def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, *,
         sinks=None, softcap=0.0):
    """torch.nn.functional.scaled_dot_product_attention computed by attune (CPU, forward only).

    is_causal is top-left aligned as in torch; attn_mask bool or float; dropout_p > 0 raises
    NotImplementedError. A query row whose keys are all masked outputs zeros (torch's: NaN).
    Beyond torch's arguments: sinks, [heads_q] logits joining each softmax denominator (gpt-oss's
    s_aux), and softcap, logits s -> softcap * tanh(s / softcap) (Gemma 2).
    """
    if dropout_p != 0.0 or (is_causal and attn_mask is not None):
        _refuse(query, key, dropout_p, attn_mask, is_causal)
    if attn_mask is not None and attn_mask.dtype not in _MASK_TYPES:
        attn_mask = attn_mask.float()
    scale = None if scale is None else float(scale)
    softcap = float(softcap)
    if not _is_compiling():
        # The binding checks the heads (enable_gqa) and whether autograd records the call (None:
        # then the op, whose backward raises); each tensor attribute costs ~0.1 us from Python.
        out = _bindings._sdpa(query, key, value, attn_mask, bool(is_causal), scale, bool(enable_gqa), sinks, softcap)
        if out is not None:
            return out
    if not enable_gqa:
        qs, ks = query.shape, key.shape
        if len(qs) > 2 and len(ks) > 2 and qs[-3] != ks[-3]:
            _refuse(query, key, dropout_p, attn_mask, is_causal)
    if sinks is not None and not isinstance(sinks, torch.Tensor):
        sinks = torch.as_tensor(sinks, dtype=torch.float32)
    return _sdpa_op(query, key, value, attn_mask, bool(is_causal), scale, sinks, softcap)


# attention()'s keyword arguments beyond causal and scale, and the element types the op's schema
# wants for those given as lists or numbers.
_VARIANTS = {"alibi_slopes": torch.float32, "sinks": torch.float32, "cu_seqlens_q": torch.int64,
             "cu_seqlens_kv": torch.int64, "top_k": None, "window": None, "softcap": None, "causal_align": None,
             "mask": None, "kv_dtype": None, "k_scales": torch.float32, "v_scales": torch.float32}


def _op_arguments(key, variants):
    """The op's keyword arguments: lists of slopes, sinks or offsets and fp8's one-number scales as
    tensors (an fp8 scale for every KV head), the rest as given."""
    out = {}
    for name, value in variants.items():
        dtype = _VARIANTS[name]
        if dtype is not None and value is not None and not isinstance(value, torch.Tensor):
            if name.endswith("_scales") and isinstance(value, (int, float)):
                value = torch.full((key.shape[-3],), float(value))
            else:
                value = torch.as_tensor(value, dtype=dtype)
        out[name] = value
    return out


def attention(query, key, value, causal=False, scale=None, **variants):
    """attune.attention as a torch op (attune's bottom-right causal alignment, grouped-query heads),
    with every keyword argument of attune.attention: the variants (alibi_slopes, sinks,
    cu_seqlens_q/cu_seqlens_kv, top_k, window, softcap, causal_align, mask) and quantized K/V codes
    (kv_dtype, k_scales, v_scales). attune/torch.pyi lists them with their types."""
    if not variants.keys() <= _VARIANTS.keys():
        unknown = ", ".join(sorted(variants.keys() - _VARIANTS.keys()))
        raise TypeError(f"attune.torch.attention: unknown argument(s) {unknown} (takes {', '.join(_VARIANTS)})")
    scale = None if scale is None else float(scale)
    if _eager_direct(query, key, value, *variants.values()):
        return _attune.attention(query, key, value, causal=bool(causal), scale=scale, **variants)
    return _attention_op(query, key, value, bool(causal), scale, **_op_arguments(key, variants))


def _tensor(value, dtype):
    """A list or number argument as the tensor the op's schema wants (tensors are passed as they are)."""
    return value if value is None or isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=dtype)


def _scales(value, heads_kv):
    """fp8's one-number scale as one per KV head (the op takes tensors)."""
    if isinstance(value, (int, float)):
        return torch.full((heads_kv,), float(value))
    return value


def paged_attention(query, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, *, scale=None, causal=True,
                    window=0, softcap=0.0, alibi_slopes=None, sinks=None, kv_dtype=None, k_scales=None,
                    v_scales=None, layout="heads_first"):
    """attune.paged_attention as a torch op: packed queries [total_q, heads_q, d] over the paged pools
    k_cache, v_cache (read in place), block_table [sequences, max_blocks], seq_lens (context lengths),
    cu_seqlens_q; returns [total_q, heads_q, d_v]. Forward only."""
    scale = None if scale is None else float(scale)
    if _eager_direct(query, k_cache, v_cache, alibi_slopes, sinks):
        return _attune.paged_attention(query, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale=scale,
                                       causal=causal, window=window, softcap=softcap, alibi_slopes=alibi_slopes,
                                       sinks=sinks, kv_dtype=kv_dtype, k_scales=k_scales, v_scales=v_scales,
                                       layout=layout)
    heads_kv = k_cache.shape[1 if layout == "heads_first" else 2]
    return _paged_attention_op(query, k_cache, v_cache, _tensor(block_table, torch.int32),
                               _tensor(seq_lens, torch.int64), _tensor(cu_seqlens_q, torch.int64), scale, bool(causal),
                               int(window), float(softcap), _tensor(alibi_slopes, torch.float32),
                               _tensor(sinks, torch.float32), kv_dtype, _scales(k_scales, heads_kv),
                               _scales(v_scales, heads_kv), layout)


def paged_append(k_cache, v_cache, key, value, slot_mapping, *, k_scales=None, v_scales=None, kv_dtype=None,
                 layout="heads_first"):
    """attune.paged_append as a torch op (mutating: writes k_cache, v_cache and the per-token scales in
    place): key [tokens, heads_kv, d_k], value [tokens, heads_kv, d_v] into slot_mapping's slots."""
    if not _is_compiling():
        _attune.paged_append(k_cache, v_cache, key, value, slot_mapping, k_scales=k_scales, v_scales=v_scales,
                             kv_dtype=kv_dtype, layout=layout)
        return
    heads_kv = k_cache.shape[1 if layout == "heads_first" else 2]
    _paged_append_op(k_cache, v_cache, key, value, _tensor(slot_mapping, torch.int64), _scales(k_scales, heads_kv),
                     _scales(v_scales, heads_kv), kv_dtype, layout)
