// The vector operations the SIMD kernels are written against: xsimd's batch<float, Arch> for
// every ISA, and a one-lane float for the portable `scalar` build of the same code.
// Included only by per-ISA translation units; everything is templated on the arch, so no
// symbol compiled with one ISA's flags can be merged into another's code.
#pragma once

#include "detail/convert.hpp"

#include <attune/dtype.hpp>

#include <xsimd/xsimd.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace attune::simd {
// Anonymous: each per-ISA translation unit gets its own copy, so the linker can never pick a
// copy compiled with wider-ISA flags for another translation unit.
namespace {

// Tag of the portable build: the same kernel code with one float per "vector".
struct scalar_arch {};

// One stored element widened to float32 (T: float, bf16 or fp16). fp16 uses F16C where the
// translation unit is compiled with it (the AVX2 and AVX-512 builds), else the portable bit
// conversion; bf16 is a 16-bit shift everywhere.
inline float widen(float x) { return x; }
inline float widen(bf16 x) { return detail::bf16_to_float(x.bits); }
inline float widen(fp16 x) {
#if defined(__F16C__)
  return _cvtsh_ss(x.bits);
#elif defined(__aarch64__)
  __fp16 h;
  std::memcpy(&h, &x.bits, sizeof h);
  return static_cast<float>(h);
#else
  return detail::fp16_to_float(x.bits);
#endif
}

// The quantized K/V storage types as the tile kernels read them (docs/quantized-kv.md): one byte
// per element, decoded without their scales ("codes"); the scales are applied by the kernels.
//   q8:   int8 codes (Dtype::int8 and int8_kc)
//   e4m3: OCP E4M3FN bytes, decoded as value / 256: the byte's magnitude bits shifted into an
//         fp16 (exponent bias 15 instead of 7), exact for every finite code, subnormals included;
//         the kernels fold the 256 into the head's scale.
//   e5m2: OCP E5M2 bytes, exactly the upper byte of an fp16.
//   q4:   int4 bytes: a group of 32 elements in 16 bytes, byte i holding element i (low nibble)
//         and i + 16 (high nibble); decoded by load_q4 with the group's scale and min.
struct q8 {
  std::int8_t v;
};
struct e4m3 {
  std::uint8_t bits;
};
struct e5m2 {
  std::uint8_t bits;
};
struct q4 {
  std::uint8_t bits;
};
template <class T>
inline constexpr bool kQuantized = std::is_same_v<T, q8> || std::is_same_v<T, e4m3> || std::is_same_v<T, e5m2> ||
                                   std::is_same_v<T, q4>;
inline std::uint16_t e4m3_as_fp16(std::uint8_t b) {
  return static_cast<std::uint16_t>(((b & 0x80u) << 8) | ((b & 0x7fu) << 7));
}
inline float widen(q8 x) { return static_cast<float>(x.v); }
inline float widen(e4m3 x) { return widen(fp16{e4m3_as_fp16(x.bits)}); }
inline float widen(e5m2 x) { return widen(fp16{static_cast<std::uint16_t>(x.bits << 8)}); }

// Calls f(static_cast<const T*>(nullptr)) with T the element type of `type` (float, bf16, fp16),
// so a loop over a tensor's elements is compiled once per type instead of switching per element.
template <class F>
inline void with_element_type(Dtype type, const F& f) {
  switch (type) {
    case Dtype::bf16:
      f(static_cast<const bf16*>(nullptr));
      return;
    case Dtype::fp16:
      f(static_cast<const fp16*>(nullptr));
      return;
    default:
      break;  // fp32 (Q and O are never quantized)
  }
  f(static_cast<const float*>(nullptr));
}

// x rounded to nearest even into the storage type of *p.
inline void store_rounded(float* p, float x) { *p = x; }
inline void store_rounded(bf16* p, float x) { p->bits = detail::float_to_bf16(x); }
inline void store_rounded(fp16* p, float x) {
#if defined(__F16C__)
  p->bits = static_cast<std::uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  p->bits = detail::float_to_fp16(x);
#endif
}

// exp2 on [-126, 0] and beyond: x is clamped to [-127, 127], n = round(x), f = x - n in
// [-0.5, 0.5], 2^f by a degree-6 polynomial (relative error 1.6e-8 before float rounding,
// fitted for this project), and 2^n by building the float's exponent bits (AVX-512 scales
// with one instruction instead, see Vec::exp2). Inputs below -126 (including -inf from masked
// scores) give exactly 0, never a subnormal.
constexpr float kExp2C[7] = {1.0f,          0.693147182464599609f, 0.240226462483406067f,
                             0.0555032864212989807f, 0.00961848907172679901f,
                             0.00133999309036880732f, 0.000153458109707571566f};

// tanh u ~ u P(u^2) / Q(u^2) on |u| <= 9, degree 4 each, P(0) = Q(0) = 1: a minimax fit of the
// absolute error made for this project (4e-8 in exact arithmetic; 1 - tanh 9 = 3e-8 covers the
// clamp). Every coefficient is positive, so Horner's rule has no cancellation: in float32 the
// error stays below 3.5e-7 over all of R (tests/test_exp2.cpp's SoftCap test checks every ISA).
constexpr float kTanhClamp = 9.0f;
constexpr float kTanhP[5] = {1.0f, 0.133739128708839417f, 0.00348736997693777084f, 2.04829921131022274e-05f,
                             1.31968498351398012e-08f};
constexpr float kTanhQ[5] = {1.0f, 0.467072218656539917f, 0.0258451215922832489f, 0.000327259127516299486f,
                             7.70840927089011529e-07f};

template <class Arch>
struct Vec {
  using B = xsimd::batch<float, Arch>;
  using I = xsimd::batch<std::int32_t, Arch>;
  static constexpr int width = static_cast<int>(B::size);

