// The vector build of quantize_kv's rows, templated on the xsimd arch and instantiated once per ISA
// by kernels/src/quant/<isa>.cpp (ATTUNE_DEFINE_QUANT_ROWS). It writes the bytes the scalar
// reference (quant::reference_rows, kv_quant.cpp) writes, for every input:
//   - the same IEEE operation per element: x / scale is a division (never a reciprocal), rounding
//     is to nearest even (nearbyint's vector form), nothing is contracted into an FMA (the units
//     are compiled with -ffp-contract=off);
//   - the reference's order where it shows: its max and min skip NaN elements (std::max(acc, x)
//     is acc < x ? x : acc, so a compare and select here), int4's min is the group's first element
//     when that is NaN, and otherwise the first element equal to the min (the sign of a zero min);
//   - fp8 by rounding the float's bits to the format's mantissa (nearest even, the carry moving
//     into the exponent), which is the reference's frexp form, saturated at the largest finite byte;
//   - NaN gives code 0 for int8 and int4, the format's NaN byte for fp8.
// A row tail shorter than a vector goes through a zero-padded vector; only its bytes are stored.
// Included only by per-ISA translation units: everything is in an anonymous namespace.
#pragma once

#include "quant/formats.hpp"
#include "quant/quant.hpp"

#include <attune/dtype.hpp>

#include <xsimd/xsimd.hpp>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace attune::quant {
namespace {

template <class Arch>
struct Rows {
  using B = xsimd::batch<float, Arch>;
  using I = xsimd::batch<std::int32_t, Arch>;
  static constexpr int W = static_cast<int>(B::size);
  static_assert(16 % W == 0, "int4 stores a group's 16 bytes in whole vectors");

  static void quantize(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, void* codes,
                       void* scales, const float* fixed_scale) {
    const std::size_t rb = row_bytes(kv, d);
    for (std::int64_t t = 0; t < tokens; ++t) {
      const float* row = x + t * d;
      std::uint8_t* code = static_cast<std::uint8_t*>(codes) + static_cast<std::size_t>(t) * rb;
      switch (kv) {
        case Dtype::int8:
        case Dtype::int8_kc:
          if (kv == Dtype::int8_kc && is_k) {
            per_channel_int8(row, d, fixed_scale, code);
          } else {
            static_cast<float*>(scales)[t] = per_row_int8(row, d, code);
          }
          break;
        case Dtype::fp8_e4m3:
          fp8_row<true>(row, d, fixed_scale[0], code);
          break;
        case Dtype::fp8_e5m2:
          fp8_row<false>(row, d, fixed_scale[0], code);
          break;
        case Dtype::int4:
          int4_row(row, d, code, static_cast<std::uint16_t*>(scales) + t * (d / 32 * 2));
          break;
        default:
          break;
      }
    }
  }

  // int8 with the row's scale (int8, int8_kc's V): max |x| (NaN skipped), then the codes.
  static float per_row_int8(const float* row, std::int64_t d, std::uint8_t* code) {
    B acc(0.0f);
    std::int64_t c = 0;
    for (; c + W <= d; c += W) acc = max_kept(acc, xsimd::abs(load(row + c)));
    if (c < d) acc = max_kept(acc, xsimd::abs(load_tail(row + c, d - c)));
    const float s = int8_row_scale(hmax(acc));
    const B sv(s);
    each_vector(row, d, code, [&](const B& v, std::int64_t, std::int64_t) { return int8_code(div(v, sv)); });
    return s;
  }

  // int8_kc's K: x / scale[channel], the head's fixed channel scales.
  static void per_channel_int8(const float* row, std::int64_t d, const float* channel, std::uint8_t* code) {
    each_vector(row, d, code, [&](const B& v, std::int64_t c, std::int64_t n) {
      return int8_code(div(v, n == W ? load(channel + c) : load_tail(channel + c, n)));
    });
  }

  template <bool E4m3>
  static void fp8_row(const float* row, std::int64_t d, float scale, std::uint8_t* code) {
    const B sv(scale);
    each_vector(row, d, code, [&](const B& v, std::int64_t, std::int64_t) { return fp8_bytes<E4m3>(div(v, sv)); });
  }

