"""attune as a Hugging Face transformers attention backend.

    import attune.transformers                       # registers "attune"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="attune")

Registered through `transformers.AttentionInterface` (the attention function) and
`transformers.masking_utils.AttentionMaskInterface` (the same masks as "sdpa": None when the mask
is plain causal, else a boolean [batch, 1, seq_q, seq_kv] mask). attune computes prefill (top-left
causal), decoding with the KV cache, grouped-query heads without repeating K/V, materialised
masks (padding in a batch, sliding windows, chunked prefill on a filled cache; attune's boolean or
additive masks), soft-capped logits (Gemma 2) and attention sinks (gpt-oss's s_aux), eager or
traced by torch.compile. Q/K/V are read in place with their strides and the result is written
straight into the [batch, seq, heads, d] tensor transformers returns (no copies). Dropout in
training and position biases run transformers' own "sdpa" function instead (with sinks, which that
function would ignore, they raise NotImplementedError); `calls()` counts each kind.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import attune as _attune

from . import torch as _ops

__all__ = ["register", "attention_forward", "calls", "NAME"]

NAME = "attune"
_calls = {"attune": 0, "attune_masked": 0, "sdpa_fallback": 0}


def calls() -> dict:
    """Attention calls so far: {"attune": computed by attune (with or without a mask),
    "attune_masked": those of them with a materialised mask, "sdpa_fallback": by transformers' sdpa}."""
    return dict(_calls)


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """The AttentionInterface function: [batch, heads, seq, d] in, [batch, seq, heads, d] out."""
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux")  # gpt-oss: [heads] logits joining each softmax denominator
    direct = _ops._eager_direct(query, key, value, sinks)
    if (dropout and module.training) or kwargs.get("position_bias") is not None:
        if sinks is not None:  # transformers' sdpa would drop the sinks silently
            raise NotImplementedError("attune.transformers: attention sinks (s_aux) with dropout in training or a "
                                      "position bias: neither attune nor transformers' sdpa computes that; use "
                                      "attn_implementation='eager'")
        _calls["sdpa_fallback"] += 1
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    softcap = 0.0 if softcap is None else float(softcap)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # transformers' sdpa semantics: a mask carries the causal part itself; without one, decoding
    # rows see every cached key and prefill is top-left causal (keys beyond seq_q are empty
    # static-cache slots).
    causal = bool(causal) and query.shape[2] > 1 and attention_mask is None
    _calls["attune"] += 1
    if attention_mask is not None:
        _calls["attune_masked"] += 1
        if attention_mask.dtype != torch.bool and attention_mask.dtype != torch.float32:
            attention_mask = attention_mask.float()  # additive masks in the model's dtype
    if not direct:  # torch.compile tracing or autograd recording: the registered op
        out = _ops.sdpa(query, key, value, attn_mask=attention_mask, is_causal=causal, scale=scaling, enable_gqa=True,
                        sinks=sinks, softcap=softcap)
        return out.transpose(1, 2).contiguous(), None
    batch, heads, seq_q, _ = query.shape
    out = query.new_empty((batch, seq_q, heads, value.shape[-1]))
    _attune.attention(query, key, value, causal=causal, causal_align="top_left", scale=scaling, softcap=softcap,
                      mask=attention_mask, sinks=sinks, out=out.transpose(1, 2))
    return out, None


def register(name: str = NAME) -> None:
    """Make `attn_implementation=name` select attune (done on import with the name "attune")."""
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)


register()
