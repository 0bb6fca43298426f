"""attune as a Hugging Face transformers attention backend.

    import attune.transformers                       # registers "attune"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="attune")

Registered through `transformers.AttentionInterface` (the attention function) and
`transformers.masking_utils.AttentionMaskInterface` (the same masks as "sdpa", which are None when
the mask is plain causal). attune computes every call whose mask is None: prefill, decoding with the
KV cache, grouped-query heads without repeating K/V. A call with a materialised mask (padding in a
batch, a sliding window shorter than the sequence, a chunked prefill on a filled cache) or dropout
in training runs transformers' own "sdpa" function instead; `calls()` counts both kinds.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import torch as _ops

__all__ = ["register", "attention_forward", "calls", "NAME"]

NAME = "attune"
_calls = {"attune": 0, "sdpa_fallback": 0}


def calls() -> dict:
    """Attention calls so far: {"attune": computed by attune, "sdpa_fallback": by transformers' sdpa}."""
    return dict(_calls)


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """The AttentionInterface function: [batch, heads, seq, d] in, [batch, seq, heads, d] out."""
    unsupported = (attention_mask is not None or (dropout and module.training) or kwargs.get("softcap") is not None
                   or kwargs.get("position_bias") is not None or kwargs.get("s_aux") is not None)
    if unsupported:
        _calls["sdpa_fallback"] += 1
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # transformers' sdpa semantics with no mask: decoding rows see every cached key, prefill is
    # top-left causal (keys beyond seq_q are empty static-cache slots), which attune.torch.sdpa does.
    causal = bool(causal) and query.shape[2] > 1
    _calls["attune"] += 1
    out = _ops.sdpa(query, key, value, is_causal=causal, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def register(name: str = NAME) -> None:
    """Make `attn_implementation=name` select attune (done on import with the name "attune")."""
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)


register()
