// flash: the tiled online-softmax algorithm (simd/tile_impl.hpp, xsimd micro-kernels per ISA)
// run by oneTBB over batch x KV head x query tile, never materialising the score matrix.
// The query heads of a grouped-query group share a task when all their rows fit in one tile
// (decoding), so each K/V row is read once per group; when there are too few tasks for the
// threads, the key range is split and the partial (max, sum, O) results merged exactly.
// Scratch: one tile per thread (see tile.hpp) plus splits x output for partial results.
// Config: block_q (query rows per tile), block_kv (keys per tile), threads, kv_splits.
#include "kernel_impl.hpp"
#include "simd/driver.hpp"

namespace attune::detail {
namespace {

// Defaults until a tuned table says otherwise (attune tune searches these per shape and
// machine: docs/tuning.md).
constexpr std::int64_t kDefaultBlockQ = 64;
constexpr std::int64_t kDefaultBlockKv = 128;
constexpr std::int64_t kTasksPerThread = 4;      // fewer tasks than this per thread: split keys
constexpr std::int64_t kMinKeysPerSplit = 512;   // below this a split costs more than it gains

}  // namespace

simd::Plan flash_plan(const Problem& p, const Config& config) {
  simd::Plan plan;
  const std::int64_t block_q = config.block_q > 0 ? config.block_q : kDefaultBlockQ;
  plan.block_kv = tile_size(config.block_kv, kDefaultBlockKv, p.seq_kv);
  plan.micro = config.micro;
  plan.threads = config.threads > 0 ? config.threads : simd::default_threads();
  const std::int64_t group = p.group_size();
  if (group > 1) {
    // The query heads of a group share each task's rows (block_q rows: group x positions), so
    // every K/V element loaded serves all of them.
    plan.heads_per_task = group;
    plan.positions = std::clamp<std::int64_t>(block_q / group, 1, p.seq_q);
  } else {
    plan.positions = tile_size(block_q, kDefaultBlockQ, p.seq_q);
  }
  if (config.kv_splits > 0) {
    plan.splits = config.kv_splits;
  } else {
    const std::int64_t q_tiles = (p.seq_q + plan.positions - 1) / plan.positions;
    const std::int64_t row_sets = p.batch * p.heads_q / plan.heads_per_task * q_tiles;
    const std::int64_t wanted = kTasksPerThread * plan.threads;
    if (row_sets < wanted) {
      const std::int64_t by_tasks = (wanted + row_sets - 1) / row_sets;
      plan.splits = std::max<std::int64_t>(1, std::min(by_tasks, p.seq_kv / kMinKeysPerSplit));
    }
  }
  return plan;
}

namespace {

class Flash final : public Kernel {
 public:
  std::string_view name() const noexcept override { return "flash"; }
  std::string_view description() const noexcept override {
    return "flash-style tiles, xsimd micro-kernels, oneTBB threads, split-KV for decoding";
  }
  std::vector<Isa> isas() const override { return vector_isas(); }
  int rank() const noexcept override { return 30; }
  bool supports(const Problem& p, Isa) const override { return simd::supports(p); }
  std::vector<ParamSpec> params() const override {
    return {{"block_q", {16, 32, 64, 128, 256}},
            {"block_kv", {32, 64, 128, 256, 512}},
            {"threads", {1, 2, 4, 8, 16, 32, 64}},
            {"kv_splits", {0, 1, 2, 4, 8, 16}},
            {"micro", {1, 2}}};
  }

  std::size_t workspace_bytes(const Problem& p, const Config& config, Isa isa) const override {
    return simd::workspace_bytes(p, flash_plan(p, config), simd::isa_ops(isa));
  }

  Dtype pv_dtype(const Problem& p, Isa isa) const override { return simd::pv_dtype(p, simd::isa_ops(isa)); }
  void order_isas(const Problem& p, std::vector<Isa>& isas) const override { simd::order_isas(p, isas); }

  void run(const Problem& p, const Tensors& t, const Config& config, Isa isa) const override {
    simd::run_tiled(p, t, flash_plan(p, config), simd::isa_ops(isa));
  }
};

}  // namespace

const Kernel& kernel_flash() {
  static const Flash kernel;
  return kernel;
}

}  // namespace attune::detail
