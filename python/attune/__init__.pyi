# Type stubs of the attune package (the functions in __init__.py; the bindings are private).
import os
from typing import Any, Optional, Sequence, TypedDict, TypeVar, Union

import numpy as np

Tensor = TypeVar("Tensor")  # a numpy.ndarray or a torch.Tensor; results have the type of q

__version__: str

class KernelInfo(TypedDict):
    name: str
    description: str
    rank: int
    isas: list[str]
    runnable_isas: list[str]
    dtypes: dict[str, list[str]]

class Choice(TypedDict):
    kernel: str
    isa: str
    block_q: int
    block_kv: int
    threads: int
    kv_splits: int
    micro: int
    strided: bool  # the tensors are read in place with their strides

def attention(q: Tensor, k: Any, v: Any, *, causal: bool = False, scale: Optional[float] = None,
              kernel: str = "auto", isa: Optional[str] = None, threads: Optional[int] = None,
              block_q: int = 0, block_kv: int = 0, kv_splits: int = 0, max_memory: int = 0,
              out: Optional[Tensor] = None, causal_align: str = "bottom_right", window: int = 0,
              softcap: float = 0.0, mask: Optional[Any] = None) -> Tensor: ...
def workspace_bytes(q: Any, k: Any, v: Any, *, causal: bool = False, scale: Optional[float] = None,
                    kernel: str = "auto", isa: Optional[str] = None, threads: Optional[int] = None,
                    block_q: int = 0, block_kv: int = 0, kv_splits: int = 0, causal_align: str = "bottom_right",
                    window: int = 0, softcap: float = 0.0, mask: Optional[Any] = None) -> int: ...
def resolve(q: Any, k: Any, v: Any, *, causal: bool = False, scale: Optional[float] = None,
            kernel: str = "auto", isa: Optional[str] = None, threads: Optional[int] = None,
            block_q: int = 0, block_kv: int = 0, kv_splits: int = 0, causal_align: str = "bottom_right",
            window: int = 0, softcap: float = 0.0, mask: Optional[Any] = None) -> Choice: ...
def mha(x: Tensor, wq: Any, wk: Any, wv: Any, wo: Any, *, heads_q: int, heads_kv: Optional[int] = None,
        causal: bool = False, scale: Optional[float] = None, kernel: str = "auto", isa: Optional[str] = None,
        threads: Optional[int] = None, max_memory: int = 0) -> Tensor: ...
def kernels() -> list[KernelInfo]: ...
def info() -> dict[str, Any]: ...
def set_tuning(mode: str, *, budget_ms: float = 200.0,
               save: Union[str, "os.PathLike[str]", None] = None) -> None: ...
def default_tuning_path() -> str: ...
def online_tuning_stats() -> dict[str, Union[int, float]]: ...
def load_tuning(path: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]) -> bool: ...
