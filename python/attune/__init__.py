"""attune: CPU attention kernels for numpy arrays and torch CPU tensors.

    import numpy as np, attune
    q = np.random.rand(8, 128, 64).astype(np.float32)     # [heads, seq, d] or [batch, heads, seq, d]
    out = attune.attention(q, q, q, causal=True)          # same type as q

Inputs are read in place, strided ones included (transposed views, slices, a KV cache with spare
capacity, broadcasts) as long as each row of d elements is contiguous; other layouts are copied
first. numpy arrays are read through numpy's C API, torch CPU tensors by address and strides.
The GIL is released during the computation. Variants (mask, window, softcap, alibi_slopes, sinks,
top_k, varlen cu_seqlens_q/cu_seqlens_kv) are keyword arguments of attention(); a quantized KV
cache is attention(q, k_codes, v_codes, kv_dtype=..., k_scales=..., v_scales=...) with the codes
and scales quantize_kv() returns. A paged KV cache (vLLM's block tables) is read in place by
paged_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q) and written by
paged_append(k_cache, v_cache, key, value, slot_mapping) (docs/python.md).
"""

from __future__ import annotations

import numpy as _np

from . import _attune

__all__ = ["attention", "mha", "kernels", "info", "load_tuning", "set_tuning", "online_tuning_stats",
           "default_tuning_path", "quantize_kv", "dequantize_kv", "paged_attention", "paged_append",
           "workspace_bytes", "resolve", "__version__"]

try:  # numpy has no bfloat16 of its own; ml_dtypes' is the common one (optional).
    import ml_dtypes as _ml_dtypes

    _NP_BF16 = _np.dtype(_ml_dtypes.bfloat16)
    _attune._register_bfloat16(_NP_BF16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    _NP_BF16 = None

_torch = None  # the torch module, once an input has been a torch.Tensor

__version__ = _attune.info()["version"]


def _torch_module():
    global _torch
    if _torch is None:
        import torch

        _torch = torch
    return _torch


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _check_options(kernel, isa, threads, block_q=0, block_kv=0, kv_splits=0, max_memory=0):
    """Raises a one-line error naming an option of the wrong type or sign. Called only after the
    bindings refused their arguments (nanobind's message lists whole signatures), so the
    successful call pays nothing for it. (attention, workspace_bytes and resolve check their own.)"""
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


# attune.attention is the binding itself (nanobind matches the keywords; no Python code runs on
# the call); its docstring and one-line argument errors are in python/src/module.cpp.
attention = _attune.attention


# Paged K/V (vLLM's PagedAttention): the bindings themselves, reading and writing the caller's pools
# in place; docstrings and one-line argument errors in python/src/module.cpp, docs in docs/python.md.
paged_attention = _attune.paged_attention
paged_append = _attune.paged_append

# workspace_bytes and resolve take attention's arguments (the same binding signature).
workspace_bytes = _attune.workspace_bytes
resolve = _attune.resolve

_QUANTIZED = ("int8", "int8_kc", "fp8_e4m3", "fp8_e5m2", "int4")


def _float32_numpy(x, name):
    """x (numpy float32/float16/bfloat16 or a CPU torch tensor of those) as a C-contiguous float32
    numpy array (widening is exact), and whether it was a torch tensor."""
    if _is_torch(x):
        torch = _torch_module()
        if not x.is_cpu:
            raise TypeError(f"{name}: attune runs on the CPU, got a tensor on device '{x.device}'")
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"{name}: element type must be float32, float16 or bfloat16, got {x.dtype}")
        return _np.ascontiguousarray(x.detach().to(torch.float32).numpy()), True
    if not isinstance(x, _np.ndarray):
        raise TypeError(f"{name}: must be a numpy array or a CPU torch tensor, got {type(x).__name__}")
    if x.dtype not in (_np.float32, _np.float16) and x.dtype != _NP_BF16:
        raise TypeError(f"{name}: element type must be float32, float16 or bfloat16, got numpy {x.dtype}")
    return _np.ascontiguousarray(x, dtype=_np.float32), False


def _numpy_of(x, name):
    """A CPU torch tensor's numpy view (int8, uint8, float32, float16), or x itself, C-contiguous."""
    if _is_torch(x):
        if not x.is_cpu:
            raise TypeError(f"{name}: attune runs on the CPU, got a tensor on device '{x.device}'")
        return _np.ascontiguousarray(x.detach().numpy()), True
    if not isinstance(x, _np.ndarray):
        raise TypeError(f"{name}: must be a numpy array or a CPU torch tensor, got {type(x).__name__}")
    return _np.ascontiguousarray(x), False


