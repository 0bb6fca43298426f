// Instruction sets: detection at run time, names, and the process-wide cap (ATTUNE_ISA).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace attune {

// `scalar` runs everywhere. avx512_bf16 is AVX-512 with the bf16 dot product (vdpbf16ps): the
// same code as avx512 for fp32/fp16, the bf16 dot-product tiles for problems stored in bf16.
// amx is the matrix unit (AMX-TILE + AMX-BF16, with AVX-512 BF16 around it): only the `amx`
// kernel has a build for it; it is runnable once Linux has granted the process the tile data
// state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once; a refusal prints one warning and amx is
// simply not runnable).
enum class Isa { scalar, sse4_2, avx2, avx512, neon, avx512_bf16, amx };

std::string_view to_string(Isa isa);
// Accepts the names printed by to_string; nullopt for anything else.
std::optional<Isa> parse_isa(std::string_view name);

// True if this CPU (and OS) can execute the ISA; says nothing about what was compiled.
bool cpu_supports(Isa isa);
// ISAs the library was compiled for on this target, best first (amx, where built, leads).
const std::vector<Isa>& compiled_isas();
// compiled_isas() without the matrix ISA (amx): the builds of the vector kernels (simd, flash,
// gemm), best first.
const std::vector<Isa>& vector_isas();
// ISAs both compiled and supported by this CPU, best first, capped by ATTUNE_ISA.
const std::vector<Isa>& runnable_isas();
// The best runnable vector ISA (the default of every SIMD kernel; never amx).
Isa default_isa();
// Throws InvalidArgument unless the ISA is compiled in and runs on this CPU and under the cap.
void require_isa(Isa isa);
// Human-readable CPU model name, e.g. "AMD EPYC 9R14"; "unknown" if not available.
std::string_view cpu_model();

}  // namespace attune
