"""attune on numpy arrays: results against the float64 reference, every kernel and ISA, element
types, layouts, errors, memory limits, threads, lifetimes and interrupts."""

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest

import attune
from conftest import assert_close, pv_rounding, reference, require

ml_dtypes = require("ml_dtypes")  # bfloat16 for numpy (python/requirements-test.txt)
BF16 = np.dtype(ml_dtypes.bfloat16)


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


SHAPES = [  # (batch or None for 3-D, heads_q, heads_kv, seq_q, seq_kv, d_k, d_v)
    (None, 2, 2, 17, 17, 16, 16),
    (2, 4, 2, 33, 33, 64, 64),
    (1, 4, 1, 5, 70, 32, 32),     # multi-query, seq_q < seq_kv
    (1, 2, 2, 40, 9, 8, 8),       # seq_q > seq_kv: with causal, the first rows see no key
    (1, 2, 2, 16, 24, 16, 40),    # d_v != d_k
    (3, 8, 8, 1, 300, 128, 128),  # decoding row
]


def make(rng, shape, dtype=np.float32, kv_dtype=None):
    b, hq, hkv, sq, skv, dk, dv = shape
    lead = () if b is None else (b,)
    q = randn(rng, *lead, hq, sq, dk).astype(dtype)
    k = randn(rng, *lead, hkv, skv, dk).astype(kv_dtype or dtype)
    v = randn(rng, *lead, hkv, skv, dv).astype(kv_dtype or dtype)
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_hq{}_hkv{}_sq{}_skv{}_dk{}_dv{}".format(*s))
def test_matches_reference(rng, shape, causal):
    q, k, v = make(rng, shape)
    out = attune.attention(q, k, v, causal=causal)
    assert out.shape == q.shape[:-1] + (v.shape[-1],) and out.dtype == np.float32
    assert_close(out, reference(q, k, v, causal))


def test_explicit_scale(rng):
    q, k, v = make(rng, SHAPES[1])
    assert_close(attune.attention(q, k, v, scale=0.05), reference(q, k, v, scale=0.05))


def _runnable_pairs():
    return [(kern["name"], isa) for kern in attune.kernels() for isa in kern["runnable_isas"]]


@pytest.mark.parametrize("kernel,isa", _runnable_pairs(), ids=lambda x: str(x))
def test_every_kernel_and_isa(rng, kernel, isa):
    takes = next(kern for kern in attune.kernels() if kern["name"] == kernel)["dtypes"][isa]
    if "fp32" in takes:
        q, k, v = make(rng, (1, 4, 2, 37, 37, 64, 64))
        assert_close(attune.attention(q, k, v, causal=True, kernel=kernel, isa=isa), reference(q, k, v, True))
    else:  # a bf16-only kernel (amx): bf16 storage, P rounded to bf16
        q, k, v = make(rng, (1, 4, 2, 37, 37, 64, 64), BF16)
        out = attune.attention(q, k, v, causal=True, kernel=kernel, isa=isa)
        assert_close(out, reference(q, k, v, True), "bfloat16", pv_rounding(q, k, v, True))


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["float16", "bfloat16"])
def test_16bit_storage(rng, dtype):
    q, k, v = make(rng, (1, 4, 2, 40, 50, 64, 64), dtype)
    out = attune.attention(q, k, v, causal=True)
    assert out.dtype == np.dtype(dtype)
    # reference on the stored values; auto runs bf16 on amx where the CPU has it (P rounded)
    pv = pv_rounding(q, k, v, True) if dtype == BF16 else 0.0
    assert_close(out, reference(q, k, v, True), np.dtype(dtype).name, pv)


def test_float32_queries_on_a_16bit_kv_cache(rng):
    q, k, v = make(rng, (1, 8, 2, 1, 200, 64, 64), np.float32, BF16)
    out = attune.attention(q, k, v)
    assert out.dtype == np.float32
    assert_close(out, reference(q, k, v))


def test_bfloat16_output_is_a_bfloat16_array(rng):
    q, k, v = make(rng, SHAPES[0], BF16)
    out = attune.attention(q, k, v)
    assert out.dtype == BF16 and out.flags.c_contiguous and out.flags.writeable


