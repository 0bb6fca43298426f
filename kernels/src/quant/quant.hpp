// quantize_kv's builds: the scalar reference loops (kv_quant.cpp) and one vector build per ISA
// (kernels/src/quant/<isa>.cpp, from rows_impl.hpp), chosen at run time. Every build writes the
// same bytes as the reference (tests/test_kv_quant.cpp: Isa/KvQuantBuild compares them).
#pragma once

#include <attune/dtype.hpp>
#include <attune/isa.hpp>

#include <cstdint>

namespace attune::quant {

// `tokens` rows of one KV head, quantize_kv's contract with its arguments already checked.
using RowsFn = void (*)(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, void* codes,
                        void* scales, const float* fixed_scale);

// The portable loops: the reference every vector build is held to, and the fallback.
void reference_rows(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, void* codes,
                    void* scales, const float* fixed_scale);

// The build that runs for `isa`: its own vector build where one is compiled, avx512's for
// avx512_bf16 and amx (CPUs that have AVX-512F), else Isa::scalar (the reference). Says nothing
// about whether this CPU runs it: callers pass a runnable ISA.
Isa build_for(Isa isa);
// That build's function.
RowsFn rows_fn(Isa isa);
// The build attune::quantize_kv runs: that of the best runnable ISA (runnable_isas(), so under
// the ATTUNE_ISA cap) that has one, chosen once per process.
Isa best_build();

}  // namespace attune::quant
