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
    args = dict(max_new_tokens=12, do_sample=False, return_dict_in_generate=True, output_logits=True,
                attention_mask=torch.ones_like(ids), pad_token_id=0)
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref.generate(ids, **args), ours.generate(ids, **args)
    after = backend.calls()
    assert after["attune"] - before["attune"] == 2 * 12  # prefill + 11 cached decoding steps, 2 layers
    assert after["sdpa_fallback"] == before["sdpa_fallback"]
    assert torch.equal(got.sequences, expected.sequences)
    for step, (a, b) in enumerate(zip(got.logits, expected.logits)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m, s=step: f"step {s}: {m}")


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
    args = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_logits=True,
                attention_mask=mask, pad_token_id=0)
    before = backend.calls()
    with torch.no_grad():
        expected, got = ref.generate(ids, **args), ours.generate(ids, **args)
    assert backend.calls()["sdpa_fallback"] == before["sdpa_fallback"]
    assert torch.equal(got.sequences, expected.sequences)
    for a, b in zip(got.logits, expected.logits):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


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
