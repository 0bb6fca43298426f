// AVX2 + FMA build of the SIMD tile kernel (compiled with -mavx2 -mfma).
#include "simd/tile_impl.hpp"
ATTUNE_DEFINE_ISA_OPS(avx2, xsimd::fma3<xsimd::avx2>, 6, 2)
