"""attune as a transformers attention backend: randomly initialised small Llama- and Mistral-style
models (nothing downloaded) against attn_implementation="sdpa", prefill and cached generation."""

import copy

import pytest

from conftest import require

torch = require("torch")
transformers = require("transformers")
import attune.transformers as backend  # noqa: E402  (needs torch and transformers)

ATOL = 1e-4  # logits of order 1; attune and torch differ by float32 reordering only (~1e-6)


def small_config(kind, **extra):
    common = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512)
    common.update(extra)
    if kind == "llama":
        return transformers.LlamaConfig(**common)
    return transformers.MistralConfig(sliding_window=None, **common)


def pair(cfg):
    """The same random weights under "sdpa" and "attune" (each model gets its own config copy:
    from_config writes the implementation into the config it is given)."""
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="sdpa").eval()
    ours = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=backend.NAME).eval()
    ours.load_state_dict(ref.state_dict())
    assert ours.config._attn_implementation == "attune" and ref.config._attn_implementation == "sdpa"
    return ref, ours


def tokens(batch, seq, seed=1):
    return torch.randint(0, 256, (batch, seq), generator=torch.Generator().manual_seed(seed))


def generate_and_compare(ref, ours, ids, max_new_tokens, attention_mask=None):
    """Greedy generation with the KV cache on both models: the same tokens and, step by step, the
    same logits within ATOL, with no call falling back to sdpa. Returns the attune calls made."""
    args = dict(max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True, output_logits=True,
                attention_mask=torch.ones_like(ids) if attention_mask is None else attention_mask, pad_token_id=0)
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref.generate(ids, **args), ours.generate(ids, **args)
    after = backend.calls()
    assert after["sdpa_fallback"] == before["sdpa_fallback"]
    assert torch.equal(got.sequences, expected.sequences)
    for step, (a, b) in enumerate(zip(got.logits, expected.logits)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m, s=step: f"step {s}: {m}")
    return after["attune"] - before["attune"]


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_prefill_logits_match_sdpa(kind):
    ref, ours = pair(small_config(kind))
    ids = tokens(2, 40)
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref(ids).logits, ours(ids).logits
    after = backend.calls()
    assert after["attune"] - before["attune"] == 2  # one call per layer, none fell back
    assert after["sdpa_fallback"] == before["sdpa_fallback"]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_generation_with_kv_cache_matches_sdpa(kind):
    ref, ours = pair(small_config(kind))
    ids = tokens(1, 24)
    assert generate_and_compare(ref, ours, ids, 12) == 2 * 12  # prefill + 11 cached decoding steps, 2 layers


def test_a_padded_batch_runs_attune_with_its_mask():
    ref, ours = pair(small_config("llama"))
    ids = tokens(2, 16)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding in the second row
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
    after = backend.calls()
    assert after["attune_masked"] - before["attune_masked"] == 2 and after["sdpa_fallback"] == before["sdpa_fallback"]
    # Padding positions see no key at all: attune gives them zeros, transformers' sdpa a workaround
    # value; the logits that matter are those of the real tokens.
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=ATOL, rtol=0)


def test_padded_generation_matches_sdpa():
    ref, ours = pair(small_config("llama"))
    ids = tokens(2, 12)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    generate_and_compare(ref, ours, ids, 6, attention_mask=mask)


