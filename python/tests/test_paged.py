"""attune.paged_attention and attune.paged_append (paged K/V, vLLM's PagedAttention): against
attune.attention on the gathered contiguous K/V and the float64 reference, for block sizes 1, 16
and 256, mixed batches (decode, chunks, an empty context), shared blocks, grouped-query heads,
float and quantized caches, both pool layouts, numpy and torch; the pools are read in place; bad
tables, lengths and types are one-line errors; the torch ops pass opcheck and compile."""

import numpy as np
import pytest

import attune
from conftest import assert_close, reference_variants, require

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None


class Batch:
    """A paged batch: sequences with `contexts` keys whose last `queries` positions are queried, their
    K/V rows in shuffled blocks of a pool (layout "heads_first" [num_blocks, heads_kv, block_size, d]
    or "vllm" [num_blocks, block_size, heads_kv, d]); `share`: every later sequence longer than
    `share` blocks reuses sequence 0's first `share` blocks (a common prompt prefix: its keys there
    are sequence 0's)."""

    def __init__(self, rng, contexts, queries, block_size, heads_q=4, heads_kv=2, d=32, layout="heads_first",
                 share=0, dtype=np.float32, spare_blocks=3):
        self.contexts, self.queries, self.block_size, self.layout = list(contexts), list(queries), block_size, layout
        self.heads_q, self.heads_kv, self.d = heads_q, heads_kv, d
        blocks = [-(-c // block_size) for c in contexts]
        self.share = share
        self.shared = {s for s in range(1, len(contexts)) if share and contexts[s] > share * block_size}
        self.num_blocks = sum(blocks) - share * len(self.shared) + spare_blocks
        ids = rng.permutation(self.num_blocks).astype(np.int32)
        self.max_blocks = max(max(blocks), 1) + 1  # a spare column: entries past a context are never read
        self.table = np.full((len(contexts), self.max_blocks), -1, np.int32)
        used = 0
        for s, n in enumerate(blocks):
            for x in range(n):
                if s in self.shared and x < share:
                    self.table[s, x] = self.table[0, x]
                else:
                    self.table[s, x] = ids[used]
                    used += 1
        shape = ((self.num_blocks, heads_kv, block_size, d) if layout == "heads_first"
                 else (self.num_blocks, block_size, heads_kv, d))
        self.k = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        self.v = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        self.cu_q = np.concatenate([[0], np.cumsum(queries)]).astype(np.int64)
        self.q = rng.standard_normal((int(self.cu_q[-1]), heads_q, d), dtype=np.float32)

    def rows(self, pool, s):
        """Sequence s's keys (or values) [heads_kv, context, d] gathered from `pool`."""
        bs = self.block_size
        rows = []
        for j in range(self.contexts[s]):
            block, row = self.table[s, j // bs], j % bs
            rows.append(pool[block, :, row] if self.layout == "heads_first" else pool[block, row])
        return np.stack(rows, axis=1) if rows else np.zeros((self.heads_kv, 0, pool.shape[-1]), pool.dtype)

    def args(self, q=None, k=None, v=None):
        return (self.q if q is None else q, self.k if k is None else k, self.v if v is None else v, self.table,
                self.contexts, self.cu_q)

    def reference(self, k=None, v=None, **variants):
        """float64 [total_q, heads_q, d_v], sequence by sequence (its queries end its context)."""
        k = self.k if k is None else k
        v = self.v if v is None else v
        out = np.zeros(self.q.shape[:2] + (v.shape[-1],))
        for s in range(len(self.contexts)):
            a, b = self.cu_q[s], self.cu_q[s + 1]
            if a == b:
                continue
            qs = self.q[a:b].transpose(1, 0, 2).astype(np.float64)
            ks, vs = (self.rows(x, s).astype(np.float64) for x in (k, v))
            out[a:b] = reference_variants(qs, ks, vs, causal=True, **variants).transpose(1, 0, 2)
        return out

    def packed(self, k=None, v=None):
        """The contiguous K/V [heads_kv, total_kv, d] attention()'s varlen reads, and its offsets."""
        k = self.k if k is None else k
        v = self.v if v is None else v
        ks = np.concatenate([self.rows(k, s) for s in range(len(self.contexts))], axis=1)
        vs = np.concatenate([self.rows(v, s) for s in range(len(self.contexts))], axis=1)
        return ks, vs, np.concatenate([[0], np.cumsum(self.contexts)])


# Mixed batch: a 1-token decode, a 7-token chunk on a filled cache, an empty context, a prefill.
MIXED = dict(contexts=[41, 30, 0, 19], queries=[1, 7, 0, 19])


@pytest.mark.parametrize("layout", ["heads_first", "vllm"])
@pytest.mark.parametrize("block_size", [1, 16, 256])
def test_matches_attention_on_the_gathered_cache_and_the_reference(rng, block_size, layout):
    b = Batch(rng, **MIXED, block_size=block_size, layout=layout)
    before = attune._attune._copies()
    out = attune.paged_attention(*b.args(), layout=layout)
    assert attune._attune._copies() == before  # q, the pools and the output all read/written in place
    assert out.shape == b.q.shape and out.dtype == np.float32
    assert_close(out, b.reference())
    ks, vs, cu_kv = b.packed()
    varlen = attune.attention(b.q.transpose(1, 0, 2), ks, vs, causal=True, cu_seqlens_q=b.cu_q, cu_seqlens_kv=cu_kv)
    np.testing.assert_allclose(out, varlen.transpose(1, 0, 2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["heads_first", "vllm"])
def test_shared_blocks_and_grouped_query_heads(rng, layout):
    # Sequences 0 and 1 share their first 3 blocks (a common prompt), 8 query heads on 2 KV heads.
    b = Batch(rng, contexts=[70, 58, 33], queries=[1, 10, 2], block_size=16, heads_q=8, heads_kv=2, share=3,
              layout=layout)
    assert (b.table[0, :3] == b.table[1, :3]).all()
    out = attune.paged_attention(*b.args(), layout=layout)
    assert_close(out, b.reference())
    one_head = Batch(rng, contexts=[20, 9], queries=[3, 1], block_size=4, heads_q=6, heads_kv=1, layout=layout)
    assert_close(attune.paged_attention(*one_head.args(), layout=layout), one_head.reference())


@pytest.mark.parametrize("kv", [None, "int8"])
def test_long_shared_prefixes_take_the_cascade_path(rng, kv):
    """Three consecutive sequences on one 144-key prompt (9 blocks of 16, above the kernels' cascade
    threshold), decoding and chunked, and an unrelated one: attended once for the group, merged."""
    b = Batch(rng, contexts=[300, 290, 200, 40], queries=[1, 3, 1, 2], block_size=16, heads_q=8, heads_kv=2,
              d=64, share=9)
    assert b.shared == {1, 2} and (b.table[1:3, :9] == b.table[0, :9]).all()
    quant = {}
    k, v = b.k, b.v
    if kv:
        kc, vc, ks, vs = _quantized_pair(rng, b, kv, "heads_first")
        quant = dict(kv_dtype=kv, k_scales=ks, v_scales=vs)
        k, v = kc, vc
    out = attune.paged_attention(*b.args(k=k, v=v), **quant)
    ks_f, vs_f, cu_kv = b.packed()
    if kv:
        k_codes, k_sc = attune.quantize_kv(ks_f, kv, is_k=True)
        v_codes, v_sc = attune.quantize_kv(vs_f, kv, is_k=False)
        ks_f, vs_f = attune.dequantize_kv(k_codes, k_sc, kv), attune.dequantize_kv(v_codes, v_sc, kv)
    else:
        assert_close(out, b.reference())
    varlen = attune.attention(b.q.transpose(1, 0, 2), ks_f, vs_f, causal=True, cu_seqlens_q=b.cu_q,
                              cu_seqlens_kv=cu_kv)
    np.testing.assert_allclose(out, varlen.transpose(1, 0, 2), rtol=0, atol=1e-5)


def test_variants_match_the_reference(rng):
    b = Batch(rng, **MIXED, block_size=16)
    slopes, sinks = 2.0 ** -np.arange(1, 5), np.array([0.5, -1.0, 2.0, -np.inf])
    for variants in (dict(window=9), dict(softcap=4.0), dict(alibi_slopes=slopes), dict(sinks=sinks), dict(scale=0.3),
                     dict(window=5, alibi_slopes=slopes, sinks=sinks, softcap=8.0)):
        out = attune.paged_attention(*b.args(), **variants)
        assert_close(out, b.reference(**variants))
    # Not causal: every query sees its whole context.
    full = np.zeros_like(b.reference())
    for s in range(4):
        a, e = b.cu_q[s], b.cu_q[s + 1]
        if a < e:
            full[a:e] = reference_variants(b.q[a:e].transpose(1, 0, 2), b.rows(b.k, s), b.rows(b.v, s)).transpose(1, 0, 2)
    assert_close(attune.paged_attention(*b.args(), causal=False), full)


@pytest.mark.parametrize("layout", ["heads_first", "vllm"])
@pytest.mark.parametrize("kv", ["bfloat16", "float16"])
def test_16_bit_caches(rng, kv, layout):
    dtype = BF16 if kv == "bfloat16" else np.float16
    b = Batch(rng, **MIXED, block_size=16, layout=layout, dtype=dtype)
    out = attune.paged_attention(*b.args(), layout=layout)  # float32 queries on a 16-bit cache
    assert out.dtype == np.float32
    assert_close(out, b.reference())  # from the values as stored
    q16 = b.q.astype(dtype)
    out16 = attune.paged_attention(*b.args(q=q16), layout=layout)
    assert out16.dtype == dtype
    b.q = q16.astype(np.float32)
    assert_close(out16.astype(np.float32), b.reference(), kv)


def _quantized_pair(rng, b, kv, layout):
    """b's pools quantized with paged_append (slots of every context row) and their scales."""
    nb, bs, hkv, d = b.num_blocks, b.block_size, b.heads_kv, b.d
    code_d = d // 2 if kv == "int4" else d
    shape = (nb, hkv, bs, code_d) if layout == "heads_first" else (nb, bs, hkv, code_d)
    code_type = np.uint8 if kv in ("int4", "fp8_e4m3", "fp8_e5m2") else np.int8
    kc, vc = np.zeros(shape, code_type), np.zeros(shape, code_type)
    records = (nb, hkv, bs) if layout == "heads_first" else (nb, bs, hkv)
    if kv == "int4":
        ks, vs = np.ones(records + (d // 32, 2), np.float16), np.ones(records + (d // 32, 2), np.float16)
    else:
        ks, vs = np.ones(records, np.float32), np.ones(records, np.float32)
    slots, k_rows, v_rows = [], [], []
    for s in range(len(b.contexts)):
        first = b.share * bs if s in b.shared else 0  # a shared prefix is written once, by sequence 0
        slots += [int(b.table[s, j // bs]) * bs + j % bs for j in range(first, b.contexts[s])]
        k_rows.append(b.rows(b.k, s)[:, first:].transpose(1, 0, 2))
        v_rows.append(b.rows(b.v, s)[:, first:].transpose(1, 0, 2))
    key, value = np.concatenate(k_rows), np.concatenate(v_rows)
    attune.paged_append(kc, vc, key, value, slots, kv_dtype=kv, k_scales=ks, v_scales=vs, layout=layout)
    return kc, vc, ks, vs


@pytest.mark.parametrize("layout", ["heads_first", "vllm"])
@pytest.mark.parametrize("kv", ["int8", "int4"])
def test_quantized_caches_filled_by_paged_append(rng, kv, layout):
    b = Batch(rng, **MIXED, block_size=16, d=64, layout=layout)
    kc, vc, ks, vs = _quantized_pair(rng, b, kv, layout)
    out = attune.paged_attention(*b.args(k=kc, v=vc), kv_dtype=kv, k_scales=ks, v_scales=vs, layout=layout)
    # The same rows quantized by quantize_kv, contiguous: attention()'s varlen on them agrees.
    ks_f, vs_f, cu_kv = b.packed()
    k_codes, k_sc = attune.quantize_kv(ks_f, kv, is_k=True)
    v_codes, v_sc = attune.quantize_kv(vs_f, kv, is_k=False)
    varlen = attune.attention(b.q.transpose(1, 0, 2), k_codes, v_codes, causal=True, cu_seqlens_q=b.cu_q,
                              cu_seqlens_kv=cu_kv, kv_dtype=kv, k_scales=k_sc, v_scales=v_sc)
    np.testing.assert_allclose(out, varlen.transpose(1, 0, 2), rtol=0, atol=1e-5)
    # And the float64 reference on the values the codes decode to.
    k_deq = attune.dequantize_kv(k_codes, k_sc, kv, is_k=True)
    v_deq = attune.dequantize_kv(v_codes, v_sc, kv, is_k=False)
    ref = np.zeros(out.shape)
    for s in range(len(b.contexts)):
        a, e = b.cu_q[s], b.cu_q[s + 1]
        if a < e:
            sl = slice(cu_kv[s], cu_kv[s + 1])
            ref[a:e] = reference_variants(b.q[a:e].transpose(1, 0, 2), k_deq[:, sl], v_deq[:, sl],
                                          causal=True).transpose(1, 0, 2)
    assert_close(out, ref)


@pytest.mark.parametrize("layout", ["heads_first", "vllm"])
def test_fp8_and_int8_kc_caches_with_fixed_scales(rng, layout):
    b = Batch(rng, contexts=[37, 12], queries=[1, 4], block_size=8, d=32, layout=layout)
    ks_f, vs_f, cu_kv = b.packed()
    shape = b.k.shape
    for kv, k_fixed, v_fixed in (("fp8_e4m3", np.array([0.01, 0.02], np.float32), 0.015),
                                 ("int8_kc", np.full((2, 32), 0.04, np.float32), None)):
        kc = np.zeros(shape, np.uint8 if kv.startswith("fp8") else np.int8)
        vc = np.zeros_like(kc)
        records = (b.num_blocks, 2, 8) if layout == "heads_first" else (b.num_blocks, 8, 2)
        vs = v_fixed if v_fixed is not None else np.ones(records, np.float32)
        slots = [int(b.table[s, j // 8]) * 8 + j % 8 for s in range(2) for j in range(b.contexts[s])]
        key, value = ks_f.transpose(1, 0, 2), vs_f.transpose(1, 0, 2)
        attune.paged_append(kc, vc, key, value, slots, kv_dtype=kv, k_scales=k_fixed, v_scales=vs, layout=layout)
        out = attune.paged_attention(*b.args(k=kc, v=vc), kv_dtype=kv, k_scales=k_fixed, v_scales=vs, layout=layout)
        # Decoded rows: dequantize the gathered codes as a contiguous cache.
        k_codes = np.concatenate([b.rows(kc, s) for s in range(2)], axis=1)
        v_codes = np.concatenate([b.rows(vc, s) for s in range(2)], axis=1)
        if kv == "int8_kc":
            v_rec = np.concatenate([np.stack([vs[b.table[s, j // 8], :, j % 8] if layout == "heads_first"
                                              else vs[b.table[s, j // 8], j % 8] for j in range(b.contexts[s])], 1)
                                    for s in range(2)], axis=1)
            k_deq = attune.dequantize_kv(k_codes, k_fixed, kv, is_k=True)
            v_deq = attune.dequantize_kv(v_codes, v_rec, kv, is_k=False)
        else:
            k_deq = attune.dequantize_kv(k_codes, k_fixed, kv)
            v_deq = attune.dequantize_kv(v_codes, np.full(2, v_fixed, np.float32), kv)
        assert np.abs(k_deq - ks_f).max() < 0.2  # the codes hold the rows appended
        varlen = attune.attention(b.q.transpose(1, 0, 2), k_deq, v_deq, causal=True, cu_seqlens_q=b.cu_q,
                                  cu_seqlens_kv=cu_kv)
        np.testing.assert_allclose(out, varlen.transpose(1, 0, 2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["heads_first", "vllm"])
def test_paged_append_writes_the_rows_into_their_slots(rng, layout):
    nb, bs, hkv, d = 5, 4, 3, 8
    shape = (nb, hkv, bs, d) if layout == "heads_first" else (nb, bs, hkv, d)
    k, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    key, value = rng.standard_normal((4, hkv, d), dtype=np.float32), rng.standard_normal((4, hkv, d), dtype=np.float32)
    slots = np.array([7, 19, -1, 0])  # -1: a padding token, skipped
    attune.paged_append(k, v, key, value, slots, layout=layout)
    want_k, want_v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for t, slot in enumerate(slots):
        if slot < 0:
            continue
        for want, rows in ((want_k, key), (want_v, value)):
            if layout == "heads_first":
                want[slot // bs, :, slot % bs] = rows[t]
            else:
                want[slot // bs, slot % bs] = rows[t]
    np.testing.assert_array_equal(k, want_k)
    np.testing.assert_array_equal(v, want_v)
    # A bf16 cache from float32 rows: rounded to nearest even, as astype does.
    kb, vb = np.zeros(shape, BF16), np.zeros(shape, BF16)
    attune.paged_append(kb, vb, key, value, slots, layout=layout)
    np.testing.assert_array_equal(kb.astype(np.float32), want_k.astype(BF16).astype(np.float32))


def test_paged_append_refuses_bad_slots_before_writing(rng):
    k, v = np.zeros((2, 1, 4, 8), np.float32), np.zeros((2, 1, 4, 8), np.float32)
    rows = np.ones((3, 1, 8), np.float32)
    for slots, message in (([0, 8, 1], r"slot_mapping\[1\] = 8 is outside the pool's 8 slots"),
                           ([5, 2, 5], "tokens 0 and 2 both write slot 5"),
                           ([0, 1], r"slot_mapping: expected one slot per token \(3\), got 2")):
        with pytest.raises(ValueError, match=message) as info:
            attune.paged_append(k, v, rows, rows, slots)
        assert "\n" not in str(info.value)
        assert not k.any() and not v.any()
    with pytest.raises(TypeError, match="k_cache: element type must be float32"):
        attune.paged_append(k.astype(np.int8), v.astype(np.int8), rows, rows, [0, 1, 2])
    with pytest.raises(ValueError, match="k_scales: needed with kv_dtype='int8'"):
        attune.paged_append(k.astype(np.int8), v.astype(np.int8), rows, rows, [0, 1, 2], kv_dtype="int8")
    with pytest.raises(ValueError, match=r"k_scales\[0\] = 0.000000: the cache's fixed scales must be finite and > 0"):
        attune.paged_append(k.astype(np.uint8), v.astype(np.uint8), rows, rows, [0, 1, 2], kv_dtype="fp8_e4m3",
                            k_scales=0.0, v_scales=1.0)
    with pytest.raises(ValueError, match="paged_append writes C-contiguous pools"):
        attune.paged_append(k[:, :, ::2], v[:, :, ::2], rows, rows, [0, 1, 2])


def test_out_argument_and_strided_queries_are_used_in_place(rng):
    b = Batch(rng, **MIXED, block_size=16)
    heads_first = np.ascontiguousarray(b.q.transpose(1, 0, 2))  # [heads, total, d] memory
    q = heads_first.transpose(1, 0, 2)                          # viewed as [total, heads, d]
    buffer = np.full((b.heads_q, q.shape[0], b.d), np.nan, np.float32)
    out = buffer.transpose(1, 0, 2)
    before = attune._attune._copies()
    got = attune.paged_attention(q, b.k, b.v, b.table, b.contexts, b.cu_q, out=out)
    assert got is out and attune._attune._copies() == before
    assert_close(buffer.transpose(1, 0, 2), b.reference())
    # Rows that are not contiguous are gathered (q) or scattered (out), with the same result.
    q_every_other = np.repeat(b.q, 2, axis=-1)[..., ::2]
    assert_close(attune.paged_attention(q_every_other, b.k, b.v, b.table, b.contexts, b.cu_q), b.reference())


def test_block_tables_of_other_integer_types(rng):
    b = Batch(rng, **MIXED, block_size=16)
    expected = attune.paged_attention(*b.args())
    for table in (b.table.astype(np.int64), b.table.astype(np.int16), np.asfortranarray(b.table)):
        got = attune.paged_attention(b.q, b.k, b.v, table, b.contexts, b.cu_q)
        np.testing.assert_array_equal(got, expected)


def _small(rng):
    return Batch(rng, contexts=[20, 7], queries=[1, 3], block_size=8, heads_q=4, heads_kv=2, d=4)


BAD = [
    ("block id past the pool", lambda b: b.table.__setitem__((0, 1), 99), {},
     ValueError, r"block_table\[0\]\[1\] = 99 is not a block of the pool \[0, "),
    ("negative block id", lambda b: b.table.__setitem__((1, 0), -1), {},
     ValueError, r"block_table\[1\]\[0\] = -1 is not a block"),
    ("context longer than its row", None, dict(seq_lens=[40, 7]),
     ValueError, "sequence 0 has 40 keys, more than its 4 table entries"),
    ("negative length", None, dict(seq_lens=[20, -7]), ValueError, r"seq_lens\[1\] = -7 must be >= 0"),
    ("unsorted cu_seqlens_q", None, dict(cu_seqlens_q=[0, 3, 1]), ValueError, r"cu_seqlens_q\[2\] = 1 must be in"),
    ("more queries than context", None, dict(cu_seqlens_q=[0, 4, 4], seq_lens=[3, 7]),
     ValueError, "sequence 0 has 4 queries but a context of 3 keys"),
    ("offsets and q disagree", None, dict(cu_seqlens_q=[0, 1, 3]), ValueError, "must equal the total 4"),
    ("wrong offset count", None, dict(cu_seqlens_q=[0, 4]), ValueError, r"expected len\(seq_lens\) \+ 1 = 3 offsets"),
    ("table rows", None, dict(block_table=np.zeros((3, 3), np.int32)), ValueError, "one row per sequence"),
    ("float table", None, dict(block_table=np.zeros((2, 3), np.float32)), TypeError,
     "block_table: element type must be int32"),
    ("table of strings", None, dict(block_table="abc"), TypeError, "block_table: must be a 2-D numpy array"),
    ("float64 queries", None, dict(q=np.zeros((4, 4, 4))), TypeError, "q: element type must be float32"),
    ("codes without kv_dtype", None, dict(k=np.zeros((5, 2, 8, 4), np.int8), v=np.zeros((5, 2, 8, 4), np.int8)),
     TypeError, r"k_cache: element type must be float32.*\(quantized codes need kv_dtype=...\)"),
    ("3-D pool", None, dict(k=np.zeros((5, 8, 4), np.float32)), ValueError, r"k_cache: expected 4-D \[num_blocks"),
    ("pools disagree", None, dict(v=np.zeros((5, 2, 4, 4), np.float32)), ValueError,
     "k_cache and v_cache must agree on num_blocks, heads_kv and block_size"),
    ("d_k", None, dict(q=np.zeros((4, 4, 8), np.float32)), ValueError, "d_k: q and k_cache must agree"),
    ("heads", None, dict(q=np.zeros((4, 3, 4), np.float32)), ValueError, "heads_q"),
    ("layout", None, dict(layout="nhd"), ValueError, "layout: must be 'heads_first'"),
    ("mixed frameworks", None, dict(k=[[1.0]]), TypeError, "q, k_cache and v_cache must be all numpy arrays"),
    ("scales without kv_dtype", None, dict(k_scales=np.ones(1, np.float32)), ValueError, "given without kv_dtype"),
    ("quantized type name", None, dict(kv_dtype="int3"), ValueError, "kv_dtype: must be int8"),
]


@pytest.mark.parametrize("what, spoil, change, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_one_line_error(rng, what, spoil, change, error, message):
    b = _small(rng)
    if spoil:
        spoil(b)
    args = dict(q=b.q, k=b.k, v=b.v, block_table=b.table, seq_lens=b.contexts, cu_seqlens_q=b.cu_q)
    keywords = {}
    for name, value in change.items():
        (args if name in args else keywords)[name] = value
    out = np.full(b.q.shape, 7.0, np.float32)
    if args["q"].shape != b.q.shape or args["q"].dtype != np.float32 or "layout" in keywords:
        out = None
    with pytest.raises(error, match=message) as info:
        attune.paged_attention(*args.values(), out=out, **keywords)
    assert "\n" not in str(info.value)
    if out is not None:
        assert (out == 7.0).all(), "the output was written before the error"


def test_torch_tensors_both_layouts_and_bf16():
    torch = require("torch")
    rng = np.random.default_rng(5)
    for layout in ("heads_first", "vllm"):
        b = Batch(rng, **MIXED, block_size=16, layout=layout)
        args = [torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in b.args()]
        out = attune.paged_attention(*args, layout=layout)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert_close(out.numpy(), b.reference())
        args[0], args[1], args[2] = args[0].bfloat16(), args[1].bfloat16(), args[2].bfloat16()
        out16 = attune.paged_attention(*args, layout=layout)
        assert out16.dtype == torch.bfloat16
        b.q, b.k, b.v = (x.float().numpy() for x in args[:3])
        assert_close(out16.float().numpy(), b.reference(), "bfloat16")


def _torch_batch(torch, layout="vllm", kv=None):
    rng = np.random.default_rng(11)
    b = Batch(rng, **MIXED, block_size=16, d=64, layout=layout)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))  # noqa: E731
    if kv is None:
        return b, (t(b.q), t(b.k), t(b.v), t(b.table), torch.tensor(b.contexts), t(b.cu_q)), {}
    kc, vc, ks, vs = _quantized_pair(rng, b, kv, layout)
    return b, (t(b.q), t(kc), t(vc), t(b.table), torch.tensor(b.contexts), t(b.cu_q)), dict(
        kv_dtype=kv, k_scales=t(ks), v_scales=t(vs))


@pytest.mark.parametrize("kv", [None, "int8", "int4"])
def test_torch_ops_pass_opcheck(kv):
    torch = require("torch")
    import attune.torch as ops  # noqa: F401  (registers the ops)

    b, args, quant = _torch_batch(torch, kv=kv)
    torch.library.opcheck(torch.ops.attune.paged_attention.default, args, dict(layout="vllm", **quant))
    torch.library.opcheck(torch.ops.attune.paged_attention.default, args,
                          dict(layout="vllm", window=5, softcap=3.0, alibi_slopes=torch.tensor([0.5, 0.25, 0.1, 0.0]),
                               sinks=torch.zeros(4), **quant))
    k, v = args[1].clone(), args[2].clone()
    rows = torch.randn(3, 2, 64)
    scales = {name: x.clone() for name, x in quant.items() if name != "kv_dtype"}
    torch.library.opcheck(torch.ops.attune.paged_append.default, (k, v, rows, rows * 2, torch.tensor([3, 40, -1])),
                          dict(layout="vllm", kv_dtype=kv, **scales))
    meta = torch.ops.attune.paged_attention.default(*(x.to("meta") for x in args), layout="vllm", kv_dtype=kv)
    assert meta.shape == b.q.shape and meta.device.type == "meta"


@pytest.mark.parametrize("kv", [None, "int8"])
def test_decode_step_compiles_without_graph_breaks(kv):
    """One decode step as a serving loop runs it: append the new token's K/V, attend over the pools."""
    torch = require("torch")
    import attune.torch as ops

    b, (q, k, v, table, lens, cu_q), quant = _torch_batch(torch, kv=kv)
    key, value = torch.randn(4, 2, 64), torch.randn(4, 2, 64)
    slots = torch.tensor([int(b.table[s, (c - 1) // 16]) * 16 + (c - 1) % 16 if c else -1 for s, c in
                          enumerate(b.contexts)])  # each sequence's last position gets rewritten
    scale_names = ("k_scales", "v_scales")

    def step(q, k, v, key, value, slots, table, lens, cu_q, *scales):
        extra = dict(zip(scale_names, scales), kv_dtype=quant.get("kv_dtype")) if scales else {}
        ops.paged_append(k, v, key, value, slots, layout="vllm", **extra)
        return ops.paged_attention(q * 0.5, k, v, table, lens, cu_q, layout="vllm", **extra) + 1

    scales = [quant[n] for n in scale_names] if kv else []
    fresh = lambda: [k.clone(), v.clone()] + [x.clone() for x in scales]  # noqa: E731
    eager_state, compiled_state = fresh(), fresh()
    expected = step(q, *eager_state[:2], key, value, slots, table, lens, cu_q, *eager_state[2:])
    explanation = torch._dynamo.explain(step)(q, *fresh()[:2], key, value, slots, table, lens, cu_q, *fresh()[2:])
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    got = compiled(q, *compiled_state[:2], key, value, slots, table, lens, cu_q, *compiled_state[2:])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    for after, want in zip(compiled_state, eager_state):
        torch.testing.assert_close(after, want, rtol=0, atol=0)  # the compiled append wrote the caller's pools
    assert not torch.equal(compiled_state[0], k)


def test_torch_paged_attention_that_requires_grad_refuses_backward():
    torch = require("torch")
    import attune.torch as ops

    b, (q, k, v, table, lens, cu_q), _ = _torch_batch(torch)
    out = ops.paged_attention(q.clone().requires_grad_(), k, v, table, lens, cu_q, layout="vllm")
    torch.testing.assert_close(out.detach(), attune.paged_attention(q, k, v, table, lens, cu_q, layout="vllm"))
    with pytest.raises(NotImplementedError, match="forward-only"):
        out.sum().backward()


def test_pools_that_are_views_of_a_larger_buffer_are_read_in_place(rng):
    """transformers-style pages: K and V pages interleaved in one buffer (block stride 2 pages), and
    int8 scale records that are a slice of a wider array, all read where they are."""
    b = Batch(rng, **MIXED, block_size=16, layout="vllm", d=32)
    buffer = np.empty((2 * b.num_blocks,) + b.k.shape[1:], np.float32)
    buffer[0::2], buffer[1::2] = b.k, b.v
    k, v = buffer[0::2], buffer[1::2]
    assert not k.flags.c_contiguous
    before = attune._attune._copies()
    out = attune.paged_attention(*b.args(k=k, v=v), layout="vllm")
    assert attune._attune._copies() == before
    np.testing.assert_array_equal(out, attune.paged_attention(*b.args(), layout="vllm"))
    kc, vc, ks, vs = _quantized_pair(rng, b, "int8", "vllm")
    wide_k, wide_v = (np.concatenate([x, np.zeros(x.shape[:2] + (3,), np.float32)], axis=2) for x in (ks, vs))
    expected = attune.paged_attention(*b.args(k=kc, v=vc), kv_dtype="int8", k_scales=ks, v_scales=vs, layout="vllm")
    got = attune.paged_attention(*b.args(k=kc, v=vc), kv_dtype="int8", k_scales=wide_k[:, :, :2],
                                 v_scales=wide_v[:, :, :2], layout="vllm")
    assert attune._attune._copies() == before
    np.testing.assert_array_equal(got, expected)


def test_random_malformed_calls_only_raise_one_line_errors():
    """Valid random batches, each spoiled at random (block ids out of range, tables of other types
    and row counts, negative or too long lengths, unsorted or miscounted offsets, slots outside the
    pool): every call either runs (finite output) or raises one line of ValueError/TypeError; none
    crashes or reads outside the pools."""
    rng = np.random.default_rng(99)
    outcomes = {"ran": 0, "refused": 0}
    spoilers = {
        "id": lambda c: len(c["table"]) and c["table"].__setitem__((int(rng.integers(len(c["table"]))), 0),
                                                                    int(rng.choice([-5, 99]))),
        "type": lambda c: c.update(table=c["table"].astype(rng.choice([np.int8, np.int64, np.float32]))),
        "rows": lambda c: c.update(table=c["table"][:-1]),
        "length": lambda c: c["lens"].__setitem__(int(rng.integers(len(c["lens"]))), int(rng.choice([-3, 10**6]))),
        "offsets": lambda c: c.update(cu=c["cu"][::-1].copy()),
        "count": lambda c: c.update(cu=c["cu"][:-1]),
        "total": lambda c: c.update(q=c["q"][:-1]),
    }
    for _ in range(300):
        n = int(rng.integers(1, 4))
        contexts = [int(x) for x in rng.integers(0, 40, n)]
        queries = [int(rng.integers(0, c + 1)) if c else 0 for c in contexts]
        if not sum(queries):
            contexts[0], queries[0] = contexts[0] + 1, 1
        b = Batch(rng, contexts, queries, block_size=int(rng.choice([1, 4, 16])), heads_q=4, heads_kv=2, d=8,
                  layout=str(rng.choice(["heads_first", "vllm"])))
        call = dict(q=b.q, table=b.table.copy(), lens=list(contexts), cu=b.cu_q.copy())
        for name in rng.choice(list(spoilers), int(rng.integers(0, 3)), replace=False):
            spoilers[name](call)
        try:
            out = attune.paged_attention(call["q"], b.k, b.v, call["table"], call["lens"], call["cu"], layout=b.layout,
                                         window=int(rng.integers(0, 4)))
            assert np.isfinite(out).all()
            outcomes["ran"] += 1
        except (ValueError, TypeError) as e:
            assert "\n" not in str(e), str(e)
            outcomes["refused"] += 1
        slots = rng.integers(-2, b.num_blocks * b.block_size + 2, int(rng.integers(0, 5)))
        rows = rng.standard_normal((max(len(slots) + int(rng.integers(-1, 2)), 0), 2, 8), dtype=np.float32)
        try:
            attune.paged_append(b.k, b.v, rows, rows, slots, layout=b.layout)
        except (ValueError, TypeError) as e:
            assert "\n" not in str(e), str(e)
    assert outcomes["ran"] > 50 and outcomes["refused"] > 100, outcomes
