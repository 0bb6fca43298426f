"""attune on torch CPU tensors, and the attune::attention / attune::sdpa torch ops (eager,
opcheck, torch.compile)."""

import numpy as np
import pytest

import attune
from conftest import assert_close, pv_rounding, reference, require

torch = require("torch")
import attune.torch as ops  # noqa: E402  (needs torch)

F = torch.nn.functional
DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def randn(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def as64(t):
    return t.to(torch.float64).numpy()


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES.values()))
def test_tensors_match_the_reference_and_keep_their_type(dtype):
    q, k, v = randn(2, 8, 33, 64, dtype=dtype), randn(2, 2, 47, 64, dtype=dtype, seed=1), randn(2, 2, 47, 64, dtype=dtype, seed=2)
    out = attune.attention(q, k, v, causal=True)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == q.shape
    # auto runs bf16 on amx where the CPU has it, which rounds P to bf16 too
    pv = pv_rounding(as64(q), as64(k), as64(v), True) if dtype == torch.bfloat16 else 0.0
    assert_close(as64(out), reference(as64(q), as64(k), as64(v), True), DTYPES[dtype], pv)


def test_3d_tensors_and_out_argument():
    q = randn(4, 20, 16)
    out = torch.empty_like(q)
    assert attune.attention(q, q, q, out=out) is out
    assert_close(as64(out), reference(as64(q), as64(q), as64(q)))


def copies():
    return attune._attune._copies()[0]


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES.values()))
def test_strided_tensors_are_read_in_place(dtype):
    x = randn(2, 33, 4, 16, dtype=dtype).transpose(1, 2)  # [batch, heads, seq, d] view of [batch, seq, heads, d]
    kv = randn(1, 4, 33, 16, seed=3, dtype=dtype).expand(2, 4, 33, 16)  # zero stride
    cache = randn(2, 4, 64, 16, seed=4, dtype=dtype)[:, :, :33]  # a KV cache with capacity 64
    assert not x.is_contiguous() and not kv.is_contiguous() and not cache.is_contiguous()
    expected = attune.attention(x.contiguous(), kv.contiguous(), cache.contiguous(), causal=True)
    before = copies()
    got = attune.attention(x, kv, cache, causal=True)
    assert copies() == before and attune.resolve(x, kv, cache)["strided"]
    assert got.dtype == dtype and got.is_contiguous()
    # bf16: the contiguous call may round P to bf16 (dot-product tiles) where the strided one
    # widens to float32, so each is held to the reference's bound, not to the other
    ref = reference(as64(x), as64(kv), as64(cache), True)
    pv = pv_rounding(as64(x), as64(kv), as64(cache), True) if dtype == torch.bfloat16 else 0.0
    assert_close(as64(got), ref, DTYPES[dtype], pv)
    assert_close(as64(expected), ref, DTYPES[dtype], pv)
    # the result into a transposed view ([batch, seq, heads, d] storage, as transformers wants it)
    out = torch.empty(2, 33, 4, 16, dtype=dtype)
    attune.attention(x, kv, cache, causal=True, out=out.transpose(1, 2))
    assert copies() == before
    torch.testing.assert_close(out.transpose(1, 2), got, rtol=0, atol=0)


def test_tensors_without_contiguous_rows_are_copied():
    x = randn(2, 4, 16, 33).transpose(2, 3)  # d is the strided axis
    before = copies()
    got = attune.attention(x, x, x)
    assert copies() - before == 3
    torch.testing.assert_close(got, attune.attention(x.contiguous(), x.contiguous(), x.contiguous()), rtol=0, atol=0)


def test_tensors_that_require_grad_are_read():
    q = randn(1, 2, 8, 16).requires_grad_()
    out = attune.attention(q, q, q)
    assert not out.requires_grad
    assert_close(as64(out.detach()), reference(as64(q.detach()), as64(q.detach()), as64(q.detach())))


