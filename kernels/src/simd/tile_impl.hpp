// The tiled online-softmax attention step, written once against Vec<Arch> and compiled once
// per ISA (include only from kernels/src/isa/*.cpp). See tile.hpp for the task contract.
//
// Layout: the task's query rows live in vector lanes. Per key tile [j0, j1):
//   S^T[j][r] = sum_d K[j][d] * Q^T[d][r]          (Q^T packed once, scaled by scale*log2 e)
//   m'[r] = max(m[r], max_j S^T[j][r]);  alpha[r] = 2^(m[r] - m'[r])
//   P^T[j][r] = 2^(S^T[j][r] - m'[r]);   l[r] <- l[r] * alpha[r] + sum_j P^T[j][r]
//   O^T[d][r] <- O^T[d][r] * alpha[r] + sum_j V[j][d] * P^T[j][r]
// Register tiles: MR keys x NV vectors of rows for S^T (K scalars broadcast from their natural
// layout), MR value columns x NV vectors of rows for O^T (V scalars broadcast likewise).
// Rows are padded to whole vectors only: lane chunks of NV vectors, then one of NV/2, ... 1
// for the rest, so 48 rows on AVX-512 run as 32 + 16, not as a 64-row tile a quarter empty.
// Scratch: TileScratch (tile.hpp) for R = rows rounded up to one vector (at most NV * width
// floats per row are reserved).
#pragma once

#include "detail/online_softmax.hpp"
#include "simd/tile.hpp"
#include "simd/vec.hpp"

#include <limits>
#include <new>
#include <utility>

namespace attune::simd {
namespace {

inline std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
inline std::int64_t imax(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

namespace online = detail::online;  // the softmax's numeric policy (detail/online_softmax.hpp)

// Key tiles of a paged task end at block boundaries: the tile [j0, j0 + cols) clipped.
inline std::int64_t clip_to_page(const TileArgs& a, std::int64_t j0, std::int64_t cols) {
  if (a.pages == nullptr) return cols;
  const std::int64_t end = (j0 / a.page_size + 1) * a.page_size;
  return cols < end - j0 ? cols : end - j0;
}

// Room for a TileArgs that is only made when needed (a default-constructed TileArgs would be a
// weak symbol of this ISA's unit: STYLE.md; a copy on every tile costs decoding ~2% instructions).
struct ViewSlot {
  alignas(TileArgs) unsigned char bytes[sizeof(TileArgs)];
};

// The task's arguments with K, V and their scale records rebased to key j0's block (kv_origin =
// j0), for a tile clipped by clip_to_page, made in `slot`; `bytes` is the size of one stored K/V
// element (int4: 1, its strides count bytes). Contiguous tasks are returned as they are.
inline const TileArgs& page_view(const TileArgs& a, std::int64_t j0, std::int64_t bytes, ViewSlot& slot) {
  if (a.pages == nullptr) return a;
  TileArgs& view = *::new (static_cast<void*>(slot.bytes)) TileArgs(a);
  const std::int64_t block = j0 / a.page_size, row = j0 - block * a.page_size;
  const std::int64_t page = a.pages[block];
  const auto* k = static_cast<const char*>(a.k);
  const auto* v = static_cast<const char*>(a.v);
  view.k = k + (page * a.k_page + row * a.k_row) * bytes;
  view.v = v + (page * a.v_page + row * a.v_row) * bytes;
  view.kv_origin = j0;
  view.page_end = (block + 1) * a.page_size;
  view.k_pool = a.k;
  view.v_pool = a.v;
  for (auto [dq, from] : {std::pair{&view.kq, &a.kq}, std::pair{&view.vq, &a.vq}}) {
    if (from->tok != nullptr) dq->tok = from->tok + page * from->page + row * from->tok_row;
    if (from->groups != nullptr) dq->groups = from->groups + page * from->page + row * from->groups_row;
  }
  return view;
}

// The band of query position `pos` (TileVariant): keys [lo, hi] (hi >= j_end: no upper edge).
struct Band {
  std::int64_t lo, hi;
};
inline Band band_of(const TileArgs& a, std::int64_t pos) {
  const std::int64_t ip = pos + a.causal_offset, w = a.var->window;
  return {w > 0 ? ip - w + 1 : a.j_begin, a.causal ? ip : (w > 0 ? ip + w - 1 : a.j_end)};
}

// The variants' per-row parameters (both tile forms): band edges as floats (padded rows see
// nothing), -slope x log2 e, the aligned position, and the sink as the softmax's starting
// state (m = sink, l = 1: an extra key with a zero value row), or m = -inf, l = 0 without one.
inline void variant_row(const TileArgs& a, bool real, std::int64_t head, std::int64_t pos, float& limit, float& lo,
                        float& nslope, float& posf, float& m, float& l) {
  const TileVariant& v = *a.var;
  const Band band = band_of(a, pos);
  limit = real ? static_cast<float>(band.hi) : -1.0f;
  lo = real ? static_cast<float>(band.lo) : std::numeric_limits<float>::max();
  nslope = real && v.slopes != nullptr ? -v.slopes[head] * online::kLog2e : 0.0f;
  posf = static_cast<float>(pos + a.causal_offset);
  m = -std::numeric_limits<float>::infinity();
  l = 0.0f;
  if (real && v.sinks != nullptr && v.sinks[head] != -std::numeric_limits<float>::infinity()) {
    m = v.sinks[head] * online::kLog2e;
    l = 1.0f;
  }
}

// The variants on scores, in problem.hpp's order, for both tile forms (V: a vector of rows in
// the tile form, one row's scalar in the decoding form): the soft-cap of u = s / cap (cap:
// nullptr for none), ALiBi's -slope |i' - j| (nslope = -slope x log2 e), the mask's value
// (mask: nullptr for none), then the band: keys outside [lo, limit] get -inf.
template <class V>
[[gnu::always_inline]] inline typename V::B variant_score(typename V::B u, const typename V::SoftCap* cap, bool alibi,
                                                          const typename V::B& nslope, const typename V::B& pos,
                                                          const typename V::B& key, const typename V::B* mask,
                                                          bool band, const typename V::B& limit,
                                                          const typename V::B& lo) {
  if (cap != nullptr) u = V::softcap_u(u, *cap);
  if (alibi) u = V::fma(nslope, V::abs(pos - key), u);
  if (mask != nullptr) u = u + *mask;
  if (band) {
    u = V::keep_le(key, limit, u, V::set1(online::kNegInf));
    u = V::keep_le(lo, key, u, V::set1(online::kNegInf));
  }
  return u;
}

// The end of a task (both tile forms): each row normalised and written to O in its storage
// type, rounded once; or, for a key split, its unnormalised row with its max and sum, for the
// driver's merge. o(r, d) is element d of row r's unnormalised output.
template <class Row>
[[gnu::always_inline]] inline void write_rows(const TileArgs& a, std::int64_t rows, const Row& o, const float* m,
                                              const float* l) {
  with_element_type(a.dtype, [&]<class TO>(const TO*) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t head = r / a.positions, pos = a.i0 + r % a.positions;
      if (a.part_o != nullptr) {
        for (std::int64_t d = 0; d < a.d_v; ++d) a.part_o[r * a.d_v + d] = o(r, d);
        a.part_m[r] = m[r];
        a.part_l[r] = l[r];
      } else {
        const float inv = online::normaliser(l[r]);
        TO* orow = static_cast<TO*>(a.out) + head * a.o_head + pos * a.o_row;
        for (std::int64_t d = 0; d < a.d_v; ++d) store_rounded(orow + d, o(r, d) * inv);
      }
    }
  });
}

// The class of the key tile [j0, j0 + cols) from its 16-key mask blocks: 0 all hidden, 1 all
// neutral, 2 mixed (TileVariant::blocks).
inline int tile_class(const std::uint8_t* blocks, std::int64_t j0, std::int64_t cols) {
  bool hidden = true, neutral = true;
  for (std::int64_t b = j0 / 16; b <= (j0 + cols - 1) / 16; ++b) {
    hidden = hidden && blocks[b] == 0;
    neutral = neutral && blocks[b] == 1;
  }
  return hidden ? 0 : (neutral ? 1 : 2);
}

// The next key tile from j0 that neither starts nor ends in a hidden 16-key mask block: the
// hidden blocks at j0 are skipped, and the tile ends before the next hidden one (or after
// block_kv keys). Returns its start (>= j_end: none left) and sets cols to its length.
inline std::int64_t visible_tile(const std::uint8_t* blocks, std::int64_t j0, std::int64_t j_end, std::int64_t block_kv,
                                 std::int64_t& cols) {
  while (j0 < j_end && blocks[j0 / 16] == 0) j0 = (j0 / 16 + 1) * 16;
  cols = imin(block_kv, j_end - j0);
  for (std::int64_t b = j0 / 16 + 1; b * 16 < j0 + cols; ++b) {
    if (blocks[b] == 0) {
      cols = b * 16 - j0;
      break;
    }
  }
  return j0;
}

// The mask's value of one entry in the base-2 domain: 0 or -inf (boolean), m x log2 e (additive).
inline float mask_value(const TileVariant& v, std::int64_t index) {
  if (v.mask == MaskKind::boolean)
    return static_cast<const std::uint8_t*>(v.mask_plane)[index] != 0 ? 0.0f : -std::numeric_limits<float>::infinity();
  return static_cast<const float*>(v.mask_plane)[index] * online::kLog2e;
}

// M^T [cols][rp] of the tile: mt[jj * rp + r] for the task's rows (padded rows 0).
inline void mask_tile(const TileArgs& a, float* mt, std::int64_t rp, std::int64_t rows, std::int64_t j0, std::int64_t cols) {
  const TileVariant& v = *a.var;
  for (std::int64_t r = 0; r < rp; ++r) {
    if (r >= rows) {
      for (std::int64_t jj = 0; jj < cols; ++jj) mt[jj * rp + r] = 0.0f;
      continue;
    }
    const std::int64_t row = (r / a.positions) * v.mask_head_stride + (a.i0 + r % a.positions) * v.seq_kv + j0;
    for (std::int64_t jj = 0; jj < cols; ++jj) mt[jj * rp + r] = mask_value(v, row + jj);
  }
}

// Dot = true: the bf16 dot-product form (AVX512-BF16 only, all tensors bf16). Q^T is packed in
// d pairs and K dwords (two consecutive d of a key) broadcast from their natural layout, so one
// vdpbf16ps does two multiply-adds per lane; P is rounded to bf16 and stored in key pairs, and
// each V tile is packed once in key pairs (V2[j/2][d] = V[j][d], V[j+1][d]) for the PV product.
// The scale is applied to the float32 scores (Q is multiplied as stored, never re-rounded).
// Var = true: the variants of TileArgs::var (band with a lower edge, soft-cap, ALiBi, mask tiles
// classified per 16 keys, sinks), applied in the QK^T epilogue; Var = false is the plain kernel,
// whose code does not change with them.
template <class Arch, int MR, int NV, class T, bool Dot = false, bool Var = false>
struct TileKernel {
  using V = Vec<Arch>;
  using B = typename V::B;
  static constexpr int W = V::width;
  static constexpr std::int64_t L = NV * W;  // rows per register tile
  // Keys (or value columns) per step for a chunk of N vectors: the widest chunk takes the
  // ISA's tile; narrower ones take 8, which fits the registers of every ISA at N <= NV / 2
  // (8 N accumulators + N row vectors + 1 broadcast).
  template <int N>
  static constexpr int kSteps = N == NV ? MR : 8;
  static constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // 16-bit K/V on the conversion path: each key tile is widened once into float32 scratch
  // (widen_rows, from tile()) and every lane chunk multiplies from there, so a broadcast is one fp32 load
  // instead of a scalar widening per element and chunk (3-4 uops on the FMA ports).
  static constexpr bool kWiden = !std::is_same_v<T, float> && !Dot;

