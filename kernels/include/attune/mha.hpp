// Multi-head (self-)attention: the input and output projections around attune::attention.
// Available when the library was built with BLAS (CMake option ATTUNE_WITH_BLAS, on by default
// natively); the target then defines ATTUNE_WITH_BLAS=1 for its users.
#pragma once

#include <attune/attention.hpp>
#include <attune/problem.hpp>

#include <cstdint>
#include <optional>

#ifdef ATTUNE_WITH_BLAS

namespace attune {

// Row-major float32 tensors; projections multiply on the right, y = x W (torch's x @ W, i.e.
// the transpose of an nn.Linear weight):
//   x  [batch, seq, d_model]
//   wq [d_model, heads_q * d_k]     wk [d_model, heads_kv * d_k]     wv [d_model, heads_kv * d_v]
//   wo [heads_q * d_v, d_model]     y  [batch, seq, d_model]
// Q = x wq, K = x wk, V = x wv; column h * d_k + c of Q (and K) is dimension c of head h, column
// h * d_v + c of V likewise. O_h = attention(Q_h, K_g, V_g) with g = h / (heads_q / heads_kv),
// causal and scale as in Problem (seq_q = seq_kv = seq). y = concat_h(O_h) wo, where column
// h * d_v + c of the concatenation is dimension c of O_h.
struct MhaProblem {
  std::int64_t batch = 1;
  std::int64_t seq = 1;
  std::int64_t d_model = 1;
  std::int64_t heads_q = 1;
  std::int64_t heads_kv = 1;
  std::int64_t d_k = 1;
  std::int64_t d_v = 1;
  bool causal = false;
  std::optional<float> scale;  // default 1 / sqrt(d_k)

  // Throws InvalidArgument naming the first bad field (non-positive sizes, heads_q not a
  // multiple of heads_kv, a non-finite scale, element counts that overflow, dimensions beyond
  // BLAS's 32-bit int), so callers may allocate the *_elements() floats afterwards.
  void validate() const;
  // The attention step: [batch, heads, seq, dim] tensors of the projected heads.
  Problem attention_problem() const;
  std::int64_t x_elements() const;  // = y_elements()
  std::int64_t wq_elements() const;
  std::int64_t wk_elements() const;
  std::int64_t wv_elements() const;
  std::int64_t wo_elements() const;
  std::int64_t y_elements() const;
};

// y = multi-head attention of x; the attention step runs with `options` (any kernel, ISA and
// config; config.threads also sets the BLAS threads of the projections). Validates the problem,
// options and pointers first (InvalidArgument). Scratch: the projected Q, K, V, the attention
// output (in [batch, heads, seq, dim] layout), one projection-sized staging buffer and the
// attention kernel's working memory; their sum is held to the options' working-memory limit
// before anything is allocated (MemoryError, as is an allocation that fails).
void mha(const MhaProblem& problem, const float* x, const float* wq, const float* wk, const float* wv,
         const float* wo, float* y, const Options& options = {});

}  // namespace attune

#endif  // ATTUNE_WITH_BLAS
