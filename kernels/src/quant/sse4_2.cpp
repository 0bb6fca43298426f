// quantize_kv's SSE4.2 build (compiled with the sse4_2 ISA's flags: attune_add_quant_isa).
#include "quant/rows_impl.hpp"
ATTUNE_DEFINE_QUANT_ROWS(sse4_2, xsimd::sse4_2)
