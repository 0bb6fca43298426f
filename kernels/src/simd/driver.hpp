// Runs the per-ISA tile kernel over a whole problem: task enumeration, scratch, threads
// (oneTBB when built with it), and the exact merge of key-range splits. Written once; the
// `simd` and `flash` variants differ only in the Plan they pass.
#pragma once

#include "simd/tile.hpp"

#include <attune/kernel.hpp>
#include <attune/problem.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace attune::simd {

struct Plan {
  std::int64_t heads_per_task = 1;  // query heads of one GQA group sharing a task (divides the group)
  std::int64_t positions = 64;      // query positions per task
  std::int64_t splits = 1;          // key-range splits per (heads, positions) row set
  std::int64_t block_kv = 128;      // keys per tile
  int threads = 1;                  // 1 runs on the calling thread
  int micro = 0;                    // Config::micro: 0 auto, 1 narrow tile, 2 wide tile
};

void run_tiled(const Problem& p, const Tensors& t, const Plan& plan, const IsaOps& ops);

// Whether the tile kernels take a problem's variants (every one but top-k): Kernel::supports
// of simd/flash.
bool supports(const Problem& p);

// Bytes run_tiled allocates for this plan (per-thread tile scratch, split partials), from the
// same sizing rules; saturates instead of overflowing. Kernel::workspace_bytes of simd/flash.
std::size_t workspace_bytes(const Problem& p, const Plan& plan, const IsaOps& ops);

// The type P is rounded to for the PV product (Kernel::pv_dtype of simd/flash): bf16 where the
// problem runs the ISA's bf16 dot-product tiles, else fp32.
Dtype pv_dtype(const Problem& p, const IsaOps& ops);

// Kernel::order_isas of simd/flash: avx512_bf16 ahead of avx512 for problems that run its bf16
// dot-product tiles, where the CPU's vdpbf16ps delivers at least kBf16DotPreferred x the fp32
// FMA rate (probes.hpp).
void order_isas(const Problem& p, std::vector<Isa>& isas);

// Worker threads available by default (all cores, or the oneTBB default arena's size).
int default_threads();

}  // namespace attune::simd

namespace attune::detail {
// The plan of the `flash` kernel for a problem and config (flash.cpp): also the vector path of
// the `amx` kernel for decoding shapes.
simd::Plan flash_plan(const Problem& p, const Config& config);
}  // namespace attune::detail
