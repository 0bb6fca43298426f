// The online softmax's numeric policy, written once for every kernel that visits the keys in
// tiles (the simd/flash tiles and decoding forms, amx, the split-KV merge of the driver).
//
// Base 2 throughout: natural logits are scaled by log2 e once (folded into Q's scale), so each
// weight is 2^(s - m). Per row and key tile, with m the running max and l the running sum:
//   m' = max(m, max_j s_j)         u = m', or 0 while m' = -inf (the row has seen no key)
//   alpha = 2^(m - u)              p_j = 2^(s_j - u)            l' = l alpha + sum_j p_j
//   O' = O alpha + sum_j p_j V_j   and at the end   O / l, or zeros where l = 0
// - A row that has seen no key subtracts 0, not -inf: 2^(-inf - 0) = 0 where -inf - (-inf)
//   would be NaN. Such a row keeps l = 0 and its output is zeros.
// - NaN is never filtered: a NaN score reaches its row's max or weight, then l and O, and
//   poisons exactly that row (tests/test_robustness.cpp).
// - Weight cut-off: the variant tiles drop weights below 2^kWeightCutoff. Without it, a sink or
//   a large mask value holding the max far above a tile's scores makes every weight of the
//   tile a tiny normal whose product with V is subnormal, which Intel cores run through
//   microcode (2x slower with ALiBi and a sink). A dropped weight is below 2^-100 of the
//   largest of its row: far under float32's resolution of the sum.
// - Key splits merge through the log-sum-exp of their (m, l): merge_splits.
// Internal linkage: this header is compiled into per-ISA translation units, and the linker
// must never pick a copy built with one ISA's flags for another (see STYLE.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace attune::detail::online {
namespace {

// log2(e): natural logits times this are base-2 logits.
constexpr float kLog2e = 1.44269504088896341f;
// Weights below 2^kWeightCutoff of their row's max are 0 in the variant tiles (see above).
constexpr float kWeightCutoff = -100.0f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The step of one vector of rows, V one of simd/vec.hpp's Vec<Arch> (Vec<scalar_arch> for a
// single row): the new max, the max the weights subtract and the factor that rescales the
// running sum and O. Templated on V, so it is compiled once per ISA like its callers.
template <class V>
struct Step {
  using B = typename V::B;
  B m_new, m_use, alpha;
};

template <class V>
[[gnu::always_inline]] inline Step<V> rescale(const typename V::B& m_old, const typename V::B& tile_max) {
  Step<V> s;
  s.m_new = V::max(m_old, tile_max);
  // lowest <= m' fails for -inf (and NaN): subtract 0 then.
  s.m_use = V::keep_le(V::set1(std::numeric_limits<float>::lowest()), s.m_new, s.m_new, V::set1(0.0f));
  s.alpha = V::exp2(m_old - s.m_use);
  return s;
}

// p = 2^(s - u), given s - u <= 0; Cut: below 2^kWeightCutoff it is 0 (exp2's own cut, no
// extra compare).
template <bool Cut, class V>
[[gnu::always_inline]] inline typename V::B weight(const typename V::B& s_minus_u) {
  if constexpr (Cut) return V::exp2(s_minus_u, kWeightCutoff);
  return V::exp2(s_minus_u);
}

// l' = l alpha + (the tile's sum of weights).
template <class B>
[[gnu::always_inline]] inline B running_sum(const B& l, const B& alpha, const B& tile_sum) {
  return l * alpha + tile_sum;
}

// Scalar forms of the step, for kernels whose row state is scalar (amx): the factor from the
// old max to the new (0 on a row's first visible tile, m = -inf), and whether a row has seen
// a key yet.
inline float rescale_factor(float m_old, float m_new) { return std::exp2(m_old - m_new); }
inline bool sees_no_key(float m) { return m == kNegInf; }

// The final factor of a row: 1 / l, or 0 for a row that saw no key (its output is zeros).
inline float normaliser(float l) { return l > 0.0f ? 1.0f / l : 0.0f; }

// The exact merge of one row's key splits, in split order (deterministic): m = max_s m_s,
// w_s = 2^(m_s - m), out = sum_s w_s O_s / sum_s w_s l_s; zeros when no split saw a key.
// Split s's max and sum are at m[s * ml_stride], l[s * ml_stride], its unnormalised row at
// o + s * o_stride (d_v floats).
// The same over parts wherever they live: part(s) returns split s's {m, l, unnormalised row}
// (cascade attention merges a shared prefix's part with a sequence's own splits).
struct Part {
  float m, l;
  const float* o;
};
template <class PartOf>
inline void merge_parts(std::int64_t parts, const PartOf& part, std::int64_t d_v, float* out) {
  float m_all = kNegInf;
  for (std::int64_t s = 0; s < parts; ++s) m_all = std::max(m_all, part(s).m);
  std::fill(out, out + d_v, 0.0f);
  if (sees_no_key(m_all)) return;
  float l_all = 0.0f;
  for (std::int64_t s = 0; s < parts; ++s) {
    const Part x = part(s);
    const float w = std::exp2(x.m - m_all);
    if (w == 0.0f) continue;
    l_all += w * x.l;
    for (std::int64_t d = 0; d < d_v; ++d) out[d] += w * x.o[d];
  }
  const float inv = normaliser(l_all);
  for (std::int64_t d = 0; d < d_v; ++d) out[d] *= inv;
}

inline void merge_splits(std::int64_t splits, const float* m, const float* l, std::int64_t ml_stride, const float* o,
                         std::int64_t o_stride, std::int64_t d_v, float* out) {
  merge_parts(splits, [&](std::int64_t s) { return Part{m[s * ml_stride], l[s * ml_stride], o + s * o_stride}; }, d_v, out);
}

}  // namespace
}  // namespace attune::detail::online