def test_wrong_types_and_devices_are_type_errors():
    q = randn(1, 2, 8, 16)
    with pytest.raises(TypeError, match="q: element type must be float32, float16 or bfloat16, got torch.float64"):
        attune.attention(q.double(), q, q)
    with pytest.raises(TypeError, match="k: element type"):
        attune.attention(q, q.to(torch.int32), q)
    with pytest.raises(TypeError, match="attune runs on the CPU, got a tensor on device 'meta'"):
        attune.attention(q, q.to("meta"), q)
    with pytest.raises(TypeError, match="all numpy arrays or all torch tensors"):
        attune.attention(q, q.numpy(), q)


def test_mha_on_tensors():
    if not attune.info()["with_blas"]:
        pytest.skip("built without BLAS: no mha")
    x, wq, wk, wv, wo = randn(1, 10, 32), randn(32, 32, seed=1), randn(32, 16, seed=2), randn(32, 16, seed=3), randn(32, 32, seed=4)
    y = attune.mha(x, wq, wk, wv, wo, heads_q=4, heads_kv=2, causal=True)
    np.testing.assert_allclose(y.numpy(), attune.mha(*(t.numpy() for t in (x, wq, wk, wv, wo)), heads_q=4, heads_kv=2,
                                                    causal=True), rtol=0, atol=1e-6)  # BLAS: no bits promised


# attune.torch.sdpa follows torch's SDPA, including the top-left causal mask when seq_q != seq_kv.
@pytest.mark.parametrize("sq,skv", [(24, 24), (9, 40), (40, 9), (1, 30)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_torch(sq, skv, causal):
    q, k, v = randn(2, 8, sq, 32), randn(2, 2, skv, 32, seed=1), randn(2, 2, skv, 32, seed=2)
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal, enable_gqa=True)
    got = ops.sdpa(q, k, v, is_causal=causal, enable_gqa=True)
    assert_close(got.numpy(), expected.numpy())


def test_sdpa_scale_and_3d_and_bf16():
    q = randn(4, 16, 32, dtype=torch.bfloat16)
    expected = F.scaled_dot_product_attention(q.double(), q.double(), q.double(), scale=0.3)
    got = ops.sdpa(q, q, q, scale=0.3)
    assert got.dtype == torch.bfloat16
    assert_close(as64(got), expected.numpy(), "bfloat16", pv_rounding(as64(q), as64(q), as64(q), scale=0.3))


def test_sdpa_top_left_causal_reads_in_place():
    q, k = randn(1, 4, 9, 16), randn(1, 4, 40, 16, seed=1)
    before = copies()
    got = ops.sdpa(q, k, k, is_causal=True)
    assert copies() == before
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, k, is_causal=True), rtol=0, atol=1e-5)


def _masks(b, h, sq, skv):
    g = torch.Generator().manual_seed(5)
    visible = torch.rand(b, h, sq, skv, generator=g) > 0.4
    visible[..., 0] = True  # every row sees a key (torch gives NaN for rows that see none)
    padding = torch.ones(b, 1, 1, skv, dtype=torch.bool)
    padding[1, ..., :3] = False
    yield "bool per head", visible
    yield "bool per batch", visible[:, :1]
    yield "bool shared 2-D", visible[0, 0]
    yield "bool padding [b, 1, 1, skv]", padding
    yield "float per batch", torch.where(visible[:, :1], torch.randn(b, 1, sq, skv, generator=g), float("-inf"))
    yield "float16 shared", torch.randn(sq, skv, generator=g).half()
    yield "bool expanded over heads", visible[:1].expand(b, h, sq, skv)


@pytest.mark.parametrize("sq,skv", [(24, 24), (9, 40)])
def test_sdpa_masks_match_torch(sq, skv):
    q, k, v = randn(2, 4, sq, 32), randn(2, 2, skv, 32, seed=1), randn(2, 2, skv, 32, seed=2)
    for name, mask in _masks(2, 4, sq, skv):
        m64 = mask if mask.dtype == torch.bool else mask.double()
        expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=m64, enable_gqa=True)
        got = ops.sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
        try:
            assert_close(got.numpy(), expected.numpy())
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


