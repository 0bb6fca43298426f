"""attune.attention's variant arguments from numpy: alibi_slopes, sinks, top_k and varlen
(cu_seqlens_q / cu_seqlens_kv), alone and together with window, soft-cap, mask and causal, against
the float64 reference of conftest.reference_variants; on every kernel and ISA that takes them (the
others refuse with one line); argument errors."""

import numpy as np
import pytest

import attune
from conftest import assert_close, reference_variants


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def alibi(heads):
    """The ALiBi paper's slopes 2^(-8 h / heads), h = 1 .. heads."""
    return (2.0 ** (-8.0 * np.arange(1, heads + 1) / heads)).astype(np.float32)


def qkv(rng, b=2, hq=4, hkv=2, sq=19, skv=27, d=32, dv=None):
    return randn(rng, b, hq, sq, d), randn(rng, b, hkv, skv, d), randn(rng, b, hkv, skv, dv or d)


CASES = {  # name: the variant arguments (heads_q = 4)
    "alibi": dict(alibi_slopes=alibi(4)),
    "alibi_causal": dict(alibi_slopes=alibi(4), causal=True),
    "sinks": dict(sinks=np.array([0.0, 1.5, -2.0, 3.0], np.float32)),
    "sinks_causal_top_left": dict(sinks=np.array([0.5, 0.5, 2.0, -1.0], np.float32), causal=True,
                                  causal_align="top_left"),
    "top_k": dict(top_k=5),
    "top_k_causal": dict(top_k=3, causal=True),
    "all": dict(alibi_slopes=alibi(4), sinks=np.array([1.0, 0.0, -1.0, 2.0], np.float32), top_k=7, causal=True,
                window=11, softcap=3.0),
}


def kernels_for(variant):
    """(kernel, isa) pairs to try for a variant: every runnable build (those not implementing the
    variant must refuse it with a one-line ValueError)."""
    return [(kern["name"], isa) for kern in attune.kernels() for isa in kern["runnable_isas"]
            if "fp32" in kern["dtypes"][isa]]


@pytest.mark.parametrize("case", list(CASES))
def test_variants_match_the_reference(rng, case):
    args = CASES[case]
    q, k, v = qkv(rng, dv=24)
    got = attune.attention(q, k, v, **args)
    assert got.shape == (2, 4, 19, 24) and got.dtype == np.float32
    assert_close(got, reference_variants(q, k, v, **args))


@pytest.mark.parametrize("case", ["alibi_causal", "sinks", "top_k", "all"])
@pytest.mark.parametrize("kernel,isa", kernels_for(None), ids=str)
def test_every_kernel_takes_the_variant_or_refuses_it_in_one_line(rng, case, kernel, isa):
    args = CASES[case]
    q, k, v = qkv(rng, b=1, sq=33, skv=70)
    try:
        got = attune.attention(q, k, v, kernel=kernel, isa=isa, **args)
    except ValueError as e:  # a refusal is this test's other outcome (which kernels must take what:
        assert "has no build that runs" in str(e) and "\n" not in str(e)  # the test below)
        return
    assert_close(got, reference_variants(q, k, v, **args))


def test_at_least_naive_flash_and_simd_take_alibi_and_sinks(rng):
    q, k, v = qkv(rng)
    for kernel in ("naive", "flash", "simd"):
        for args in (CASES["alibi_causal"], CASES["sinks"]):
            assert_close(attune.attention(q, k, v, kernel=kernel, **args), reference_variants(q, k, v, **args))
    assert_close(attune.attention(q, k, v, kernel="naive", top_k=4), reference_variants(q, k, v, top_k=4))


def test_per_head_arrays_come_as_lists_tensors_or_other_float_types(rng):
    q, k, v = qkv(rng)
    slopes = alibi(4)
    expected = attune.attention(q, k, v, alibi_slopes=slopes)
    for form in (slopes.tolist(), tuple(slopes.tolist()), slopes.astype(np.float64),
                 np.repeat(slopes, 2)[::2]):  # a strided float32 view
        np.testing.assert_array_equal(attune.attention(q, k, v, alibi_slopes=form), expected)


