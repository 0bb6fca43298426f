// AMX build (compiled with -mamx-tile -mamx-bf16 and AVX-512 F/BW/DQ/BF16): the tile code of
// the `amx` kernel, see amx/amx.hpp for the algorithm and the contract. Everything with
// internal linkage, so no inline function compiled with these flags can be picked by the
// linker for another translation unit.
#include "amx/amx.hpp"

#include "simd/vec.hpp"

#include <immintrin.h>
#include <x86intrin.h>

#include <cmath>
#include <cstring>

namespace attune::amx {
namespace {

using V = simd::Vec<xsimd::avx512f>;  // the softmax's exp2, shared with the flash kernels

// Tile registers: C accumulators 0-3 (a 2 x 2 block of 16 x 16 fp32), A operands 4-5 (16 rows
// of 32 bf16), B operands 6-7 (16 pairs x 16 columns of bf16 pairs, the VNNI layout).
struct alignas(64) TileConfig {
  std::uint8_t palette;
  std::uint8_t start_row;
  std::uint8_t reserved[14];
  std::uint16_t colsb[16];
  std::uint8_t rows[16];
};

void load_tile_config() {
  TileConfig c;
  std::memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  _tile_loadconfig(&c);
}

constexpr std::int64_t kTileElems = 512;  // 16-bit elements of one 16 x 64-byte tile

// Byte offsets of the per-block scratch, 64-byte aligned: packed Q, S (fp32 scores of one
// panel), P (bf16 weights), O (fp32 accumulators), and per-row max, sum and rescale factor.
struct Scratch {
  std::size_t qp, s, p, o, m, l, bytes;
};

std::size_t align64(std::size_t x) { return (x + 63) / 64 * 64; }

Scratch scratch_layout(std::int64_t rows, std::int64_t d_k, std::int64_t d_v, std::int64_t block_kv) {
  const auto r = static_cast<std::size_t>(round_up(rows, kRowStep));
  const auto dk = static_cast<std::size_t>(round_up(d_k, kDimStep));
  const auto dv = static_cast<std::size_t>(round_up(d_v, kDimStep));
  const auto n = static_cast<std::size_t>(block_kv);
  Scratch s;
  s.qp = 0;
  s.s = s.qp + align64(r * dk * 2);
  s.p = s.s + align64(r * n * 4);
  s.o = s.p + align64(r * n * 2);
  s.m = s.o + align64(r * dv * 4);
  s.l = s.m + align64(r * 4);
  s.bytes = s.l + align64(r * 4);
  return s;
}

// S = Q K^T for 32 rows x 32 keys: tdpbf16ps over d_k in steps of 32, the four C tiles stored
// to the panel's score rows.
inline void qk_block(const std::uint16_t* qp, std::int64_t dk_pad, const std::uint16_t* kp_tiles,
                     float* s, std::int64_t s_stride_bytes) {
  const std::int64_t steps = dk_pad / kDimStep;
  const std::int64_t q_stride = dk_pad * 2;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (std::int64_t dc = 0; dc < steps; ++dc) {
    _tile_loadd(4, qp + dc * kDimStep, q_stride);
    _tile_loadd(5, qp + 16 * dk_pad + dc * kDimStep, q_stride);
    _tile_loadd(6, kp_tiles + dc * kTileElems, 64);
    _tile_loadd(7, kp_tiles + (steps + dc) * kTileElems, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  const std::int64_t half = s_stride_bytes / 4 * 16;  // 16 rows down
  _tile_stored(0, s, s_stride_bytes);
  _tile_stored(1, s + 16, s_stride_bytes);
  _tile_stored(2, s + half, s_stride_bytes);
  _tile_stored(3, s + half + 16, s_stride_bytes);
}

// O += P V for 32 rows x 32 output columns over `chunks` chunks of 32 keys; the accumulators
// are loaded from and stored back to the fp32 O rows.
inline void pv_block(const std::uint16_t* p, std::int64_t p_stride_elems, const std::uint16_t* vp_tiles,
                     std::int64_t vp_chunk_elems, std::int64_t chunks, float* o, std::int64_t o_stride_elems) {
  const std::int64_t o_stride = o_stride_elems * 4, p_stride = p_stride_elems * 2;
  float* o_low = o + 16 * o_stride_elems;
  _tile_loadd(0, o, o_stride);
  _tile_loadd(1, o + 16, o_stride);
  _tile_loadd(2, o_low, o_stride);
  _tile_loadd(3, o_low + 16, o_stride);
  for (std::int64_t kk = 0; kk < chunks; ++kk) {
    _tile_loadd(4, p + kk * kTileKeys, p_stride);
    _tile_loadd(5, p + 16 * p_stride_elems + kk * kTileKeys, p_stride);
    _tile_loadd(6, vp_tiles + kk * vp_chunk_elems, 64);
    _tile_loadd(7, vp_tiles + kk * vp_chunk_elems + kTileElems, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, o, o_stride);
  _tile_stored(1, o + 16, o_stride);
  _tile_stored(2, o_low, o_stride);
  _tile_stored(3, o_low + 16, o_stride);
}

inline __mmask16 first_lanes(std::int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// One row's online-softmax step over a panel: `vis` visible keys of `n32` computed (the rest,
// padding or masked, get weight 0). Updates the row's max m and sum l (base 2), writes the bf16
// weights, and rescales the row's O accumulators when the max moved.
template <bool Masked>
inline void softmax_row(const float* s, std::uint16_t* p, std::int64_t vis, std::int64_t n32, float c,
                        float* m, float* l, float* o, std::int64_t dv_pad) {
  const std::int64_t nv = Masked ? (vis + 15) / 16 : n32 / 16;
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (std::int64_t v = 0; v < nv; ++v) {
    const __m512 x = Masked ? _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), first_lanes(vis - 16 * v), s + 16 * v)
                            : _mm512_loadu_ps(s + 16 * v);
    mx = _mm512_max_ps(mx, x);
  }
  const float m_new = std::fmax(*m, _mm512_reduce_max_ps(mx) * c);
  if (m_new == -INFINITY) {  // nothing visible yet (or only -inf scores): weights 0
    std::memset(p, 0, static_cast<std::size_t>(n32) * 2);
    return;
  }
  const __m512 vc = _mm512_set1_ps(c), neg_m = _mm512_set1_ps(-m_new);
  __m512 sum = _mm512_setzero_ps();
  for (std::int64_t v = 0; v < n32 / 16; v += 2) {
    __m512 e0, e1;
    if (Masked) {
      const __mmask16 k0 = v < nv ? first_lanes(vis - 16 * v) : 0;
      const __mmask16 k1 = v + 1 < nv ? first_lanes(vis - 16 * (v + 1)) : 0;
      e0 = _mm512_maskz_mov_ps(k0, V::exp2(V::B(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k0, s + 16 * v), vc, neg_m))));
      e1 = _mm512_maskz_mov_ps(k1, V::exp2(V::B(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k1, s + 16 * v + 16), vc, neg_m))));
    } else {
      e0 = V::exp2(V::B(_mm512_fmadd_ps(_mm512_loadu_ps(s + 16 * v), vc, neg_m)));
      e1 = V::exp2(V::B(_mm512_fmadd_ps(_mm512_loadu_ps(s + 16 * v + 16), vc, neg_m)));
    }
    sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
    _mm512_storeu_si512(p + 16 * v, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
  }
  const float alpha = std::exp2(*m - m_new);  // 0 on the first visible panel (m = -inf)
  *l = *l * alpha + _mm512_reduce_add_ps(sum);
  *m = m_new;
  if (alpha != 1.0f) {
    const __m512 va = _mm512_set1_ps(alpha);
    for (std::int64_t d = 0; d < dv_pad; d += 16) _mm512_storeu_ps(o + d, _mm512_mul_ps(_mm512_loadu_ps(o + d), va));
  }
}

struct Ticker {
  std::uint64_t* stages;
  std::uint64_t last;
  explicit Ticker(std::uint64_t* s) : stages(s), last(s != nullptr ? __rdtsc() : 0) {}
  void lap(Stage stage) {
    if (stages == nullptr) return;
    const std::uint64_t now = __rdtsc();
    stages[stage] += now - last;
    last = now;
  }
};

}  // namespace

