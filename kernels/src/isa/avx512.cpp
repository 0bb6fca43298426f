// AVX-512F build of the SIMD tile kernel (compiled with -mavx512f -mavx512dq -mfma).
#include "simd/tile_impl.hpp"
ATTUNE_DEFINE_ISA_OPS(avx512, xsimd::avx512f, 6, 4)