  struct Ctx {
    const TileArgs* a;
    std::int64_t rp;  // padded row count
    float *qt, *st, *ot, *m, *l, *alpha, *limit;
    std::uint32_t* v2;  // Dot: the V tile in key pairs
    float *kw = nullptr, *vw = nullptr;  // kWiden: the K tile [cols][d_k] and V tile [cols][d_v]
    // Var: per-row band start, -slope x log2 e, aligned position; the mask tile M^T [cols][rp]
    // in the base-2 domain, and whether the current tile applies it.
    float *lo = nullptr, *nslope = nullptr, *posf = nullptr, *mt = nullptr;
    bool tile_mask = false;
  };

  // Var: a pass over the tile's S^T for lane chunk c0, after QK^T: the variants in
  // problem.hpp's order (soft-cap, ALiBi, mask), then the band (masked tiles only), and the
  // vertical max. A pass of its own: fused into QK^T's epilogue, the extra registers it needs
  // made GCC spill the accumulators of the widest tile (2x slower with all three variants).
  // With a soft-cap, S^T holds u = s / cap (Q^T is packed with the cap divided out), so the
  // cap is softcap_u; tiles that need nothing else skip this pass and cap in the softmax pass.
  template <int N>
  static void modify(const Ctx& c, std::int64_t j0, std::int64_t cols, std::int64_t c0, bool masked, B* tmax) {
    const TileVariant& v = *c.a->var;
    const bool cap = v.softcap > 0.0f, alibi = v.slopes != nullptr;
    const typename V::SoftCap coef = V::softcap_coef(cap ? v.softcap : 1.0f);
    B nslope[N], pos[N], limit[N], lo[N];
    for (int nv = 0; nv < N; ++nv) {
      const std::int64_t off = c0 + nv * W;
      nslope[nv] = V::load(c.nslope + off);
      pos[nv] = V::load(c.posf + off);
      limit[nv] = V::load(c.limit + off);
      lo[nv] = V::load(c.lo + off);
      tmax[nv] = V::set1(kNegInf);
    }
    for (std::int64_t j = 0; j < cols; ++j) {
      const B key = V::set1(static_cast<float>(j0 + j));
      for (int nv = 0; nv < N; ++nv) {
        float* p = c.st + j * c.rp + c0 + nv * W;
        B mask;
        if (c.tile_mask) mask = V::load(c.mt + j * c.rp + c0 + nv * W);
        const B s = variant_score<V>(V::load(p), cap ? &coef : nullptr, alibi, nslope[nv], pos[nv], key,
                                     c.tile_mask ? &mask : nullptr, masked, limit[nv], lo[nv]);
        V::store(p, s);
        tmax[nv] = V::max(tmax[nv], s);
      }
    }
  }

  // S^T rows [jj, jj + MK) of the tile for lane chunk c0; masked lanes get -inf. Returns the
  // running vertical max through tmax.
  // Wide: K rows from the widened tile (kWiden), which is in cache already: only its next rows
  // are prefetched into L1, V not at all. Otherwise from the caller's tensor (as the float32
  // kernel always does: its code does not change with the widening).
  template <int MK, int N, bool Wide = false>
  static void qk(const Ctx& c, std::int64_t j0, std::int64_t jj, std::int64_t c0, bool masked, B* tmax) {
    const TileArgs& a = *c.a;
    B acc[MK][N];
    for (int mr = 0; mr < MK; ++mr)
      for (int nv = 0; nv < N; ++nv) acc[mr][nv] = V::set1(0.0f);
    using U = std::conditional_t<Wide, float, T>;
    const std::int64_t k_row = Wide ? a.d_k : a.k_row;
    const U* krow;
    if constexpr (Wide) {
      krow = c.kw + jj * a.d_k;
    } else {
      krow = static_cast<const T*>(a.k) + (j0 + jj - a.kv_origin) * a.k_row;
    }
    constexpr bool kPrefetch = !Wide;
    const float* qcol = c.qt + c0;
    // Prefetches, one line per step. Few rows (decoding) read each K/V row once, straight from
    // memory, in an order the hardware prefetchers miss (MK rows in parallel): the next K rows
    // and this block's V rows, into L1. Every tile brings the V rows its PV pass reads into L2
    // while QK^T runs: a head's K and V together outgrow L2 at long sequences, and PV's
    // strided V broadcasts otherwise wait on L3 (5% of the time at seq 2048 in a paired A/B).
    const char* k_next = reinterpret_cast<const char*>(krow + MK * k_row);
    const char* v_rows = reinterpret_cast<const char*>(static_cast<const T*>(a.v) + (j0 + jj - a.kv_origin) * a.v_row);
    // Var (which strided tensors run) with rows that are not adjacent ([batch, seq, heads, dim]
    // puts heads * dim elements between them): the next MK K rows and this step's V rows, whole,
    // before the d loop; the flag is loop-invariant, so the loop itself is the plain one.
    [[maybe_unused]] const bool rowwise = Var && (a.k_row != a.d_k || a.v_row != a.d_v);
    if constexpr (Var && kPrefetch) {
      if (rowwise) {
        const std::int64_t k_bytes = a.d_k * static_cast<std::int64_t>(sizeof(T)), v_bytes = a.d_v * static_cast<std::int64_t>(sizeof(T));
        for (int r = 0; r < MK; ++r) {
          for (std::int64_t b = 0; b < k_bytes; b += 64) __builtin_prefetch(k_next + r * a.k_row * static_cast<std::int64_t>(sizeof(T)) + b);
          for (std::int64_t b = 0; b < v_bytes; b += 64)
            __builtin_prefetch(v_rows + r * a.v_row * static_cast<std::int64_t>(sizeof(T)) + b, 0, L == W ? 3 : 2);
        }
      }
    }
    for (std::int64_t d = 0; d < a.d_k; ++d) {
      if constexpr (!kPrefetch) {
        __builtin_prefetch(k_next + d * 64);  // the widened tile's next rows, from L2 into L1
      } else if (rowwise) {
        // prefetched above
      } else if constexpr (L == W) {
        __builtin_prefetch(k_next + d * 64);
        __builtin_prefetch(v_rows + d * 64);
      } else {
        __builtin_prefetch(k_next + d * 64);
        __builtin_prefetch(v_rows + d * 64, 0, 2);
      }
      B qv[N];
      for (int nv = 0; nv < N; ++nv) qv[nv] = V::load(qcol + d * c.rp + nv * W);
      for (int mr = 0; mr < MK; ++mr) {
        const B kb = V::set1(krow[mr * k_row + d]);
        for (int nv = 0; nv < N; ++nv) acc[mr][nv] = V::fma(kb, qv[nv], acc[mr][nv]);
      }
    }
    if constexpr (N == NV) {
      // The widest tile's epilogue unrolled, so its accumulators stay in registers: over a
      // rolled mr loop GCC first copies all of them to the stack (48 extra memory operations
      // per step, 5% of a d_k = 64 run). Narrower chunks keep the rolled loop: unrolled, their
      // separately compiled code ran out of registers inside the d loop.
      if (masked) {
#pragma GCC unroll 16
        for (int mr = 0; mr < MK; ++mr) {
          const B key = V::set1(static_cast<float>(j0 + jj + mr));
#pragma GCC unroll 8
          for (int nv = 0; nv < N; ++nv)
            acc[mr][nv] = V::keep_le(key, V::load(c.limit + c0 + nv * W), acc[mr][nv], V::set1(kNegInf));
        }
      }
#pragma GCC unroll 16
      for (int mr = 0; mr < MK; ++mr) {
#pragma GCC unroll 8
        for (int nv = 0; nv < N; ++nv) {
          V::store(c.st + (jj + mr) * c.rp + c0 + nv * W, acc[mr][nv]);
          tmax[nv] = V::max(tmax[nv], acc[mr][nv]);
        }
      }
    } else {
      for (int mr = 0; mr < MK; ++mr) {
        float* srow = c.st + (jj + mr) * c.rp + c0;
        const B key = V::set1(static_cast<float>(j0 + jj + mr));
        for (int nv = 0; nv < N; ++nv) {
          B s = acc[mr][nv];
          if (masked) s = V::keep_le(key, V::load(c.limit + c0 + nv * W), s, V::set1(kNegInf));
          V::store(srow + nv * W, s);
          tmax[nv] = V::max(tmax[nv], s);
        }
      }
    }
  }