std::size_t block_scratch_bytes(std::int64_t rows, std::int64_t d_k, std::int64_t d_v, std::int64_t block_kv) {
  return scratch_layout(rows, d_k, d_v, block_kv).bytes;
}

std::uint64_t ticks() { return __rdtsc(); }

// Tile (kt, dc) of packed K: 16 keys x 32 d_k, row r = d pair (dc*32 + 2r, +1), column = key.
void pack_k(const PackArgs& a) {
  const std::int64_t dk_pad = round_up(a.d, kDimStep), steps = dk_pad / kDimStep;
  const std::int64_t end = round_up(a.key_end, kTileKeys);
  for (std::int64_t kt = a.key_begin / 16; kt < end / 16; ++kt) {
    for (std::int64_t dc = 0; dc < steps; ++dc) {
      auto* tile = reinterpret_cast<std::uint32_t*>(a.dst + (kt * steps + dc) * kTileElems);
      for (std::int64_t c = 0; c < 16; ++c) {
        const std::int64_t key = kt * 16 + c;
        const std::uint16_t* row = a.src + key * a.d + dc * kDimStep;
        const std::int64_t avail = key < a.keys ? a.d - dc * kDimStep : 0;  // valid d_k elements here
        if (avail >= kDimStep) {
          for (std::int64_t r = 0; r < 16; ++r) {
            std::uint32_t pair;
            std::memcpy(&pair, row + 2 * r, 4);
            tile[r * 16 + c] = pair;
          }
        } else {
          for (std::int64_t r = 0; r < 16; ++r) {
            const std::uint32_t lo = 2 * r < avail ? row[2 * r] : 0u;
            const std::uint32_t hi = 2 * r + 1 < avail ? row[2 * r + 1] : 0u;
            tile[r * 16 + c] = lo | (hi << 16);
          }
        }
      }
    }
  }
}

