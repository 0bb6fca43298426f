// SSE4.2 build of the SIMD tile kernel (compiled with -msse4.2; no FMA: multiply + add).
#include "simd/tile_impl.hpp"
ATTUNE_DEFINE_ISA_OPS(sse4_2, xsimd::sse4_2, 4, 2)