  // The PV step's accumulators: O^T columns [d0, d0 + MK) of lane chunk c0, rescaled by alpha
  // (O' = O alpha + P V), and their store back.
  template <int MK, int N>
  [[gnu::always_inline]] static void load_rescaled_o(const Ctx& c, std::int64_t d0, std::int64_t c0, B (&acc)[MK][N]) {
    B al[N];
    for (int nv = 0; nv < N; ++nv) al[nv] = V::load(c.alpha + c0 + nv * W);
    for (int md = 0; md < MK; ++md)
      for (int nv = 0; nv < N; ++nv) acc[md][nv] = V::load(c.ot + (d0 + md) * c.rp + c0 + nv * W) * al[nv];
  }
  template <int MK, int N>
  [[gnu::always_inline]] static void store_o(const Ctx& c, std::int64_t d0, std::int64_t c0, const B (&acc)[MK][N]) {
    for (int md = 0; md < MK; ++md)
      for (int nv = 0; nv < N; ++nv) V::store(c.ot + (d0 + md) * c.rp + c0 + nv * W, acc[md][nv]);
  }

  // O^T columns [d0, d0 + MK) for lane chunk c0: rescale by alpha, add V^T P^T over the tile.
  // Wide: V rows from the widened tile, as qk's K rows.
  template <int MK, int N, bool Wide = false>
  static void pv(const Ctx& c, std::int64_t j0, std::int64_t cols, std::int64_t d0, std::int64_t c0) {
    const TileArgs& a = *c.a;
    B acc[MK][N];
    load_rescaled_o(c, d0, c0, acc);
    using U = std::conditional_t<Wide, float, T>;
    const std::int64_t v_row = Wide ? a.d_v : a.v_row;
    const U* vcol;
    if constexpr (Wide) {
      vcol = c.vw + d0;
      (void)j0;
    } else {
      vcol = static_cast<const T*>(a.v) + (j0 - a.kv_origin) * a.v_row + d0;
    }
    for (std::int64_t j = 0; j < cols; ++j) {
      B pv[N];
      for (int nv = 0; nv < N; ++nv) pv[nv] = V::load(c.st + j * c.rp + c0 + nv * W);
      for (int md = 0; md < MK; ++md) {
        const B vb = V::set1(vcol[j * v_row + md]);
        for (int nv = 0; nv < N; ++nv) acc[md][nv] = V::fma(vb, pv[nv], acc[md][nv]);
      }
    }
    store_o(c, d0, c0, acc);
  }

  // The online-softmax step of one vector of rows (online::rescale): the new max and alpha
  // stored; returns the max the weights subtract.
  [[gnu::always_inline]] static B update_max(const Ctx& c, std::int64_t off, const B& tmax) {
    const online::Step<V> step = online::rescale<V>(V::load(c.m + off), tmax);
    V::store(c.alpha + off, step.alpha);
    V::store(c.m + off, step.m_new);
    return step.m_use;
  }

  // The fused softmax pass for one lane chunk: new max, alpha, P = 2^(S - m'), running sum.
  // Cap (Var): S^T holds u = s / cap and the soft-cap is applied here, to the tile max too
  // (cap tanh is increasing, so it commutes with the max).
  template <int N, bool Cap = false>
  static void softmax(const Ctx& c, std::int64_t cols, std::int64_t c0, const B* tmax) {
    [[maybe_unused]] const typename V::SoftCap coef = V::softcap_coef(Cap ? c.a->var->softcap : 1.0f);
    for (int nv = 0; nv < N; ++nv) {
      const std::int64_t off = c0 + nv * W;
      const B m_use = update_max(c, off, Cap ? V::softcap_u(tmax[nv], coef) : tmax[nv]);
      B sum = V::set1(0.0f);
      for (std::int64_t j = 0; j < cols; ++j) {
        float* s = c.st + j * c.rp + off;
        B x = V::load(s);
        if constexpr (Cap) x = V::softcap_u(x, coef);
        const B p = online::weight<Var, V>(x - m_use);
        V::store(s, p);
        sum = sum + p;
      }
      V::store(c.l + off, online::running_sum(V::load(c.l + off), V::load(c.alpha + off), sum));
    }
  }

  // The Dot form's operations (vec.hpp): instantiated only where Dot is, on an ISA with them.
  using D = Bf16Dot<Arch>;

  // Dot form of qk: S^T rows [jj, jj + MK) for lane chunk c0, from Q^T pairs and K dwords.
  template <int MK, int N>
  static void qk_dot(const Ctx& c, std::int64_t j0, std::int64_t jj, std::int64_t c0, bool masked, B* tmax) {
    const TileArgs& a = *c.a;
    B acc[MK][N];
    for (int mr = 0; mr < MK; ++mr)
      for (int nv = 0; nv < N; ++nv) acc[mr][nv] = V::set1(0.0f);
    const std::uint16_t* krow = static_cast<const std::uint16_t*>(a.k) + (j0 + jj - a.kv_origin) * a.k_row;
    const auto* q2 = reinterpret_cast<const std::uint32_t*>(c.qt) + c0;
    const char* k_next = reinterpret_cast<const char*>(krow + MK * a.k_row);
    const char* v_rows =
        reinterpret_cast<const char*>(static_cast<const std::uint16_t*>(a.v) + (j0 + jj - a.kv_origin) * a.v_row);
    const std::int64_t pairs = (a.d_k + 1) / 2, full = a.d_k / 2;
    for (std::int64_t dp = 0; dp < pairs; ++dp) {
      __builtin_prefetch(k_next + dp * 64);
      __builtin_prefetch(v_rows + dp * 64, 0, 2);
      typename D::Pairs qv[N];
      for (int nv = 0; nv < N; ++nv) qv[nv] = D::load_pairs(q2 + dp * c.rp + nv * W);
      for (int mr = 0; mr < MK; ++mr) {
        std::uint32_t word;
        if (dp < full) {
          std::memcpy(&word, krow + mr * a.k_row + 2 * dp, sizeof word);
        } else {
          word = krow[mr * a.k_row + 2 * dp];  // odd d_k: the last d pairs with zero
        }
        const typename D::Pairs kb = D::broadcast_pair(word);
        for (int nv = 0; nv < N; ++nv) acc[mr][nv] = D::dot(acc[mr][nv], kb, qv[nv]);
      }
    }
    const B scale = V::set1(a.qk_scale);
#pragma GCC unroll 16
    for (int mr = 0; mr < MK; ++mr) {
      const B key = V::set1(static_cast<float>(j0 + jj + mr));
#pragma GCC unroll 8
      for (int nv = 0; nv < N; ++nv) {
        B s = acc[mr][nv] * scale;
        if (masked) s = V::keep_le(key, V::load(c.limit + c0 + nv * W), s, V::set1(kNegInf));
        V::store(c.st + (jj + mr) * c.rp + c0 + nv * W, s);
        tmax[nv] = V::max(tmax[nv], s);
      }
    }
  }

