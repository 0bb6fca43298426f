// Probe loops compiled with ISA flags in their own translation units (probes_avx512.cpp); the
// probes in probes.cpp call them only after checking the CPU at run time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attune::detail {

// `iterations` rounds of independent vdpbf16ps chains (needs AVX512-BF16); returns the FLOPs
// done, 4 per fp32 lane per instruction (two multiply-adds).
double bf16_dot_probe(std::int64_t iterations);
// Sum of n bf16 bit patterns widened to float in registers (needs AVX512F); the value only keeps
// the loads alive.
float sum_bf16_avx512(const std::uint16_t* p, std::size_t n);

}  // namespace attune::detail
