"""attune: CPU attention kernels for numpy arrays and torch CPU tensors.

    import numpy as np, attune
    q = np.random.rand(8, 128, 64).astype(np.float32)     # [heads, seq, d] or [batch, heads, seq, d]
    out = attune.attention(q, q, q, causal=True)          # same type as q

Inputs are read in place when they are C-contiguous (numpy arrays through DLPack, torch CPU
tensors by address); any other layout is first copied to a contiguous array (zero-copy strided
input waits for a strided attune::Problem). The GIL is released during the computation.
"""

from __future__ import annotations

import numpy as _np

from . import _attune

__all__ = ["attention", "mha", "kernels", "info", "workspace_bytes", "resolve", "__version__"]

try:  # numpy has no bfloat16 of its own; ml_dtypes' is the common one (optional).
    import ml_dtypes as _ml_dtypes

    _NP_BF16 = _np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    _NP_BF16 = None

# Storage type names of the C++ library (attune::Dtype) per numpy / torch element type.
_NP_NAMES = {_np.dtype(_np.float32): "fp32", _np.dtype(_np.float16): "fp16"}
if _NP_BF16 is not None:
    _NP_NAMES[_NP_BF16] = "bf16"
_NP_PLAIN = {_np.dtype(_np.float32), _np.dtype(_np.float16)}  # taken by the fast path as they are
_TORCH_NAMES = {}
_torch = None  # the torch module, once an input has been a torch.Tensor

__version__ = _attune.info()["version"]