  // Groups of 32: min and max, the shared group record, then byte i = code i | code (i + 16) << 4.
  static void int4_row(const float* row, std::int64_t d, std::uint8_t* code, std::uint16_t* rec) {
    for (std::int64_t g = 0; g < d / 32; ++g) {
      const float* v = row + g * 32;
      float mn = v[0], mx = v[0];
      if (v[0] == v[0]) {  // a NaN first element stays the reference's min and max (no compare is true)
        B lo(v[0]), hi(v[0]);
        for (int i = 0; i < 32; i += W) {
          const B e = load(v + i);
          lo = min_kept(lo, e);
          hi = max_kept(hi, e);
        }
        mn = hmin(lo);
        mx = hmax(hi);
        if (mn == 0.0f) {  // which zero: the reference keeps the first element equal to its min
          int i = 0;
          while (!(v[i] == 0.0f)) ++i;
          mn = v[i];
        }
      }
      const Int4Group q = int4_group(mn, mx);
      rec[2 * g] = q.scale_bits;
      rec[2 * g + 1] = q.min_bits;
      const B s(q.scale), m(q.min);
      for (int i = 0; i < 16; i += W)
        store_bytes(code + g * 16 + i, int4_code(load(v + i), m, s) | (int4_code(load(v + 16 + i), m, s) << 4));
    }
  }

  // ---- per element

  // clamp(nearbyint(y), -127, 127); NaN gives 0.
  static I int8_code(const B& y) { return code_lanes(round_even(y), -127.0f, 127.0f); }
  // clamp(nearbyint((x - min) / scale), 0, 15); NaN gives 0.
  static I int4_code(const B& x, const B& m, const B& s) { return code_lanes(round_even(div(x - m, s)), 0.0f, 15.0f); }
  static I code_lanes(const B& r, float lo, float hi) {
    // Not r != r: xsimd 8.1 compares with _CMP_NEQ_OQ on AVX and AVX-512, false for NaN.
    const B c = xsimd::min(B(hi), xsimd::max(B(lo), r));
    return xsimd::to_int(xsimd::select(xsimd::isnan(r), B(0.0f), c));
  }

  // y as an fp8 byte (in the low byte of its lane), nearest even, saturating, NaN kept.
  template <bool E4m3>
  static I fp8_bytes(const B& y) {
    constexpr const Fp8Format& f = E4m3 ? kE4m3 : kE5m2;
    constexpr int shift = 23 - f.mbits;  // float mantissa bits dropped
    const I u = xsimd::bitwise_cast<I>(y);
    const I sign = (u >> 24) & I(0x80);
    const I a = u & I(0x7fffffff);
    // From the smallest normal up: the bits rounded at `shift` (ties to the even mantissa), the
    // exponent rebiased from 127 to the format's; anything past the largest finite (inf too) is it.
    const I rounded = (a + I((1 << (shift - 1)) - 1) + ((a >> shift) & I(1))) >> shift;
    const I normal = xsimd::min(rounded - I((127 - f.bias) << f.mbits), I(f.max_byte));
    // Below it: whole steps of 2^(1 - bias - mbits) (the scaling is exact), 2^mbits steps being
    // the smallest normal's byte.
    const B steps = xsimd::bitwise_cast<B>(a) * B(static_cast<float>(1 << (f.bias - 1 + f.mbits)));
    const I subnormal = xsimd::to_int(round_even(steps));
    const I mag = xsimd::select(a < I((128 - f.bias) << 23), subnormal, normal);
    return sign | xsimd::select(a > I(0x7f800000), I(0x7f), mag);  // NaN: the format's NaN byte
  }

  // ---- vector helpers

  static B load(const float* p) { return B::load_unaligned(p); }
  // n < W floats, the rest of the vector zero.
  static B load_tail(const float* p, std::int64_t n) {
    alignas(64) float t[W] = {};
    std::memcpy(t, p, static_cast<std::size_t>(n) * sizeof(float));
    return B::load_aligned(t);
  }