  static B load(const float* p) { return B::load_unaligned(p); }
  // `width` 16-bit elements widened in registers (the conversion path: K and V are read in
  // their storage type; the prefill tiles widen a key tile at a time into scratch with this).
  static B load(const bf16* p) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>)
      return B(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16)));
#endif
#if defined(__AVX2__)
    if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>)
      return B(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16)));
#endif
#if defined(__SSE4_1__)
    if constexpr (std::is_same_v<Arch, xsimd::sse4_2>)
      return B(_mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))), 16)));
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>)
      return B(vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p)), 16)));
#endif
    return widen_each(p);
  }
  static B load(const fp16* p) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>)
      return B(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__AVX2__) && defined(__F16C__)
    if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>)
      return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>)
      return B(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p)))));
#endif
    return widen_each(p);  // SSE4.2 has no half-precision conversion
  }
  // `width` int8 codes as floats.
  static B load(const q8* p) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>)
      return B(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__AVX2__)
    if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>)
      return B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__SSE4_1__)
    if constexpr (std::is_same_v<Arch, xsimd::sse4_2>) {
      std::int32_t w;
      std::memcpy(&w, p, sizeof w);
      return B(_mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(w))));
    }
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) {
      std::int32_t w;
      std::memcpy(&w, p, sizeof w);
      const int8x8_t b = vreinterpret_s8_s32(vdup_n_s32(w));
      return B(vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b)))));
    }
#endif
    return widen_each(p);
  }
  // `width` fp8 bytes as floats (e4m3: value / 256, see e4m3 above).
  static B load(const e4m3* p) { return load_fp8<true>(reinterpret_cast<const std::uint8_t*>(p)); }
  static B load(const e5m2* p) { return load_fp8<false>(reinterpret_cast<const std::uint8_t*>(p)); }
  template <bool E4m3>
  static B load_fp8(const std::uint8_t* p) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>) {
      __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      if constexpr (E4m3) {
        h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x80)), 8),
                            _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7f)), 7));
      } else {
        h = _mm256_slli_epi16(h, 8);
      }
      return B(_mm512_cvtph_ps(h));
    }
#endif
#if defined(__AVX2__) && defined(__F16C__)
    if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>) {
      __m128i h = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      if constexpr (E4m3) {
        h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi16(0x80)), 8),
                         _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7f)), 7));
      } else {
        h = _mm_slli_epi16(h, 8);
      }
      return B(_mm256_cvtph_ps(h));
    }
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) {
      std::uint32_t w;
      std::memcpy(&w, p, sizeof w);
      uint16x4_t h = vget_low_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(w))));
      if constexpr (E4m3) {
        h = vorr_u16(vshl_n_u16(vand_u16(h, vdup_n_u16(0x80)), 8), vshl_n_u16(vand_u16(h, vdup_n_u16(0x7f)), 7));
      } else {
        h = vshl_n_u16(h, 8);
      }
      return B(vcvt_f32_f16(vreinterpret_f16_u16(h)));
    }
