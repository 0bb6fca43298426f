// Attention shapes of well-known models, for `attune_bench --model NAME`: the heads and head size
// of each model's published configuration (num_attention_heads, num_key_value_heads, head_dim),
// and the lengths a user of it typically runs. Each model expands to its prefill shapes (causal,
// seq_q = seq_kv) and its decoding shapes (one query row against a KV cache); batch 1.
// Only the attention core is benched: sliding windows (Mistral, Gemma 2's local layers) and
// Gemma 2's logit soft-capping are not part of attune's problem, so those rows are the full
// causal attention of the same shape.
#pragma once

#include <cstdint>
#include <string_view>

namespace attune_bench {

struct ModelShape {
  std::string_view name;
  std::int64_t heads_q, heads_kv, d;
  std::int64_t prefill_seq[3];  // seq_q = seq_kv, causal; 0: unused
  std::int64_t decode_kv[2];    // seq_q = 1, seq_kv = this; 0: unused
};

// name          heads_q heads_kv  d    prefill seq     decode seq_kv
inline constexpr ModelShape kModels[] = {
    {"llama3-8b",      32,  8, 128, {512, 2048, 4096}, {4096, 8192}},
    {"llama3-70b",     64,  8, 128, {512, 2048},       {4096, 8192}},
    {"llama3.2-1b",    32,  8,  64, {512, 2048},       {4096, 8192}},
    {"llama3.2-3b",    24,  8, 128, {512, 2048},       {4096, 8192}},
    {"mistral-7b",     32,  8, 128, {512, 2048, 4096}, {4096, 8192}},
    {"gemma2-2b",       8,  4, 256, {512, 2048},       {4096, 8192}},
    {"gemma2-9b",      16,  8, 256, {512, 2048},       {4096, 8192}},
    {"qwen2.5-7b",     28,  4, 128, {512, 2048, 4096}, {4096, 8192}},
    {"phi3-mini",      32, 32,  96, {512, 2048},       {4096}},
};

inline const ModelShape* find_model(std::string_view name) {
  for (const ModelShape& m : kModels)
    if (m.name == name) return &m;
  return nullptr;
}

}  // namespace attune_bench
