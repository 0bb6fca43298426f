// AMX build (compiled with -mamx-tile -mamx-bf16 and AVX-512 F/BW/DQ/BF16): the tile code of
// the `amx` kernel, see amx/amx.hpp for the algorithm and the contract. Every helper has
// internal linkage (anonymous namespaces); only the entry points amx/amx.hpp declares are
// external, so no inline function compiled with these flags can be picked by the linker for
// another translation unit.
#include "amx/amx.hpp"
#include "detail/online_softmax.hpp"

#include <immintrin.h>
#include <x86intrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace attune::amx {
namespace {

namespace online = detail::online;  // the softmax's numeric policy

// 2^x for the softmax weights, which are rounded to bf16 (unit roundoff 2^-9 = 2e-3) before
// P V: a degree-3 polynomial for 2^f on [-0.5, 0.5] (relative error 1.1e-4, fitted for this
// kernel by least squares on Chebyshev nodes with p(0) = 1) is 17x finer than that rounding, and
// the row sum sees the same values, so the normalised weights keep only that relative error.
// n = round(x) and p * 2^n are one instruction each; x must be finite. Inputs below -126 give
// 0 because run_block sets flush-to-zero (no subnormal ever reaches the sum or the tiles).
constexpr float kExp2P3[3] = {0.69336860126f, 0.24221783810f, 0.054592824742f};

inline __m512 exp2_p3(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kExp2P3[2]), f, _mm512_set1_ps(kExp2P3[1]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2P3[0]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// Flush-to-zero and denormals-are-zero for the block's vector code (the tile unit flushes
// anyway), restored on exit: the caller's floating-point environment is left as it was.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned saved_;
};

// Tile registers: C accumulators 0-3 (a 2 x 2 block of 16 x 16 fp32), A operands 4-5 (16 rows
// of 32 bf16), B operands 6-7 (16 pairs x 16 columns of bf16 pairs, the VNNI layout).
struct alignas(64) TileConfig {
  std::uint8_t palette;
  std::uint8_t start_row;
  std::uint8_t reserved[14];
  std::uint16_t colsb[16];
  std::uint8_t rows[16];
};

constexpr TileConfig make_tile_config() {
  TileConfig c{};
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  return c;
}

// A static object: GCC's _tile_loadconfig tells the compiler it reads only the first 8 bytes of
// its operand, so a configuration built on the stack right before it may be partly optimised away.
// constexpr: constant-initialised data, never a static initializer, which this translation unit
// would compile with AVX-512 instructions and run at start-up on every CPU.
constexpr TileConfig kTileConfig = make_tile_config();

void load_tile_config() { _tile_loadconfig(&kTileConfig); }

constexpr std::int64_t kTileElems = 512;
constexpr int kRowGroup = 4;  // softmax rows interleaved  // 16-bit elements of one 16 x 64-byte tile

// Byte offsets of the per-block scratch, 64-byte aligned: packed Q, two S buffers (fp32 scores
// of a panel: the pipeline computes the next panel's while the softmax reads this one's), two P
// buffers (bf16 weights), O (fp32 accumulators), and per-row max, sum and rescale factor.
struct Scratch {
  std::size_t qp, s, p, o, m, l, alpha, ring, bytes;
  std::size_t s_bytes, p_bytes;  // one buffer of each
  std::size_t ring_k, ring_slot;  // per-panel packing: K then V of a panel, three slots
};

std::size_t align64(std::size_t x) { return (x + 63) / 64 * 64; }

Scratch scratch_layout(std::int64_t rows, std::int64_t d_k, std::int64_t d_v, std::int64_t block_kv, bool per_panel) {
  const auto r = static_cast<std::size_t>(round_up(rows, kRowStep));
  const auto dk = static_cast<std::size_t>(round_up(d_k, kDimStep));
  const auto dv = static_cast<std::size_t>(round_up(d_v, kDimStep));
  const auto n = static_cast<std::size_t>(block_kv);
  Scratch s;
  s.s_bytes = align64(r * n * 4);
  s.p_bytes = align64(r * n * 2);
  s.qp = 0;
  s.s = s.qp + align64(r * dk * 2);
  s.p = s.s + 2 * s.s_bytes;
  s.o = s.p + 2 * s.p_bytes;
  s.m = s.o + align64(r * dv * 4);
  s.l = s.m + align64(r * 4);
  s.alpha = s.l + align64(r * 4);
  s.ring = s.alpha + align64(r * 4);
  s.ring_k = align64(static_cast<std::size_t>(packed_k_elements(block_kv, d_k)) * 2);
  s.ring_slot = s.ring_k + align64(static_cast<std::size_t>(packed_v_elements(block_kv, d_v)) * 2);
  s.bytes = s.ring + (per_panel ? 3 * s.ring_slot : 0);
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
// are loaded from (unless `first`) and stored back to the fp32 O rows.
inline void pv_block(const std::uint16_t* p, std::int64_t p_stride_elems, const std::uint16_t* vp_tiles,
                     std::int64_t vp_chunk_elems, std::int64_t chunks, float* o, std::int64_t o_stride_elems,
                     bool first) {
  const std::int64_t o_stride = o_stride_elems * 4, p_stride = p_stride_elems * 2;
  float* o_low = o + 16 * o_stride_elems;
  if (first) {  // the first panel starts the accumulators: O is not read (nor zeroed before)
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, o, o_stride);
    _tile_loadd(1, o + 16, o_stride);
    _tile_loadd(2, o_low, o_stride);
    _tile_loadd(3, o_low + 16, o_stride);
  }
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
// weights, and returns the factor the row's O accumulators must be scaled by before this
// panel's P V is added (1 when the max did not move).
template <bool Masked>
inline float softmax_row(const float* s, std::uint16_t* p, std::int64_t vis, std::int64_t n32, float c,
                         float* m, float* l) {
  const std::int64_t nv = Masked ? (vis + 15) / 16 : n32 / 16;
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (std::int64_t v = 0; v < nv; ++v) {
    const __m512 x = Masked ? _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), first_lanes(vis - 16 * v), s + 16 * v)
                            : _mm512_loadu_ps(s + 16 * v);
    mx = _mm512_max_ps(mx, x);
  }
  const float m_new = std::fmax(*m, _mm512_reduce_max_ps(mx) * c);
  if (online::sees_no_key(m_new)) {  // nothing visible yet (or only -inf scores): weights 0
    std::memset(p, 0, static_cast<std::size_t>(n32) * 2);
    return 1.0f;
  }
  const __m512 vc = _mm512_set1_ps(c), neg_m = _mm512_set1_ps(-m_new);
  __m512 sum = _mm512_setzero_ps();
  for (std::int64_t v = 0; v < n32 / 16; v += 2) {
    __m512 e0, e1;
    if (Masked) {
      const __mmask16 k0 = v < nv ? first_lanes(vis - 16 * v) : 0;
      const __mmask16 k1 = v + 1 < nv ? first_lanes(vis - 16 * (v + 1)) : 0;
      e0 = _mm512_maskz_mov_ps(k0, exp2_p3((_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k0, s + 16 * v), vc, neg_m))));
      e1 = _mm512_maskz_mov_ps(k1, exp2_p3((_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k1, s + 16 * v + 16), vc, neg_m))));
    } else {
      e0 = exp2_p3((_mm512_fmadd_ps(_mm512_loadu_ps(s + 16 * v), vc, neg_m)));
      e1 = exp2_p3((_mm512_fmadd_ps(_mm512_loadu_ps(s + 16 * v + 16), vc, neg_m)));
    }
    sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
    _mm512_storeu_si512(p + 16 * v, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
  }
  const float alpha = online::rescale_factor(*m, m_new);  // 0 on the first visible panel (m = -inf)
  *l = online::running_sum(*l, alpha, _mm512_reduce_add_ps(sum));
  *m = m_new;
  return alpha;
}

