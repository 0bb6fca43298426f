// The stage-timing switch and totals (attune/stages.hpp); kernels add with stages_add().
#include "stages_impl.hpp"

#include <atomic>

namespace attune {
namespace {

std::atomic<bool> enabled{false};
std::atomic<std::uint64_t> totals[5];

}  // namespace

void enable_stage_timing(bool on) { enabled.store(on, std::memory_order_relaxed); }
bool stage_timing_enabled() { return enabled.load(std::memory_order_relaxed); }

StageTicks stage_ticks() {
  StageTicks t;
  t.pack = totals[0].load();
  t.qk = totals[1].load();
  t.softmax = totals[2].load();
  t.pv = totals[3].load();
  t.other = totals[4].load();
  return t;
}

void reset_stage_ticks() {
  for (auto& t : totals) t.store(0);
}

namespace detail {
void stages_add(const StageTicks& t) {
  totals[0].fetch_add(t.pack, std::memory_order_relaxed);
  totals[1].fetch_add(t.qk, std::memory_order_relaxed);
  totals[2].fetch_add(t.softmax, std::memory_order_relaxed);
  totals[3].fetch_add(t.pv, std::memory_order_relaxed);
  totals[4].fetch_add(t.other, std::memory_order_relaxed);
}
}  // namespace detail

}  // namespace attune
