// Probe loops for AVX-512 CPUs: the bf16 dot-product peak (vdpbf16ps) and a 16-bit streaming read.
// Compiled with -mavx512f -mavx512bf16; everything but the two entry points stays in this file's
// anonymous namespace and nothing from a header with inline functions is used, so no
// AVX-512 copy of a shared inline function can reach the linker (see STYLE.md).
#include "probe_kernels.hpp"

#include <immintrin.h>

namespace attune::detail {
namespace {

// 16 chains: vdpbf16ps has a latency of 5-6 cycles at up to 2 per cycle on current cores.
constexpr int kChains = 16;

double dot_chains(std::int64_t iterations) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
  // Small products keep the sums far from overflow and subnormals for any run length.
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-7f), _mm512_set1_ps(2e-7f));
  for (std::int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 total = acc[0];
  for (int i = 1; i < kChains; ++i) total = _mm512_add_ps(total, acc[i]);
  volatile float keep = _mm512_reduce_add_ps(total);  // the result must look used
  (void)keep;
  return 4.0 * 16.0 * kChains * static_cast<double>(iterations);
}

// bf16 -> float is a 16-bit shift: zero-extend to 32 bits, shift into the high half.
inline __m512 widen(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

float sum_widened(const std::uint16_t* p, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i))));
    s1 = _mm512_add_ps(s1, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 16))));
    s2 = _mm512_add_ps(s2, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32))));
    s3 = _mm512_add_ps(s3, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 48))));
  }
  float tail = 0.0f;
  for (; i < n; ++i) {
    const __m512 x = widen(_mm256_set1_epi16(static_cast<short>(p[i])));
    tail += _mm512_cvtss_f32(x);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3))) + tail;
}

}  // namespace

double bf16_dot_probe(std::int64_t iterations) { return dot_chains(iterations); }
float sum_bf16_avx512(const std::uint16_t* p, std::size_t n) { return sum_widened(p, n); }

}  // namespace attune::detail
