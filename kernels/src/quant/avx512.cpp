// quantize_kv's AVX-512 build (compiled with the avx512 ISA's flags: attune_add_quant_isa).
#include "quant/rows_impl.hpp"
ATTUNE_DEFINE_QUANT_ROWS(avx512, xsimd::avx512f)