// Lanes [0, n) of 16 (none for n <= 0, all for n >= 16).
inline __mmask16 lanes_below(std::int64_t n) {
  return n <= 0 ? static_cast<__mmask16>(0) : n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// R rows of a panel at once, interleaved: the arithmetic of softmax_row with R independent max,
// exp and sum chains in flight (one row's loop is bound by its own dependencies, not by the
// vector units). Full: every one of the n32 keys visible to every row; else row i sees vis[i]
// (> 0) keys, the rest get weight 0.
template <int R, bool Full>
inline void softmax_rows_r(const float* s, std::int64_t s_stride, std::uint16_t* p, std::int64_t p_stride,
                           std::int64_t n32, const std::int64_t* vis, float c, float* m, float* l, float* alpha) {
  __m512 mx[R];
  for (int i = 0; i < R; ++i) mx[i] = _mm512_set1_ps(-INFINITY);
  for (std::int64_t v = 0; v < n32; v += 16)
    for (int i = 0; i < R; ++i) {
      const float* x = s + i * s_stride + v;
      mx[i] = _mm512_max_ps(mx[i], Full ? _mm512_loadu_ps(x)
                                        : _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes_below(vis[i] - v), x));
    }
  __m512 neg_m[R], sum[R];
  float m_new[R];
  for (int i = 0; i < R; ++i) {
    m_new[i] = std::fmax(m[i], _mm512_reduce_max_ps(mx[i]) * c);
    neg_m[i] = _mm512_set1_ps(-m_new[i]);
    sum[i] = _mm512_setzero_ps();
  }
  const __m512 vc = _mm512_set1_ps(c);
  for (std::int64_t v = 0; v < n32; v += 32) {
    for (int i = 0; i < R; ++i) {
      const float* x = s + i * s_stride + v;
      __m512 e0, e1;
      if (Full) {
        e0 = exp2_p3(_mm512_fmadd_ps(_mm512_loadu_ps(x), vc, neg_m[i]));
        e1 = exp2_p3(_mm512_fmadd_ps(_mm512_loadu_ps(x + 16), vc, neg_m[i]));
      } else {
        const __mmask16 k0 = lanes_below(vis[i] - v), k1 = lanes_below(vis[i] - v - 16);
        e0 = _mm512_maskz_mov_ps(k0, exp2_p3(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k0, x), vc, neg_m[i])));
        e1 = _mm512_maskz_mov_ps(k1, exp2_p3(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(k1, x + 16), vc, neg_m[i])));
      }
      sum[i] = _mm512_add_ps(sum[i], _mm512_add_ps(e0, e1));
      _mm512_storeu_si512(p + i * p_stride + v, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
    }
  }
  for (int i = 0; i < R; ++i) {
    alpha[i] = online::rescale_factor(m[i], m_new[i]);  // 0 on the first panel (m = -inf)
    l[i] = online::running_sum(l[i], alpha[i], _mm512_reduce_add_ps(sum[i]));
    m[i] = m_new[i];
  }
}

