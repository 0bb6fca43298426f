// Where a kernel's time goes, stage by stage: a diagnostic mode for the bench and reports.
// Only kernels that say so record (today: `amx`, whose stages are K/V packing, S = Q K^T on the
// tiles, the softmax on vectors, O += P V on the tiles, and the rest: Q packing, the output
// rounding, scheduling gaps inside a task). Ticks are the CPU's time-stamp counter, summed over
// threads, so only ratios between stages are meaningful. Off by default; when on, a task reads
// the counter twice per stage per key panel (well under 1% of a panel's work).
#pragma once

#include <cstdint>

namespace attune {

struct StageTicks {
  std::uint64_t pack = 0, qk = 0, softmax = 0, pv = 0, other = 0;
  std::uint64_t total() const { return pack + qk + softmax + pv + other; }
};

// Process-wide switch; calls running while it flips may record partly.
void enable_stage_timing(bool on);
bool stage_timing_enabled();
// Ticks accumulated since the last reset (by every thread, every recording call).
StageTicks stage_ticks();
void reset_stage_ticks();

}  // namespace attune
