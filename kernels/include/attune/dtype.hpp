// Element (storage) types of attention tensors: float32, the two 16-bit formats and the
// quantized K/V-only formats (docs/quantized-kv.md), with the conversions every layer shares.
// Arithmetic is always float32 (accumulators, softmax); a storage type only says how Q, K, V
// or O are stored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace attune {

// The float types (fp32, bf16, fp16) store any tensor. The quantized types store K and V only
// (Problem::kv_dtype), with scales passed beside them (attune::KvScales, attune/kv_quant.hpp,
// whose comments and docs/quantized-kv.md give each layout byte for byte):
//   int8      int8 codes, one float scale per (token, KV head): x = code * scale
//   int8_kc   int8 codes, K with one float scale per (KV head, channel), V per (token, KV head)
//   fp8_e4m3  OCP FP8 E4M3FN bytes (vLLM's "fp8_e4m3"), one float scale per KV head: x = fp8 * scale
//   fp8_e5m2  OCP FP8 E5M2 bytes, one float scale per KV head
//   int4      two 4-bit codes per byte, groups of 32 along d with an fp16 scale and min each:
//             x = code * scale + min (d_k and d_v multiples of 32)
enum class Dtype { fp32, bf16, fp16, int8, int8_kc, fp8_e4m3, fp8_e5m2, int4 };
// The float types: every tensor may be stored in them.
inline constexpr int kDtypeCount = 3;
inline constexpr Dtype kAllDtypes[kDtypeCount] = {Dtype::fp32, Dtype::bf16, Dtype::fp16};
// The quantized K/V types, and every K/V type (floats first).
inline constexpr int kQuantDtypeCount = 5;
inline constexpr Dtype kQuantDtypes[kQuantDtypeCount] = {Dtype::int8, Dtype::int8_kc, Dtype::fp8_e4m3,
                                                         Dtype::fp8_e5m2, Dtype::int4};
inline constexpr int kKvDtypeCount = kDtypeCount + kQuantDtypeCount;
inline constexpr Dtype kAllKvDtypes[kKvDtypeCount] = {Dtype::fp32,     Dtype::bf16,     Dtype::fp16,
                                                      Dtype::int8,     Dtype::int8_kc,  Dtype::fp8_e4m3,
                                                      Dtype::fp8_e5m2, Dtype::int4};

// Whether a type is one of the quantized K/V-only types (stored with KvScales).
constexpr bool is_quantized(Dtype dtype) { return static_cast<int>(dtype) >= kDtypeCount; }

// "fp32", "bf16", "fp16", "int8", "int8_kc", "fp8_e4m3", "fp8_e5m2", "int4": the names the CLI,
// the bench names and the tuned table use.
std::string_view to_string(Dtype dtype);
// Accepts those names; nullopt for anything else.
std::optional<Dtype> parse_dtype(std::string_view name);
// Bytes per element: 4, 2, or 1 for the 8-bit types. int4 packs two elements per byte: it
// answers 1 here (a byte holds its smallest addressable unit); use row_bytes for its sizes.
std::size_t size_of(Dtype dtype);
// Bytes of `n` consecutive elements (n even for int4): n * size_of, or n / 2 for int4.
std::size_t row_bytes(Dtype dtype, std::int64_t n);

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
