# Type stubs of attune.torch.
from typing import Literal, Optional, Sequence, Union

import torch

PerHead = Union[torch.Tensor, Sequence[float]]
Offsets = Union[torch.Tensor, Sequence[int]]

def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
         dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
         enable_gqa: bool = False, *, sinks: Optional[PerHead] = None, softcap: float = 0.0) -> torch.Tensor: ...
def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool = False,
              scale: Optional[float] = None, *, alibi_slopes: Optional[PerHead] = None,
              sinks: Optional[PerHead] = None, cu_seqlens_q: Optional[Offsets] = None,
              cu_seqlens_kv: Optional[Offsets] = None, top_k: int = 0, window: int = 0, softcap: float = 0.0,
              causal_align: str = "bottom_right", mask: Optional[torch.Tensor] = None,
              kv_dtype: Optional[str] = None, k_scales: Union[torch.Tensor, float, None] = None,
              v_scales: Union[torch.Tensor, float, None] = None) -> torch.Tensor: ...
def paged_attention(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    block_table: torch.Tensor, seq_lens: Offsets,
                    cu_seqlens_q: Offsets, *, scale: Optional[float] = None, causal: bool = True, window: int = 0,
                    softcap: float = 0.0, alibi_slopes: Optional[PerHead] = None, sinks: Optional[PerHead] = None,
                    kv_dtype: Optional[str] = None, k_scales: Union[torch.Tensor, float, None] = None,
                    v_scales: Union[torch.Tensor, float, None] = None,
                    layout: Literal["heads_first", "vllm"] = "heads_first") -> torch.Tensor: ...
def paged_append(k_cache: torch.Tensor, v_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 slot_mapping: Offsets, *, k_scales: Union[torch.Tensor, float, None] = None,
                 v_scales: Union[torch.Tensor, float, None] = None, kv_dtype: Optional[str] = None,
                 layout: Literal["heads_first", "vllm"] = "heads_first") -> None: ...