def test_minus_infinity_sinks_are_no_sinks_and_large_sinks_shrink_the_output(rng):
    q, k, v = qkv(rng)
    plain = attune.attention(q, k, v, causal=True)
    none = attune.attention(q, k, v, causal=True, sinks=[-np.inf] * 4)
    np.testing.assert_allclose(none, plain, rtol=0, atol=1e-6)
    big = attune.attention(q, k, v, causal=True, sinks=[30.0] * 4)  # the sink takes nearly all the weight
    assert np.abs(big).max() < 1e-6


def test_top_k_at_least_seq_kv_is_plain_attention_and_top_1_picks_one_value_row(rng):
    q, k, v = qkv(rng)
    plain = attune.attention(q, k, v, kernel="naive")
    np.testing.assert_allclose(attune.attention(q, k, v, kernel="naive", top_k=27), plain, rtol=0, atol=1e-6)
    np.testing.assert_allclose(attune.attention(q, k, v, kernel="naive", top_k=1000), plain, rtol=0, atol=1e-6)
    one = attune.attention(q, k, v, top_k=1).astype(np.float64)
    s = np.einsum("bhqd,bhkd->bhqk", q, np.repeat(k, 2, axis=1))
    best = np.take_along_axis(np.repeat(v, 2, axis=1), s.argmax(-1)[..., None], axis=2)
    np.testing.assert_allclose(one, best, rtol=0, atol=1e-6)


# Varlen: sequences packed along seq, each its own frame (causal, window, ALiBi), no key of another.
def packed(rng, lens_q, lens_kv, hq=4, hkv=2, d=32):
    q, k, v = randn(rng, hq, sum(lens_q), d), randn(rng, hkv, sum(lens_kv), d), randn(rng, hkv, sum(lens_kv), d)
    return q, k, v, np.cumsum([0] + lens_q), np.cumsum([0] + lens_kv)


@pytest.mark.parametrize("args", [dict(), dict(causal=True), dict(causal=True, window=4, alibi_slopes=alibi(4)),
                                  dict(causal=True, causal_align="top_left", sinks=[0.5, -1.0, 2.0, 0.0])],
                         ids=["full", "causal", "causal_window_alibi", "top_left_sinks"])
def test_varlen_equals_each_sequence_on_its_own(rng, args):
    lens_q, lens_kv = [5, 1, 17, 9], [5, 30, 17, 12]  # a prefill, a decoding row, equal and unequal lengths
    q, k, v, cu_q, cu_kv = packed(rng, lens_q, lens_kv)
    got = attune.attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv, **args)
    assert got.shape == q.shape
    for s in range(len(lens_q)):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_kv[s], cu_kv[s + 1]
        assert_close(got[:, a:b], reference_variants(q[:, a:b], k[:, c:d], v[:, c:d], **args))


def test_varlen_reads_the_flash_layout_total_heads_d_in_place(rng):
    """FlashAttention's varlen tensors are [total_tokens, heads, d]: their transpose is read with strides."""
    lens = [7, 20, 3]
    cu = np.cumsum([0] + lens)
    q_thd, kv_thd = randn(rng, 30, 4, 32), randn(rng, 30, 2, 32)
    q, kv = q_thd.transpose(1, 0, 2), kv_thd.transpose(1, 0, 2)
    before = attune._attune._copies()[0]
    got = attune.attention(q, kv, kv, causal=True, cu_seqlens_q=cu, cu_seqlens_kv=cu.tolist(), kernel="flash")
    assert attune._attune._copies()[0] == before
    expected = attune.attention(np.ascontiguousarray(q), np.ascontiguousarray(kv), np.ascontiguousarray(kv),
                                causal=True, cu_seqlens_q=cu, cu_seqlens_kv=cu, kernel="flash")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_varlen_mask_spans_the_packed_tokens(rng):
    q, k, v, cu_q, cu_kv = packed(rng, [6, 10], [8, 12])
    mask = rng.random((16, 20)) > 0.3
    mask[np.arange(16), np.r_[np.zeros(6, int), np.full(10, 8)]] = True  # every row sees a key of its own sequence
    got = attune.attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv, mask=mask)
    for s in range(2):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_kv[s], cu_kv[s + 1]
        assert_close(got[:, a:b], reference_variants(q[:, a:b], k[:, c:d], v[:, c:d], mask=mask[a:b, c:d]))


