// simd: the tiled online-softmax algorithm (simd/tile_impl.hpp) with explicit xsimd
// micro-kernels, one build per ISA chosen at run time, on the calling thread only: one task per
// (batch, head, query tile), no key splits. Scratch: one tile's Q^T, S^T, O^T (see tile.hpp).
// Config: block_q (query rows per tile), block_kv (keys per tile).
#include "kernel_impl.hpp"
#include "simd/driver.hpp"

namespace attune::detail {
namespace {

constexpr std::int64_t kDefaultBlockQ = 64;
constexpr std::int64_t kDefaultBlockKv = 128;

class Simd final : public Kernel {
 public:
  std::string_view name() const noexcept override { return "simd"; }
  std::string_view description() const noexcept override {
    return "xsimd micro-kernels (queries in lanes, online softmax), one thread";
  }
  std::vector<Isa> isas() const override { return vector_isas(); }
  int rank() const noexcept override { return 20; }
  bool supports(const Problem& p, Isa) const override { return simd::supports(p); }
  std::vector<ParamSpec> params() const override {
    return {{"block_q", {16, 32, 64, 128, 256}}, {"block_kv", {32, 64, 128, 256, 512}}, {"micro", {1, 2}}};
  }

  std::size_t workspace_bytes(const Problem& p, const Config& config, Isa isa) const override {
    return simd::workspace_bytes(p, plan_for(p, config), simd::isa_ops(isa));
  }

  Dtype pv_dtype(const Problem& p, Isa isa) const override { return simd::pv_dtype(p, simd::isa_ops(isa)); }
  void order_isas(const Problem& p, std::vector<Isa>& isas) const override { simd::order_isas(p, isas); }

  void run(const Problem& p, const Tensors& t, const Config& config, Isa isa) const override {
    simd::run_tiled(p, t, plan_for(p, config), simd::isa_ops(isa));
  }

 private:
  static simd::Plan plan_for(const Problem& p, const Config& config) {
    simd::Plan plan;  // one thread, no key splits
    plan.positions = tile_size(config.block_q, kDefaultBlockQ, p.seq_q);
    plan.block_kv = tile_size(config.block_kv, kDefaultBlockKv, p.seq_kv);
    plan.micro = config.micro;
    return plan;
  }
};

}  // namespace

const Kernel& kernel_simd() {
  static const Simd kernel;
  return kernel;
}

}  // namespace attune::detail
