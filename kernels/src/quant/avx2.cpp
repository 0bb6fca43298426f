// quantize_kv's AVX2 + FMA build (compiled with the avx2 ISA's flags: attune_add_quant_isa).
#include "quant/rows_impl.hpp"
ATTUNE_DEFINE_QUANT_ROWS(avx2, xsimd::fma3<xsimd::avx2>)