def test_workspace_bytes_and_resolve_take_the_variants(rng):
    q, k, v = qkv(rng, b=1)
    assert attune.resolve(q, k, v, top_k=3)["kernel"] == "naive"  # the kernel that implements top-k
    assert attune.resolve(q, k, v, sinks=[0.0] * 4, kernel="flash")["kernel"] == "flash"
    assert attune.workspace_bytes(q, k, v, alibi_slopes=alibi(4)) >= 0
    with pytest.raises(ValueError, match="has no build that runs"):
        attune.resolve(q, k, v, top_k=3, kernel="flash")


@pytest.mark.parametrize("args,error,message", [
    (dict(alibi_slopes=[0.5, 0.25]), ValueError, r"alibi_slopes: expected one value per query head \(heads_q = 4\), got 2"),
    (dict(sinks=np.zeros((2, 2), np.float32)), ValueError, "sinks: expected a 1-D array, got 2 dimensions"),
    (dict(alibi_slopes="abcd"), TypeError, "alibi_slopes: must be a 1-D array or a sequence of floats"),
    (dict(alibi_slopes=3.0), TypeError, "alibi_slopes: must be a 1-D array or a sequence of floats, got 3.0"),
    (dict(alibi_slopes=[0.1, float("nan"), 0.1, 0.1]), ValueError, r"alibi_slopes\[1\] = nan must be finite"),
    (dict(sinks=[0.0, float("inf"), 0.0, 0.0]), ValueError, r"sinks\[1\] = inf must be finite or -inf"),
    (dict(top_k=-2), ValueError, "top_k: must be >= 0"),
    (dict(top_k=2.5), TypeError, "top_k: must be an int, got 2.5"),
    (dict(top_k=2**70), ValueError, "top_k: must fit in 64 bits"),
    (dict(sinks={0.0, 1.0, 2.0, 3.0}), TypeError, "sinks: must be a 1-D array or a sequence of floats, got {"),
    (dict(cu_seqlens_q=[0, 19]), ValueError, "cu_seqlens_q and cu_seqlens_kv go together"),
    (dict(cu_seqlens_q=[0, 19], cu_seqlens_kv=[0, 27]), ValueError, "varlen packs the sequences along seq.*batch 2"),
])
def test_bad_variant_arguments_get_one_line_errors(rng, args, error, message):
    q, k, v = qkv(rng)
    for call in (attune.attention, attune.resolve, attune.workspace_bytes):
        with pytest.raises(error, match=message) as info:
            call(q, k, v, **args)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("cu_q,cu_kv,error,message", [
    ([0, 4, 19], [0, 10], ValueError, "the same number"),
    ([1, 4, 19], [0, 10, 27], ValueError, r"cu_seqlens_q\[0\] = 1 must be 0"),
    ([0, 12, 10, 19], [0, 1, 2, 27], ValueError, r"cu_seqlens_q\[2\] = 10 must be in \[12, 19\]"),
    ([0, 4, 18], [0, 10, 27], ValueError, "must equal the total 19"),
    ([0, 4.0, 19], [0, 10, 27], TypeError, "cu_seqlens_q: must be a 1-D array or a sequence of ints, got 4.0 at index 1"),
    (np.array([0, 4, 19], np.float32), [0, 10, 27], TypeError, "cu_seqlens_q: must be a 1-D array or a sequence of ints"),
])
def test_bad_offsets_get_one_line_errors(rng, cu_q, cu_kv, error, message):
    q, k, v = qkv(rng, b=1)
    with pytest.raises(error, match=message) as info:
        attune.attention(q[0], k[0], v[0], cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv)
    assert "\n" not in str(info.value)