  // Dot form of the softmax: as softmax(), but P is stored rounded to bf16 in key pairs
  // (P2[j/2][r] = P[j][r], P[j+1][r]) over the rows of S^T it has consumed; the sum is of the
  // unrounded values.
  template <int N>
  static void softmax_dot(const Ctx& c, std::int64_t cols, std::int64_t c0, const B* tmax) {
    for (int nv = 0; nv < N; ++nv) {
      const std::int64_t off = c0 + nv * W;
      const B m_use = update_max(c, off, tmax[nv]);
      B sum = V::set1(0.0f);
      for (std::int64_t j = 0; j < cols; j += 2) {
        const B p0 = V::exp2(V::load(c.st + j * c.rp + off) - m_use);
        const B p1 = j + 1 < cols ? V::exp2(V::load(c.st + (j + 1) * c.rp + off) - m_use) : V::set1(0.0f);
        sum = sum + p0 + p1;
        D::store_pairs(reinterpret_cast<std::uint32_t*>(c.st + (j / 2) * c.rp + off), p0, p1);
      }
      V::store(c.l + off, online::running_sum(V::load(c.l + off), V::load(c.alpha + off), sum));
    }
  }

  // Dot form of pv: O^T columns [d0, d0 + MK) += V2 pairs x P2 pairs.
  template <int MK, int N>
  static void pv_dot(const Ctx& c, std::int64_t cols, std::int64_t d0, std::int64_t c0) {
    const TileArgs& a = *c.a;
    B acc[MK][N];
    load_rescaled_o(c, d0, c0, acc);
    const auto* p2 = reinterpret_cast<const std::uint32_t*>(c.st) + c0;
    for (std::int64_t jp = 0; jp < (cols + 1) / 2; ++jp) {
      typename D::Pairs pv[N];
      for (int nv = 0; nv < N; ++nv) pv[nv] = D::load_pairs(p2 + jp * c.rp + nv * W);
      for (int md = 0; md < MK; ++md) {
        const typename D::Pairs vb = D::broadcast_pair(c.v2[jp * a.d_v + d0 + md]);
        for (int nv = 0; nv < N; ++nv) acc[md][nv] = D::dot(acc[md][nv], vb, pv[nv]);
      }
    }
    store_o(c, d0, c0, acc);
  }

  // V rows [j0, j0 + cols) in key pairs: v2[jp][d] = V[j0 + 2jp][d] | V[j0 + 2jp + 1][d] << 16;
  // an odd last key pairs with zero (its P is zero too).
  static void pack_v(const Ctx& c, std::int64_t j0, std::int64_t cols) {
    const TileArgs& a = *c.a;
    const auto* v = static_cast<const std::uint16_t*>(a.v) + (j0 - a.kv_origin) * a.v_row;
    for (std::int64_t jp = 0; jp < (cols + 1) / 2; ++jp) {
      const std::uint16_t* r0 = v + 2 * jp * a.v_row;
      D::interleave_rows(r0, 2 * jp + 1 < cols ? r0 + a.v_row : nullptr, a.d_v, c.v2 + jp * a.d_v);
    }
  }

  // step<K>(i) over [0, n): K = M while M fit, then single steps of 4 and 2 (those below M),
  // then 1. With M = 6, a 128-key tile leaves 2 keys (and d_v = 128 two columns), which
  // one-at-a-time steps would run at a third of the tile's FMAs per load.
  template <int M, class Step>
  static void in_steps(std::int64_t n, const Step& step) {
    std::int64_t i = 0;
    for (; i + M <= n; i += M) step.template operator()<M>(i);
    if constexpr (M > 4) {
      if (i + 4 <= n) {
        step.template operator()<4>(i);
        i += 4;
      }
    }
    if constexpr (M > 2) {
      if (i + 2 <= n) {
        step.template operator()<2>(i);
        i += 2;
      }
    }
    for (; i < n; ++i) step.template operator()<1>(i);
  }

  // chunk<N>(c0) over the padded rows: chunks of NV vectors, then at most one each of the
  // halves (NV is a power of two).
  template <int N = NV, class Chunk>
  [[gnu::always_inline]] static void chunks(std::int64_t rp, const Chunk& chunk, std::int64_t c0 = 0) {
    const std::int64_t end = c0 + (rp - c0) / (N * W) * (N * W);
    for (; c0 < end; c0 += N * W) chunk.template operator()<N>(c0);
    if constexpr (N > 1) chunks<N / 2>(rp, chunk, c0);
  }

  static void run(const TileArgs& a) {
    const std::int64_t rows = a.heads * a.positions;
    Ctx c;
    c.a = &a;
    c.rp = (rows + W - 1) / W * W;
    const TileScratch at(c.rp, a.d_k, a.d_v, a.block_kv);
    c.qt = a.scratch + at.qt;
    c.st = a.scratch + at.st;
    c.ot = a.scratch + at.ot;
    c.m = a.scratch + at.m;
    c.l = a.scratch + at.l;
    c.alpha = a.scratch + at.alpha;
    c.limit = a.scratch + at.limit;
    c.v2 = reinterpret_cast<std::uint32_t*>(a.scratch + at.extra);
    if constexpr (kWiden) {
      c.kw = a.scratch + at.extra;
      c.vw = c.kw + a.block_kv * a.d_k;
    }
    if constexpr (Var) {
      c.lo = a.var->row_scratch;
      c.nslope = c.lo + c.rp;
      c.posf = c.nslope + c.rp;
      c.mt = a.var->mask_tile;
    }

    // Pack Q^T (scaled into the base-2 domain; Dot: in d pairs of bf16, unscaled; Var with a
    // soft-cap: divided by the cap, see modify); padded rows are zero and fully masked.
    float q_scale = a.qk_scale;
    if constexpr (Var) {
      if (a.var->softcap > 0.0f) q_scale = a.qk_scale / a.var->softcap;
    }
    for (std::int64_t r = 0; r < c.rp; ++r) {
      const bool real = r < rows;
      const std::int64_t head = real ? r / a.positions : 0, pos = real ? a.i0 + r % a.positions : 0;
      const std::int64_t qrow = head * a.q_head + pos * a.q_row;
      if constexpr (Dot) {
        const auto* q = static_cast<const std::uint16_t*>(a.q) + qrow;
        auto* q2 = reinterpret_cast<std::uint32_t*>(c.qt);
        for (std::int64_t d = 0; d < a.d_k; d += 2) {
          const std::uint32_t hi = d + 1 < a.d_k ? q[d + 1] : 0u;
          q2[(d / 2) * c.rp + r] = real ? q[d] | hi << 16 : 0u;
        }
      } else {
        with_element_type(a.dtype, [&]<class TQ>(const TQ*) {
          const TQ* q = static_cast<const TQ*>(a.q) + qrow;
          for (std::int64_t d = 0; d < a.d_k; ++d) c.qt[d * c.rp + r] = real ? widen(q[d]) * q_scale : 0.0f;
        });
      }
      c.limit[r] = real ? static_cast<float>(a.causal ? pos + a.causal_offset : a.j_end) : -1.0f;
      c.m[r] = kNegInf;
      c.l[r] = 0.0f;
      if constexpr (Var) variant_row(a, real, head, pos, c.limit[r], c.lo[r], c.nslope[r], c.posf[r], c.m[r], c.l[r]);
    }
    for (std::int64_t i = 0; i < a.d_v * c.rp; ++i) c.ot[i] = 0.0f;
    if constexpr (Var) {
      run_variant(c, rows);
    } else {
      run_plain(c);
    }
    finish(c, rows);
  }