#endif
    alignas(64) float t[width];
    for (int i = 0; i < width; ++i) {
      const std::uint16_t h = E4m3 ? e4m3_as_fp16(p[i]) : static_cast<std::uint16_t>(p[i] << 8);
      t[i] = widen(fp16{h});
    }
    return B::load_aligned(t);
  }
  // `width` int4 codes as floats: (p[i] >> shift) & 15 (shift 0: the low nibbles, 4: the high).
  static B load_q4(const std::uint8_t* p, int shift) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>) {
      const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      return B(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srl_epi32(b, _mm_cvtsi32_si128(shift)), _mm512_set1_epi32(15))));
    }
#endif
#if defined(__AVX2__)
    if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>) {
      const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      return B(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(b, _mm_cvtsi32_si128(shift)), _mm256_set1_epi32(15))));
    }
#endif
#if defined(__SSE4_1__)
    if constexpr (std::is_same_v<Arch, xsimd::sse4_2>) {
      std::int32_t w;
      std::memcpy(&w, p, sizeof w);
      const __m128i b = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(w));
      return B(_mm_cvtepi32_ps(_mm_and_si128(_mm_srl_epi32(b, _mm_cvtsi32_si128(shift)), _mm_set1_epi32(15))));
    }
#endif
#if defined(__aarch64__)
    if constexpr (std::is_same_v<Arch, xsimd::neon64>) {
      std::uint32_t w;
      std::memcpy(&w, p, sizeof w);
      const uint32x4_t b = vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(w)))));
      return B(vcvtq_f32_u32(vandq_u32(vshlq_u32(b, vdupq_n_s32(-shift)), vdupq_n_u32(15))));
    }
#endif
    alignas(64) float t[width];
    for (int i = 0; i < width; ++i) t[i] = static_cast<float>((p[i] >> shift) & 15);
    return B::load_aligned(t);
  }
  template <class T>
  static B widen_each(const T* p) {
    alignas(64) float t[width];
    for (int i = 0; i < width; ++i) t[i] = widen(p[i]);
    return B::load_aligned(t);
  }
  static void store(float* p, const B& v) { v.store_unaligned(p); }
  static B set1(float x) { return B(x); }
  template <class T>
  static B set1(T x) {
    return B(widen(x));
  }
  static B fma(const B& a, const B& b, const B& c) { return xsimd::fma(a, b, c); }
  static B max(const B& a, const B& b) { return xsimd::max(a, b); }
  static float hsum(const B& v) { return xsimd::hadd(v); }
  static float hmax(const B& v) {
    alignas(64) float t[width];
    v.store_aligned(t);
    float m = t[0];
    for (int i = 1; i < width; ++i) m = t[i] > m ? t[i] : m;
    return m;
  }
  // out[i] = sum of the lanes of rows[i], for `width` rows (one transpose-add, not width hadds).
  static void hsum_rows(const B* rows, float* out) {
    alignas(64) float t[width];
    xsimd::haddp(rows).store_aligned(t);
    const int* order = haddp_order();
    for (int i = 0; i < width; ++i) out[order[i]] = t[i];
  }
  // Which row's sum haddp leaves in each lane: xsimd 8.1's AVX-512 haddp returns the sums in a
  // permuted order (lanes 2-3 and 4-5 swapped within each half), so the order is measured once.
  static const int* haddp_order() {
    static const auto order = [] {
      struct Order {
        int lane_row[width];
      } o{};
      B rows[width];
      for (int r = 0; r < width; ++r) rows[r] = B(static_cast<float>(r));
      alignas(64) float t[width];
      xsimd::haddp(rows).store_aligned(t);
      for (int i = 0; i < width; ++i) o.lane_row[i] = static_cast<int>(t[i]) / width;
      return o;
    }();
    return order.lane_row;
  }
  // Lanes where keep is false become `other`.
  static B keep_le(const B& a, const B& limit, const B& value, const B& other) {
    return xsimd::select(a <= limit, value, other);
  }
  static B abs(const B& x) { return xsimd::abs(x); }
  // The logit soft-cap: cap * tanh(u), from u = s / cap (softcap_coef(cap) once, softcap_u per
  // vector; softcap(s, cap) does both). tanh u ~ u P(u^2) / Q(u^2) (kTanhP/kTanhQ) with u clamped
  // to +-9: 12 vector operations, where the exp2 form had 22. AVX-512 divides (vdivps runs
  // beside the FMAs: 5.3% over plain at seq 2048 d 128 on a Zen 4, 10% with a 14-bit reciprocal
  // and a Newton step instead, paired A/B); AVX2 takes the 12-bit reciprocal and a Newton step on
  // the quotient. NaN stays NaN; +-inf give +-cap.
  struct SoftCap {
    B p[5];  // cap x kTanhP
  };
  static SoftCap softcap_coef(float cap) {
    SoftCap k;
    for (int i = 0; i < 5; ++i) k.p[i] = B(cap * kTanhP[i]);
    return k;
  }
  static B softcap_u(const B& u, const SoftCap& k) {
    // Operand order: max/min return the second operand for NaN, so NaN stays NaN (vrangeps,
    // one instruction, would turn it into 9).
    const B uc = xsimd::min(B(kTanhClamp), xsimd::max(B(-kTanhClamp), u));
    const B z = uc * uc;
    B p = k.p[4], q(kTanhQ[4]);
    for (int i = 3; i >= 0; --i) {
      p = xsimd::fma(p, z, k.p[i]);
      q = xsimd::fma(q, z, B(kTanhQ[i]));
    }
    const B num = uc * p;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<Arch, xsimd::fma3<xsimd::avx2>>) {
      const B inv = B(_mm256_rcp_ps(q)), t = num * inv;
      return xsimd::fma(xsimd::fnma(q, t, num), inv, t);  // t + inv (num - q t)
    }
