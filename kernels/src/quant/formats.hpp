// The scalar pieces of quantize_kv that the reference loops and the vector builds share: the fp8
// formats' parameters, the int8 row scale and int4's group scale and min (once per row or group,
// so the vector builds compute them with this same code). Internal linkage on purpose: per-ISA
// translation units include this too (see detail/convert.hpp).
#pragma once

#include "detail/convert.hpp"

#include <attune/dtype.hpp>

#include <cmath>
#include <cstdint>

namespace attune::quant {
namespace {

// An OCP FP8 format: exponent and mantissa bits, bias, and the largest finite byte (sign off).
struct Fp8Format {
  int mbits, bias, emax_field;
  std::uint8_t max_byte;
  bool has_inf;
};
constexpr Fp8Format kE4m3{3, 7, 15, 0x7e, false};  // E4M3FN: no inf, S.1111.111 is NaN, max 448
constexpr Fp8Format kE5m2{2, 15, 31, 0x7b, true};  // E5M2: IEEE-like, max 57344

inline const Fp8Format& fp8_format(Dtype kv) { return kv == Dtype::fp8_e4m3 ? kE4m3 : kE5m2; }

// int8's per-row scale from the row's max |x| (NaN elements skipped): max / 127, or 1 for a row
// of zeros or with an infinite element.
inline float int8_row_scale(float amax) { return amax > 0.0f && std::isfinite(amax) ? amax / 127.0f : 1.0f; }

// int4's group record: scale and min as stored (fp16 bits) and as the codes are computed with.
struct Int4Group {
  std::uint16_t scale_bits, min_bits;
  float scale, min;
};
// From the group's min and max (as the reference's loop finds them: NaN skipped unless first):
// scale = fp16((max - min) / 15), 1 where that is zero or not finite; min = fp16(min).
inline Int4Group int4_group(float mn, float mx) {
  std::uint16_t sh = detail::float_to_fp16((mx - mn) / 15.0f);
  if (detail::fp16_to_float(sh) == 0.0f || !std::isfinite(detail::fp16_to_float(sh))) sh = detail::float_to_fp16(1.0f);
  const std::uint16_t mh = detail::float_to_fp16(mn);
  return {sh, mh, detail::fp16_to_float(sh), detail::fp16_to_float(mh)};
}

}  // namespace
}  // namespace attune::quant