def quantize_kv(x, dtype: str, *, is_k=None):
    """Quantizes a whole K or V cache x [batch, heads_kv, seq, d] (or [heads_kv, seq, d]; float32,
    float16 or bfloat16, numpy or CPU torch) to `dtype` ("int8", "int8_kc", "fp8_e4m3", "fp8_e5m2",
    "int4"): returns (codes, scales) of x's framework, which attention() reads with
    kv_dtype=dtype, k_scales=..., v_scales=...:

    - codes [.., heads_kv, seq, d] int8 (int8, int8_kc) or uint8 (fp8 bytes; int4: [.., d / 2], two
      4-bit codes a byte, d a multiple of 32);
    - scales float32 [.., heads_kv, seq] per token (int8, int8_kc's V), [.., heads_kv, d] per channel
      (int8_kc's K), [heads_kv] per head (fp8: max |x| / 448 or / 57344 over every batch), or
      float16 [.., heads_kv, seq, d / 32, 2] (scale, min) pairs (int4).

    is_k: whether x is K or V; int8_kc needs it (K per channel, V per token), the other types
    quantize both alike. Rounding and layouts: docs/quantized-kv.md. Non-finite values are refused."""
    a, was_torch = _float32_numpy(x, "x")
    if not isinstance(dtype, str):
        raise TypeError(f"dtype: must be one of {', '.join(_QUANTIZED)} (str), got {dtype!r}")
    codes, scales = _attune.quantize_kv(a, dtype, None if is_k is None else bool(is_k))
    if was_torch:
        torch = _torch_module()
        return torch.from_numpy(codes), torch.from_numpy(scales)
    return codes, scales


def dequantize_kv(codes, scales, dtype: str, *, is_k=None):
    """The float32 values of quantize_kv's (codes, scales) as attention() decodes them (the inverse of
    quantize_kv up to its rounding), of the codes' framework."""
    c, was_torch = _numpy_of(codes, "codes")
    s, _ = _numpy_of(scales, "scales")
    if not isinstance(dtype, str):
        raise TypeError(f"dtype: must be one of {', '.join(_QUANTIZED)} (str), got {dtype!r}")
    x = _attune.dequantize_kv(c, s, dtype, None if is_k is None else bool(is_k))
    return _torch_module().from_numpy(x) if was_torch else x


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
        for name, a in zip(names, arrays):
            if not a.is_cpu:
                raise TypeError(f"{name}: attune runs on the CPU, got a tensor on device '{a.device}'")
        arrays = [a.detach().contiguous().numpy() for a in arrays]  # float32 views
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
    """Version, git revision, compiler, CPU model, cores and ISAs (compiled, runnable, default),
    the machine signature tuning files are keyed by (``machine``), and which tuned table ``auto``
    reads and where it came from (``tuned_table``)."""
    return _attune.info()


def load_tuning(path) -> bool:
    """Loads run-time tuning files (written by ``attune tune``, joined by ``attune tune-merge``):
    one path, a ':'-separated list, or a list of paths; earlier files win on the same machine and
    key. Replaces the files loaded before; ``""`` or ``[]`` unloads them. A file that cannot be
    read, is malformed or comes from another build is skipped with one warning on stderr, never
    an exception. Returns True if a table for this machine (exact, or the nearest with the same
    ISA set) is now used by ``kernel="auto"``; ``info()["tuned_table"]`` says which.

    Precedence for ``auto``: explicit config fields (block_q, ...), then this table, then a
    compiled-in table, then the built-in defaults. Without a call, the first attention call
    loads ``$ATTUNE_TUNING``, or if that is unset the per-user file
    (``$XDG_CONFIG_HOME/attune/tuning.json`` or ``~/.config/attune/tuning.json``) if it exists."""
    import os

    if isinstance(path, (list, tuple)):
        path = ":".join(os.fspath(p) for p in path)
    return _attune.load_tuning(os.fspath(path))


def set_tuning(mode: str, *, budget_ms: float = 200.0, save=None) -> None:
    """``"online"``: tune on first use (opt-in, like ``torch.backends.cudnn.benchmark``). The
    first ``attention`` call of a shape key that no loaded or compiled table has an exact entry
    for races the default and a few candidates (every kernel's default config per thread count,
    the nearest table entry) on the call's own tensors, each checked first against the ``naive``
    kernel on a small instance; the winner serves that key for the rest of the process, and is
    appended to the tuning file ``save`` if given (load it next time with ``load_tuning``).
    Candidates start only while under ``budget_ms``, so a race costs at most that plus one call
    of the slowest candidate. Concurrent first calls of one key race once. ``"table"``: off (the
    default; ``ATTUNE_TUNE=online`` turns it on from the environment)."""
    import os

    _attune.set_tuning(mode, budget_ms, "" if save is None else os.fspath(save))


def default_tuning_path() -> str:
    """The per-user tuning file loaded when ATTUNE_TUNING is unset: $XDG_CONFIG_HOME/attune/
    tuning.json, else ~/.config/attune/tuning.json ("" if neither variable is set)."""
    return _attune.default_tuning_path()


def online_tuning_stats() -> dict:
    """Races run so far (keys), candidates timed, candidates rejected by the check, races whose
    winner is not the default, and the races' total and longest wall time in ms."""
    return _attune.online_tuning_stats()
