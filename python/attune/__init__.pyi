# Type stubs of the attune package (the functions in __init__.py; the bindings are private).
import os
from typing import Any, Literal, Optional, Sequence, TypedDict, TypeVar, Union

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

ArrayLike = Any  # a numpy array, a CPU torch tensor or a sequence of numbers

def attention(q: Tensor, k: Any, v: Any, *, causal: bool = False, scale: Optional[float] = None,
              kernel: str = "auto", isa: Optional[str] = None, threads: Optional[int] = None,
              block_q: int = 0, block_kv: int = 0, kv_splits: int = 0, max_memory: int = 0,
              out: Optional[Tensor] = None, causal_align: str = "bottom_right", window: int = 0,
              softcap: float = 0.0, mask: Optional[Any] = None, alibi_slopes: Optional[ArrayLike] = None,
              sinks: Optional[ArrayLike] = None, cu_seqlens_q: Optional[ArrayLike] = None,
              cu_seqlens_kv: Optional[ArrayLike] = None, top_k: int = 0, kv_dtype: Optional[str] = None,
              k_scales: Union[Any, float, None] = None, v_scales: Union[Any, float, None] = None) -> Tensor: ...
def workspace_bytes(q: Any, k: Any, v: Any, *, causal: bool = False, scale: Optional[float] = None,
                    kernel: str = "auto", isa: Optional[str] = None, threads: Optional[int] = None,
                    block_q: int = 0, block_kv: int = 0, kv_splits: int = 0, max_memory: int = 0,
                    out: Optional[Any] = None, causal_align: str = "bottom_right", window: int = 0,
                    softcap: float = 0.0, mask: Optional[Any] = None, alibi_slopes: Optional[ArrayLike] = None,
                    sinks: Optional[ArrayLike] = None, cu_seqlens_q: Optional[ArrayLike] = None,
                    cu_seqlens_kv: Optional[ArrayLike] = None, top_k: int = 0, kv_dtype: Optional[str] = None,
                    k_scales: Union[Any, float, None] = None, v_scales: Union[Any, float, None] = None) -> int: ...
def resolve(q: Any, k: Any, v: Any, *, causal: bool = False, scale: Optional[float] = None,
            kernel: str = "auto", isa: Optional[str] = None, threads: Optional[int] = None,
            block_q: int = 0, block_kv: int = 0, kv_splits: int = 0, max_memory: int = 0,
            out: Optional[Any] = None, causal_align: str = "bottom_right", window: int = 0,
            softcap: float = 0.0, mask: Optional[Any] = None, alibi_slopes: Optional[ArrayLike] = None,
            sinks: Optional[ArrayLike] = None, cu_seqlens_q: Optional[ArrayLike] = None,
            cu_seqlens_kv: Optional[ArrayLike] = None, top_k: int = 0, kv_dtype: Optional[str] = None,
            k_scales: Union[Any, float, None] = None, v_scales: Union[Any, float, None] = None) -> Choice: ...
def paged_attention(q: Tensor, k_cache: Any, v_cache: Any, block_table: Any, seq_lens: ArrayLike,
                    cu_seqlens_q: ArrayLike, *, scale: Optional[float] = None, causal: bool = True, window: int = 0,
                    softcap: float = 0.0, alibi_slopes: Optional[ArrayLike] = None,
                    sinks: Optional[ArrayLike] = None, kv_dtype: Optional[str] = None,
                    k_scales: Union[Any, float, None] = None, v_scales: Union[Any, float, None] = None,
                    kernel: str = "auto", threads: Optional[int] = None, out: Optional[Tensor] = None,
                    layout: Literal["heads_first", "vllm"] = "heads_first") -> Tensor: ...
def paged_append(k_cache: Any, v_cache: Any, key: Any, value: Any, slot_mapping: ArrayLike, *,
                 k_scales: Union[Any, float, None] = None, v_scales: Union[Any, float, None] = None,
                 kv_dtype: Optional[str] = None, layout: Literal["heads_first", "vllm"] = "heads_first",
                 threads: Optional[int] = None) -> None: ...
def quantize_kv(x: Tensor, dtype: str, *, is_k: Optional[bool] = None) -> tuple[Tensor, Tensor]: ...
def dequantize_kv(codes: Tensor, scales: Any, dtype: str, *, is_k: Optional[bool] = None) -> Tensor: ...
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
