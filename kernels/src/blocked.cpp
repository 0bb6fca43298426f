// blocked: cache-tiled scalar attention. Queries in tiles of block_q rows meet keys in tiles of
// block_kv rows; an online softmax (running max m, running sum l, unnormalised accumulator)
// carries each row across key tiles, so only a block_q x block_kv score tile exists at a time.
// Scratch: block_q * (block_kv + d_v + 2) floats, plus float32 copies of 16-bit tensors.
// Config: block_q, block_kv.
#include "detail/online_softmax.hpp"
#include "kernel_impl.hpp"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace attune::detail {
namespace {

constexpr std::int64_t kDefaultBlockQ = 32;
constexpr std::int64_t kDefaultBlockKv = 128;

class Blocked final : public Kernel {
 public:
  std::string_view name() const noexcept override { return "blocked"; }
  std::string_view description() const noexcept override {
    return "query x key tiles with an online softmax, scalar (compiler-vectorised)";
  }
  std::vector<Isa> isas() const override { return {Isa::scalar}; }
  int rank() const noexcept override { return 10; }
  std::vector<ParamSpec> params() const override {
    return {{"block_q", {8, 16, 32, 64, 128}}, {"block_kv", {32, 64, 128, 256, 512}}};
  }

  std::size_t workspace_bytes(const Problem& p, const Config& config, Isa) const override {
    const auto [bq, bk] = tiles(p, config);
    // scores, acc, row_max and row_sum in run(), and float32 copies of 16-bit tensors
    return saturating_add(saturating_add(float_bytes({bq, bk}), float_bytes({bq, p.d_v + 2})), Float32Copies::bytes(p));
  }

  void run(const Problem& p, const Tensors& t, const Config& config, Isa) const override {
    const auto [bq, bk] = tiles(p, config);
    const float scale = p.effective_scale();
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();

    std::vector<float> scores(static_cast<std::size_t>(bq * bk));
    std::vector<float> acc(static_cast<std::size_t>(bq * p.d_v));
    std::vector<float> row_max(static_cast<std::size_t>(bq)), row_sum(static_cast<std::size_t>(bq));
    Float32Copies f32(p, t);

    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (std::int64_t h = 0; h < p.heads_q; ++h) {
        const HeadView hv = head_view(p, f32.tensors(), b, h);
        for (std::int64_t i0 = 0; i0 < p.seq_q; i0 += bq) {
          const std::int64_t rows = std::min(bq, p.seq_q - i0);
          std::fill(acc.begin(), acc.end(), 0.0f);
          std::fill(row_max.begin(), row_max.end(), kNegInf);
          std::fill(row_sum.begin(), row_sum.end(), 0.0f);
          // Key tiles past the last key the tile's last row sees are skipped, not masked.
          const std::int64_t kv_end = p.visible_keys(i0 + rows - 1);
          for (std::int64_t j0 = 0; j0 < kv_end; j0 += bk) {
            const std::int64_t cols = std::min(bk, kv_end - j0);
            for (std::int64_t r = 0; r < rows; ++r) {
              const float* q = hv.q + (i0 + r) * p.d_k;
              const std::int64_t visible = p.visible_keys(i0 + r) - j0;  // may be <= 0
              if (visible <= 0) continue;  // nothing visible in this tile for this row
              float* s = &scores[r * bk];
              float tile_max = kNegInf;
              for (std::int64_t c = 0; c < cols; ++c) {
                if (c >= visible) {
                  s[c] = kNegInf;
                  continue;
                }
                const float* k = hv.k + (j0 + c) * p.d_k;
                float dot = 0.0f;
                for (std::int64_t d = 0; d < p.d_k; ++d) dot += q[d] * k[d];
                s[c] = scale * dot;
                tile_max = std::max(tile_max, s[c]);
              }
              // A NaN score leaves tile_max at -inf; alpha = e^(-inf + inf) = NaN then poisons the
              // row, as a NaN input should.
              // Online softmax: m' = max(m, tile max); acc <- acc * e^(m - m'); l <- l * e^(m - m').
              const float new_max = std::max(row_max[r], tile_max);
              const float alpha = std::exp(row_max[r] - new_max);  // e^-inf = 0 on the first tile
              float* a = &acc[r * p.d_v];
              for (std::int64_t d = 0; d < p.d_v; ++d) a[d] *= alpha;
              float sum = 0.0f;
              for (std::int64_t c = 0; c < cols; ++c) {
                const float w = std::exp(s[c] - new_max);
                sum += w;
                const float* v = hv.v + (j0 + c) * p.d_v;
                for (std::int64_t d = 0; d < p.d_v; ++d) a[d] += w * v[d];
              }
              row_sum[r] = online::running_sum(row_sum[r], alpha, sum);
              row_max[r] = new_max;
            }
          }
          for (std::int64_t r = 0; r < rows; ++r) {
            float* o = hv.out + (i0 + r) * p.d_v;
            const float inv = online::normaliser(row_sum[r]);  // masked row: zeros
            for (std::int64_t d = 0; d < p.d_v; ++d) o[d] = acc[r * p.d_v + d] * inv;
          }
        }
      }
    }
    f32.finish();
  }

 private:
  // (block_q, block_kv): the configured tile, or the default, clamped to the problem.
  static std::pair<std::int64_t, std::int64_t> tiles(const Problem& p, const Config& config) {
    return {tile_size(config.block_q, kDefaultBlockQ, p.seq_q), tile_size(config.block_kv, kDefaultBlockKv, p.seq_kv)};
  }
};

}  // namespace

const Kernel& kernel_blocked() {
  static const Blocked kernel;
  return kernel;
}

}  // namespace attune::detail
