# Type stubs of attune.torch.
from typing import Optional

import torch

def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
         dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
         enable_gqa: bool = False) -> torch.Tensor: ...
def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool = False,
              scale: Optional[float] = None) -> torch.Tensor: ...
