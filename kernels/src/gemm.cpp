// gemm: the "math path" a user composing libraries would write. Per (batch, query head):
//   S = (scale * log2 e) Q K^T        one cblas_sgemm, the scale folded into alpha
//   P = 2^(S - rowmax S)              causal: keys j >= visible_keys(i) are masked, P = 0
//   O = diag(1 / rowsum P) P V        a second cblas_sgemm, then each row scaled
// The softmax runs in base 2 with the library's per-ISA exp2 (simd/tile.hpp), so this kernel has
// one build per compiled ISA like `flash`; the max and sum loops are written for the compiler to
// vectorise. A row that sees no key has P = 0 and 1 / rowsum taken as 0: it outputs zeros. Both
// GEMMs run over every key, masked or not (no causal skipping: this is the baseline to beat).
// 16-bit tensors: widened to float32 copies and run through cblas_sgemm (Debian 12's OpenBLAS
// 0.3.21 declares cblas_sbgemm but is built without it: the symbol is not in the library).
// Scratch: the seq_q x seq_kv score matrix of one head plus seq_q row factors, reused across
// heads; a problem whose score matrix exceeds kMaxScoreBytes (1 GiB) is refused with
// InvalidArgument before anything is allocated.
// Config: threads (OpenBLAS's worker count, process-wide in OpenBLAS; 0 = every core).
#include "blas.hpp"
#include "detail/online_softmax.hpp"
#include "kernel_impl.hpp"
#include "simd/tile.hpp"

#include <attune/error.hpp>

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace attune::detail {
namespace {

constexpr std::int64_t kMaxScoreBytes = std::int64_t{1} << 30;  // one head's score matrix
constexpr int kLanes = 16;  // independent partial results: the compiler keeps them in vectors

// max_j s[j] over n >= 1 scores.
float row_max(const float* s, std::int64_t n) {
  float part[kLanes];
  for (float& x : part) x = -std::numeric_limits<float>::infinity();
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    // Kept a loop: fully unrolled first, GCC 12 leaves the selects scalar; as a loop they
    // vectorise into max instructions (maxps on x86), twice as fast.
#if defined(__clang__)
#pragma clang loop unroll(disable)
#else
#pragma GCC unroll 0
#endif
    for (int l = 0; l < kLanes; ++l) part[l] = part[l] < s[j + l] ? s[j + l] : part[l];
  }
  float m = part[0];
  for (int l = 1; l < kLanes; ++l) m = m < part[l] ? part[l] : m;
  for (; j < n; ++j) m = m < s[j] ? s[j] : m;
  return m;
}

// sum_j p[j], in a fixed order (deterministic for a given n).
float row_sum(const float* p, std::int64_t n) {
  float part[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += p[j + l];
  float sum = 0.0f;
  for (float x : part) sum += x;
  for (; j < n; ++j) sum += p[j];
  return sum;
}

// One score row in place: s[0, visible) <- 2^(s - max), s[visible, n) <- 0 (the masked keys).
// Returns 1 / sum of the row, or 0 when no key is visible (the output row is then zero).
float softmax_row(float* s, std::int64_t visible, std::int64_t n, const simd::IsaOps& ops) {
  std::fill(s + visible, s + n, 0.0f);
  if (visible == 0) return 0.0f;
  const float m = row_max(s, visible);
  for (std::int64_t j = 0; j < visible; ++j) s[j] -= m;
  ops.exp2(s, s, visible);
  return 1.0f / row_sum(s, visible);  // >= 1: the max's own term is 2^0
}

class Gemm final : public Kernel {
 public:
  std::string_view name() const noexcept override { return "gemm"; }
  std::string_view description() const noexcept override {
    return "BLAS math path: score GEMM, vectorised softmax, value GEMM (OpenBLAS threads)";
  }
  // OpenBLAS's thread count is process-wide and its partition of a GEMM changes the rounding
  // (Debian's 0.3.21 on AMD Zen 3: the same call differs alone and beside concurrent callers).
  bool bit_reproducible() const noexcept override { return false; }
  std::vector<Isa> isas() const override { return vector_isas(); }
  int rank() const noexcept override { return 5; }  // a baseline: `auto` never prefers it
  std::vector<ParamSpec> params() const override { return {{"threads", {1, 2, 4, 8, 16, 32, 64}}}; }

  // The BLAS library's own internal buffers are not counted.
  std::size_t workspace_bytes(const Problem& p, const Config&, Isa) const override {
    // The score matrix and 1 / rowsum, and float32 copies of 16-bit tensors.
    return saturating_add(float_bytes({p.seq_q, p.seq_kv + 1}), Float32Copies::bytes(p));
  }

  void run(const Problem& p, const Tensors& t, const Config& config, Isa isa) const override {
    // Refusals first, before any allocation.
    const std::int64_t score_floats = p.seq_q * p.seq_kv;  // fits: validate() checked the product
    if (score_floats > kMaxScoreBytes / static_cast<std::int64_t>(sizeof(float))) {
      throw InvalidArgument("invalid problem for kernel 'gemm': the seq_q x seq_kv score matrix (" +
                            std::to_string(p.seq_q) + " x " + std::to_string(p.seq_kv) +
                            " floats) exceeds its 1 GiB scratch limit; use 'flash'");
    }
    require_blas_int(p.seq_kv, "seq_kv");  // seq_q * seq_kv <= 2^28 bounds seq_q as well
    require_blas_int(p.d_k, "d_k");
    require_blas_int(p.d_v, "d_v");
    const simd::IsaOps& ops = simd::isa_ops(isa);

    // Not zero-filled: every call's first GEMM overwrites the whole matrix (beta = 0).
    const auto scores = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(score_floats));
    std::vector<float> inv_sum(static_cast<std::size_t>(p.seq_q));
    const float qk_scale = p.effective_scale() * online::kLog2e;  // the softmax runs in base 2
    set_blas_threads(config.threads);
    Float32Copies f32(p, t);

    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (std::int64_t h = 0; h < p.heads_q; ++h) {
        const HeadView hv = head_view(p, f32.tensors(), b, h);
        // S = qk_scale Q K^T: [seq_q x d_k] x [seq_kv x d_k]^T.
        sgemm(true, p.seq_q, p.seq_kv, p.d_k, qk_scale, hv.q, p.d_k, hv.k, p.d_k, 0.0f, scores.get(),
              p.seq_kv);
        for (std::int64_t i = 0; i < p.seq_q; ++i) {
          inv_sum[static_cast<std::size_t>(i)] =
              softmax_row(scores.get() + i * p.seq_kv, p.visible_keys(i), p.seq_kv, ops);
        }
        // O = P V: [seq_q x seq_kv] x [seq_kv x d_v], then O <- diag(1 / rowsum) O.
        sgemm(false, p.seq_q, p.d_v, p.seq_kv, 1.0f, scores.get(), p.seq_kv, hv.v, p.d_v, 0.0f, hv.out,
              p.d_v);
        for (std::int64_t i = 0; i < p.seq_q; ++i) {
          float* o = hv.out + i * p.d_v;
          const float inv = inv_sum[static_cast<std::size_t>(i)];
          for (std::int64_t d = 0; d < p.d_v; ++d) o[d] *= inv;
        }
      }
    }
    f32.finish();
  }
};

}  // namespace

const Kernel& kernel_gemm() {
  static const Gemm kernel;
  return kernel;
}

}  // namespace attune::detail
