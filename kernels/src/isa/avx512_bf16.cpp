// AVX-512 + AVX512-BF16 build: the bf16 dot-product tiles for all-bf16 problems (compiled with
// -mavx512f -mavx512dq -mavx512bw -mavx512bf16 -mfma); everything else is the avx512 build's.
#include "simd/tile_impl.hpp"
ATTUNE_DEFINE_BF16_DOT_ISA_OPS(avx512_bf16, avx512, xsimd::avx512f, 6, 4)
