// The contract between the `amx` kernel's driver (src/amx.cpp, compiled without ISA flags:
// planning, packing schedule, threads) and its per-ISA code (src/isa/amx.cpp, compiled with
// AMX-TILE, AMX-BF16 and AVX-512). Plain data only; call nothing here unless
// cpu_supports(Isa::amx) is true (that check also obtains the kernel's permission to use the
// tile registers).
//
// The algorithm, per (batch, KV head):
//   1. K and V are packed once into the VNNI pair layouts the tile unit multiplies
//      (pack_k / pack_v), zero-padded to whole tiles; every query head of the GQA group and
//      every query block then reads the packed copy.
//   2. Each block of query rows sweeps the key panels (block_kv keys each, causal panels past
//      the block's last visible key never visited): S = Q K^T on the tiles (fp32), the online
//      softmax in base 2 on AVX-512 (P rounded to bf16 once), O += P V on the tiles (fp32
//      accumulators kept in memory between panels, rescaled only where a row's max moved).
//   3. O is divided by the row sums and rounded once to bf16.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attune::amx {

constexpr std::int64_t kTileKeys = 32;  // keys per PV tile step (16 key pairs)
constexpr std::int64_t kDimStep = 32;   // d_k elements per QK tile step (16 pairs)
constexpr std::int64_t kRowStep = 32;   // query rows per register block (two 16-row tiles)

constexpr std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }

// 16-bit elements of one KV head's packed K (keys and d_k padded to 32) and packed V (keys and
// d_v padded to 32).
constexpr std::int64_t packed_k_elements(std::int64_t seq_kv, std::int64_t d_k) {
  return round_up(seq_kv, kTileKeys) * round_up(d_k, kDimStep);
}
constexpr std::int64_t packed_v_elements(std::int64_t seq_kv, std::int64_t d_v) {
  return round_up(seq_kv, kTileKeys) * round_up(d_v, kDimStep);
}

// Packs keys [key_begin, key_end) (key_begin a multiple of 32; key_end is rounded up to 32, the
// padding keys written as zeros) of one KV head: src row j at src + j * d, `keys` rows in all.
struct PackArgs {
  const std::uint16_t* src;
  std::int64_t keys, d;
  std::int64_t key_begin, key_end;
  std::uint16_t* dst;  // packed_k/v_elements(keys, d) elements
};
void pack_k(const PackArgs& a);
void pack_v(const PackArgs& a);

// Where a block spends its time, in TSC ticks, when the caller asks (BlockArgs::stages).
enum Stage { kPack, kQk, kSoftmax, kPv, kOther, kStageCount };

// One task: `heads` query heads (consecutive, of one KV head's group) x `positions` query
// positions from i0 against the packed K/V of their KV head, keys [0, kv_end). Row r is head
// r / positions, position i0 + r % positions.
struct BlockArgs {
  const std::uint16_t* q;  // head h, position i at q + h * q_head_stride + i * d_k (bf16)
  const std::uint16_t* kp = nullptr;  // the KV head's packed K (pack_k), or null: per panel
  const std::uint16_t* vp = nullptr;  // ... and packed V (pack_v)
  std::uint16_t* out;  // head h, position i at out + h * out_head_stride + i * d_v (bf16)
  std::int64_t q_head_stride, out_head_stride;
  std::int64_t heads, positions, i0;
  std::int64_t d_k, d_v, kv_end;
  bool causal;
  std::int64_t causal_offset;  // query i sees keys j <= i + causal_offset
  float qk_scale;              // scale * log2(e): the softmax runs in base 2
  std::int64_t block_kv;       // keys per panel, a multiple of 32
  // Packing per panel instead of per KV head (when a head has a single block, as in decoding,
  // where packing the whole head first would move its K/V bytes three times): kp/vp are null,
  // k_raw/v_raw the KV head's rows (key j at k_raw + j * d_k), and each panel is packed into a
  // ring of three panel buffers in the scratch just before the tile unit needs it.
  const std::uint16_t* k_raw = nullptr;
  const std::uint16_t* v_raw = nullptr;
  std::int64_t seq_kv = 0;
  void* scratch;               // block_scratch_bytes(..., per_panel) bytes, 64-byte aligned
  std::uint64_t* stages = nullptr;  // kStageCount tick counters to add to, or nullptr
};
std::size_t block_scratch_bytes(std::int64_t rows, std::int64_t d_k, std::int64_t d_v, std::int64_t block_kv,
                                bool per_panel);
// Leaves the tile registers configured (the next block loads its configuration again): a
// release and re-configuration per block cost ~5% of a causal 2048-key call here.
void run_block(const BlockArgs& a);
// Returns the calling thread's tile state to its initial (unused) state.
void release_tiles();

// Peak probe: `iterations` rounds of four independent TDPBF16PS on 16x16 fp32 tiles; returns
// the FLOPs done (2 x 16 x 16 x 32 per instruction).
double tdp_probe(std::int64_t iterations);

// Reads the time-stamp counter (the unit of BlockArgs::stages).
std::uint64_t ticks();

}  // namespace attune::amx
