// Element (storage) types of attention tensors: float32 and the two 16-bit formats, with the
// conversions every layer shares. Arithmetic is always float32 (accumulators, softmax); a
// 16-bit type only says how Q, K, V or O are stored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace attune {

enum class Dtype { fp32, bf16, fp16 };
inline constexpr int kDtypeCount = 3;
inline constexpr Dtype kAllDtypes[kDtypeCount] = {Dtype::fp32, Dtype::bf16, Dtype::fp16};

// "fp32", "bf16", "fp16": the names the CLI, the bench names and the tuned table use.
std::string_view to_string(Dtype dtype);
// Accepts those names; nullopt for anything else.
std::optional<Dtype> parse_dtype(std::string_view name);
// Bytes per element: 4 or 2.
std::size_t size_of(Dtype dtype);

// 16-bit storage types: the bit patterns, nothing else. bfloat16 is the top half of an IEEE
// float32 (8 exponent bits, 7 stored mantissa bits); fp16 is IEEE binary16 (5, 10).
struct bf16 {
  std::uint16_t bits;
};
struct fp16 {
  std::uint16_t bits;
};

// Conversions. To 16 bits rounds to nearest, ties to even; NaN stays NaN (quiet), values past
// the format's range become +-inf (fp16: |x| >= 65520), and fp16 keeps subnormals.
float to_float(bf16 x);
float to_float(fp16 x);
bf16 to_bf16(float x);
fp16 to_fp16(float x);
// x as `dtype` stores it: x itself for fp32, else x rounded to 16 bits and widened again.
float round_to(Dtype dtype, float x);

// Bulk conversions between float32 and any dtype (a plain copy for fp32).
void convert_to_float(Dtype from, const void* src, float* dst, std::size_t n);
void convert_from_float(Dtype to, const float* src, void* dst, std::size_t n);

}  // namespace attune
