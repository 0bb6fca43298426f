// quantize_kv's NEON build (AArch64 Advanced SIMD, baseline there: attune_add_quant_isa).
#include "quant/rows_impl.hpp"
ATTUNE_DEFINE_QUANT_ROWS(neon, xsimd::neon64)