#endif
    return num / q;
  }
  static B softcap(const B& x, float cap) { return softcap_u(x * B(1.0f / cap), softcap_coef(cap)); }
  // cut: inputs below it give 0 (-126 keeps every normal result; the variant kernels cut at -100).
  static B exp2(const B& x, float cut = -126.0f) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Arch, xsimd::avx512f>) {
      // The same polynomial, with one instruction each for n = round(x) (vrndscaleps) and for
      // p * 2^n (vscalefps), so no clamp and no exponent-bit arithmetic. The scale is
      // zero-masked where x < -126 (including -inf, whose f = x - n is NaN); the unordered
      // compare keeps NaN inputs, which stay NaN. Unlike the portable form, x > 128 gives inf.
      const __m512 xv = x;
      const __m512 n = _mm512_roundscale_ps(xv, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512 f = _mm512_sub_ps(xv, n);
      __m512 p = _mm512_set1_ps(kExp2C[6]);
      for (int k = 5; k >= 0; --k) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C[k]));
      const __mmask16 keep = _mm512_cmp_ps_mask(xv, _mm512_set1_ps(cut), _CMP_NLT_UQ);
      return B(_mm512_maskz_scalef_ps(keep, p, n));
    }
#endif
    // Operand order matters: max/min return their second operand when one is NaN, so a NaN
    // input stays NaN (a NaN score poisons its own row, as in the reference).
    const B xc = xsimd::min(B(127.0f), xsimd::max(B(-127.0f), x));
    const B n = xsimd::nearbyint(xc);
    const B f = xc - n;
    B p(kExp2C[6]);
    for (int k = 5; k >= 0; --k) p = xsimd::fma(p, f, B(kExp2C[k]));
    const I bits = (xsimd::to_int(n) + I(127)) << 23;
    const B scaled = p * xsimd::bitwise_cast<B>(bits);
    return xsimd::select(x < B(cut), B(0.0f), scaled);
  }
};

template <>
struct Vec<scalar_arch> {
  using B = float;
  static constexpr int width = 1;

