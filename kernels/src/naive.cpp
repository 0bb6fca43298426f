// naive: the readable definition. Per query row, the full score row, a max-subtracted softmax
// and the weighted sum of V, in float with scalar loops. Scratch: one row of seq_kv floats.
// 16-bit tensors are widened to float32 copies first (and the output rounded once at the end).
// Reads no config fields.
#include "kernel_impl.hpp"

#include <cmath>
#include <limits>
#include <vector>

namespace attune::detail {
namespace {

class Naive final : public Kernel {
 public:
  std::string_view name() const noexcept override { return "naive"; }
  std::string_view description() const noexcept override {
    return "straight loops over the full score row, scalar";
  }
  std::vector<Isa> isas() const override { return {Isa::scalar}; }
  int rank() const noexcept override { return 0; }

  std::size_t workspace_bytes(const Problem& p, const Config&, Isa) const override {
    return saturating_add(float_bytes({p.seq_kv}), Float32Copies::bytes(p));  // the score row
  }

  void run(const Problem& p, const Tensors& t, const Config&, Isa) const override {
    const float scale = p.effective_scale();
    std::vector<float> scores(static_cast<std::size_t>(p.seq_kv));
    Float32Copies f32(p, t);  // 16-bit tensors are widened first: the definition is float32
    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (std::int64_t h = 0; h < p.heads_q; ++h) {
        const HeadView hv = head_view(p, f32.tensors(), b, h);
        for (std::int64_t i = 0; i < p.seq_q; ++i) {
          const float* q = hv.q + i * p.d_k;
          float* o = hv.out + i * p.d_v;
          const std::int64_t visible = p.visible_keys(i);
          float max_score = -std::numeric_limits<float>::infinity();
          for (std::int64_t j = 0; j < visible; ++j) {
            float dot = 0.0f;
            for (std::int64_t d = 0; d < p.d_k; ++d) dot += q[d] * hv.k[j * p.d_k + d];
            scores[j] = scale * dot;
            max_score = std::max(max_score, scores[j]);
          }
          float sum = 0.0f;
          for (std::int64_t j = 0; j < visible; ++j) {
            scores[j] = std::exp(scores[j] - max_score);
            sum += scores[j];
          }
          for (std::int64_t d = 0; d < p.d_v; ++d) o[d] = 0.0f;
          if (visible == 0) continue;  // a fully masked row outputs zeros
          for (std::int64_t j = 0; j < visible; ++j) {
            const float w = scores[j] / sum;
            for (std::int64_t d = 0; d < p.d_v; ++d) o[d] += w * hv.v[j * p.d_v + d];
          }
        }
      }
    }
    f32.finish();
  }
};

}  // namespace

const Kernel& kernel_naive() {
  static const Naive kernel;
  return kernel;
}

}  // namespace attune::detail