  // Var: the key tiles of the band, each skipped when its mask blocks are all hidden.
  static void run_variant(Ctx& c, std::int64_t rows) {
    const TileArgs& a = *c.a;
    const TileVariant& v = *a.var;
    const std::int64_t last = a.i0 + a.positions - 1;
    const Band first_band = band_of(a, a.i0), last_band = band_of(a, last);
    const std::int64_t j_begin = imax(a.j_begin, first_band.lo), j_end = imin(a.j_end, last_band.hi + 1);
    for (std::int64_t j0 = j_begin, cols = 0; j0 < j_end; j0 += cols) {
      cols = imin(a.block_kv, j_end - j0);
      if constexpr (!kWiden) cols = clip_to_page(a, j0, cols);  // widened tiles gather across blocks
      c.tile_mask = false;
      if (v.blocks != nullptr) {
        // Hidden 16-key blocks are never computed: tiles start after them and end before them.
        j0 = visible_tile(v.blocks, j0, j_end, a.block_kv, cols);
        if (j0 >= j_end) break;
        if constexpr (!kWiden) cols = clip_to_page(a, j0, cols);
        if (tile_class(v.blocks, j0, cols) == 2) {
          c.tile_mask = true;
          mask_tile(a, c.mt, c.rp, rows, j0, cols);
        }
      }
      // Tiles inside every row's band skip the band test (padded rows compute harmless values).
      const bool masked = j0 < last_band.lo || j0 + cols - 1 > first_band.hi;
      ViewSlot view;
      Ctx cv = c;
      cv.a = kWiden ? &a : &page_view(a, j0, sizeof(T), view);
      tile(cv, j0, cols, masked);
    }
  }

  // One key tile [j0, j0 + cols) for every lane chunk: S^T, the softmax step, O^T.
  // kWiden: the tile's K and V widened into scratch first; a paged tile gathers them there from
  // each block it spans (so its tiles need not end at block ends).
  [[gnu::always_inline]] static void tile(const Ctx& c, std::int64_t j0, std::int64_t cols, bool masked) {
    if constexpr (kWiden) {
      const TileArgs& a = *c.a;
      for (std::int64_t s0 = j0, n = 0; s0 < j0 + cols; s0 += n) {
        n = clip_to_page(a, s0, j0 + cols - s0);
        ViewSlot view;
        const TileArgs& b = page_view(a, s0, sizeof(T), view);
        const std::int64_t j = s0 - b.kv_origin, ahead = a.pages != nullptr ? 0 : n;
        widen_rows(static_cast<const T*>(b.k) + j * b.k_row, b.k_row, a.d_k, n, c.kw + (s0 - j0) * a.d_k, b.kq, j, ahead);
        widen_rows(static_cast<const T*>(b.v) + j * b.v_row, b.v_row, a.d_v, n, c.vw + (s0 - j0) * a.d_v, b.vq, j, ahead);
      }
      if (a.pages != nullptr) prefetch_paged_rows(a, j0 + cols, imin(cols, a.j_end - j0 - cols));
    }
    chunks(c.rp, [&]<int N>(std::int64_t c0) {
      B tmax[N];
      for (int nv = 0; nv < N; ++nv) tmax[nv] = V::set1(kNegInf);
      // Var: QK^T unmasked, then (where anything changes the scores) the variants' pass masks
      // and takes the max again; a sink alone, or a window's inner tiles, need no pass.
      in_steps<kSteps<N>>(cols, [&]<int K>(std::int64_t jj) { qk<K, N, kWiden>(c, j0, jj, c0, Var ? false : masked, tmax); });
      bool cap_here = false;  // Var: a soft-cap left for the softmax pass
      if constexpr (Var) {
        if (masked || c.tile_mask || c.a->var->slopes != nullptr) {
          modify<N>(c, j0, cols, c0, masked, tmax);
        } else {
          cap_here = c.a->var->softcap > 0.0f;
        }
      }
      if (cap_here) {
        if constexpr (Var) softmax<N, true>(c, cols, c0, tmax);
      } else {
        softmax<N>(c, cols, c0, tmax);
      }
      in_steps<kSteps<N>>(c.a->d_v, [&]<int K>(std::int64_t d0) { pv<K, N, kWiden>(c, j0, cols, d0, c0); });
    });
  }

  // Paged K/V: keys [j0, j0 + n) of the task's K and V, found through the table, prefetched into
  // L2 (what widen_rows' own prefetch does along a contiguous cache: the next tile's rows).
  static void prefetch_paged_rows(const TileArgs& a, std::int64_t j0, std::int64_t n) {
    const std::int64_t line = 64 / static_cast<std::int64_t>(sizeof(T));
    const std::int64_t k_stored = std::is_same_v<T, q4> ? a.d_k / 2 : a.d_k, v_stored = std::is_same_v<T, q4> ? a.d_v / 2 : a.d_v;
    for (std::int64_t s0 = j0, m = 0; s0 < j0 + n; s0 += m) {
      m = clip_to_page(a, s0, j0 + n - s0);
      ViewSlot view;
      const TileArgs& b = page_view(a, s0, sizeof(T), view);
      const T* k = static_cast<const T*>(b.k);
      const T* v = static_cast<const T*>(b.v);
      for (std::int64_t r = 0; r < m; ++r) {
        for (std::int64_t x = 0; x < k_stored; x += line) __builtin_prefetch(k + r * b.k_row + x, 0, 2);
        for (std::int64_t x = 0; x < v_stored; x += line) __builtin_prefetch(v + r * b.v_row + x, 0, 2);
      }
    }
  }

  // kWiden: rows [0, n) of `src` (rows `row` elements apart, d elements each) widened into
  // dst [n][d]; quantized K/V are dequantized there with their scales (dq: records j0.., counted
  // from the task's kv_origin). The rows `ahead` rows further (the same rows of the next tile;
  // 0: none, as for a paged block, whose next rows belong elsewhere) are prefetched into L2 on
  // the way, so the next widening reads from there (the tile's multiplications give it time).
  static void widen_rows(const T* src, std::int64_t row, std::int64_t d, std::int64_t n, float* dst,
                         [[maybe_unused]] const KvDequant& dq, [[maybe_unused]] std::int64_t j0, std::int64_t ahead) {
    const std::int64_t line = 64 / static_cast<std::int64_t>(sizeof(T)), full = d / W * W;
    const std::int64_t stored = std::is_same_v<T, q4> ? d / 2 : d;  // elements of T per row
    for (std::int64_t j = 0; j < n; ++j) {
      const T* s = src + j * row;
      float* o = dst + j * d;
      for (std::int64_t x = 0; ahead > 0 && x < stored; x += line) __builtin_prefetch(s + ahead * row + x, 0, 2);
      if constexpr (std::is_same_v<T, q4>) {
        // Groups of 32: codes times the group's scale plus its min (d % 32 == 0, W divides 16).
        const std::uint16_t* g = dq.groups + (j0 + j) * dq.groups_row;
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(s);
        for (std::int64_t x = 0; x < d; x += 32) {
          const B scale = V::set1(widen(fp16{g[x / 16]})), min = V::set1(widen(fp16{g[x / 16 + 1]}));
          for (int h = 0; h < 32; h += W)
            V::store(o + x + h, V::fma(V::load_q4(bytes + x / 2 + h % 16, h >= 16 ? 4 : 0), scale, min));
        }
      } else if constexpr (kQuantized<T>) {
        const float f = (dq.tok != nullptr ? dq.tok[(j0 + j) * dq.tok_row] : 1.0f) * dq.head;
        const B fv = V::set1(f);
        std::int64_t x = 0;
        if (dq.chan != nullptr) {
          for (; x < full; x += W) V::store(o + x, V::load(s + x) * fv * V::load(dq.chan + x));
          for (; x < d; ++x) o[x] = widen(s[x]) * f * dq.chan[x];
        } else {
          for (; x < full; x += W) V::store(o + x, V::load(s + x) * fv);
          for (; x < d; ++x) o[x] = widen(s[x]) * f;
        }
      } else {
        std::int64_t x = 0;
        for (; x < full; x += W) V::store(o + x, V::load(s + x));
        for (; x < d; ++x) o[x] = widen(s[x]);
      }
    }
  }

  [[gnu::always_inline]] static void run_plain(const Ctx& c) {
    const TileArgs& a = *c.a;

    // Keys past the last one the last position can see are never visited.
    std::int64_t j_end = a.j_end;
    if (a.causal) j_end = imin(j_end, a.i0 + a.positions - 1 + a.causal_offset + 1);
    const std::int64_t first_full_limit = a.causal ? a.i0 + a.causal_offset : a.j_end;  // min limit over rows

    for (std::int64_t j0 = a.j_begin, cols = 0; j0 < j_end; j0 += cols) {
      cols = imin(a.block_kv, j_end - j0);
      if constexpr (!kWiden) cols = clip_to_page(a, j0, cols);  // widened tiles gather across blocks
      // Only tiles crossing the diagonal apply the mask (padded rows compute harmless zeros).
      const bool masked = j0 + cols - 1 > first_full_limit;
      ViewSlot view;
      Ctx cv = c;
      cv.a = kWiden ? &a : &page_view(a, j0, sizeof(T), view);
      if constexpr (Dot) {
        pack_v(cv, j0, cols);
        chunks(c.rp, [&]<int N>(std::int64_t c0) {
          B tmax[N];
          for (int nv = 0; nv < N; ++nv) tmax[nv] = V::set1(kNegInf);
          in_steps<kSteps<N>>(cols, [&]<int K>(std::int64_t jj) { qk_dot<K, N>(cv, j0, jj, c0, masked, tmax); });
          softmax_dot<N>(cv, cols, c0, tmax);
          in_steps<kSteps<N>>(a.d_v, [&]<int K>(std::int64_t d0) { pv_dot<K, N>(cv, cols, d0, c0); });
        });
        continue;
      }
      tile(cv, j0, cols, masked);
    }
  }