// The lazy max: once a row has a max m from earlier panels, a panel is exponentiated against
// that m in one pass (no max pass first) while its own max is tracked; a row is kept as long as
// its max rose by at most kMaxRise (base 2: weights up to 2^8, far inside float32 and bf16), and
// then neither the reference nor O changes. A row whose max rose further is left to the caller
// to redo against its new max. R rows with every key visible; returns the kept rows' bits.
constexpr float kMaxRise = 8.0f;

template <int R>
inline unsigned softmax_rows_lazy(const float* s, std::int64_t s_stride, std::uint16_t* p, std::int64_t p_stride,
                                  std::int64_t n32, float c, const float* m, float* l, float* alpha) {
  __m512 neg_m[R], sum[R], mx[R];
  for (int i = 0; i < R; ++i) {
    neg_m[i] = _mm512_set1_ps(-m[i]);
    sum[i] = _mm512_setzero_ps();
    mx[i] = _mm512_set1_ps(-INFINITY);
  }
  const __m512 vc = _mm512_set1_ps(c);
  for (std::int64_t v = 0; v < n32; v += 32) {
    for (int i = 0; i < R; ++i) {
      const __m512 x0 = _mm512_loadu_ps(s + i * s_stride + v), x1 = _mm512_loadu_ps(s + i * s_stride + v + 16);
      mx[i] = _mm512_max_ps(mx[i], _mm512_max_ps(x0, x1));
      const __m512 e0 = exp2_p3(_mm512_fmadd_ps(x0, vc, neg_m[i]));
      const __m512 e1 = exp2_p3(_mm512_fmadd_ps(x1, vc, neg_m[i]));
      sum[i] = _mm512_add_ps(sum[i], _mm512_add_ps(e0, e1));
      _mm512_storeu_si512(p + i * p_stride + v, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
    }
  }
  unsigned kept = 0;
  for (int i = 0; i < R; ++i) {
    if (_mm512_reduce_max_ps(mx[i]) * c - m[i] <= kMaxRise) {  // false for NaN: redone, poisons as it should
      l[i] += _mm512_reduce_add_ps(sum[i]);
      alpha[i] = 1.0f;
      kept |= 1u << i;
    }
  }
  return kept;
}

inline void scale_row(float* o, std::int64_t dv_pad, float alpha) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (std::int64_t d = 0; d < dv_pad; d += 16) _mm512_storeu_ps(o + d, _mm512_mul_ps(_mm512_loadu_ps(o + d), va));
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

std::size_t block_scratch_bytes(std::int64_t rows, std::int64_t d_k, std::int64_t d_v, std::int64_t block_kv,
                                bool per_panel) {
  return scratch_layout(rows, d_k, d_v, block_kv, per_panel).bytes;
}

std::uint64_t ticks() { return __rdtsc(); }

namespace {

// 16 rows of 16 dwords (row i at src + i * stride dwords) transposed into dst (row c = dword c of
// every source row): unpacks within 128-bit lanes, then two rounds of lane shuffles.
inline void transpose16x16(const std::uint32_t* src, std::int64_t stride, std::uint32_t* dst) {
  __m512i r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + i * stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // lane j of r[i + k]: column 4j + k of rows i..i+3
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int k = 0; k < 4; ++k) {
    const __m512i v0 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x88), w0 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xDD);
    const __m512i v1 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x88), w1 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xDD);
    _mm512_storeu_si512(dst + (0 + k) * 16, _mm512_shuffle_i32x4(v0, v1, 0x88));
    _mm512_storeu_si512(dst + (8 + k) * 16, _mm512_shuffle_i32x4(v0, v1, 0xDD));
    _mm512_storeu_si512(dst + (4 + k) * 16, _mm512_shuffle_i32x4(w0, w1, 0x88));
    _mm512_storeu_si512(dst + (12 + k) * 16, _mm512_shuffle_i32x4(w0, w1, 0xDD));
  }
}

}  // namespace