# Layouts: every non-contiguous input is copied first and must give the contiguous call's bits.
def _layouts(rng):
    base = randn(rng, 2, 33, 4, 16)  # [batch, seq, heads, d], as projections produce it
    yield "transposed", base.transpose(0, 2, 1, 3)
    yield "sliced", randn(rng, 2, 4, 66, 16)[:, :, ::2, :]
    yield "reversed", randn(rng, 2, 4, 33, 16)[:, :, ::-1, :]
    yield "broadcast", np.broadcast_to(randn(rng, 1, 4, 33, 16), (2, 4, 33, 16))  # zero stride, read-only
    yield "fortran", np.asfortranarray(randn(rng, 2, 4, 33, 16))


@pytest.mark.parametrize("which", ["q", "k", "v", "all"])
def test_non_contiguous_inputs_give_the_contiguous_result(rng, which):
    for name, x in _layouts(rng):
        assert not x.flags.c_contiguous, name
        tensors = {n: np.ascontiguousarray(x) if n == which or which == "all" else randn(rng, *x.shape)
                   for n in "qkv"}
        strided = {n: x if n == which or which == "all" else tensors[n] for n in "qkv"}
        expected = attune.attention(tensors["q"], tensors["k"], tensors["v"], causal=True)
        got = attune.attention(strided["q"], strided["k"], strided["v"], causal=True)
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_read_only_inputs(rng):
    q, k, v = make(rng, SHAPES[0])
    for x in (q, k, v):
        x.flags.writeable = False
    assert_close(attune.attention(q, k, v), reference(q, k, v))


def test_out_argument_is_written_in_place(rng):
    q, k, v = make(rng, SHAPES[1])
    out = np.full(q.shape, np.nan, np.float32)
    assert attune.attention(q, k, v, out=out) is out
    assert_close(out, reference(q, k, v))
    with pytest.raises(ValueError, match="out: shape"):
        attune.attention(q, k, v, out=np.empty(q.shape[:-1] + (3,), np.float32))
    with pytest.raises(TypeError, match="out: element type"):
        attune.attention(q, k, v, out=np.empty(q.shape, np.float16))
    # Any layout is written: strided rows in place, others through a contiguous temporary.
    for strided in (np.empty(q.shape[:-2] + (q.shape[-2] * 2, q.shape[-1]), np.float32)[..., ::2, :],
                    np.empty(q.shape[::-1], np.float32).T):
        assert attune.attention(q, k, v, out=strided) is strided
        np.testing.assert_array_equal(strided, out)
    read_only = np.empty_like(q)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out: must be a writeable"):
        attune.attention(q, k, v, out=read_only)
    with pytest.raises(ValueError, match="out: must not have zero strides"):
        attune.attention(q, k, v, out=np.lib.stride_tricks.as_strided(np.empty(q.shape[1:], np.float32), q.shape,
                                                                     (0,) + q.strides[1:]))


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint16, np.complex64, bool])
def test_wrong_element_type_is_a_type_error(rng, dtype):
    q, k, v = make(rng, SHAPES[0])
    with pytest.raises(TypeError, match="q: element type must be float32, float16 or bfloat16"):
        attune.attention(q.astype(dtype), k, v)


def test_type_errors(rng):
    q, k, v = make(rng, SHAPES[0])
    with pytest.raises(TypeError, match="all numpy arrays or all torch tensors"):
        attune.attention(q.tolist(), k, v)
    with pytest.raises(TypeError, match="k and v must have the same element type"):
        attune.attention(q, k, v.astype(np.float16))


@pytest.mark.parametrize("args,message", [
    (dict(q=(8, 16)), "q: expected 3-D"),                  # 2-D
    (dict(q=(1, 1, 2, 4, 8, 16)), "q: expected 3-D"),        # 5-D
    (dict(k=(1, 2, 4, 8, 16)), "same number of dimensions"),
    (dict(k=(1, 2, 8, 15)), "d_k"),
    (dict(q=(2, 2, 4, 16)), "batch"),
    (dict(v=(1, 2, 9, 16)), "k and v must agree"),
    (dict(q=(1, 3, 4, 16)), "heads_q"),                     # 3 query heads over 2 K/V heads
    (dict(q=(1, 2, 0, 16)), "seq_q"),                       # empty
])
def test_bad_shapes_are_value_errors(args, message):
    shapes = dict(q=(1, 2, 4, 16), k=(1, 2, 8, 16), v=(1, 2, 8, 16))
    shapes.update(args)
    arrays = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    with pytest.raises(ValueError, match=message):
        attune.attention(arrays["q"], arrays["k"], arrays["v"])