  template <class T>
  static B load(const T* p) {
    return widen(*p);
  }
  static B load_q4(const std::uint8_t* p, int shift) { return static_cast<float>((p[0] >> shift) & 15); }
  static void store(float* p, B v) { *p = v; }
  template <class T>
  static B set1(T x) {
    return widen(x);
  }
  static B fma(B a, B b, B c) { return a * b + c; }
  static B max(B a, B b) { return a > b ? a : b; }
  static float hsum(B v) { return v; }
  static float hmax(B v) { return v; }
  static void hsum_rows(const B* rows, float* out) { out[0] = rows[0]; }
  static B keep_le(B a, B limit, B value, B other) { return a <= limit ? value : other; }
  static B abs(B x) { return std::fabs(x); }
  struct SoftCap {
    float cap;
  };
  static SoftCap softcap_coef(float cap) { return {cap}; }
  static B softcap_u(B u, const SoftCap& k) {
    const float uc = u > kTanhClamp ? kTanhClamp : (u < -kTanhClamp ? -kTanhClamp : u);  // NaN kept
    const float z = uc * uc;
    float p = kTanhP[4], q = kTanhQ[4];
    for (int i = 3; i >= 0; --i) {
      p = p * z + kTanhP[i];
      q = q * z + kTanhQ[i];
    }
    return k.cap * (uc * p / q);
  }
  static B softcap(B x, float cap) { return softcap_u(x * (1.0f / cap), softcap_coef(cap)); }
  static B exp2(B x, float cut = -126.0f) {
    if (!(x >= cut)) return x != x ? x : 0.0f;  // NaN stays NaN; -inf and tiny give 0
    const float xc = x < -127.0f ? -127.0f : (x > 127.0f ? 127.0f : x);
    const float n = std::nearbyint(xc);
    const float f = xc - n;
    float p = kExp2C[6];
    for (int k = 5; k >= 0; --k) p = p * f + kExp2C[k];
    const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) * (1 << 23);
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  }
};

// The bf16 dot-product operations of the tile kernel's Dot form (TileKernel<..., Dot = true>),
// defined only for an ISA that has them: a "pairs" register holds two bf16 per 32-bit lane
// (two consecutive d of a row, or two consecutive keys), and dot() multiplies pairs and adds
// both products to a float32 lane.
template <class Arch>
struct Bf16Dot;

#if defined(__AVX512BF16__)
template <>
struct Bf16Dot<xsimd::avx512f> {
  using B = Vec<xsimd::avx512f>::B;
  using Pairs = __m512bh;
  static Pairs load_pairs(const std::uint32_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
  static Pairs broadcast_pair(std::uint32_t word) { return (__m512bh)_mm512_set1_epi32(static_cast<int>(word)); }
  // acc + a.lo b.lo + a.hi b.hi in each lane (vdpbf16ps).
  static B dot(const B& acc, const Pairs& a, const Pairs& b) { return B(_mm512_dpbf16_ps(acc, a, b)); }
  // p0 and p1 rounded to bf16 (nearest even), stored as 16 pairs: dst[i] = p0[i] | p1[i] << 16.
  static void store_pairs(std::uint32_t* dst, const B& p0, const B& p1) {
    // vcvtne2ps2bf16 puts 16 values of each vector in the low and high halves; this interleaves them.
    alignas(64) static constexpr std::int16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                                 21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                                 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i halves = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);
    _mm512_storeu_si512(dst, _mm512_permutexvar_epi16(_mm512_load_si512(kInterleave), halves));
  }
  // Two rows of n 16-bit values as pairs: out[d] = r0[d] | r1[d] << 16 (r1 == nullptr: zeros),
  // 32 columns per two permutes.
  static void interleave_rows(const std::uint16_t* r0, const std::uint16_t* r1, std::int64_t n, std::uint32_t* out) {
    alignas(64) static constexpr std::int16_t kLo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                         37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                         11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    alignas(64) static constexpr std::int16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21,
                                                         53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58,
                                                         27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
    const __m512i lo = _mm512_load_si512(kLo), hi = _mm512_load_si512(kHi);
    std::int64_t d = 0;
    for (; d + 32 <= n; d += 32) {
      const __m512i x = _mm512_loadu_si512(r0 + d);
      const __m512i y = r1 != nullptr ? _mm512_loadu_si512(r1 + d) : _mm512_setzero_si512();
      _mm512_storeu_si512(out + d, _mm512_permutex2var_epi16(x, lo, y));
      _mm512_storeu_si512(out + d + 16, _mm512_permutex2var_epi16(x, hi, y));
    }
    for (; d < n; ++d) out[d] = r0[d] | (r1 != nullptr ? static_cast<std::uint32_t>(r1[d]) << 16 : 0u);
  }
};
#endif

}  // namespace
}  // namespace attune::simd
