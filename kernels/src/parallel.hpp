// The thread pool of the tiled kernels (flash, simd, amx): oneTBB arenas, one per thread count,
// and a parallel loop that gives each body call its worker slot. Driver code only (never
// included from a per-ISA translation unit).
#pragma once

#include <cstdint>

#ifdef ATTUNE_WITH_TBB
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#endif

namespace attune::detail {

#ifdef ATTUNE_WITH_TBB
// One long-lived arena per thread count: creating an arena per call would cost more than a
// small attention call.
tbb::task_arena& arena_for(int threads);
#endif

// Runs body(i, slot) for i in [0, n) on `threads` threads; slot < threads names the worker, so
// per-thread scratch can be indexed by it.
template <class Body>
void parallel(std::int64_t n, [[maybe_unused]] int threads, const Body& body) {  // unused without TBB
#ifdef ATTUNE_WITH_TBB
  if (threads > 1 && n > 1) {
    arena_for(threads).execute([&] {
      // Grain 1 and work stealing balance unequal (causal) tasks; tasks are ordered costly first.
      tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, n, 1), [&](const tbb::blocked_range<std::int64_t>& r) {
        const int slot = tbb::this_task_arena::current_thread_index();
        for (std::int64_t i = r.begin(); i != r.end(); ++i) body(i, slot);
      });
    });
    return;
  }
#endif
  for (std::int64_t i = 0; i < n; ++i) body(i, 0);
}

}  // namespace attune::detail
