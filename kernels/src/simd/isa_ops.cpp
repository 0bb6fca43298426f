// The table of per-ISA tile kernels, from the ISAs the build compiled (isa_list.inc).
#include "simd/tile.hpp"

#include <attune/error.hpp>

#include <string>

namespace attune::simd {

// Matrix ISAs (amx) have no vector tile kernels: only their own kernel runs on them.
#define ATTUNE_MATRIX_ISA(name)
#define ATTUNE_ISA(name) const IsaOps& isa_ops_##name();
#include "isa_list.inc"
#undef ATTUNE_ISA

const IsaOps& isa_ops(Isa isa) {
#define ATTUNE_ISA(name) \
  if (isa == Isa::name) return isa_ops_##name();
#include "isa_list.inc"
#undef ATTUNE_ISA
#undef ATTUNE_MATRIX_ISA
  throw InvalidArgument("isa '" + std::string(to_string(isa)) + "' is not compiled into this build");
}

std::int64_t tile_scratch_floats(const TileFn& fn, std::int64_t rows, std::int64_t d_k, std::int64_t d_v,
                                 std::int64_t block_kv) {
  const std::int64_t padded = (rows + fn.lanes - 1) / fn.lanes * fn.lanes;
  const std::int64_t tile = TileScratch(padded, d_k, d_v, block_kv).extra;
  // The bf16 dot form packs each V tile in key pairs: ceil(block_kv / 2) x d_v 32-bit words.
  if (fn.bf16_dot) return tile + (block_kv + 1) / 2 * d_v + 16;
  // The conversion path's widened K and V tiles (16-bit K/V with more rows than the dot forms).
  if (fn.widen_kv) return tile + block_kv * (d_k + d_v);
  if (fn.quant) return tile + block_kv + 16;
  return tile;
}

}  // namespace attune::simd
