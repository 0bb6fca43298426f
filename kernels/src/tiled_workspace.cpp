// Working memory of the tiled driver for one plan (see tiled_workspace.hpp).
#include "tiled_workspace.hpp"

#include "kernel_impl.hpp"

#include <algorithm>
#include <thread>

namespace attune::detail {

std::size_t tiled_workspace_bytes(const Problem& p, const simd::Plan& plan, Isa isa) {
  const simd::IsaOps& ops = simd::isa_ops(isa);
  const std::int64_t hpt = plan.heads_per_task;
  const std::int64_t positions = std::clamp<std::int64_t>(plan.positions, 1, p.seq_q);
  const std::int64_t q_tiles = (p.seq_q + positions - 1) / positions;
  // Bounded by the validated Q element count; only the splits (any int) can push tasks past it.
  const std::int64_t row_sets = p.batch * p.heads_kv * (p.group_size() / hpt) * q_tiles;
  const std::int64_t splits = std::max<std::int64_t>(plan.splits, 1);
  const std::size_t tasks = saturating_mul(static_cast<std::size_t>(row_sets), static_cast<std::size_t>(splits));
  const std::int64_t rows = hpt * positions;
  const std::int64_t block_kv = std::clamp<std::int64_t>(plan.block_kv, 1, p.seq_kv);
  const std::size_t threads = std::clamp<std::size_t>(std::min<std::size_t>(static_cast<std::size_t>(std::max(plan.threads, 1)), tasks), 1,
                                                      std::max(1u, std::thread::hardware_concurrency()));

  const simd::TileFn& fn = plan.micro > 0 ? ops.tiles[std::min(plan.micro, 2) + 1] : ops.tile_for(rows);
  const std::int64_t scratch_floats = simd::tile_scratch_floats(fn, rows, p.d_k, p.d_v, block_kv);
  const std::size_t scratch_bytes = (float_bytes({std::max<std::int64_t>(scratch_floats, 1)}) + 63) / 64 * 64;
  std::size_t bytes = saturating_mul(threads, scratch_bytes);
  if (splits > 1) {
    // [task][row][d_v] partial rows, and a max and a sum per task row.
    const std::size_t task_rows = saturating_mul(tasks, static_cast<std::size_t>(rows));
    bytes = saturating_add(bytes, saturating_mul(float_bytes({p.d_v + 2}), task_rows));
  }
  return bytes;
}

}  // namespace attune::detail