// Tile (kk, dt) of packed V: 32 keys x 16 d_v columns, row r = key pair (kk*32 + 2r, +1),
// column = output column.
void pack_v(const PackArgs& a) {
  const std::int64_t dv_pad = round_up(a.d, kDimStep), tiles = dv_pad / 16;
  const std::int64_t end = round_up(a.key_end, kTileKeys);
  for (std::int64_t kk = a.key_begin / kTileKeys; kk < end / kTileKeys; ++kk) {
    for (std::int64_t r = 0; r < 16; ++r) {
      const std::int64_t k0 = kk * kTileKeys + 2 * r;
      const std::uint16_t* row0 = k0 < a.keys ? a.src + k0 * a.d : nullptr;
      const std::uint16_t* row1 = k0 + 1 < a.keys ? a.src + (k0 + 1) * a.d : nullptr;
      for (std::int64_t dt = 0; dt < tiles; ++dt) {
        std::uint16_t* out = a.dst + (kk * tiles + dt) * kTileElems + r * 32;
        const std::int64_t n = std::min<std::int64_t>(16, std::max<std::int64_t>(a.d - dt * 16, 0));
        const __mmask16 k = first_lanes(n);
        // Interleave the two keys' 16 columns: (row0[c], row1[c]) for c = 0..15.
        const __m512i lo = _mm512_cvtepu16_epi32(row0 != nullptr ? _mm256_maskz_loadu_epi16(k, row0 + dt * 16) : _mm256_setzero_si256());
        const __m512i hi = _mm512_cvtepu16_epi32(row1 != nullptr ? _mm256_maskz_loadu_epi16(k, row1 + dt * 16) : _mm256_setzero_si256());
        _mm512_storeu_si512(out, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
      }
    }
  }
}

void run_block(const BlockArgs& a) {
  Ticker tick(a.stages);
  const Scratch lay = scratch_layout(a.heads * a.positions, a.d_k, a.d_v, a.block_kv);
  auto* base = static_cast<unsigned char*>(a.scratch);
  auto* qp = reinterpret_cast<std::uint16_t*>(base + lay.qp);
  auto* s = reinterpret_cast<float*>(base + lay.s);
  auto* p = reinterpret_cast<std::uint16_t*>(base + lay.p);
  auto* o = reinterpret_cast<float*>(base + lay.o);
  auto* m = reinterpret_cast<float*>(base + lay.m);
  auto* l = reinterpret_cast<float*>(base + lay.l);
  const std::int64_t rows = a.heads * a.positions, rows_pad = round_up(rows, kRowStep);
  const std::int64_t dk_pad = round_up(a.d_k, kDimStep), dv_pad = round_up(a.d_v, kDimStep);
  const std::int64_t n_max = a.block_kv;
  const std::int64_t ksteps = dk_pad / kDimStep, vtiles = dv_pad / 16;

  // Q rows packed with zero padding (rows to 32, d_k to 32); padding rows get zero weights.
  std::memset(qp, 0, static_cast<std::size_t>(rows_pad * dk_pad) * 2);
  for (std::int64_t r = 0; r < rows; ++r)
    std::memcpy(qp + r * dk_pad, a.q + (r / a.positions) * a.q_head_stride + (a.i0 + r % a.positions) * a.d_k,
                static_cast<std::size_t>(a.d_k) * 2);
  std::memset(o, 0, static_cast<std::size_t>(rows_pad * dv_pad) * 4);
  std::memset(p + rows * n_max, 0, static_cast<std::size_t>((rows_pad - rows) * n_max) * 2);
  for (std::int64_t r = 0; r < rows_pad; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  load_tile_config();
  tick.lap(kOther);

  for (std::int64_t j0 = 0; j0 < a.kv_end; j0 += n_max) {
    const std::int64_t n = std::min(n_max, a.kv_end - j0), n32 = round_up(n, kTileKeys);
    for (std::int64_t rb = 0; rb < rows_pad; rb += kRowStep)
      for (std::int64_t kc = 0; kc < n32; kc += kTileKeys)
        qk_block(qp + rb * dk_pad, dk_pad, a.kp + ((j0 + kc) / 16) * ksteps * kTileElems, s + rb * n_max + kc,
                 n_max * 4);
    tick.lap(kQk);

    for (std::int64_t r = 0; r < rows; ++r) {
      std::int64_t vis = n;
      if (a.causal) vis = std::min(vis, a.i0 + r % a.positions + a.causal_offset + 1 - j0);
      float* orow = o + r * dv_pad;
      std::uint16_t* prow = p + r * n_max;
      if (vis <= 0) {
        std::memset(prow, 0, static_cast<std::size_t>(n32) * 2);
      } else if (vis == n32) {
        softmax_row<false>(s + r * n_max, prow, vis, n32, a.qk_scale, m + r, l + r, orow, dv_pad);
      } else {
        softmax_row<true>(s + r * n_max, prow, vis, n32, a.qk_scale, m + r, l + r, orow, dv_pad);
      }
    }
    tick.lap(kSoftmax);

    for (std::int64_t rb = 0; rb < rows_pad; rb += kRowStep)
      for (std::int64_t dt = 0; dt < vtiles; dt += 2)
        pv_block(p + rb * n_max, n_max, a.vp + (j0 / kTileKeys * vtiles + dt) * kTileElems, vtiles * kTileElems,
                 n32 / kTileKeys, o + rb * dv_pad + dt * 16, dv_pad);
    tick.lap(kPv);
  }
  _tile_release();

  // O / l, rounded once to bf16; rows that saw no key are zeros.
  for (std::int64_t r = 0; r < rows; ++r) {
    const __m512 inv = _mm512_set1_ps(l[r] > 0.0f ? 1.0f / l[r] : 0.0f);
    std::uint16_t* out = a.out + (r / a.positions) * a.out_head_stride + (a.i0 + r % a.positions) * a.d_v;
    for (std::int64_t d = 0; d < a.d_v; d += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(o + r * dv_pad + d), inv));
      _mm256_mask_storeu_epi16(out + d, first_lanes(a.d_v - d), reinterpret_cast<__m256i>(h));
    }
  }
  tick.lap(kOther);
}

double tdp_probe(std::int64_t iterations) {
  load_tile_config();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(6);
  for (std::int64_t i = 0; i < iterations; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 6);
    _tile_dpbf16ps(2, 4, 6);
    _tile_dpbf16ps(3, 4, 6);
  }
  alignas(64) float sink[256];
  _tile_stored(0, sink, 64);  // keeps the loop's results alive
  _tile_release();
  return static_cast<double>(iterations) * 4.0 * 2.0 * 16 * 16 * 32 + sink[0];
}

}  // namespace attune::amx