def test_sdpa_refuses_what_it_does_not_do():
    q = randn(1, 4, 8, 16)
    with pytest.raises(ValueError, match="attn_mask and is_causal"):
        ops.sdpa(q, q, q, attn_mask=torch.ones(8, 8, dtype=torch.bool), is_causal=True)
    with pytest.raises(ValueError, match="mask: shape"):
        ops.sdpa(q, q, q, attn_mask=torch.ones(8, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask: element type must be bool or float32"):
        attune.attention(q, q, q, mask=torch.ones(8, 8, dtype=torch.int32))
    with pytest.raises(NotImplementedError, match="dropout_p"):
        ops.sdpa(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        ops.sdpa(q, q[:, :2], q[:, :2])
    with pytest.raises(ValueError, match="3-D"):
        ops.sdpa(q[0, 0], q[0, 0], q[0, 0])


def test_attention_op_keeps_attunes_bottom_right_causal_mask():
    q, k = randn(1, 2, 5, 16), randn(1, 2, 12, 16, seed=1)
    got = ops.attention(q, k, k, causal=True)
    assert_close(got.numpy(), reference(q.numpy(), k.numpy(), k.numpy(), causal=True))


def test_ops_pass_opcheck():
    q, k = randn(1, 4, 6, 16), randn(1, 2, 10, 16, seed=1)
    torch.library.opcheck(torch.ops.attune.attention.default, (q, k, k, True, None))
    torch.library.opcheck(torch.ops.attune.sdpa.default, (q, k, k, None, True, 0.5))
    mask = torch.rand(1, 1, 6, 10, generator=torch.Generator().manual_seed(0)) > 0.3
    mask[..., 0] = True
    torch.library.opcheck(torch.ops.attune.sdpa.default, (q, k, k, mask, False, None))


def test_sdpa_under_torch_compile_without_graph_breaks():
    def block(q, k, v):
        return ops.sdpa(q * 1.5, k, v, is_causal=True, enable_gqa=True).sum(dim=-1)

    q, k = randn(1, 4, 20, 16), randn(1, 2, 20, 16, seed=1)
    explanation = torch._dynamo.explain(block)(q, k, k)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, k), block(q, k, k))


def test_ops_run_on_tensors_that_require_grad_but_refuse_backward():
    q = randn(1, 2, 8, 16).requires_grad_()
    out = ops.sdpa(q, q, q, is_causal=True)
    torch.testing.assert_close(out.detach(), F.scaled_dot_product_attention(q, q, q, is_causal=True).detach())
    with pytest.raises(NotImplementedError, match="forward-only"):
        out.sum().backward()


# The variants through torch: attune.attention on tensors, the attune::attention op (eager, opcheck,
# torch.compile without graph breaks) and sdpa's sinks / softcap.
def _variant_inputs():
    q, k, v = randn(1, 4, 12, 32), randn(1, 2, 20, 32, seed=1), randn(1, 2, 20, 32, seed=2)
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    sinks = torch.tensor([0.0, 1.0, -1.0, 2.5])
    return q, k, v, slopes, sinks


def _reference_variants(q, k, v, **args):
    from conftest import reference_variants

    args = {n: (a.numpy() if isinstance(a, torch.Tensor) else a) for n, a in args.items()}
    return reference_variants(as64(q), as64(k), as64(v), **args)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES.values()))
def test_variants_on_tensors(dtype):
    q, k, v, slopes, sinks = _variant_inputs()
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    for args in (dict(alibi_slopes=slopes, causal=True), dict(sinks=sinks), dict(sinks=sinks.to(dtype)),
                 dict(alibi_slopes=slopes, sinks=sinks, window=6, causal=True, softcap=4.0)):
        got = attune.attention(q, k, v, **args)
        assert got.dtype == dtype
        ref = _reference_variants(q, k, v, **{n: (a.float() if isinstance(a, torch.Tensor) else a) for n, a in args.items()})
        assert_close(as64(got), ref, DTYPES[dtype], pv_rounding(as64(q), as64(k), as64(v)) if dtype == torch.bfloat16 else 0.0)
    got = attune.attention(q, k, v, top_k=3)
    assert_close(as64(got), _reference_variants(q, k, v, top_k=3), DTYPES[dtype])