  // code[c..c+n) = the low bytes of f(row's vector at c, c, n), over the row (the last vector
  // zero-padded past d, only its n bytes stored).
  template <class F>
  static void each_vector(const float* row, std::int64_t d, std::uint8_t* code, const F& f) {
    std::int64_t c = 0;
    for (; c + W <= d; c += W) store_bytes(code + c, f(load(row + c), c, std::int64_t{W}));
    if (c < d) {
      alignas(64) std::uint8_t t[W];
      store_bytes(t, f(load_tail(row + c, d - c), c, d - c));
      std::memcpy(code + c, t, static_cast<std::size_t>(d - c));
    }
  }

  // std::max(acc, x) and std::min(acc, x) lane by lane: a NaN x leaves acc.
  static B max_kept(const B& acc, const B& x) { return xsimd::select(acc < x, x, acc); }
  static B min_kept(const B& acc, const B& x) { return xsimd::select(x < acc, x, acc); }

  // The largest and smallest lane, of lanes that hold no NaN.
  static float hmax(const B& v) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>) return _mm512_reduce_max_ps(v);
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) return vmaxvq_f32(v);
#endif
    alignas(64) float t[W];
    v.store_aligned(t);
    float m = t[0];
    for (int i = 1; i < W; ++i) m = m < t[i] ? t[i] : m;
    return m;
  }
  static float hmin(const B& v) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>) return _mm512_reduce_min_ps(v);
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) return vminvq_f32(v);
#endif
    alignas(64) float t[W];
    v.store_aligned(t);
    float m = t[0];
    for (int i = 1; i < W; ++i) m = t[i] < m ? t[i] : m;
    return m;
  }

  // x / y, correctly rounded (IEEE): xsimd 8.1 divides floats on neon64 by a reciprocal estimate
  // and two Newton steps, which is not the reference's division (ties, denormal scales).
  static B div(const B& x, const B& y) {
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) return B(vdivq_f32(x, y));
#endif
    return x / y;
  }

  // To nearest, ties to even, whatever the rounding mode (the reference's nearbyint in the
  // default mode).
  static B round_even(const B& x) {
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) return B(vrndnq_f32(x));
#endif
    return xsimd::nearbyint(x);
  }

  // The low byte of each lane to dst[0..W).
  static void store_bytes(std::uint8_t* dst, const I& v) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(v));  // vpmovdb truncates
      return;
    }
#endif
#if defined(__AVX2__)
    if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>) {
      // Bytes 0, 4, 8, 12 of each 128-bit half to its first 4 bytes, then the two halves joined.
      const __m256i low = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                           -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
      const __m256i b = _mm256_shuffle_epi8(v, low);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst),
                       _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
      return;
    }
#endif
#if defined(__SSSE3__)
    if constexpr (std::is_same_v<Arch, xsimd::sse4_2>) {
      const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
      const std::int32_t w = _mm_cvtsi128_si32(b);
      std::memcpy(dst, &w, sizeof w);
      return;
    }
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) {
      const uint16x4_t h = vmovn_u32(vreinterpretq_u32_s32(v));
      const std::uint32_t w = vget_lane_u32(vreinterpret_u32_u8(vmovn_u16(vcombine_u16(h, h))), 0);
      std::memcpy(dst, &w, sizeof w);
      return;
    }
#endif
    alignas(64) std::int32_t t[W];
    v.store_aligned(t);
    for (int i = 0; i < W; ++i) dst[i] = static_cast<std::uint8_t>(t[i]);
  }
};

}  // namespace
}  // namespace attune::quant

// quant::rows_<name>(): the build for one ISA, listed in quant_isa_list.inc by
// attune_add_quant_isa (kernels/CMakeLists.txt); the only symbol of its translation unit.
#define ATTUNE_DEFINE_QUANT_ROWS(name, arch)                        \
  namespace attune::quant {                                         \
  RowsFn rows_##name();                                             \
  RowsFn rows_##name() { return &Rows<arch>::quantize; }            \
  }
