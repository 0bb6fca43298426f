// Scalar conversions between float32 and bf16 / fp16 bit patterns. Internal linkage on purpose:
// per-ISA translation units include this too, and each must keep its own copy (an inline
// function compiled with AVX-512 flags must never be merged into code other CPUs run).
#pragma once

#include <cstdint>
#include <cstring>

namespace attune::detail {
namespace {

inline std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline float bits_float(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline float bf16_to_float(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

inline std::uint16_t float_to_bf16(float x) {
  const std::uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  // Round to nearest even on the 16 dropped bits; a carry into the exponent is correct
  // rounding (up to the next binade, or to inf past the largest finite bf16).
  const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

inline float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf, NaN
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
  // Zero or subnormal: man * 2^-24, exact in float.
  const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
  return sign ? -mag : mag;
}

inline std::uint16_t float_to_fp16(float x) {
  const std::uint32_t u = float_bits(x);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (a >= 0x38800000u) {  // normal in fp16 (>= 2^-14)
    const std::uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);  // nearest even on 13 bits
    return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  // Subnormal or zero in fp16: the value in units of 2^-24, rounded to nearest even by the
  // float addition (2^-24 units are exact there: 0.5 * 2^24 has room for them).
  const float mag = bits_float(a);
  const float units = mag * 16777216.0f;  // exact scaling by 2^24
  const float r = (units + 8388608.0f) - 8388608.0f;  // round to an integer, ties to even
  return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(r));
}

}  // namespace
}  // namespace attune::detail