// Tile (kt, dc) of packed K: 16 keys x 32 d_k, row r = d pair (dc*32 + 2r, +1), column = key:
// a 16 x 16 transpose of 32-bit pairs, element by element only at the edges (last keys, d_k
// not a multiple of 32).
void pack_k(const PackArgs& a) {
  const std::int64_t dk_pad = round_up(a.d, kDimStep), steps = dk_pad / kDimStep;
  const std::int64_t end = round_up(a.key_end, kTileKeys);
  const bool pairs_aligned = a.d % 2 == 0;  // rows start on a 32-bit boundary
  for (std::int64_t kt = a.key_begin / 16; kt < end / 16; ++kt) {
    for (std::int64_t dc = 0; dc < steps; ++dc) {
      auto* tile = reinterpret_cast<std::uint32_t*>(a.dst + (kt * steps + dc) * kTileElems);
      if (pairs_aligned && kt * 16 + 16 <= a.keys && (dc + 1) * kDimStep <= a.d) {
        transpose16x16(reinterpret_cast<const std::uint32_t*>(a.src + kt * 16 * a.d + dc * kDimStep), a.d / 2, tile);
        continue;
      }
      for (std::int64_t c = 0; c < 16; ++c) {
        const std::int64_t key = kt * 16 + c;
        const std::uint16_t* row = a.src + key * a.d + dc * kDimStep;
        const std::int64_t avail = key < a.keys ? a.d - dc * kDimStep : 0;  // valid d_k elements here
        for (std::int64_t r = 0; r < 16; ++r) {
          const std::uint32_t lo = 2 * r < avail ? row[2 * r] : 0u;
          const std::uint32_t hi = 2 * r + 1 < avail ? row[2 * r + 1] : 0u;
          tile[r * 16 + c] = lo | (hi << 16);
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

namespace {

// The panel loop as a software pipeline over steps (panel j, row block rb): the softmax of
// rows rb of panel j runs on the vector units while the tile unit works through the step's
// queue, QK^T of rows rb for panel j + 1 and P V of the previous row block, each a 32 x 32
// block issued between softmax rows so both stay inside the out-of-order window. Rows rb's O
// is rescaled after its previous P V and before its next. With stage timing on, the same work
// runs serialized (QK^T, softmax, P V per panel) so each stage can be timed alone.
class Block {
 public:
  explicit Block(const BlockArgs& a)
      : a_(a), lay_(scratch_layout(a.heads * a.positions, a.d_k, a.d_v, a.block_kv, a.kp == nullptr)) {
    auto* base = static_cast<unsigned char*>(a.scratch);
    qp_ = reinterpret_cast<std::uint16_t*>(base + lay_.qp);
    s_[0] = reinterpret_cast<float*>(base + lay_.s);
    s_[1] = reinterpret_cast<float*>(base + lay_.s + lay_.s_bytes);
    p_[0] = reinterpret_cast<std::uint16_t*>(base + lay_.p);
    p_[1] = reinterpret_cast<std::uint16_t*>(base + lay_.p + lay_.p_bytes);
    o_ = reinterpret_cast<float*>(base + lay_.o);
    m_ = reinterpret_cast<float*>(base + lay_.m);
    l_ = reinterpret_cast<float*>(base + lay_.l);
    alpha_ = reinterpret_cast<float*>(base + lay_.alpha);
    ring_ = base + lay_.ring;
    rows_ = a.heads * a.positions;
    rows_pad_ = round_up(rows_, kRowStep);
    dk_pad_ = round_up(a.d_k, kDimStep);
    dv_pad_ = round_up(a.d_v, kDimStep);
    n_max_ = a.block_kv;
    // Causal: panels of block_kv keys up to the last key every row sees, then the diagonal
    // region (at most `rows` wide beyond it) in panels of its own, so the keys computed and
    // masked stay within one row block's width of the diagonal instead of a whole panel's.
    full_end_ = a.kv_end;
    if (a.causal) {
      const std::int64_t first_row_sees = std::clamp<std::int64_t>(a.i0 + a.causal_offset + 1, 0, a.kv_end);
      full_end_ = first_row_sees / kTileKeys * kTileKeys;
    }
    full_panels_ = (full_end_ + n_max_ - 1) / n_max_;
    panels_ = full_panels_ + (a.kv_end - full_end_ + n_max_ - 1) / n_max_;
  }

  void run() {
    Ticker tick(a_.stages);
    prepare();
    tick.lap(kOther);
    if (a_.stages != nullptr) {
      for (std::int64_t j = 0; j < panels_; ++j) {
        pack_panel(j);
        tick.lap(kPack);
        for (std::int64_t rb = 0; rb < rows_pad_; rb += kRowStep) qk_rows(j, rb, 0, n32(j));
        tick.lap(kQk);
        for (std::int64_t rb = 0; rb < rows_pad_; rb += kRowStep) {
          softmax_rows(j, rb, [] {});
          rescale_rows(j, rb);
        }
        tick.lap(kSoftmax);
        for (std::int64_t rb = 0; rb < rows_pad_; rb += kRowStep) pv_rows(j, rb, 0, dv_pad_);
        tick.lap(kPv);
      }
    } else {
      pipelined();
    }
    finish();
    tick.lap(kOther);
  }

 private:
  std::int64_t start(std::int64_t j) const {
    return j < full_panels_ ? j * n_max_ : full_end_ + (j - full_panels_) * n_max_;
  }
  std::int64_t n_of(std::int64_t j) const {
    return std::min(n_max_, (j < full_panels_ ? full_end_ : a_.kv_end) - start(j));
  }
  std::int64_t n32(std::int64_t j) const { return round_up(n_of(j), kTileKeys); }

  // Panel j's packed K and V tiles: in the KV head's packed copy, or in ring slot j % 3.
  const std::uint16_t* k_panel(std::int64_t j) const {
    if (a_.kp != nullptr) return a_.kp + (start(j) / 16) * (dk_pad_ / kDimStep) * kTileElems;
    return reinterpret_cast<const std::uint16_t*>(ring_ + static_cast<std::size_t>(j % 3) * lay_.ring_slot);
  }
  const std::uint16_t* v_panel(std::int64_t j) const {
    if (a_.vp != nullptr) return a_.vp + (start(j) / kTileKeys) * (dv_pad_ / 16) * kTileElems;
    return reinterpret_cast<const std::uint16_t*>(ring_ + static_cast<std::size_t>(j % 3) * lay_.ring_slot + lay_.ring_k);
  }
  // Per-panel packing: K and V of panel j into its ring slot (nothing when packed per head).
  void pack_panel(std::int64_t j) {
    if (a_.kp != nullptr || j >= panels_) return;
    auto* slot = reinterpret_cast<std::uint16_t*>(ring_ + static_cast<std::size_t>(j % 3) * lay_.ring_slot);
    PackArgs p;
    p.keys = a_.seq_kv - start(j);  // keys from the panel's first, so its tiles start at 0
    p.key_begin = 0;
    p.key_end = n_of(j);
    p.src = a_.k_raw + start(j) * a_.d_k;
    p.d = a_.d_k;
    p.dst = slot;
    pack_k(p);
    p.src = a_.v_raw + start(j) * a_.d_v;
    p.d = a_.d_v;
    p.dst = slot + lay_.ring_k / 2;
    pack_v(p);
  }

  // Q rows packed with zero padding (rows to 32, d_k to 32); padding rows get zero weights.
  void prepare() {
    for (std::int64_t r = 0; r < rows_; ++r) {
      std::uint16_t* row = qp_ + r * dk_pad_;
      std::memcpy(row, a_.q + (r / a_.positions) * a_.q_head_stride + (a_.i0 + r % a_.positions) * a_.d_k,
                  static_cast<std::size_t>(a_.d_k) * 2);
      std::memset(row + a_.d_k, 0, static_cast<std::size_t>(dk_pad_ - a_.d_k) * 2);
    }
    std::memset(qp_ + rows_ * dk_pad_, 0, static_cast<std::size_t>((rows_pad_ - rows_) * dk_pad_) * 2);
    if (panels_ == 0) std::memset(o_, 0, static_cast<std::size_t>(rows_pad_ * dv_pad_) * 4);  // no key at all
    for (std::uint16_t* p : p_) std::memset(p + rows_ * n_max_, 0, static_cast<std::size_t>((rows_pad_ - rows_) * n_max_) * 2);
    for (std::int64_t r = 0; r < rows_pad_; ++r) {
      m_[r] = -INFINITY;
      l_[r] = 0.0f;
      alpha_[r] = 1.0f;
    }
    load_tile_config();
  }

  // S rows [rb, rb + 32) of panel j, keys [kc0, kc1) of the panel (multiples of 32).
  void qk_rows(std::int64_t j, std::int64_t rb, std::int64_t kc0, std::int64_t kc1) {
    const std::int64_t ksteps = dk_pad_ / kDimStep;
    for (std::int64_t kc = kc0; kc < kc1; kc += kTileKeys)
      qk_block(qp_ + rb * dk_pad_, dk_pad_, k_panel(j) + (kc / 16) * ksteps * kTileElems,
               s_[j % 2] + rb * n_max_ + kc, n_max_ * 4);
  }

  // O rows [rb, rb + 32) += P V of panel j, output columns [d0, d1) (multiples of 32).
  void pv_rows(std::int64_t j, std::int64_t rb, std::int64_t d0, std::int64_t d1) {
    const std::int64_t vtiles = dv_pad_ / 16;
    for (std::int64_t d = d0; d < d1; d += 32)
      pv_block(p_[j % 2] + rb * n_max_, n_max_, v_panel(j) + (d / 16) * kTileElems,
               vtiles * kTileElems, n32(j) / kTileKeys, o_ + rb * dv_pad_ + d, dv_pad_, j == 0);
  }

  // The softmax of rows [rb, rb + 32) of panel j; between rows it calls between() so the caller
  // can feed the tile unit.
  template <class Between>
  void softmax_rows(std::int64_t j, std::int64_t rb, const Between& between) {
    const std::int64_t j0 = start(j), n = n_of(j), n32 = round_up(n, kTileKeys);
    const std::int64_t end = std::min(rb + kRowStep, rows_);
    auto visible = [&](std::int64_t r) {
      return a_.causal ? std::min(n, a_.i0 + r % a_.positions + a_.causal_offset + 1 - j0) : n;
    };
    for (std::int64_t r = rb; r < end; ++r) {
      const std::int64_t vis = visible(r);
      const float* srow = s_[j % 2] + r * n_max_;
      std::uint16_t* prow = p_[j % 2] + r * n_max_;
      if (r + kRowGroup <= end) {
        // Rows are in position order within a head, so within a group the last row sees the
        // most keys and the first the fewest (a group may span two heads: then check each).
        std::int64_t group_vis[kRowGroup];
        bool all_full = true, all_some = true;
        for (int i = 0; i < kRowGroup; ++i) {
          group_vis[i] = visible(r + i);
          all_full &= group_vis[i] == n32;
          all_some &= group_vis[i] > 0;
        }
        bool lazy = all_full;
        for (int i = 0; i < kRowGroup && lazy; ++i) lazy = m_[r + i] != -INFINITY;
        if (lazy) {
          const unsigned kept = softmax_rows_lazy<kRowGroup>(srow, n_max_, prow, n_max_, n32, a_.qk_scale, m_ + r, l_ + r,
                                                             alpha_ + r);
          for (int i = 0; i < kRowGroup; ++i)
            if ((kept & (1u << i)) == 0)
              alpha_[r + i] = softmax_row<false>(srow + i * n_max_, prow + i * n_max_, n32, n32, a_.qk_scale, m_ + r + i,
                                                 l_ + r + i);
          r += kRowGroup - 1;
          for (int i = 0; i < kRowGroup; ++i) between();
          continue;
        }
        if (all_some) {
          if (all_full)
            softmax_rows_r<kRowGroup, true>(srow, n_max_, prow, n_max_, n32, group_vis, a_.qk_scale, m_ + r, l_ + r, alpha_ + r);
          else
            softmax_rows_r<kRowGroup, false>(srow, n_max_, prow, n_max_, n32, group_vis, a_.qk_scale, m_ + r, l_ + r, alpha_ + r);
          r += kRowGroup - 1;
          for (int i = 0; i < kRowGroup; ++i) between();
          continue;
        }
      }
      if (vis <= 0) {
        std::memset(prow, 0, static_cast<std::size_t>(n32) * 2);
        alpha_[r] = 1.0f;
      } else if (vis == n32) {
        alpha_[r] = softmax_row<false>(srow, prow, vis, n32, a_.qk_scale, m_ + r, l_ + r);
      } else {
        alpha_[r] = softmax_row<true>(srow, prow, vis, n32, a_.qk_scale, m_ + r, l_ + r);
      }
      between();
    }
  }

  // Before panel j's P V is added (never for the first panel: O holds nothing yet).
  void rescale_rows(std::int64_t j, std::int64_t rb) {
    if (j == 0) return;
    const std::int64_t end = std::min(rb + kRowStep, rows_);
    for (std::int64_t r = rb; r < end; ++r)
      if (alpha_[r] != 1.0f) scale_row(o_ + r * dv_pad_, dv_pad_, alpha_[r]);
  }

  void pipelined() {
    const std::int64_t blocks = rows_pad_ / kRowStep;
    pack_panel(0);
    for (std::int64_t rb = 0; rb < rows_pad_; rb += kRowStep) qk_rows(0, rb, 0, n32(0));
    for (std::int64_t j = 0; j < panels_; ++j) {
      pack_panel(j + 1);  // slot (j + 1) % 3 held panel j - 2, whose last P V was issued before
      for (std::int64_t b = 0; b < blocks; ++b) {
        const std::int64_t rb = b * kRowStep;
        // The step's tile queue: QK^T of panel j + 1 (rows rb) in 32-key blocks, then P V of
        // the previous row block (of panel j, or of panel j - 1 for the first) in 32 columns.
        const std::int64_t qk_items = j + 1 < panels_ ? n32(j + 1) / kTileKeys : 0;
        const std::int64_t pv_j = b > 0 ? j : j - 1, pv_rb = b > 0 ? rb - kRowStep : rows_pad_ - kRowStep;
        const std::int64_t pv_items = pv_j >= 0 ? dv_pad_ / 32 : 0;
        const std::int64_t items = qk_items + pv_items;
        const std::int64_t step_rows = std::max<std::int64_t>(std::min(rb + kRowStep, rows_) - rb, 1);
        std::int64_t issued = 0, row = 0;
        auto issue_until = [&](std::int64_t target) {
          for (; issued < target; ++issued) {
            if (issued < qk_items)
              qk_rows(j + 1, rb, issued * kTileKeys, (issued + 1) * kTileKeys);
            else
              pv_rows(pv_j, pv_rb, (issued - qk_items) * 32, (issued - qk_items + 1) * 32);
          }
        };
        issue_until((items + step_rows - 1) / step_rows);  // the unit starts before the first row
        softmax_rows(j, rb, [&] {
          ++row;
          issue_until(std::min(items, (row + 1) * items / step_rows));
        });
        issue_until(items);
        rescale_rows(j, rb);
      }
    }
    if (panels_ > 0) pv_rows(panels_ - 1, rows_pad_ - kRowStep, 0, dv_pad_);
  }

  // O / l, rounded once to bf16; rows that saw no key are zeros.
  void finish() {
    for (std::int64_t r = 0; r < rows_; ++r) {
      const __m512 inv = _mm512_set1_ps(online::normaliser(l_[r]));
      std::uint16_t* out = a_.out + (r / a_.positions) * a_.out_head_stride + (a_.i0 + r % a_.positions) * a_.d_v;
      for (std::int64_t d = 0; d < a_.d_v; d += 16) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(o_ + r * dv_pad_ + d), inv));
        _mm256_mask_storeu_epi16(out + d, first_lanes(a_.d_v - d), reinterpret_cast<__m256i>(h));
      }
    }
  }

  const BlockArgs& a_;
  Scratch lay_;
  std::uint16_t* qp_;
  float* s_[2];
  std::uint16_t* p_[2];
  float *o_, *m_, *l_, *alpha_;
  unsigned char* ring_;
  std::int64_t rows_, rows_pad_, dk_pad_, dv_pad_, n_max_, panels_, full_end_, full_panels_;
};

}  // namespace

void release_tiles() { _tile_release(); }

void run_block(const BlockArgs& a) {
  const FlushDenormals ftz;
  Block(a).run();
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
