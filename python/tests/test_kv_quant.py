"""Quantized K/V from Python (docs/quantized-kv.md): attune.quantize_kv / dequantize_kv against an
independent numpy decoding of the documented formats, attention on the codes against the float64
reference on the dequantized values (attune's float32 bound), the quantization error against the
documented table, strided caches, torch tensors, and the errors."""

import numpy as np
import pytest

import attune
from conftest import TOL_F32, assert_close, reference, reference_variants, require

ml_dtypes = require("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
TYPES = ["int8", "int8_kc", "fp8_e4m3", "fp8_e5m2", "int4"]


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def decode(codes, scales, kv, is_k):
    """The documented decoding, written independently of the library (float32 as the kernels hold it)."""
    codes = np.asarray(codes)
    if kv in ("int8", "int8_kc"):
        x = codes.view(np.int8).astype(np.float32)
        if kv == "int8_kc" and is_k:
            return x * scales[..., None, :]                       # per (batch, head, channel)
        return x * scales[..., None]                              # per (batch, head, token)
    if kv.startswith("fp8"):
        fp8 = ml_dtypes.float8_e4m3fn if kv == "fp8_e4m3" else ml_dtypes.float8_e5m2
        x = codes.view(np.uint8).view(fp8).astype(np.float32)
        return x * scales.reshape((-1, 1, 1))                     # per KV head
    b = codes.view(np.uint8)                                      # int4: 16 bytes per group of 32
    groups = b.reshape(b.shape[:-1] + (-1, 16))
    nib = np.concatenate([groups & 15, groups >> 4], axis=-1).astype(np.float32)  # element i low, i + 16 high
    scale, lo = scales[..., 0].astype(np.float32), scales[..., 1].astype(np.float32)
    x = (nib.astype(np.float64) * scale[..., None] + lo[..., None]).astype(np.float32)  # fmaf: one rounding
    return x.reshape(b.shape[:-1] + (-1,))


SCALE_SHAPES = {  # [batch, heads_kv, seq, d] = [2, 3, 40, 64]
    ("int8", True): (2, 3, 40), ("int8", False): (2, 3, 40),
    ("int8_kc", True): (2, 3, 64), ("int8_kc", False): (2, 3, 40),
    ("fp8_e4m3", True): (3,), ("fp8_e4m3", False): (3,), ("fp8_e5m2", True): (3,), ("fp8_e5m2", False): (3,),
    ("int4", True): (2, 3, 40, 2, 2), ("int4", False): (2, 3, 40, 2, 2),
}


@pytest.mark.parametrize("is_k", [True, False], ids=["K", "V"])
@pytest.mark.parametrize("kv", TYPES)
def test_quantize_kv_layouts_and_decoding(rng, kv, is_k):
    x = randn(rng, 2, 3, 40, 64)
    codes, scales = attune.quantize_kv(x, kv, is_k=is_k)
    assert codes.shape == (2, 3, 40, 32 if kv == "int4" else 64)
    assert codes.dtype == (np.int8 if kv.startswith("int8") else np.uint8)
    assert scales.shape == SCALE_SHAPES[kv, is_k]
    assert scales.dtype == (np.float16 if kv == "int4" else np.float32)
    deq = attune.dequantize_kv(codes, scales, kv, is_k=is_k)
    np.testing.assert_array_equal(deq, decode(codes, scales, kv, is_k))
    # the documented scales: int8 per row max |x| / 127, fp8 per head max |x| / 448 or / 57344
    if kv == "int8" or (kv == "int8_kc" and not is_k):
        np.testing.assert_allclose(scales, np.abs(x).max(-1) / 127, rtol=1e-6)
        assert np.abs(codes).max() == 127
    if kv == "int8_kc" and is_k:
        np.testing.assert_allclose(scales, np.abs(x).max(-2) / 127, rtol=1e-6)
    if kv.startswith("fp8"):
        top = 448 if kv == "fp8_e4m3" else 57344
        np.testing.assert_allclose(scales, np.abs(x).max(axis=(0, 2, 3)) / top, rtol=1e-6)
    # rounding to nearest: the error is at most half a step (int8: scale / 2; int4: its scale / 2)
    err = np.abs(deq - x)
    if kv == "int8":
        assert np.all(err <= scales[..., None] * 0.5 * (1 + 1e-5))
    if kv == "int4":
        step = scales[..., 0].astype(np.float32).repeat(32, axis=-1)
        assert np.all(err <= step * 0.5 * (1 + 1e-3) + 1e-3)
    # 3-D input: the same codes without the batch axis
    c3, s3 = attune.quantize_kv(x[1], kv, is_k=is_k)
    if not kv.startswith("fp8"):  # fp8's per-head scale is over every batch
        np.testing.assert_array_equal(c3, codes[1])
        np.testing.assert_array_equal(s3, scales[1])


def quantized_cache(rng, kv, shape_k, shape_v):
    k, v = randn(rng, *shape_k), randn(rng, *shape_v)
    kc, ks = attune.quantize_kv(k, kv, is_k=True)
    vc, vs = attune.quantize_kv(v, kv, is_k=False)
    return (k, v), (kc, ks, vc, vs)


@pytest.mark.parametrize("q_dtype", [np.float32, BF16], ids=["q_fp32", "q_bf16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv", TYPES)
def test_attention_on_codes_matches_the_reference_on_the_dequantized_values(rng, kv, causal, q_dtype):
    q = randn(rng, 2, 8, 13, 64).astype(q_dtype)
    _, (kc, ks, vc, vs) = quantized_cache(rng, kv, (2, 2, 77, 64), (2, 2, 77, 32 if kv == "int4" else 48))
    got = attune.attention(q, kc, vc, causal=causal, kv_dtype=kv, k_scales=ks, v_scales=vs)
    assert got.dtype == q.dtype and got.shape == (2, 8, 13, vc.shape[-1] * (2 if kv == "int4" else 1))
    ref = reference(q, decode(kc, ks, kv, True), decode(vc, vs, kv, False), causal)
    assert_close(got, ref, "float32" if q_dtype == np.float32 else "bfloat16")


@pytest.mark.parametrize("kv", TYPES)
def test_every_kernel_that_takes_the_type_agrees(rng, kv):
    q = randn(rng, 1, 4, 9, 64)
    _, (kc, ks, vc, vs) = quantized_cache(rng, kv, (1, 2, 50, 64), (1, 2, 50, 64))
    ref = reference(q, decode(kc, ks, kv, True), decode(vc, vs, kv, False), True)
    ran = []
    for kern in attune.kernels():
        for isa in kern["runnable_isas"]:
            try:
                got = attune.attention(q, kc, vc, causal=True, kernel=kern["name"], isa=isa, kv_dtype=kv, k_scales=ks,
                                       v_scales=vs)
            except ValueError as e:
                assert "has no build that runs" in str(e), str(e)
                continue
            assert_close(got, ref)
            ran.append(f"{kern['name']}/{isa}")
    assert any(r.startswith("flash/") for r in ran) and any(r.startswith("naive/") for r in ran), ran


# Output errors of attention over the quantized cache against the float cache (docs/quantized-kv.md,
# "Quantization error", K unit-normal: output max), with a margin of 1.5x for another random draw.
DOCUMENTED_OUTPUT_MAX = {"int8": 2.1e-3, "int8_kc": 2.4e-3, "fp8_e4m3": 1.3e-2, "fp8_e5m2": 1.8e-2, "int4": 2.6e-2}


@pytest.mark.parametrize("kv", TYPES)
def test_quantization_error_is_within_the_documented_bound(rng, kv):
    q = randn(rng, 1, 8, 16, 128)
    (k, v), (kc, ks, vc, vs) = quantized_cache(rng, kv, (1, 2, 1024, 128), (1, 2, 1024, 128))
    got = attune.attention(q, kc, vc, kv_dtype=kv, k_scales=ks, v_scales=vs)
    err = np.abs(got - reference(q, k, v)).max()
    assert err <= 1.5 * DOCUMENTED_OUTPUT_MAX[kv], err
    assert err > TOL_F32  # it is the quantization that is measured


@pytest.mark.parametrize("kv", TYPES)
def test_a_cache_with_spare_capacity_is_read_in_place(rng, kv):
    """Codes [batch, heads, capacity, bytes] sliced to the filled length are read with their strides."""
    q = randn(rng, 2, 4, 1, 64)
    (k, v), (kc, ks, vc, vs) = quantized_cache(rng, kv, (2, 2, 96, 64), (2, 2, 96, 64))
    n = 57
    per_token = not kv.startswith("fp8")
    cut = (lambda s, is_k: s if not per_token or (kv == "int8_kc" and is_k) else s[:, :, :n])
    ks_n, vs_n = cut(ks, True), cut(vs, False)
    ref = reference(q, decode(kc, ks, kv, True)[:, :, :n], decode(vc, vs, kv, False)[:, :, :n])
    for kernel in ("flash", "simd", "naive"):
        before = attune._attune._copies()[0]
        got = attune.attention(q, kc[:, :, :n], vc[:, :, :n], kv_dtype=kv, k_scales=ks_n, v_scales=vs_n, kernel=kernel)
        if kernel != "naive" or kv != "int4":  # naive gathers strided int4 codes (it refuses them strided)
            assert attune._attune._copies()[0] == before, kernel  # codes and scales with their strides
        assert_close(got, ref)
    if per_token:  # scales stored [batch, capacity, heads] (tokens not adjacent): gathered, same result
        reorder = (lambda s: np.ascontiguousarray(np.moveaxis(s, 2, 1)).swapaxes(1, 2)[:, :, :n])
        ks_t = ks_n if kv == "int8_kc" else reorder(ks)
        before = attune._attune._copies()[0]
        got = attune.attention(q, kc[:, :, :n], vc[:, :, :n], kv_dtype=kv, k_scales=ks_t, v_scales=reorder(vs),
                               kernel="flash")
        assert attune._attune._copies()[0] - before == (1 if kv == "int8_kc" else 2)
        assert_close(got, ref)


def test_bad_scales_in_a_strided_cache_are_named_by_row(rng):
    q = randn(rng, 2, 4, 1, 32)
    _, (kc, ks, vc, vs) = quantized_cache(rng, "int8", (2, 2, 40, 32), (2, 2, 40, 32))
    vs = vs.copy()
    vs[1, 0, 7] = 0.0
    with pytest.raises(ValueError, match=r"int8 V scales\[7\] = 0.000000 must be finite and non-zero "
                                         r"\(index within the row of batch 1, KV head 0\)"):
        attune.attention(q, kc[:, :, :20], vc[:, :, :20], kv_dtype="int8", k_scales=ks[:, :, :20], v_scales=vs[:, :, :20])
    attune.attention(q, kc[:, :, :7], vc[:, :, :7], kv_dtype="int8", k_scales=ks[:, :, :7], v_scales=vs[:, :, :7])


def test_fp8_takes_one_scale_for_every_head_as_vllm_does(rng):
    q, k, v = randn(rng, 1, 4, 3, 32), randn(rng, 1, 2, 20, 32), randn(rng, 1, 2, 20, 32)
    kc = k.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)  # scale 1: the values as fp8
    vc = v.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    got = attune.attention(q, kc, vc, kv_dtype="fp8_e4m3", k_scales=1.0, v_scales=2.0)
    ref = reference(q, decode(kc, np.ones(2, np.float32), "fp8_e4m3", True),
                    decode(vc, np.full(2, 2.0, np.float32), "fp8_e4m3", False))
    assert_close(got, ref)
    # vLLM keeps k_scale / v_scale as 0-d or one-element float32 tensors
    for ks, vs in ((np.array(1.0, np.float32), np.array([2.0], np.float32)), (1, np.full(2, 2.0, np.float32))):
        np.testing.assert_array_equal(attune.attention(q, kc, vc, kv_dtype="fp8_e4m3", k_scales=ks, v_scales=vs), got)


def test_quantized_cache_with_variants(rng):
    q = randn(rng, 1, 4, 12, 64)
    _, (kc, ks, vc, vs) = quantized_cache(rng, "int8", (1, 2, 30, 64), (1, 2, 30, 64))
    args = dict(causal=True, window=9, alibi_slopes=[0.5, 0.25, 0.125, 0.0625], sinks=[0.0, 1.0, -1.0, 2.0])
    got = attune.attention(q, kc, vc, kv_dtype="int8", k_scales=ks, v_scales=vs, **args)
    assert_close(got, reference_variants(q, decode(kc, ks, "int8", True), decode(vc, vs, "int8", False), **args))


@pytest.mark.parametrize("kv", ["int8", "int4"])
def test_torch_tensors(rng, kv):
    torch = require("torch")
    q = torch.from_numpy(randn(rng, 1, 4, 5, 64)).to(torch.bfloat16)
    k, v = torch.from_numpy(randn(rng, 1, 2, 33, 64)), torch.from_numpy(randn(rng, 1, 2, 33, 64)).half()
    kc, ks = attune.quantize_kv(k, kv, is_k=True)
    vc, vs = attune.quantize_kv(v, kv, is_k=False)
    assert isinstance(kc, torch.Tensor) and kc.dtype == (torch.int8 if kv == "int8" else torch.uint8)
    assert ks.dtype == (torch.float32 if kv == "int8" else torch.float16)
    np.testing.assert_array_equal(kc.numpy(), attune.quantize_kv(k.numpy(), kv, is_k=True)[0])
    got = attune.attention(q, kc, vc, causal=True, kv_dtype=kv, k_scales=ks, v_scales=vs)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16
    kd, vd = attune.dequantize_kv(kc, ks, kv, is_k=True), attune.dequantize_kv(vc, vs, kv, is_k=False)
    assert isinstance(kd, torch.Tensor)
    ref = reference(q.float().numpy(), kd.numpy(), vd.numpy(), True)
    assert_close(got.float().numpy(), ref, "bfloat16")


@pytest.mark.parametrize("args,error,message", [
    (dict(kv_dtype="int8"), ValueError, r"k_scales: needed with kv_dtype='int8' \(attune.quantize_kv returns"),
    (dict(kv_dtype="int8", k_scales="KS"), ValueError, "v_scales: needed"),
    (dict(kv_dtype="fp16", k_scales="KS", v_scales="VS"), ValueError, "kv_dtype: must be int8, int8_kc, fp8_e4m3"),
    (dict(kv_dtype=8, k_scales="KS", v_scales="VS"), TypeError, "kv_dtype: must be a quantized type name"),
    (dict(k_scales="KS", v_scales="VS"), ValueError, "k_scales, v_scales: given without kv_dtype"),
    (dict(kv_dtype="int8", k_scales="KS3", v_scales="VS"), ValueError,
     r"k_scales: shape \(1, 2, 3\) does not match the kv_dtype='int8' K scales of this problem \(1, 2, 20\)"),
    (dict(kv_dtype="int8", k_scales="KS64", v_scales="VS"), TypeError, "k_scales: kv_dtype='int8' scales are float32, got fp16"),
    (dict(kv_dtype="int8", k_scales="KSnan", v_scales="VS"), ValueError, r"int8 K scales\[3\] = nan must be finite and non-zero"),
    (dict(kv_dtype="int8", k_scales="KS", v_scales=[1.0]), TypeError, "v_scales: must be of q's framework"),
    (dict(kv_dtype="fp8_e4m3", k_scales=0.0, v_scales=1.0), ValueError, r"kv_scales.k\[0\] = 0.000000 must be finite and non-zero"),
])
def test_quantized_argument_errors_are_one_line(rng, args, error, message):
    q = randn(rng, 1, 4, 3, 32)
    kc, ks = attune.quantize_kv(randn(rng, 1, 2, 20, 32), "int8")
    vc, vs = attune.quantize_kv(randn(rng, 1, 2, 20, 32), "int8")
    nan = ks.copy()
    nan[0, 0, 3] = np.nan
    named = {"KS": ks, "VS": vs, "KS3": ks[:, :, :3], "KS64": ks.astype(np.float16), "KSnan": nan}
    args = {n: named.get(a, a) if isinstance(a, str) and n.endswith("scales") else a for n, a in args.items()}
    with pytest.raises(error, match=message) as info:
        attune.attention(q, kc, vc, **args)
    assert "\n" not in str(info.value)


def test_codes_without_kv_dtype_and_floats_with_it_are_type_errors(rng):
    q, k = randn(rng, 1, 2, 3, 32), randn(rng, 1, 2, 20, 32)
    kc, ks = attune.quantize_kv(k, "int8")
    with pytest.raises(TypeError, match=r"k: element type must be float32, float16 or bfloat16, got numpy int8 "
                                        r"\(quantized codes need kv_dtype=...\)"):
        attune.attention(q, kc, kc)
    with pytest.raises(TypeError, match="k: with kv_dtype, must hold the quantized codes as int8 or uint8"):
        attune.attention(q, k, k, kv_dtype="int8", k_scales=ks, v_scales=ks)
    with pytest.raises(ValueError, match=r"d_k: q and k must agree on the last axis \(int4 codes: d_k / 2 bytes a row\)"):
        c4, s4 = attune.quantize_kv(k, "int4")
        attune.attention(q[..., :16], c4, c4, kv_dtype="int4", k_scales=s4, v_scales=s4)


@pytest.mark.parametrize("call,error,message", [
    (lambda x: attune.quantize_kv(x[..., :40], "int4"), ValueError, r"x: int4 needs d a multiple of 32 \(groups of 32 along d\), got d = 40"),
    (lambda x: attune.quantize_kv(x, "int8_kc"), ValueError, "is_k: int8_kc scales K per channel and V per token"),
    (lambda x: attune.quantize_kv(x, "bf16"), ValueError, "dtype: must be int8, int8_kc, fp8_e4m3, fp8_e5m2 or int4, got 'bf16'"),
    (lambda x: attune.quantize_kv(x.astype(np.float64), "int8"), TypeError, "x: element type must be float32, float16 or bfloat16"),
    (lambda x: attune.quantize_kv(x[0, 0], "int8"), ValueError, r"x: expected \[heads_kv, seq, d\] or \[batch, heads_kv, seq, d\]"),
    (lambda x: attune.quantize_kv(np.where(x > 2, np.inf, x).astype(np.float32), "int8"), ValueError,
     "only finite values can be quantized"),
    (lambda x: attune.dequantize_kv(*attune.quantize_kv(x, "int8")[:1], np.ones((1, 2), np.float32), "int8"),
     ValueError, r"scales: shape \(1, 2\) does not match these int8 codes' K scales \(1, 2, 64\)"),
])
def test_quantize_kv_errors_are_one_line(rng, call, error, message):
    x = randn(rng, 1, 2, 64, 64)
    with pytest.raises(error, match=message) as info:
        call(x)
    assert "\n" not in str(info.value)


def test_strided_per_head_scales_are_gathered_for_every_entry_point(rng):
    q = randn(rng, 1, 4, 3, 32)
    (_, _), (kc, ks, vc, vs) = quantized_cache(rng, "fp8_e4m3", (1, 2, 20, 32), (1, 2, 20, 32))
    ks2, vs2 = np.repeat(ks, 2)[::2], np.repeat(vs, 2)[::2]  # the same values, not contiguous
    assert not ks2.flags.c_contiguous
    args = dict(kv_dtype="fp8_e4m3", kernel="flash")
    assert attune.resolve(q, kc, vc, k_scales=ks2, v_scales=vs2, **args)["kernel"] == "flash"
    assert attune.workspace_bytes(q, kc, vc, k_scales=ks2, v_scales=vs2, **args) >= 0
    np.testing.assert_array_equal(attune.attention(q, kc, vc, k_scales=ks2, v_scales=vs2, **args),
                                  attune.attention(q, kc, vc, k_scales=ks, v_scales=vs, **args))