@pytest.mark.parametrize("options,message", [
    (dict(kernel="nope"), "nope"),
    (dict(isa="avx9000"), "isa: unknown ISA 'avx9000'"),
    (dict(threads=0), "threads: must be >= 1"),
    (dict(block_q=-1), "block_q"),
    (dict(scale=float("nan")), "scale"),
])
def test_bad_options_are_value_errors(rng, options, message):
    q, k, v = make(rng, SHAPES[0])
    with pytest.raises(ValueError, match=message):
        attune.attention(q, k, v, **options)


def test_working_memory_limit_is_a_memory_error(rng):
    q, k, v = make(rng, (1, 2, 2, 600, 600, 16, 16))
    need = attune.workspace_bytes(q, k, v, kernel="naive")
    assert need > 0
    attune.attention(q, k, v, kernel="naive", max_memory=need)  # exactly at the limit: runs
    with pytest.raises(MemoryError, match="working memory"):
        attune.attention(q, k, v, kernel="naive", max_memory=need - 1)


def test_workspace_bytes_follows_the_options(rng):
    q, k, v = make(rng, (1, 2, 2, 256, 256, 16, 16))
    assert attune.workspace_bytes(q, k, v, kernel="naive") != attune.workspace_bytes(q, k, v, kernel="flash", threads=1)
    assert isinstance(attune.workspace_bytes(q, k, v), int)


def test_resolve_names_a_runnable_kernel_and_isa(rng):
    q, k, v = make(rng, SHAPES[1])
    choice = attune.resolve(q, k, v, threads=1)
    runnable = {kern["name"]: kern["runnable_isas"] for kern in attune.kernels()}
    assert choice["isa"] in runnable[choice["kernel"]] and choice["threads"] == 1


def test_kernels_and_info_come_from_the_library():
    info = attune.info()
    assert info["version"] == attune.__version__
    # the default is the best vector ISA: amx serves only its own kernel
    assert info["isa_default"] == [i for i in info["isa_runnable"] if i != "amx"][0]
    assert set(info["isa_runnable"]) <= set(info["isa_compiled"])
    names = [kern["name"] for kern in attune.kernels()]
    assert len(names) == len(set(names)) and "naive" in names
    for kern in attune.kernels():
        assert set(kern["runnable_isas"]) <= set(info["isa_runnable"]), kern["name"]
        assert set(kern["dtypes"]) == set(kern["runnable_isas"])
        assert all(set(d) <= {"fp32", "bf16", "fp16"} for d in kern["dtypes"].values())


@pytest.mark.skipif(not attune.info()["with_blas"], reason="built without BLAS: no mha")
def test_mha_matches_numpy(rng):
    b, s, dm, hq, hkv, dk = 2, 12, 32, 4, 2, 8
    x = randn(rng, b, s, dm)
    wq, wk, wv = randn(rng, dm, hq * dk), randn(rng, dm, hkv * dk), randn(rng, dm, hkv * dk)
    wo = randn(rng, hq * dk, dm)
    y = attune.mha(x, wq, wk, wv, wo, heads_q=hq, heads_kv=hkv, causal=True)

    def heads(t, h):
        return t.astype(np.float64).reshape(b, s, h, dk).transpose(0, 2, 1, 3)

    o = reference(heads(x @ wq, hq), heads(x @ wk, hkv), heads(x @ wv, hkv), causal=True)
    expected = o.transpose(0, 2, 1, 3).reshape(b, s, hq * dk) @ wo
    np.testing.assert_allclose(y, expected, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="heads_q"):
        attune.mha(x, wq, wk, wv, wo, heads_q=3)
    with pytest.raises(TypeError, match="float32"):
        attune.mha(x.astype(np.float64), wq, wk, wv, wo, heads_q=hq, heads_kv=hkv)


def test_thread_counts_give_identical_bits(rng):
    q, k, v = make(rng, (1, 8, 8, 256, 256, 64, 64))
    one = attune.attention(q, k, v, causal=True, kernel="flash", threads=1)
    two = attune.attention(q, k, v, causal=True, kernel="flash", threads=2)
    np.testing.assert_array_equal(one, two)