def test_varlen_offsets_as_int32_and_int64_tensors():
    q, k = randn(4, 30, 16), randn(2, 40, 16, seed=1)
    cu_q, cu_kv = [0, 10, 11, 30], [0, 10, 25, 40]
    expected = attune.attention(q, k, k, causal=True, cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv)
    for dtype in (torch.int32, torch.int64):
        got = attune.attention(q, k, k, causal=True, cu_seqlens_q=torch.tensor(cu_q, dtype=dtype),
                               cu_seqlens_kv=torch.tensor(cu_kv, dtype=dtype))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for s in range(3):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_kv[s], cu_kv[s + 1]
        assert_close(as64(expected[:, a:b]), reference(as64(q[:, a:b]), as64(k[:, c:d]), as64(k[:, c:d]), True))
    with pytest.raises(TypeError, match="cu_seqlens_q: attune runs on the CPU, got a tensor on device 'meta'"):
        attune.attention(q, k, k, cu_seqlens_q=torch.tensor(cu_q, device="meta"), cu_seqlens_kv=cu_kv)
    with pytest.raises(TypeError, match="cu_seqlens_kv: must be a 1-D array or a sequence of ints"):
        attune.attention(q, k, k, cu_seqlens_q=cu_q, cu_seqlens_kv=torch.tensor(cu_kv, dtype=torch.float32))


def test_attention_op_takes_the_variants():
    q, k, v, slopes, sinks = _variant_inputs()
    for args in (dict(alibi_slopes=slopes, causal=True), dict(sinks=sinks.tolist()), dict(top_k=4),
                 dict(window=5, softcap=2.0, causal=True, causal_align="top_left"),
                 dict(mask=torch.rand(12, 20, generator=torch.Generator().manual_seed(0)) > 0.2)):
        got = ops.attention(q, k, v, **args)
        torch.testing.assert_close(got, attune.attention(q, k, v, **args), rtol=0, atol=0)
        via_op = torch.ops.attune.attention.default(
            q, k, v, args.pop("causal", False), None, **{n: torch.as_tensor(a) if n == "sinks" else a for n, a in args.items()})
        torch.testing.assert_close(via_op, got, rtol=0, atol=0)


def test_attention_op_passes_opcheck_with_the_variants():
    q, k, v, slopes, sinks = _variant_inputs()
    op = torch.ops.attune.attention.default
    torch.library.opcheck(op, (q, k, v, True, None), dict(alibi_slopes=slopes, sinks=sinks, top_k=5, window=7))
    torch.library.opcheck(op, (q[0], k[0], v[0], True, 0.3), dict(cu_seqlens_q=torch.tensor([0, 5, 12]),
                                                                 cu_seqlens_kv=torch.tensor([0, 8, 20])))
    kc, ks = attune.quantize_kv(k, "int4")
    vc, vs = attune.quantize_kv(v, "int4")
    torch.library.opcheck(op, (q, kc, vc, False, None), dict(kv_dtype="int4", k_scales=ks, v_scales=vs))
    torch.library.opcheck(torch.ops.attune.sdpa.default, (q, k, v, None, True, None), dict(sinks=sinks, softcap=3.0))


def _compiles_without_graph_breaks(fn, *args):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(*args), fn(*args))


def test_attention_op_variants_under_torch_compile_fullgraph():
    q, k, v, slopes, sinks = _variant_inputs()
    cu_q, cu_kv = torch.tensor([0, 5, 12]), torch.tensor([0, 8, 20])

    def block(q, k, v, slopes, sinks):
        return ops.attention(q * 1.5, k, v, causal=True, alibi_slopes=slopes, sinks=sinks).sum(dim=-1)

    def top(q, k, v):
        return ops.attention(q + 1, k, v, top_k=3, window=9, softcap=5.0) * 2

    def varlen(q, k, v, cu_q, cu_kv):
        return ops.attention(q[0] * 2, k[0], v[0], causal=True, cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv).relu()

    def lists(q, k, v):  # plain Python lists become tensors inside the graph
        return ops.attention(q, k, v, alibi_slopes=[0.5, 0.25, 0.125, 0.0625], sinks=[0.0, 1.0, 2.0, 3.0]) - 1

    _compiles_without_graph_breaks(block, q, k, v, slopes, sinks)
    _compiles_without_graph_breaks(top, q, k, v)
    _compiles_without_graph_breaks(varlen, q, k, v, cu_q, cu_kv)
    _compiles_without_graph_breaks(lists, q, k, v)


