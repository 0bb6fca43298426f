# Type stubs of attune.transformers.
from typing import Any, Optional

import torch

NAME: str

def calls() -> dict[str, int]: ...
def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Optional[torch.Tensor], dropout: float = 0.0, scaling: Optional[float] = None,
                      is_causal: Optional[bool] = None, **kwargs: Any) -> tuple[torch.Tensor, None]: ...
def register(name: str = ...) -> None: ...