def test_mistral_sliding_window_runs_attune():
    ref, ours = pair(transformers.MistralConfig(
        vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=512, sliding_window=8))
    ids = tokens(1, 40)
    args = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_logits=True,
                attention_mask=torch.ones_like(ids), pad_token_id=0)
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref(ids).logits, ours(ids).logits
        gen_expected, gen_got = ref.generate(ids, **args), ours.generate(ids, **args)
    after = backend.calls()
    assert after["attune_masked"] - before["attune_masked"] >= 2  # the window is a materialised mask
    assert after["sdpa_fallback"] == before["sdpa_fallback"]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert torch.equal(gen_got.sequences, gen_expected.sequences)
    for a, b in zip(gen_got.logits, gen_expected.logits):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_gemma2_soft_capped_logits_run_attune():
    """Gemma 2 caps the attention logits (transformers' sdpa refuses soft-capping; eager is the reference)."""
    cfg = transformers.Gemma2Config(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                    max_position_embeddings=512, sliding_window=8, attn_logit_softcapping=2.0,
                                    initializer_range=0.3)  # logits large enough for the cap to matter
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="eager").eval()
    ours = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=backend.NAME).eval()
    ours.load_state_dict(ref.state_dict())
    ids = tokens(1, 24)
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref(ids).logits, ours(ids).logits
        plain = transformers.AutoModelForCausalLM.from_config(
            copy.deepcopy(cfg).__class__(**{**cfg.to_dict(), "attn_logit_softcapping": None}),
            attn_implementation="eager").eval()
        plain.load_state_dict(ref.state_dict())
        uncapped = plain(ids).logits
    after = backend.calls()
    assert after["attune"] - before["attune"] == 2 and after["sdpa_fallback"] == before["sdpa_fallback"]
    assert (uncapped - expected).abs().max() > 100 * ATOL  # the cap changes the result
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_16_bit_models_read_their_tensors_in_place(dtype):
    ref, ours = pair(small_config("llama"))
    ref, ours = ref.to(dtype), ours.to(dtype)
    ids = tokens(2, 40)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    before = attune_copies()
    with torch.no_grad():
        expected, got = ref(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
    assert attune_copies() == before  # strided 16-bit Q/K/V and the mask, all in place
    # logits up to ~0.85; measured differences 5.9e-3 (bf16: 2 ulp at 0.5) and 7.3e-4 (fp16): the
    # 16-bit roundings of the attention output propagate through the layers
    atol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    torch.testing.assert_close(got[mask.bool()].float(), expected[mask.bool()].float(), atol=atol, rtol=0)


def attune_copies():
    import attune

    return attune._attune._copies()


def gpt_oss_pair(**extra):
    """A small random gpt-oss (attention sinks, sliding and full layers alternating, MoE) under
    "eager" (its reference: gpt-oss has no sdpa path, which would drop the sinks) and "attune"."""
    cfg = transformers.GptOssConfig(vocab_size=256, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=8, num_key_value_heads=2, head_dim=32, num_local_experts=4,
                                    num_experts_per_tok=2, sliding_window=8, max_position_embeddings=512,
                                    initializer_range=0.1, **extra)
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="eager").eval()
    with torch.no_grad():  # sinks of both signs and sizes that matter (the init draws them small)
        for layer in ref.model.layers:
            layer.self_attn.sinks.copy_(torch.linspace(-2.0, 3.0, 8))
    ours = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=backend.NAME).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def test_gpt_oss_sinks_run_attune_and_match_eager():
    ref, ours = gpt_oss_pair()
    ids = tokens(2, 24)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the second row
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref(ids).logits, ours(ids).logits
        expected_padded, got_padded = ref(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
        for layer in ref.model.layers:  # the same model without sinks: the sinks change the logits
            layer.self_attn.sinks.fill_(float("-inf"))
        no_sinks = ref(ids).logits
    after = backend.calls()
    assert after["attune"] - before["attune"] == 4 and after["sdpa_fallback"] == before["sdpa_fallback"]
    assert (no_sinks - expected).abs().max() > 100 * ATOL
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_padded[mask.bool()], expected_padded[mask.bool()], atol=ATOL, rtol=0)


def test_gpt_oss_generation_with_kv_cache_matches_eager():
    ref, ours = gpt_oss_pair()
    ids = tokens(1, 20)
    generate_and_compare(ref, ours, ids, 8)


def test_gpt_oss_under_torch_compile_fullgraph_matches_eager():
    """Traced, the backend calls the attune::sdpa op with the sinks (no fallback, no graph break)."""
    ref, ours = gpt_oss_pair()
    ids = tokens(1, 16)
    attention = ours.model.layers[0].self_attn
    with torch.no_grad():
        hidden = torch.randn(1, 16, 128, generator=torch.Generator().manual_seed(3))
        position_embeddings = ours.model.rotary_emb(hidden, torch.arange(16)[None])

        causal = torch.full((16, 16), float("-inf")).triu(1)[None, None]  # eager applies only the mask it is given

        def layer(h):
            return attention(h, position_embeddings=position_embeddings, attention_mask=causal)[0]

        torch._dynamo.reset()
        explanation = torch._dynamo.explain(layer)(hidden)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(layer, fullgraph=True)
        eager_ref = ref.model.layers[0].self_attn(hidden, position_embeddings=position_embeddings,
                                                  attention_mask=causal)[0]
        torch.testing.assert_close(compiled(hidden), eager_ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(layer(hidden), eager_ref, atol=ATOL, rtol=0)
        assert ours(ids).logits.shape == (1, 16, 256)


def test_sinks_with_dropout_in_training_refuse_instead_of_dropping_the_sinks():
    _, ours = gpt_oss_pair(attention_dropout=0.1)
    ours.train()
    with pytest.raises(NotImplementedError, match="attention sinks"):
        ours(tokens(1, 8))


def test_gemma2_soft_capped_layer_under_torch_compile_runs_the_op():
    """Traced, soft-capping goes through the attune::sdpa op's softcap (it used to fall back to sdpa)."""
    cfg = transformers.Gemma2Config(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                    max_position_embeddings=512, sliding_window=8, attn_logit_softcapping=2.0,
                                    initializer_range=0.3)
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="eager").eval()
    ours = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=backend.NAME).eval()
    ours.load_state_dict(ref.state_dict())
    hidden = torch.randn(1, 12, 128, generator=torch.Generator().manual_seed(3))
    causal = torch.full((12, 12), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        position_embeddings = ours.model.rotary_emb(hidden, torch.arange(12)[None])

        def layer(model):
            attention = model.model.layers[1].self_attn
            return lambda h: attention(h, position_embeddings=position_embeddings, attention_mask=causal)[0]

        torch._dynamo.reset()
        explanation = torch._dynamo.explain(layer(ours))(hidden)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        before = backend.calls()
        got = torch.compile(layer(ours), fullgraph=True)(hidden)
        assert backend.calls()["sdpa_fallback"] == before["sdpa_fallback"]
        torch.testing.assert_close(got, layer(ref)(hidden), atol=ATOL, rtol=0)
