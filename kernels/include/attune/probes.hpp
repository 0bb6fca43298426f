// Machine probes measured in the same run as the kernels: FMA peak per ISA and thread count, the
// bf16 dot-product peak, stream-triad and 16-bit read bandwidth. Reports express kernel speed as
// a fraction of these.
#pragma once

#include <attune/isa.hpp>

#include <optional>

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
// vdpbf16ps throughput (AVX512-BF16) on `threads` threads, GFLOP/s counting 4 per fp32 lane per
// instruction (two multiply-adds of bf16 pairs into fp32); nullopt where the CPU (or the build)
// has no AVX512-BF16.
std::optional<ProbeResult> probe_bf16_dot_peak(int threads, int repetitions = 5);
// The bf16 dot product's FLOP rate (vdpbf16ps) over the fp32 FMA's (avx512), on one core:
// short interleaved runs of both probe loops, the best of several each, measured once per
// process on first use (well under a millisecond); 0 where the CPU or the build has no
// AVX512-BF16 (or AVX-512 is capped by ATTUNE_ISA). About 1.9 on AMD Zen 4 (full rate), 0.5
// on Intel Sapphire Rapids (half rate). simd/flash order their ISAs by it (runnable_isas).
double bf16_dot_speedup();
// AMX TDPBF16PS throughput (16x16 fp32 tiles += 16x32 by 32x16 bf16, four independent
// accumulators) on `threads` threads, GFLOP/s counting 2 x 16 x 16 x 32 per instruction;
// nullopt where the CPU, the OS permission or the build has no AMX-BF16.
std::optional<ProbeResult> probe_amx_peak(int threads, int repetitions = 5);
// Reads an array of 16-bit values far larger than the caches and sums it, widening each to
// float in registers (as the kernels read bf16/fp16 K and V), on `threads` threads (GB/s,
// 2 bytes per element). AVX-512 loads where the CPU has them, else the compiler's baseline.
ProbeResult probe_read16(int threads, int repetitions = 5);

}  // namespace attune