  // Normalised O rows written (or the partial rows of a split): O^T is [d_v][rp].
  [[gnu::always_inline]] static void finish(const Ctx& c, std::int64_t rows) {
    write_rows(*c.a, rows, [&](std::int64_t r, std::int64_t d) { return c.ot[d * c.rp + r]; }, c.m, c.l);
  }
};

// The decoding form, for tasks of at most R rows (one query of a few grouped heads): vectors
// run along d, so every K or V vector loaded serves all R rows and no lane idles.
//   s[r][j] = sum_d Q[r][d] K[j][d]     (two keys per step; lanes summed W keys at a time)
//   o[r][:] <- o[r][:] * alpha[r] + sum_j p[r][j] V[j][:]
// Scratch: TileScratch (tile.hpp) for R rows: Q [R][d_k], scores [R][block_kv + W], O [R][d_v], m, l.
// Var = true: the variants (TileArgs::var) on each score as it is finished, tiles whose mask
// blocks are all hidden skipped.
template <class Arch, int R, class T, bool Var = false>
struct DotKernel {
  using V = Vec<Arch>;
  using B = typename V::B;
  using S = Vec<scalar_arch>;
  static constexpr int W = V::width;
  static constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  static constexpr int kPrefetchRows = 16 * 4 / static_cast<int>(sizeof(T));  // the same bytes ahead for every type
  alignas(64) static constexpr float kLaneIndex[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  // Quantized K/V (vec.hpp's codes): the scales are folded where they cost least (KvDequant):
  // per-channel and per-head K factors into Q once per task, a per-token K scale into each score,
  // per-token and per-head V factors into each weight (a row of factors per tile, `vf`); int4's
  // group scale and min are applied in registers, one FMA per vector of codes.
  static constexpr bool kQ = kQuantized<T>;
  static constexpr bool kQ4 = std::is_same_v<T, q4>;
  static std::int64_t row_bytes(std::int64_t d) { return kQ4 ? d / 2 : d * static_cast<std::int64_t>(sizeof(T)); }
  // The vector of elements [d, d + W) of a stored row (key `key` of the task, for int4's groups).
  [[gnu::always_inline]] static B load_row(const T* row, std::int64_t d, [[maybe_unused]] const KvDequant& dq,
                                           [[maybe_unused]] std::int64_t key) {
    if constexpr (kQ4) {
      const std::uint16_t* g = dq.groups + key * dq.groups_row + 2 * (d / 32);
      const auto* bytes = reinterpret_cast<const std::uint8_t*>(row) + (d / 32) * 16 + d % 16;
      return V::fma(V::load_q4(bytes, d % 32 >= 16 ? 4 : 0), V::set1(widen(fp16{g[0]})), V::set1(widen(fp16{g[1]})));
    } else {
      return V::load(row + d);
    }
  }

  // Paged K/V (qk's prefetches, keys counted from the view's origin): the K rows kPrefetchRows
  // ahead into L1, past the block end found through the table; the V rows of these keys; and,
  // since the blocks lie anywhere and the hardware prefetchers cannot run ahead of a block end as
  // they do along a contiguous cache, K and V rows four times as far ahead into L2.
  template <int NK>
  [[gnu::always_inline]] static void prefetch_paged_keys(const TileArgs& a, std::int64_t j, const T* krow,
                                                         std::int64_t k_bytes, std::int64_t v_bytes) {
    const std::int64_t ahead_end = a.page_end - a.kv_origin;  // keys of this view
    const auto row_of = [&](const void* pool, std::int64_t page_stride, std::int64_t row_stride,
                            std::int64_t key) [[gnu::always_inline]] {
      return reinterpret_cast<const char*>(static_cast<const T*>(pool) + a.pages[key / a.page_size] * page_stride +
                                           (key % a.page_size) * row_stride);
    };
    for (int t = 0; t < NK; ++t) {
      const std::int64_t ahead = j + kPrefetchRows + t, key = ahead + a.kv_origin;
      const char* kp = nullptr;
      if (ahead < ahead_end) {
        kp = reinterpret_cast<const char*>(krow + (kPrefetchRows + t) * a.k_row);
      } else if (key < a.j_end) {
        kp = row_of(a.k_pool, a.k_page, a.k_row, key);
      }
      const char* vp = reinterpret_cast<const char*>(static_cast<const T*>(a.v) + (j + t) * a.v_row);
      for (std::int64_t b = 0; kp != nullptr && b < k_bytes; b += 64) __builtin_prefetch(kp + b);
      for (std::int64_t b = 0; b < v_bytes; b += 64) __builtin_prefetch(vp + b);
      const std::int64_t far = a.kv_origin + j + 4 * kPrefetchRows + t;
      if (far < a.j_end) {
        const char* kf = row_of(a.k_pool, a.k_page, a.k_row, far);
        const char* vf = row_of(a.v_pool, a.v_page, a.v_row, far);
        for (std::int64_t b = 0; b < k_bytes; b += 64) __builtin_prefetch(kf + b, 0, 2);
        for (std::int64_t b = 0; b < v_bytes; b += 64) __builtin_prefetch(vf + b, 0, 2);
      }
    }
  }

  // Dot products of NK keys (from key j) with every row, full vectors of d only; the sums of
  // the lanes land in lanes[r][slot..slot+NK) for a later transpose-add.
  // Paged: K/V through a block view (`a` from page_view; compiled apart so contiguous K/V keep
  // the plain instruction stream). Always inlined: called out of line, the paged form ran at half
  // the speed.
  template <int NK, bool Paged>
  [[gnu::always_inline]] static void qk(const TileArgs& a, const float* q, std::int64_t j, B (*lanes)[W], int slot) {
    B acc[R][NK];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < NK; ++t) acc[r][t] = V::set1(0.0f);
    // Keys are counted from the view's origin here (paged K/V: its block's first key).
    if constexpr (Paged) j -= a.kv_origin;
    const T* krow = static_cast<const T*>(a.k) + j * a.k_row;
    // Decoding streams K and V from memory once: prefetch whole rows (one line per 64 bytes),
    // K a few rows ahead and the V rows the PV pass of this tile will read.
    const std::int64_t k_bytes = row_bytes(a.d_k), v_bytes = row_bytes(a.d_v);
    if constexpr (!Paged) {
      for (int t = 0; t < NK; ++t) {
        const char* kp = reinterpret_cast<const char*>(krow + (kPrefetchRows + t) * a.k_row);
        const char* vp = reinterpret_cast<const char*>(static_cast<const T*>(a.v) + (j + t) * a.v_row);
        for (std::int64_t b = 0; b < k_bytes; b += 64) __builtin_prefetch(kp + b);
        for (std::int64_t b = 0; b < v_bytes; b += 64) __builtin_prefetch(vp + b);
      }
    } else {
      prefetch_paged_keys<NK>(a, j, krow, k_bytes, v_bytes);
    }
    std::int64_t d = 0;
    if constexpr (kQ4) {
      // A group of 32 at a time: its scale and min converted once per key, its 16 bytes loaded
      // once for both nibble halves.
      constexpr int kG = 32 / W;
      for (; d < a.d_k; d += 32) {
        B kv[NK][kG];
        for (int t = 0; t < NK; ++t) {
          const std::uint16_t* g = a.kq.groups + (j + t) * a.kq.groups_row + d / 16;
          const B scale = V::set1(widen(fp16{g[0]})), min = V::set1(widen(fp16{g[1]}));
          const auto* bytes = reinterpret_cast<const std::uint8_t*>(krow + t * a.k_row) + d / 2;
          for (int h = 0; h < kG; ++h) kv[t][h] = V::fma(V::load_q4(bytes + (h * W) % 16, h * W >= 16 ? 4 : 0), scale, min);
        }
        for (int r = 0; r < R; ++r)
          for (int h = 0; h < kG; ++h) {
            const B qv = V::load(q + r * a.d_k + d + h * W);
            for (int t = 0; t < NK; ++t) acc[r][t] = V::fma(qv, kv[t][h], acc[r][t]);
          }
      }
    }
    for (; d + W <= a.d_k; d += W) {
      B kv[NK];
      for (int t = 0; t < NK; ++t) kv[t] = load_row(krow + t * a.k_row, d, a.kq, j + t);
      for (int r = 0; r < R; ++r) {
        const B qv = V::load(q + r * a.d_k + d);
        for (int t = 0; t < NK; ++t) acc[r][t] = V::fma(qv, kv[t], acc[r][t]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < NK; ++t) lanes[r][slot + t] = acc[r][t];
  }

  static void run(const TileArgs& a) {
    const std::int64_t rows = a.heads * a.positions;  // <= R
    static_assert(W <= TileScratch::kScorePad);
    const TileScratch at(R, a.d_k, a.d_v, a.block_kv);
    float* q = a.scratch + at.qt;                      // [R][d_k], scaled, zero rows past `rows`
    float* o = a.scratch + at.ot;                      // [R][d_v]
    const std::int64_t s_stride = a.block_kv + W;
    float* s = a.scratch + at.st;                      // [R][block_kv + W]
    float* m = a.scratch + at.m;
    float* l = a.scratch + at.l;
    [[maybe_unused]] float* vf = a.scratch + at.extra;  // kQ: V factors of a tile [block_kv + W]
    float limit[R];
    [[maybe_unused]] float lo[R], nslope[R], posf[R];  // Var only
    for (int r = 0; r < R; ++r) {
      const bool real = r < rows;
      const std::int64_t head = real ? r / a.positions : 0, pos = real ? a.i0 + r % a.positions : 0;
      with_element_type(a.dtype, [&]<class TQ>(const TQ*) {
        const TQ* qrow = static_cast<const TQ*>(a.q) + head * a.q_head + pos * a.q_row;
        if constexpr (kQ) {
          const float f = a.qk_scale * a.kq.head;
          for (std::int64_t d = 0; d < a.d_k; ++d)
            q[r * a.d_k + d] = real ? widen(qrow[d]) * f * (a.kq.chan != nullptr ? a.kq.chan[d] : 1.0f) : 0.0f;
        } else {
          for (std::int64_t d = 0; d < a.d_k; ++d) q[r * a.d_k + d] = real ? widen(qrow[d]) * a.qk_scale : 0.0f;
        }
      });
      for (std::int64_t d = 0; d < a.d_v; ++d) o[r * a.d_v + d] = 0.0f;
      m[r] = kNegInf;
      l[r] = 0.0f;
      limit[r] = real ? static_cast<float>(a.causal ? pos + a.causal_offset : a.j_end) : -1.0f;
      if constexpr (Var) variant_row(a, real, head, pos, limit[r], lo[r], nslope[r], posf[r], m[r], l[r]);
    }
    std::int64_t j_begin = a.j_begin, j_end = a.j_end;
    if (a.causal) j_end = imin(j_end, a.i0 + a.positions - 1 + a.causal_offset + 1);
    if constexpr (Var) {
      j_begin = imax(j_begin, band_of(a, a.i0).lo);
      j_end = imin(j_end, band_of(a, a.i0 + a.positions - 1).hi + 1);
    }
    const std::int64_t d_full = a.d_k / W * W;

    for (std::int64_t j0 = j_begin, cols = 0; j0 < j_end; j0 += cols) {
      cols = imin(a.block_kv, j_end - j0);
      if constexpr (Var) {
        if (a.var->blocks != nullptr) {  // hidden 16-key blocks are never computed
          j0 = visible_tile(a.var->blocks, j0, j_end, a.block_kv, cols);
          if (j0 >= j_end) break;
        }
      }
      cols = clip_to_page(a, j0, cols);
      // K, V and their scales through `kt` (the tile's block when paged), key j at j - kt.kv_origin.
      ViewSlot view;
      const TileArgs& kt = page_view(a, j0, sizeof(T), view);
      const T* k = static_cast<const T*>(kt.k);  // key kt.kv_origin
      // Scores, W keys at a time: two-key steps fill `lanes`, one transpose-add per row.
      for (std::int64_t g = 0; g < cols; g += W) {
        B lanes[R][W];
        const int n = static_cast<int>(imin(W, cols - g));
        // Quantized K with 32 registers: four keys per step, so each Q vector loaded serves
        // four FMAs (the loads otherwise keep pace with the FMAs once K is a byte an element).
        auto steps = [&]<bool Paged>() [[gnu::always_inline]] {
          int t = 0;
          if constexpr (kQ && W == 16) {
            for (; t + 4 <= n; t += 4) qk<4, Paged>(kt, q, j0 + g + t, lanes, t);
          }
          for (; t + 2 <= n; t += 2) qk<2, Paged>(kt, q, j0 + g + t, lanes, t);
          for (; t < n; ++t) qk<1, Paged>(kt, q, j0 + g + t, lanes, t);
        };
        if (kt.pages == nullptr) {
          steps.template operator()<false>();
        } else {
          steps.template operator()<true>();
        }
        // A whole vector of keys with no d tail, no variant and adjacent token scales (if any)
        // finishes as vectors: a scale vector, one compare against the row's limit.
        [[maybe_unused]] const float* tok = nullptr;
        bool vector_finish = !Var && n == W && d_full == a.d_k;
        if constexpr (kQ) {
          if (kt.kq.tok != nullptr) {
            tok = kt.kq.tok + (j0 + g - kt.kv_origin) * kt.kq.tok_row;
            vector_finish = vector_finish && kt.kq.tok_row == 1;
          }
        }
        for (int r = 0; r < R; ++r) {
          for (int u = n; u < W; ++u) lanes[r][u] = V::set1(0.0f);
          float* srow = s + r * s_stride + g;
          V::hsum_rows(lanes[r], srow);
          if (vector_finish) {
            B dot = V::load(srow);
            if constexpr (kQ) {
              if (tok != nullptr) dot = dot * V::load(tok);
            }
            const B key = V::set1(static_cast<float>(j0 + g)) + V::load(kLaneIndex);
            V::store(srow, V::keep_le(key, V::set1(limit[r]), dot, V::set1(kNegInf)));
            continue;
          }
          for (int u = 0; u < n; ++u) {
            const std::int64_t j = j0 + g + u;
            float dot = srow[u];
            if constexpr (!kQ4) {  // int4: d_k % 32 == 0, no tail
              for (std::int64_t d = d_full; d < a.d_k; ++d) dot += q[r * a.d_k + d] * widen(k[(j - kt.kv_origin) * a.k_row + d]);
            }
            if constexpr (kQ) {
              if (kt.kq.tok != nullptr) dot *= kt.kq.tok[(j - kt.kv_origin) * kt.kq.tok_row];
            }
            if constexpr (Var) {
              srow[u] = modify(a, dot, j, r, rows, limit[r], lo[r], nslope[r], posf[r]);
            } else {
              srow[u] = static_cast<float>(j) <= limit[r] ? dot : kNegInf;
            }
          }
        }
      }
      // Softmax per row over the tile (padded to whole vectors with -inf, which give 0).
      const std::int64_t cols_v = (cols + W - 1) / W * W;
      float alpha[R];
      // Quantized V with per-token or per-head factors: the weights the PV product multiplies
      // are p_j x factor_j (the sum l stays that of the p_j).
      [[maybe_unused]] bool v_factors = false;
      if constexpr (kQ) {
        v_factors = a.vq.tok != nullptr || a.vq.head != 1.0f;
        if (v_factors) {
          for (std::int64_t u = 0; u < cols; ++u)
            vf[u] = (kt.vq.tok != nullptr ? kt.vq.tok[(j0 + u - kt.kv_origin) * kt.vq.tok_row] : 1.0f) * kt.vq.head;
          for (std::int64_t u = cols; u < cols_v; ++u) vf[u] = 0.0f;
        }
      }
      for (int r = 0; r < R; ++r) {
        float* srow = s + r * s_stride;
        for (std::int64_t u = cols; u < cols_v; ++u) srow[u] = kNegInf;
        B vmax = V::set1(kNegInf);
        for (std::int64_t u = 0; u < cols_v; u += W) vmax = V::max(vmax, V::load(srow + u));
        const online::Step<S> step = online::rescale<S>(m[r], V::hmax(vmax));
        alpha[r] = step.alpha;
        B sum = V::set1(0.0f);
        const B mv = V::set1(step.m_use);
        const bool scaled = kQ && v_factors;  // false at compile time for the float types
        for (std::int64_t u = 0; u < cols_v; u += W) {
          const B p = online::weight<Var, V>(V::load(srow + u) - mv);
          V::store(srow + u, scaled ? p * V::load(vf + u) : p);
          sum = sum + p;
        }
        l[r] = online::running_sum(l[r], alpha[r], V::hsum(sum));
        m[r] = step.m_new;
      }
      // O <- O * alpha + P V, two vectors of d_v at a time; a scalar tail for the rest.
      const T* vt = static_cast<const T*>(kt.v) + (j0 - kt.kv_origin) * a.v_row;
      const std::int64_t jv = j0 - kt.kv_origin;  // vt's key, counted as kt's scale records are
      std::int64_t d0 = 0;
      if constexpr (kQ && W == 16) {  // as qk<4>: four vectors of d per broadcast weight
        for (; d0 + 4 * W <= a.d_v; d0 += 4 * W) pv<4>(kt, o, s, s_stride, vt, jv, cols, d0, alpha);
      }
      for (; d0 + 2 * W <= a.d_v; d0 += 2 * W) pv<2>(kt, o, s, s_stride, vt, jv, cols, d0, alpha);
      for (; d0 + W <= a.d_v; d0 += W) pv<1>(kt, o, s, s_stride, vt, jv, cols, d0, alpha);
      if constexpr (!kQ4) {  // int4: d_v % 32 == 0, no tail
        for (; d0 < a.d_v; ++d0) {
          for (int r = 0; r < R; ++r) {
            float acc = o[r * a.d_v + d0] * alpha[r];
            for (std::int64_t j = 0; j < cols; ++j) acc += s[r * s_stride + j] * widen(vt[j * a.v_row + d0]);
            o[r * a.d_v + d0] = acc;
          }
        }
      }
    }

    write_rows(a, rows, [&](std::int64_t r, std::int64_t d) { return o[r * a.d_v + d]; }, m, l);
  }

  // Var: the variants on the score s of key j for row r (variant_score, one row; padded rows
  // past `rows` read no mask).
  static float modify(const TileArgs& a, float s, std::int64_t j, int r, std::int64_t rows, float limit, float lo,
                      float nslope, float posf) {
    const TileVariant& v = *a.var;
    const bool cap = v.softcap > 0.0f;
    const typename S::SoftCap coef = S::softcap_coef(cap ? v.softcap : 1.0f);
    const bool with_mask = v.mask != MaskKind::none && r < rows;
    const float mask =
        with_mask ? mask_value(v, (r / a.positions) * v.mask_head_stride + (a.i0 + r % a.positions) * v.seq_kv + j) : 0.0f;
    return variant_score<S>(cap ? s * (1.0f / v.softcap) : s, cap ? &coef : nullptr, v.slopes != nullptr, nslope,
                            posf, static_cast<float>(j), with_mask ? &mask : nullptr, true, limit, lo);
  }

  template <int NV>
  static void pv(const TileArgs& a, float* o, const float* s, std::int64_t s_stride, const T* vt,
                 [[maybe_unused]] std::int64_t j0, std::int64_t cols, std::int64_t d0, const float* alpha) {
    B acc[R][NV];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < NV; ++t) acc[r][t] = V::load(o + r * a.d_v + d0 + t * W) * V::set1(alpha[r]);
    for (std::int64_t j = 0; j < cols; ++j) {
      B vv[NV];
      for (int t = 0; t < NV; ++t) vv[t] = load_row(vt + j * a.v_row, d0 + t * W, a.vq, j0 + j);
      for (int r = 0; r < R; ++r) {
        const B pb = V::set1(s[r * s_stride + j]);
        for (int t = 0; t < NV; ++t) acc[r][t] = V::fma(pb, vv[t], acc[r][t]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < NV; ++t) V::store(o + r * a.d_v + d0 + t * W, acc[r][t]);
  }
};

template <class Arch>
void exp2_array(const float* x, float* y, std::int64_t n) {
  using V = Vec<Arch>;
  std::int64_t i = 0;
  for (; i + V::width <= n; i += V::width) V::store(y + i, V::exp2(V::load(x + i)));
  for (; i < n; ++i) y[i] = Vec<scalar_arch>::exp2(x[i]);
}

template <class Arch>
void softcap_array(const float* x, float* y, std::int64_t n, float cap) {
  using V = Vec<Arch>;
  std::int64_t i = 0;
  for (; i + V::width <= n; i += V::width) V::store(y + i, V::softcap(V::load(x + i), cap));
  for (; i < n; ++i) y[i] = Vec<scalar_arch>::softcap(x[i], cap);
}

template <class Arch>
double fma_probe(std::int64_t iterations) {
  using V = Vec<Arch>;
  // 12 independent accumulators cover the FMA latency x throughput of current cores.
  constexpr int kChains = 12;
  typename V::B acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = V::set1(static_cast<float>(i) * 1e-3f);
  const auto a = V::set1(0.999999f), b = V::set1(1e-7f);
  for (std::int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kChains; ++i) acc[i] = V::fma(acc[i], a, b);
  }
  float sink[V::width];
  auto total = acc[0];
  for (int i = 1; i < kChains; ++i) total = total + acc[i];
  V::store(sink, total);
  volatile float keep = sink[0];  // the result must look used
  (void)keep;
  return 2.0 * kChains * V::width * static_cast<double>(iterations);
}

}  // namespace
}  // namespace attune::simd

// Defines attune::simd::isa_ops_<name>() for one ISA: its tag type and register tile (MR keys
// or value columns x NV vectors of query rows), smallest first: the decoding forms for 1 and
// up to 4 rows, a narrow tile of 8 x one vector of rows (8 divides the usual head dims), and
// the wide prefill tile; one such set per K/V storage type (float, bf16, fp16).
#define ATTUNE_TILE_SET_V(arch, mr, nv, T, var)                                                                 \
  {{1, &DotKernel<arch, 1, T, var>::run, false, false, kQuantized<T>},                                         \
   {4, &DotKernel<arch, 4, T, var>::run, false, false, kQuantized<T>},                                         \
   {static_cast<int>(TileKernel<arch, 8, 1, T>::L), &TileKernel<arch, 8, 1, T, false, var>::run, false,         \
    TileKernel<arch, 8, 1, T>::kWiden},                                                                        \
   {static_cast<int>(TileKernel<arch, mr, nv, T>::L), &TileKernel<arch, mr, nv, T, false, var>::run, false,      \
    TileKernel<arch, mr, nv, T>::kWiden}}
#define ATTUNE_TILE_SET(arch, mr, nv, T) ATTUNE_TILE_SET_V(arch, mr, nv, T, false)
// An ISA that extends `base` with the bf16 dot form (all-bf16 problems): the base's conversion
// sets as they are, plus the decoding forms (bandwidth-bound: the conversion path) and the dot
// tiles for prefill.
#define ATTUNE_DEFINE_BF16_DOT_ISA_OPS(name, base, arch, mr, nv)                                     \
  namespace attune::simd {                                                                           \
  const IsaOps& isa_ops_##base();                                                                    \
  const IsaOps& isa_ops_##name() {                                                                   \
    static const TileFn dot[4] = {                                                                   \
        {1, &DotKernel<arch, 1, bf16>::run},                                                         \
        {4, &DotKernel<arch, 4, bf16>::run},                                                         \
        {static_cast<int>(TileKernel<arch, 8, 1, bf16, true>::L), &TileKernel<arch, 8, 1, bf16, true>::run, true}, \
        {static_cast<int>(TileKernel<arch, mr, nv, bf16, true>::L), &TileKernel<arch, mr, nv, bf16, true>::run, true}}; \
    static const IsaOps ops = [] {                                                                   \
      IsaOps o = isa_ops_##base();                                                                   \
      o.isa = Isa::name;                                                                             \
      o.bf16_dot = dot;                                                                              \
      return o;                                                                                      \
    }();                                                                                             \
    return ops;                                                                                      \
  }                                                                                                  \
  }