@pytest.mark.parametrize("kv", ["int8", "fp8_e5m2", "int4"])
def test_quantized_cache_through_the_op_and_torch_compile(kv):
    q, k, v = randn(1, 4, 3, 64), randn(1, 2, 40, 64, seed=1), randn(1, 2, 40, 64, seed=2)
    kc, ks = attune.quantize_kv(k, kv, is_k=True)
    vc, vs = attune.quantize_kv(v, kv, is_k=False)

    def decode_step(q, kc, vc, ks, vs):
        return ops.attention(q * 0.5, kc, vc, causal=True, kv_dtype=kv, k_scales=ks, v_scales=vs) + 1

    expected = attune.attention(q * 0.5, kc, vc, causal=True, kv_dtype=kv, k_scales=ks, v_scales=vs) + 1
    torch.testing.assert_close(decode_step(q, kc, vc, ks, vs), expected, rtol=0, atol=0)
    assert expected.shape == (1, 4, 3, 64)
    _compiles_without_graph_breaks(decode_step, q, kc, vc, ks, vs)
    meta = torch.ops.attune.attention.default(q.to("meta"), kc.to("meta"), vc.to("meta"), False, None, kv_dtype=kv,
                                              k_scales=ks.to("meta"), v_scales=vs.to("meta"))
    assert meta.shape == (1, 4, 3, 64) and meta.device.type == "meta"


def _eager_sinks(q, k, v, sinks, causal):
    """gpt-oss's eager attention in torch (transformers' eager_attention_forward): the sink joins the softmax."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    logits = torch.cat([s, sinks.reshape(1, -1, 1, 1).expand(q.shape[0], -1, q.shape[-2], 1)], dim=-1)
    p = torch.softmax(logits - logits.max(-1, keepdim=True).values, dim=-1)[..., :-1]
    return p @ v


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_sinks_match_the_eager_softmax_with_a_sink_column(causal):
    q, k, v, _, sinks = _variant_inputs()
    q = randn(1, 4, 20, 32, seed=7)
    got = ops.sdpa(q, k, v, is_causal=causal, enable_gqa=True, sinks=sinks)
    expected = _eager_sinks(q.double(), k.double(), v.double(), sinks.double(), causal)
    assert_close(got.numpy(), expected.numpy())
    assert (got - ops.sdpa(q, k, v, is_causal=causal, enable_gqa=True)).abs().max() > 1e-2  # the sinks matter

    def block(q, k, v, sinks):
        return ops.sdpa(q, k, v, is_causal=causal, enable_gqa=True, sinks=sinks, softcap=30.0) * 3

    _compiles_without_graph_breaks(block, q, k, v, sinks)


def test_sinks_that_require_grad_take_the_op_whose_backward_raises():
    q, k, v, _, sinks = _variant_inputs()
    sinks = sinks.clone().requires_grad_()
    for out in (ops.sdpa(q, k, v, enable_gqa=True, sinks=sinks), ops.attention(q, k, v, sinks=sinks)):
        assert out.requires_grad
        with pytest.raises(NotImplementedError, match="forward-only"):
            out.sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(ops.attention(q, k, v, sinks=sinks), attune.attention(q, k, v, sinks=sinks.detach()))


def test_attention_op_function_names_an_unknown_argument_in_one_line():
    q = randn(1, 2, 4, 16)
    with pytest.raises(TypeError, match="attune.torch.attention: unknown argument.s. alibi_slope ") as info:
        ops.attention(q, q, q, alibi_slope=[0.1, 0.2])
    assert "\n" not in str(info.value)