def _torch_module():
    global _torch
    if _torch is None:
        import torch

        _TORCH_NAMES.update({torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"})
        _torch = torch
    return _torch


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _type_error(name, dtype):
    return TypeError(f"{name}: element type must be float32, float16 or bfloat16, got {dtype}")


def _np_input(name, x):
    """A C-contiguous numpy array the bindings take (bfloat16 as a uint16 view of its bits)."""
    dt = x.dtype
    if dt not in _NP_NAMES:
        raise _type_error(name, f"numpy {dt}")
    if not x.flags.c_contiguous:
        x = _np.ascontiguousarray(x)
    return x.view(_np.uint16) if dt == _NP_BF16 else x


def _torch_input(name, x):
    """A contiguous CPU tensor of a supported type (copied only when not contiguous)."""
    _torch_module()
    if not x.is_cpu:
        raise TypeError(f"{name}: attune runs on the CPU, got a tensor on device '{x.device}'")
    if x.dtype not in _TORCH_NAMES:
        raise _type_error(name, x.dtype)
    if x.requires_grad:
        x = x.detach()
    return x if x.is_contiguous() else x.contiguous()


def _prepare(q, k, v):
    """(framework, q, k, v) ready for the bindings; raises TypeError for anything else."""
    if isinstance(q, _np.ndarray) and isinstance(k, _np.ndarray) and isinstance(v, _np.ndarray):
        names = _NP_NAMES
        prepared = "numpy", _np_input("q", q), _np_input("k", k), _np_input("v", v)
    elif _is_torch(q) and _is_torch(k) and _is_torch(v):
        names = _TORCH_NAMES
        prepared = "torch", _torch_input("q", q), _torch_input("k", k), _torch_input("v", v)
    else:
        kinds = ", ".join(type(x).__module__ + "." + type(x).__name__ for x in (q, k, v))
        raise TypeError(f"q, k, v must be all numpy arrays or all torch tensors, got {kinds}")
    if names[k.dtype] != names[v.dtype]:
        raise TypeError("k and v must have the same element type")
    return prepared


def _out_numpy(out, q, q_in):
    """(the array the bindings write, the result) for the caller's `out`, checked."""
    if not isinstance(out, _np.ndarray):
        raise TypeError("out: must be a numpy array like q")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: must be a writeable C-contiguous array")
    if out.dtype != q_in.dtype:
        raise TypeError(f"out: element type must be q's ({q_in.dtype}), got {out.dtype}")
    return (out.view(_np.uint16) if out.dtype == _NP_BF16 else out), out


def _out_torch(out, q):
    if not _is_torch(out) or not out.is_cpu:
        raise TypeError("out: must be a CPU torch tensor like q")
    if not out.is_contiguous():
        raise ValueError("out: must be a contiguous tensor")
    if out.dtype != q.dtype:
        raise TypeError(f"out: element type must be q's ({q.dtype}), got {out.dtype}")
    return out.detach() if out.requires_grad else out


def _describe(q, k, v):
    """(q, k, v shapes, q's storage type name, k/v's) for the shape-only bindings."""
    _, q2, k2, v2 = _prepare(q, k, v)
    names = _NP_NAMES if isinstance(q, _np.ndarray) else _TORCH_NAMES
    return tuple(q2.shape), tuple(k2.shape), tuple(v2.shape), names[q.dtype], names[k.dtype]


def _check_options(kernel, isa, threads, block_q=0, block_kv=0, kv_splits=0, max_memory=0):
    """Raises a one-line error naming an option of the wrong type or sign. Called only after the
    bindings refused their arguments (nanobind's message lists whole signatures), so the
    successful call pays nothing for it."""
    if not isinstance(kernel, str):
        raise TypeError(f"kernel: must be a kernel name (str), got {kernel!r}")
    if isa is not None and not isinstance(isa, str):
        raise TypeError(f"isa: must be an ISA name (str) or None, got {isa!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)):
        raise TypeError(f"threads: must be an int or None, got {threads!r}")
    for name, value in (("block_q", block_q), ("block_kv", block_kv), ("kv_splits", kv_splits),
                        ("max_memory", max_memory)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name}: must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{name}: must be >= 0 (0: the default), got {value}")


def _call(binding, *args, options):
    """binding(*args), with _check_options' clearer message when nanobind refuses an argument."""
    try:
        return binding(*args)
    except TypeError:
        _check_options(*options)
        raise


def _scale(scale):
    return None if scale is None else float(scale)


def attention(q, k, v, *, causal: bool = False, scale=None, kernel: str = "auto", isa=None, threads=None,
              block_q: int = 0, block_kv: int = 0, kv_splits: int = 0, max_memory: int = 0, out=None):
    """softmax(scale * q k^T + mask) v for numpy arrays or CPU torch tensors.

    q [batch, heads_q, seq_q, d_k] (or 3-D without batch), k [.., heads_kv, seq_kv, d_k],
    v [.., heads_kv, seq_kv, d_v]; heads_q a multiple of heads_kv (grouped-query attention).
    Element types: float32, float16, bfloat16 (numpy: ml_dtypes.bfloat16); k and v share one,
    q may differ (a 16-bit KV cache with float32 queries). The result has q's type and framework.
    causal: the last query is aligned with the last key (query i sees keys j <= i + seq_kv - seq_q);
    scale defaults to 1/sqrt(d_k). kernel: a name from kernels() or "auto"; isa: an ISA name from
    info()["isa_runnable"]; threads: worker threads (None: all cores). block_q, block_kv,
    kv_splits: tile overrides (0: default). max_memory: working-memory limit in bytes (0: the
    ATTUNE_MAX_MEMORY environment variable, else half the physical memory); above it MemoryError.
    out: an array to write into (C-contiguous, q's type and the output's shape).
    Raises ValueError for bad shapes or options, TypeError for wrong types or devices.
    """
    causal, scale = bool(causal), _scale(scale)
    # Fast path, about half the wrapper's cost on small calls: plain numpy float32/float16 arrays
    # and no `out` go straight to the bindings (which copy a non-contiguous array themselves).
    # Anything they refuse takes the general path below, which raises the precise error.
    if (out is None and type(q) is _np.ndarray and type(k) is _np.ndarray and type(v) is _np.ndarray
            and q.dtype in _NP_PLAIN and k.dtype in _NP_PLAIN and v.dtype in _NP_PLAIN):
        result = _np.empty(q.shape[:-1] + v.shape[-1:], q.dtype)
        try:
            _attune.attention(q, k, v, result, causal, scale, kernel, isa, threads, block_q, block_kv, kv_splits,
                              max_memory)
            return result
        except TypeError:
            pass
    framework, q2, k2, v2 = _prepare(q, k, v)
    if framework == "numpy":
        if out is None:
            out2 = _np.empty(q2.shape[:-1] + v2.shape[-1:], q2.dtype)
            result = out2.view(_NP_BF16) if q.dtype == _NP_BF16 else out2
        else:
            out2, result = _out_numpy(out, q2, q)
        _call(_attune.attention, q2, k2, v2, out2, causal, scale, kernel, isa, threads, block_q, block_kv, kv_splits,
              max_memory, options=(kernel, isa, threads, block_q, block_kv, kv_splits, max_memory))
        return result
    if out is None:  # empty_like is ~2x cheaper than empty(shape) on small tensors
        dv = v2.shape[-1]
        out2 = result = _torch.empty_like(q2) if dv == q2.shape[-1] else q2.new_empty(q2.shape[:-1] + (dv,))
    else:
        out2, result = _out_torch(out, q2), out
    _call(_attune.attention_ptr, q2.data_ptr(), q2.shape, k2.data_ptr(), k2.shape, v2.data_ptr(), v2.shape,
          out2.data_ptr(), out2.shape, _TORCH_NAMES[q2.dtype], _TORCH_NAMES[k2.dtype], causal, scale, kernel, isa,
          threads, block_q, block_kv, kv_splits, max_memory,
          options=(kernel, isa, threads, block_q, block_kv, kv_splits, max_memory))
    return result


def workspace_bytes(q, k, v, *, causal: bool = False, scale=None, kernel: str = "auto", isa=None, threads=None,
                    block_q: int = 0, block_kv: int = 0, kv_splits: int = 0) -> int:
    """Bytes of working memory attention() would allocate for these tensors and options."""
    return _call(_attune.workspace_bytes, *_describe(q, k, v), bool(causal), _scale(scale), kernel, isa, threads,
                 block_q, block_kv, kv_splits, options=(kernel, isa, threads, block_q, block_kv, kv_splits))


def resolve(q, k, v, *, causal: bool = False, scale=None, kernel: str = "auto", isa=None, threads=None,
            block_q: int = 0, block_kv: int = 0, kv_splits: int = 0) -> dict:
    """What attention() would run: {"kernel", "isa", "block_q", "block_kv", "threads", "kv_splits", "micro"}."""
    return _call(_attune.resolve, *_describe(q, k, v), bool(causal), _scale(scale), kernel, isa, threads, block_q,
                 block_kv, kv_splits, options=(kernel, isa, threads, block_q, block_kv, kv_splits))


def mha(x, wq, wk, wv, wo, *, heads_q: int, heads_kv=None, causal: bool = False, scale=None,
        kernel: str = "auto", isa=None, threads=None, max_memory: int = 0):
    """Multi-head self-attention block y = concat_h(attention(x wq_h, x wk_g, x wv_g)) wo, float32.

    x [batch, seq, d_model] or [seq, d_model]; wq [d_model, heads_q * d_k], wk [d_model, heads_kv * d_k],
    wv [d_model, heads_kv * d_v], wo [heads_q * d_v, d_model] (y = x W: an nn.Linear weight transposed).
    """
    if not hasattr(_attune, "mha"):
        raise NotImplementedError("attune was built without BLAS (ATTUNE_WITH_BLAS=OFF): mha is not available")
    names, arrays = ("x", "wq", "wk", "wv", "wo"), [x, wq, wk, wv, wo]
    if all(isinstance(a, _np.ndarray) for a in arrays):
        framework, float32 = "numpy", _np.float32
    elif all(_is_torch(a) for a in arrays):
        framework, float32 = "torch", _torch_module().float32
    else:
        raise TypeError("mha: x and the weights must be all numpy arrays or all torch tensors")
    for name, a in zip(names, arrays):
        if a.dtype != float32:
            raise TypeError(f"mha: {name} must be float32, got {a.dtype}")
    if framework == "numpy":
        arrays = [_np.ascontiguousarray(a) for a in arrays]
        y = result = _np.empty(arrays[0].shape, _np.float32)
    else:
        arrays = [_torch_input(n, a).numpy() for n, a in zip(names, arrays)]  # float32 views
        result = _torch.empty(arrays[0].shape, dtype=float32)
        y = result.numpy()
    _call(_attune.mha, *arrays, y, int(heads_q), None if heads_kv is None else int(heads_kv), bool(causal),
          _scale(scale), kernel, isa, threads, max_memory, options=(kernel, isa, threads, 0, 0, 0, max_memory))
    return result


def kernels() -> list:
    """Every registered kernel: name, description, rank, compiled and runnable ISAs, and the
    storage types each runnable ISA takes (queried from the library, never a fixed list)."""
    return _attune.kernels()


def info() -> dict:
    """Version, git revision, compiler, CPU model, cores and ISAs (compiled, runnable, default)."""
    return _attune.info()
