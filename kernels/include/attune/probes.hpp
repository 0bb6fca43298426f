// Machine probes measured in the same run as the kernels: FMA peak per ISA and thread count,
// and stream-triad memory bandwidth. Reports express kernel speed as a fraction of these.
#pragma once

#include <attune/isa.hpp>

namespace attune {

struct ProbeResult {
  double median = 0.0;  // GFLOP/s or GB/s
  double min = 0.0;
  double max = 0.0;
  int repetitions = 0;
};

// Multiply-add throughput on `threads` threads running the probe at once (GFLOP/s, fp32).
ProbeResult probe_fma_peak(Isa isa, int threads, int repetitions = 5);
// STREAM triad a = b + s * c over arrays far larger than the caches, on `threads` threads
// (GB/s, counting 12 bytes per element as STREAM does).
ProbeResult probe_triad(int threads, int repetitions = 5);

}  // namespace attune
