// naive: the readable definition. Per query row, the score row over the row's band, the
// variants in their documented order (soft-cap, ALiBi, mask, top-k), a max-subtracted softmax
// (with the sink in the denominator) and the weighted sum of V, in float with scalar loops.
// Scratch: one row of seq_kv floats and one of seq_kv key indices (top-k).
// 16-bit tensors are widened to float32 copies first (and the output rounded once at the end).
// Strided tensors are gathered into contiguous copies first (and O scattered back).
// Reads no config fields. Takes every variant.
#include "kernel_impl.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace attune::detail {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Keeps the k largest of scores[0, n) (ties: the lower index), sets the rest to -inf. Hidden
// (-inf) scores stay hidden; a row holding a NaN is left alone (its output is NaN anyway).
void keep_top_k(float* scores, std::int64_t n, std::int64_t k, std::vector<std::int64_t>& order) {
  order.resize(static_cast<std::size_t>(n));
  std::int64_t live = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    if (std::isnan(scores[j])) return;
    if (scores[j] != kNegInf) order[static_cast<std::size_t>(live++)] = j;
  }
  if (live <= k) return;
  auto first = order.begin(), nth = first + k, last = first + live;
  std::nth_element(first, nth, last, [&](std::int64_t a, std::int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  for (auto it = nth; it != last; ++it) scores[*it] = kNegInf;
}

class Naive final : public Kernel {
 public:
  std::string_view name() const noexcept override { return "naive"; }
  std::string_view description() const noexcept override {
    return "straight loops over the full score row, scalar";
  }
  std::vector<Isa> isas() const override { return {Isa::scalar}; }
  int rank() const noexcept override { return 0; }
  // Every variant but paged K/V; quantized K/V dequantized into float32 copies (not int4 with
  // strides: the contiguous copies move whole elements).
  bool supports(const Problem& p, Isa) const override { return !(p.kv_type() == Dtype::int4 && p.strided) && !p.paged(); }

  std::size_t workspace_bytes(const Problem& p, const Config&, Isa) const override {
    // the score row, and the key indices of top-k
    const std::size_t top_k =
        p.top_k > 0 ? saturating_mul(static_cast<std::size_t>(p.seq_kv), sizeof(std::int64_t)) : 0;
    return saturating_add(saturating_add(saturating_add(float_bytes({p.seq_kv}), top_k), Float32Copies::bytes(p)),
                          ContiguousCopies::bytes(p));
  }

  void run(const Problem& p, const Tensors& t, const Config&, Isa) const override {
    const float scale = p.effective_scale();
    const VariantData& var = t.variant;
    std::vector<float> scores(static_cast<std::size_t>(p.seq_kv));
    std::vector<std::int64_t> order;
    ContiguousCopies dense(p, t);  // strided tensors are gathered first: the definition is on [b, h, s, d]
    Float32Copies f32(p, dense.tensors());  // 16-bit tensors are widened: the definition is float32
    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (std::int64_t h = 0; h < p.heads_q; ++h) {
        const HeadView hv = head_view(p, f32.tensors(), b, h);
        const float slope = p.alibi ? var.alibi_slopes[h] : 0.0f;
        const float sink = p.sinks ? var.sinks[h] : kNegInf;
        const std::int64_t plane = p.mask_plane(b, h) * p.seq_q * p.seq_kv;
        // Varlen: each sequence is its own frame f, at token offsets tq (queries), tk (keys).
        for (std::int64_t seq = 0; seq < std::max<std::int64_t>(p.sequences, 1); ++seq) {
          const Problem f = p.sequence(seq, var);
          const std::int64_t tq = p.sequences > 0 ? var.cu_seqlens_q[seq] : 0;
          const std::int64_t tk = p.sequences > 0 ? var.cu_seqlens_kv[seq] : 0;
          for (std::int64_t i = 0; i < f.seq_q; ++i) {
            const float* q = hv.q + (tq + i) * p.d_k;
            float* o = hv.out + (tq + i) * p.d_v;
            const std::int64_t begin = f.key_begin(i), end = std::max(begin, f.key_end(i));
            const std::int64_t pos = i + f.align_offset();
            for (std::int64_t j = begin; j < end; ++j) {
              float dot = 0.0f;
              for (std::int64_t d = 0; d < p.d_k; ++d) dot += q[d] * hv.k[(tk + j) * p.d_k + d];
              float s = scale * dot;
              if (p.softcap > 0.0f) s = p.softcap * std::tanh(s / p.softcap);
              if (p.alibi) s -= slope * static_cast<float>(std::abs(pos - j));
              const std::int64_t m = plane + (tq + i) * p.seq_kv + tk + j;  // varlen: the frame's diagonal block
              if (p.mask == MaskKind::boolean && static_cast<const std::uint8_t*>(var.mask)[m] == 0)
                s = kNegInf;
              if (p.mask == MaskKind::additive) s += static_cast<const float*>(var.mask)[m];
              scores[j - begin] = s;
            }
            if (p.top_k > 0) keep_top_k(scores.data(), end - begin, p.top_k, order);
            float max_score = kNegInf;
            bool seen = false;  // a visible key (a NaN score counts: it must poison the row)
            for (std::int64_t j = 0; j < end - begin; ++j) {
              max_score = std::max(max_score, scores[j]);
              seen = seen || scores[j] != kNegInf;
            }
            for (std::int64_t d = 0; d < p.d_v; ++d) o[d] = 0.0f;
            if (!seen) continue;  // no visible key: zeros
            const float m = std::max(max_score, sink);
            float sum = std::exp(sink - m);  // 0 without a sink
            for (std::int64_t j = 0; j < end - begin; ++j) {
              scores[j] = std::exp(scores[j] - m);
              sum += scores[j];
            }
            for (std::int64_t j = 0; j < end - begin; ++j) {
              const float w = scores[j] / sum;
              for (std::int64_t d = 0; d < p.d_v; ++d) o[d] += w * hv.v[(tk + begin + j) * p.d_v + d];
            }
          }
        }
      }
    }
    f32.finish();
    dense.finish();
  }
};

}  // namespace

const Kernel& kernel_naive() {
  static const Naive kernel;
  return kernel;
}

}  // namespace attune::detail
