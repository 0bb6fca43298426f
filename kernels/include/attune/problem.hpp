// The problem description shared by every kernel: shapes, causal flag, scale, and the
// derived sizes and FLOP count that tests, benches and reports all use.
#pragma once

#include <attune/dtype.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace attune {

// Scaled dot-product attention  O = softmax(scale * Q K^T + mask) V  on row-major tensors
// laid out as [batch, heads, seq, dim], stored as `dtype` (Q and O) and `kv_dtype` (K and V):
//   Q [batch, heads_q,  seq_q,  d_k]     K [batch, heads_kv, seq_kv, d_k]
//   V [batch, heads_kv, seq_kv, d_v]     O [batch, heads_q,  seq_q,  d_v]
// Grouped-query attention: query head h reads K/V head h / (heads_q / heads_kv).
// Causal masking aligns the last query with the last key: query i sees keys
// j <= i + seq_kv - seq_q. A query that sees no key outputs zeros.
struct Problem {
  std::int64_t batch = 1;
  std::int64_t heads_q = 1;
  std::int64_t heads_kv = 1;
  std::int64_t seq_q = 1;
  std::int64_t seq_kv = 1;
  std::int64_t d_k = 1;
  std::int64_t d_v = 1;
  bool causal = false;
  std::optional<float> scale;  // default 1 / sqrt(d_k)
  // Storage types. Every combination is valid; arithmetic is float32 whatever they are
  // (16-bit inputs are widened, the softmax and accumulators are float32, O is rounded once
  // when written). fp32 Q/O with 16-bit K/V is the decoding case (a 16-bit KV cache).
  Dtype dtype = Dtype::fp32;        // Q and O
  std::optional<Dtype> kv_dtype;    // K and V; default: dtype
  Dtype kv_type() const { return kv_dtype.value_or(dtype); }

  // Throws InvalidArgument naming the first bad field; also refuses shapes whose element or
  // byte counts overflow, so callers may allocate q/k/v/out_elements() floats afterwards.
  void validate() const;

  float effective_scale() const;
  std::int64_t group_size() const;  // heads_q / heads_kv
  std::int64_t q_elements() const;
  std::int64_t k_elements() const;
  std::int64_t v_elements() const;
  std::int64_t out_elements() const;
  // Keys visible to query row i: [0, visible_keys(i)).
  std::int64_t visible_keys(std::int64_t i) const;
  // (query, key) pairs that are computed: seq_q * seq_kv, or the unmasked part if causal.
  std::int64_t visible_pairs() const;
  // FLOPs of one forward pass: 2 * (d_k + d_v) per visible pair per head and batch
  // (= 4 * d per pair when d_k == d_v, DESIGN.md's convention).
  double flops() const;
  // Bytes that must move at least once: Q, K, V read and O written, at their storage sizes.
  double min_bytes() const;
  // "b1_hq8_hkv8_sq128_skv128_dk64_dv64_causal0", used in test names and messages; 16-bit
  // storage appends "_bf16" (all tensors) or "_kvbf16" (K/V only), "_bf16_kvfp16" (both differ).
  std::string to_string() const;
};

}  // namespace attune