#define ATTUNE_DEFINE_ISA_OPS(name, arch, mr, nv)                                        \
  namespace attune::simd {                                                               \
  const IsaOps& isa_ops_##name() {                                                       \
    static const IsaOps ops{Isa::name,                                                   \
                            {ATTUNE_TILE_SET(arch, mr, nv, float),                       \
                             ATTUNE_TILE_SET(arch, mr, nv, bf16),                        \
                             ATTUNE_TILE_SET(arch, mr, nv, fp16),                        \
                             ATTUNE_TILE_SET(arch, mr, nv, q8),                          \
                             ATTUNE_TILE_SET(arch, mr, nv, q8),                          \
                             ATTUNE_TILE_SET(arch, mr, nv, e4m3),                        \
                             ATTUNE_TILE_SET(arch, mr, nv, e5m2),                        \
                             ATTUNE_TILE_SET(arch, mr, nv, q4)},                         \
                            {ATTUNE_TILE_SET_V(arch, mr, nv, float, true),               \
                             ATTUNE_TILE_SET_V(arch, mr, nv, bf16, true),                \
                             ATTUNE_TILE_SET_V(arch, mr, nv, fp16, true),                \
                             ATTUNE_TILE_SET_V(arch, mr, nv, q8, true),                  \
                             ATTUNE_TILE_SET_V(arch, mr, nv, q8, true),                  \
                             ATTUNE_TILE_SET_V(arch, mr, nv, e4m3, true),                \
                             ATTUNE_TILE_SET_V(arch, mr, nv, e5m2, true),                \
                             ATTUNE_TILE_SET_V(arch, mr, nv, q4, true)},                 \
                            &exp2_array<arch>, &softcap_array<arch>, &fma_probe<arch>};  \
    return ops;                                                                          \
  }                                                                                      \
  }
