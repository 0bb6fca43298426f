// Element types: names, sizes and the float32 <-> 16-bit conversions (detail/convert.hpp).
#include <attune/dtype.hpp>

#include "detail/convert.hpp"

#include <attune/error.hpp>

#include <cstring>

namespace attune {
namespace {

constexpr std::pair<Dtype, std::string_view> kNames[] = {
    {Dtype::fp32, "fp32"},         {Dtype::bf16, "bf16"},         {Dtype::fp16, "fp16"},
    {Dtype::int8, "int8"},         {Dtype::int8_kc, "int8_kc"},   {Dtype::fp8_e4m3, "fp8_e4m3"},
    {Dtype::fp8_e5m2, "fp8_e5m2"}, {Dtype::int4, "int4"}};

}  // namespace

std::string_view to_string(Dtype dtype) {
  for (const auto& [value, name] : kNames)
    if (value == dtype) return name;
  return "unknown";
}

std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const auto& [value, text] : kNames)
    if (text == name) return value;
  return std::nullopt;
}

std::size_t size_of(Dtype dtype) {
  if (dtype == Dtype::fp32) return 4;
  return is_quantized(dtype) ? 1 : 2;
}

std::size_t row_bytes(Dtype dtype, std::int64_t n) {
  const auto count = static_cast<std::size_t>(n);
  return dtype == Dtype::int4 ? count / 2 : count * size_of(dtype);
}

float to_float(bf16 x) { return detail::bf16_to_float(x.bits); }
float to_float(fp16 x) { return detail::fp16_to_float(x.bits); }
bf16 to_bf16(float x) { return {detail::float_to_bf16(x)}; }
fp16 to_fp16(float x) { return {detail::float_to_fp16(x)}; }

float round_to(Dtype dtype, float x) {
  switch (dtype) {
    case Dtype::bf16:
      return detail::bf16_to_float(detail::float_to_bf16(x));
    case Dtype::fp16:
      return detail::fp16_to_float(detail::float_to_fp16(x));
    default:
      break;  // fp32 (quantized types need their scales: attune/kv_quant.hpp)
  }
  return x;
}

namespace {
void refuse_quantized(Dtype type, const char* who) {
  if (is_quantized(type))
    throw InvalidArgument(std::string(who) + ": " + std::string(to_string(type)) +
                          " needs its scales (attune::quantize_kv / dequantize_kv)");
}
}  // namespace

void convert_to_float(Dtype from, const void* src, float* dst, std::size_t n) {
  refuse_quantized(from, "convert_to_float");
  if (from == Dtype::fp32) {
    std::memmove(dst, src, n * sizeof(float));
    return;
  }
  const auto* h = static_cast<const std::uint16_t*>(src);
  if (from == Dtype::bf16) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = detail::bf16_to_float(h[i]);
  } else {
    for (std::size_t i = 0; i < n; ++i) dst[i] = detail::fp16_to_float(h[i]);
  }
}

void convert_from_float(Dtype to, const float* src, void* dst, std::size_t n) {
  refuse_quantized(to, "convert_from_float");
  if (to == Dtype::fp32) {
    std::memmove(dst, src, n * sizeof(float));
    return;
  }
  auto* h = static_cast<std::uint16_t*>(dst);
  if (to == Dtype::bf16) {
    for (std::size_t i = 0; i < n; ++i) h[i] = detail::float_to_bf16(src[i]);
  } else {
    for (std::size_t i = 0; i < n; ++i) h[i] = detail::float_to_fp16(src[i]);
  }
}

}  // namespace attune
