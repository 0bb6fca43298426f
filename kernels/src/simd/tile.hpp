// The contract between the kernel drivers (compiled without ISA flags: scheduling, threads,
// split merging) and the per-ISA tile code (compiled once per ISA). Plain data only.
#pragma once

#include <attune/dtype.hpp>
#include <attune/isa.hpp>
#include <attune/problem.hpp>

#include <cstdint>
#include <limits>

namespace attune::simd {

// The variants of one task (problem.hpp's formulas), read only by the variant instantiations
// (TileFn sets `vtiles`); the plain instantiations never look at them.
// Logits are in the base-2 domain of the tile kernel (natural logit x log2 e).
struct TileVariant {
  std::int64_t window = 0;       // > 0: band (i' - window, i'] if causal, else (i' - window, i' + window)
  float softcap = 0.0f;          // cap x log2 e (0: off)
  const float* slopes = nullptr; // ALiBi slopes of the task's heads [heads], natural units
  const float* sinks = nullptr;  // sink logits of the task's heads [heads], natural units; only
                                 // the split that starts a row's key range takes them
  MaskKind mask = MaskKind::none;
  const void* mask_plane = nullptr;    // head 0's [seq_q, seq_kv] mask plane
  std::int64_t mask_head_stride = 0;   // elements between the planes of the task's heads
  std::int64_t seq_kv = 0;             // the mask's row stride
  // Per 16 keys [16 b, 16 b + 16) of the task's rows: 0 every entry hidden, 1 every entry
  // neutral (true / +0), 2 mixed; a tile whose blocks are all 0 is skipped, all 1 runs unmasked.
  const std::uint8_t* blocks = nullptr;
  float* row_scratch = nullptr;   // 3 x (rows + 64) floats: per-row band start, -slope, position
  float* mask_tile = nullptr;     // block_kv x (rows + 64) floats: the mask tile transposed
};

// How a quantized K or V of one task is decoded (docs/quantized-kv.md); value of element d of key
// j (j counted like TileArgs' keys, from the task's K/V pointer):
//   code(j, d) x tok[j * tok_row] x chan[d] x head        (each factor 1 when absent)
//   int4: code(j, d) x scale + min, (scale, min) = groups[j * groups_row + 2 (d / 32) + {0, 1}] (fp16)
// The decoding forms fold the factors (chan and head into Q, tok into each score or weight); the
// prefill tiles dequantize each key tile once into their float32 scratch.
struct KvDequant {
  const float* tok = nullptr;             // per-token scales (int8; int8_kc's V)
  std::int64_t tok_row = 0;
  const std::uint16_t* groups = nullptr;  // int4: fp16 (scale, min) per 32 elements of each row
  std::int64_t groups_row = 0;
  const float* chan = nullptr;            // int8_kc's K: d_k channel scales of the KV head
  float head = 1.0f;                      // fp8: the KV head's scale (x 256 for e4m3: vec.hpp)
  std::int64_t page = 0;                  // paged K/V: records (tok) or elements (groups) between blocks
};

// One task of the tiled online-softmax algorithm: a set of query rows (heads x positions
// of one KV head's group) against a key range [j_begin, j_end).
//
// Rows: `heads` query heads (consecutive in Q/O) x `positions` query positions from i0.
// Row r is head r / positions, position i0 + r % positions; Q row at
// q + head * q_head + position * q_row, O row at out + head * o_head + position * o_row
// (contiguous: q_head = seq_q * d_k, q_row = d_k); key j at k + j * k_row, value j at v + j * v_row.
// The rows live in vector lanes ("queries in lanes"): S^T = K Q^T and O^T += V^T P^T, so
// K and V are read in their natural layout and the softmax is vertical.
// Q and O are stored as `dtype` (widened when Q^T is packed, rounded once when O is written);
// K and V as the kv dtype the instantiation was compiled for (IsaOps::tiles[kv dtype]), read
// in that type and widened (the prefill tiles widen each key tile once into scratch, the
// decoding forms whole vectors in registers).
struct TileArgs {
  const void* q;
  const void* k;   // key j at element j * k_row
  const void* v;   // value j at element j * v_row
  void* out;       // final mode: normalised rows written here
  Dtype dtype;     // of Q and O
  std::int64_t heads, positions, i0;
  std::int64_t j_begin, j_end;
  std::int64_t seq_q, d_k, d_v;
  std::int64_t q_head, q_row, o_head, o_row, k_row, v_row;  // strides in elements (int4 K/V: bytes)
  bool causal;
  std::int64_t causal_offset;  // aligned position i' = i + causal_offset; causal: j <= i'
  const TileVariant* var = nullptr;  // the variant instantiations' parameters
  float qk_scale;              // scale * log2(e): the softmax runs in base 2
  std::int64_t block_kv;       // keys per tile
  float* scratch;              // tile_scratch_floats() floats, 64-byte aligned
  // Partial mode (a split of the key range) when part_o != nullptr: unnormalised O rows
  // [rows][d_v], running max (base 2) and sum per row, merged by the driver.
  float* part_o = nullptr;
  float* part_m = nullptr;
  float* part_l = nullptr;
  KvDequant kq, vq;  // quantized K/V only
  // Key j's K row is at k + (j - kv_origin) * k_row (V, the token records and int4 groups alike):
  // 0 for contiguous K/V; a paged tile's view (page_view) points at its first key.
  std::int64_t kv_origin = 0;
  // Paged K/V (Problem::paged): key j is row j % page_size of block pages[j / page_size], whose
  // rows start at k + pages[..] * k_page (v_page for V, KvDequant::page for the scales). The
  // tile kernels clip their key tiles at block ends and read each through page_view (tile_impl.hpp).
  const std::int32_t* pages = nullptr;
  std::int64_t page_size = 0, k_page = 0, v_page = 0;
  // Set by page_view: the first key past the view's block, and the task's K and V (block 0), from
  // which the decoding form finds the rows it prefetches past the block end.
  std::int64_t page_end = std::numeric_limits<std::int64_t>::max();
  const void* k_pool = nullptr;
  const void* v_pool = nullptr;
};


// One instantiation of the tile kernel: its register tile's row count and entry point.
struct TileFn {
  int lanes;  // query rows per register tile: the row count is padded to a multiple of it
  void (*run)(const TileArgs& args);
  bool bf16_dot = false;  // multiplies in bf16 pairs (vdpbf16ps): P rounded to bf16, V packed in pairs
  bool widen_kv = false;  // 16-bit or quantized K/V widened tile by tile into float32 scratch (block_kv x (d_k + d_v))
  bool quant = false;     // quantized K/V decoding form: a per-tile row of V factors (block_kv floats)
};

struct IsaOps {
  Isa isa;
  // Per K/V storage type (indexed by Dtype), instantiations from the fewest rows to the most:
  // the decoding (dot-product) forms, a narrow tile of one vector of rows, the wide prefill tile.
  TileFn tiles[kKvDtypeCount][4];
  // The same instantiated with the variants (window, soft-cap, ALiBi, sinks, mask): the plain
  // tiles stay free of their code.
  TileFn vtiles[kKvDtypeCount][4];
  // The instantiations a problem runs: the variant set when it needs one, else bf16_dot for
  // all-bf16 problems where present, else the conversion path of its K/V type.
  const TileFn* set_for(Dtype dtype, Dtype kv, bool variant = false) const {
    if (variant) return vtiles[static_cast<int>(kv)];
    if (bf16_dot != nullptr && dtype == Dtype::bf16 && kv == Dtype::bf16) return bf16_dot;
    return tiles[static_cast<int>(kv)];
  }
  // The smallest instantiation that holds `rows` rows (the widest for anything larger).
  static const TileFn& tile_for(const TileFn* set, std::int64_t rows) {
    for (int i = 0; i < 4; ++i)
      if (rows <= set[i].lanes) return set[i];
    return set[3];
  }
  void (*exp2)(const float* x, float* y, std::int64_t n);  // the softmax's exp2, for tests
  void (*softcap)(const float* x, float* y, std::int64_t n, float cap);  // cap tanh(x / cap), for tests
  // Peak probe: `iterations` rounds of independent multiply-adds on registers; returns the
  // FLOPs done (2 per lane per multiply-add) so the caller can time it.
  double (*fma_probe)(std::int64_t iterations);
  // ISAs with bf16 dot products (vdpbf16ps): the set for problems stored entirely in bf16
  // (Q too: it is multiplied as stored, never re-rounded), else nullptr.
  const TileFn* bf16_dot = nullptr;
};

// The scratch of one tile task, in floats from TileArgs::scratch, for `rp` rows (the task's
// rows padded to whole vectors, or the decoding form's R): the one derivation of its layout,
// read by both tile forms for their offsets and by tile_scratch_floats for the allocation.
//   Q^T [d_k][rp] | S^T [block_kv + kScorePad][rp] | O^T [d_v][rp] | m, l, alpha, limit [rp] | extra
// The decoding form keeps the same regions row-major: Q [rp][d_k], scores [rp][block_kv + W]
// (each row padded to whole vectors: W <= 16 < kScorePad), O [rp][d_v], m, l.
// extra (past the tile): the bf16 dot form's V tile in key pairs, or the conversion path's
// widened K and V tiles (a set is one or the other).
struct TileScratch {
  static constexpr std::int64_t kScorePad = 20;
  std::int64_t qt, st, ot, m, l, alpha, limit, extra;
  TileScratch(std::int64_t rp, std::int64_t d_k, std::int64_t d_v, std::int64_t block_kv)
      : qt(0),
        st(qt + d_k * rp),
        ot(st + (block_kv + kScorePad) * rp),
        m(ot + d_v * rp),
        l(m + rp),
        alpha(l + rp),
        limit(alpha + rp),
        extra(limit + rp) {}
};

// Floats of scratch one tile task of `fn` needs (TileScratch, plus its extra).
std::int64_t tile_scratch_floats(const TileFn& fn, std::int64_t rows, std::int64_t d_k,
                                 std::int64_t d_v, std::int64_t block_kv);
// The ops of a compiled ISA; throws InvalidArgument if it is not compiled in.
const IsaOps& isa_ops(Isa isa);

}  // namespace attune::simd