def test_concurrent_python_threads_get_their_own_results(rng):
    inputs = [make(rng, (1, 4, 2, 64 + 8 * i, 64 + 8 * i, 32, 32)) for i in range(6)]
    expected = [attune.attention(*t, causal=True) for t in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(3):
            results[i] = attune.attention(*inputs[i], causal=True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_gil_is_released_during_the_call(rng):
    q, k, v = make(rng, (1, 2, 2, 1024, 1024, 64, 64))
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    t = threading.Thread(target=count)
    t.start()
    before = ticks
    attune.attention(q, k, v, kernel="naive", threads=1)  # tens of milliseconds at least
    during = ticks - before
    done.set()
    t.join()
    assert during > 10, f"the other Python thread advanced only {during} times during the call"


def test_no_reference_leaks_and_no_memory_growth(rng):
    q, k, v = make(rng, SHAPES[1])
    out = np.empty(q.shape, np.float32)
    counts = [sys.getrefcount(x) for x in (q, k, v, out)]
    for _ in range(50):
        attune.attention(q, k, v, out=out)
        attune.attention(q, k, v)
    gc.collect()
    assert [sys.getrefcount(x) for x in (q, k, v, out)] == counts
    tracemalloc.start()
    attune.attention(q, k, v)
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    for _ in range(300):
        attune.attention(q, k, v)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    assert grown < 64 * 1024, f"traced memory grew by {grown} bytes over 300 calls"


def test_result_does_not_keep_the_inputs_alive(rng):
    import weakref

    q, k, v = make(rng, SHAPES[0])
    refs = [weakref.ref(x) for x in (q, k, v)]
    out = attune.attention(q, k, v)
    del q, k, v
    gc.collect()
    assert all(r() is None for r in refs)
    assert np.isfinite(out).all()


def test_keyboard_interrupt_arrives_after_the_call_returns(tmp_path):
    script = textwrap.dedent("""
        import os, signal, sys, threading, time
        import numpy as np
        import attune
        # Python leaves SIGINT ignored when its launcher ignored it (a background job of a
        # non-interactive shell does): install the handler this test is about.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        rng = np.random.default_rng(0)
        q = rng.standard_normal((1, 2, 2048, 64)).astype(np.float32)
        t0 = time.perf_counter()
        expected = attune.attention(q, q, q, kernel="naive", threads=1)
        alone = time.perf_counter() - t0
        counts = [sys.getrefcount(q)]
        threading.Timer(alone / 4, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        try:
            attune.attention(q, q, q, kernel="naive", threads=1)
            while True:  # the interrupt must arrive by the next bytecodes
                time.sleep(0.01)
        except KeyboardInterrupt:
            interrupted = time.perf_counter() - t0
        counts.append(sys.getrefcount(q))
        again = attune.attention(q, q, q, kernel="naive", threads=1)
        print(alone, interrupted, counts[0] == counts[1], bool((again == expected).all()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    alone, interrupted, refs_same, same = done.stdout.split()
    # The signal came at a quarter of the call; the exception only after the call completed.
    assert float(interrupted) >= 0.6 * float(alone), (alone, interrupted)
    assert refs_same == "True" and same == "True"


@pytest.mark.parametrize("options,error,message", [
    (dict(kernel=5), TypeError, "kernel: must be a kernel name"),
    (dict(isa=1), TypeError, "isa: must be an ISA name"),
    (dict(threads="2"), TypeError, "threads: must be an int or None"),
    (dict(threads=2.5), TypeError, "threads: must be an int or None"),
    (dict(block_kv=1.5), TypeError, "block_kv: must be an int"),
    (dict(max_memory=-1), ValueError, "max_memory: must be >= 0"),
])
def test_options_of_the_wrong_type_get_one_line_errors(rng, options, error, message):
    q, k, v = make(rng, SHAPES[0])
    for call in (attune.attention, attune.workspace_bytes, attune.resolve):
        if call is not attune.attention and "max_memory" in options:
            continue
        with pytest.raises(error, match=message) as info:
            call(q, k, v, **options)
        assert "\n" not in str(info.value)


def copies():
    """(tensors, masks) the bindings have gathered into contiguous copies so far."""
    return attune._attune._copies()


def test_contiguous_and_strided_inputs_are_not_copied(rng):
    """Python-side allocations of a call (tracemalloc sees numpy's): the output only, whether the
    input is C-contiguous or a transposed view; the bindings' own copy counter stays put."""
    q = randn(rng, 1, 4, 512, 64)
    strided = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # same values, not contiguous

    def python_bytes(x):
        tracemalloc.start()
        attune.attention(x, q, q, kernel="flash", threads=1)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    before = copies()
    assert python_bytes(q) < 1.25 * q.nbytes          # the output
    assert python_bytes(strided) < 1.25 * q.nbytes    # the output: q is read with its strides
    assert copies() == before


# Which layouts are read in place (rows of d contiguous, strides >= 0) and which are copied.
IN_PLACE = {"transposed": True, "sliced": True, "reversed": False, "broadcast": True, "fortran": False}


@pytest.mark.parametrize("kernel", ["auto", "flash", "simd", "naive"])
def test_strided_inputs_are_read_in_place(rng, kernel):
    for name, x in _layouts(rng):
        c = np.ascontiguousarray(x)
        expected = attune.attention(c, c, c, causal=True, kernel=kernel)
        before = copies()[0]
        got = attune.attention(x, x, x, causal=True, kernel=kernel)
        assert copies()[0] - before == (0 if IN_PLACE[name] else 3), name
        assert attune.resolve(x, x, x, kernel=kernel)["strided"] == IN_PLACE[name], name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=name)


def test_kv_cache_with_spare_capacity_is_read_in_place(rng):
    cache_k, cache_v = randn(rng, 2, 2, 64, 32), randn(rng, 2, 2, 64, 32)  # capacity 64, 40 filled
    q = randn(rng, 2, 8, 1, 32)
    k, v = cache_k[:, :, :40], cache_v[:, :, :40]
    before = copies()[0]
    got = attune.attention(q, k, v, causal=True)
    assert copies()[0] == before
    assert_close(got, reference(q, k, v, causal=True))


def test_kernels_without_strided_reads_get_copies(rng):
    x = randn(rng, 2, 33, 4, 16).transpose(0, 2, 1, 3)
    c = np.ascontiguousarray(x)
    before = copies()[0]
    got = attune.attention(x, c, c, kernel="blocked")
    assert copies()[0] - before == 1  # q only: k and v are in the default layout
    assert not attune.resolve(x, c, c, kernel="blocked")["strided"]
    np.testing.assert_array_equal(got, attune.attention(c, c, c, kernel="blocked"))


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["float16", "bfloat16"])
def test_16_bit_strided_arrays_are_read_in_place(rng, dtype):
    x = randn(rng, 2, 33, 4, 16, dtype=dtype).transpose(0, 2, 1, 3)
    cache = randn(rng, 2, 4, 64, 16, dtype=dtype)[:, :, :33]
    c = np.ascontiguousarray
    expected = attune.attention(c(x), c(cache), c(cache), causal=True)
    before = copies()[0]
    got = attune.attention(x, cache, cache, causal=True)
    assert copies()[0] == before and got.dtype == dtype
    # The strided call may take other tiles than the contiguous one (bf16: the plain problem may
    # round P to bf16 for its dot products, the strided one widens to float32), so both are held
    # to the reference's bound rather than to each other.
    name = "bfloat16" if dtype == BF16 else "float16"
    ref = reference(x, cache, cache, causal=True)
    pv = pv_rounding(x, cache, cache, causal=True) if dtype == BF16 else 0.0
    assert_close(got, ref, name, pv)
    assert_close(expected, ref, name, pv)


def test_numpy_masks_window_and_top_left(rng):
    q, k = randn(rng, 1, 2, 6, 16), randn(rng, 1, 2, 10, 16)
    mask = rng.random((6, 10)) > 0.3
    mask[:, 0] = True
    got = attune.attention(q, k, k, mask=mask)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) / 4.0
    s = np.where(mask, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    assert_close(got, (w / w.sum(-1, keepdims=True)) @ k.astype(np.float64))
    # top-left causal on the first 6 keys is bottom-right causal on a 6-key slice
    np.testing.assert_allclose(attune.attention(q, k, k, causal=True, causal_align="top_left"),
                               attune.attention(q, k[:, :, :6], k[:, :, :6], causal=True), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="causal_align"):
        attune.attention(q, k, k, causal=True, causal_align="middle")
    with pytest.raises(TypeError, match="mask: element type must be bool or float32"):
        attune.attention(q, k, k, mask=mask.astype(np.int8))
    with pytest.raises(TypeError, match="mask: must be of q's framework"):
        attune.attention(q, k, k, mask=mask.tolist())
    additive = np.where(mask, 0.0, -np.inf).astype(np.float32)
    np.testing.assert_allclose(attune.attention(q, k, k, mask=additive), got, rtol=0, atol=1e-6)
    # a causal window of 3: query i (aligned at i + 4) sees keys i+2 .. i+4
    band = np.zeros((6, 10), bool)
    for i in range(6):
        band[i, i + 2:i + 5] = True
    np.testing.assert_allclose(attune.attention(q, k, k, causal=True, window=3), attune.attention(q, k, k, mask=band),
                               rtol=0, atol=1e-6)
