// NEON (AArch64 Advanced SIMD) build of the SIMD tile kernel; NEON is baseline on AArch64.
#include "simd/tile_impl.hpp"
ATTUNE_DEFINE_ISA_OPS(neon, xsimd::neon64, 6, 2)
