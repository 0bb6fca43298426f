// Quantized K/V rows: quantize_kv (the "reshape_and_cache" step), dequantize_kv (the documented
// decoding the reference computes from) and the scale checks. docs/quantized-kv.md is the spec.
// quantize_kv's loops here are the scalar reference; the vector builds (quant/<isa>.cpp, one per
// ISA, byte-identical) are chosen from the table below, by the best runnable ISA.
#include <attune/error.hpp>
#include <attune/kv_quant.hpp>
#include <attune/problem.hpp>

#include "detail/convert.hpp"
#include "quant/formats.hpp"
#include "quant/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace attune {
namespace {

using quant::Fp8Format;
using quant::fp8_format;

float fp8_decode(const Fp8Format& f, std::uint8_t b) {
  const int e = (b >> f.mbits) & f.emax_field, m = b & ((1 << f.mbits) - 1);
  float mag;
  if (f.has_inf && e == f.emax_field) {
    mag = m == 0 ? INFINITY : NAN;
  } else if (!f.has_inf && e == f.emax_field && m == (1 << f.mbits) - 1) {
    mag = NAN;
  } else if (e == 0) {
    mag = std::ldexp(static_cast<float>(m), 1 - f.bias - f.mbits);
  } else {
    mag = std::ldexp(1.0f + std::ldexp(static_cast<float>(m), -f.mbits), e - f.bias);
  }
  return (b & 0x80) ? -mag : mag;
}

// y rounded to nearest even into the format, saturating at its largest finite value.
std::uint8_t fp8_encode(const Fp8Format& f, float y) {
  const std::uint8_t sign = std::signbit(y) ? 0x80 : 0x00;
  if (std::isnan(y)) return static_cast<std::uint8_t>(sign | 0x7f);
  const float a = std::fabs(y);
  const float min_normal = std::ldexp(1.0f, 1 - f.bias);
  std::uint32_t byte;
  if (a < min_normal) {
    // Subnormal steps of 2^(1 - bias - mbits); a count of 2^mbits is the smallest normal, whose
    // byte is the same integer.
    byte = static_cast<std::uint32_t>(std::nearbyint(std::ldexp(a, f.bias - 1 + f.mbits)));
  } else if (a >= std::ldexp(2.0f, f.emax_field - f.bias + 1)) {
    byte = f.max_byte;  // also inf
  } else {
    int e;
    const float frac = std::frexp(a, &e);  // a = frac 2^e, frac in [0.5, 1)
    --e;                                   // a = (2 frac) 2^e, 2 frac in [1, 2)
    std::uint32_t m = static_cast<std::uint32_t>(std::nearbyint(std::ldexp(2.0f * frac - 1.0f, f.mbits)));
    if (m == (1u << f.mbits)) {
      m = 0;
      ++e;
    }
    byte = (static_cast<std::uint32_t>(e + f.bias) << f.mbits) | m;
  }
  if (byte > f.max_byte) byte = f.max_byte;
  return static_cast<std::uint8_t>(sign | byte);
}

// A NaN element gets code 0 (written out: the float-to-integer conversions of x86 and AArch64
// gave 0 here before, through a cast whose result C++ leaves undefined).
std::int8_t int8_code(float y) {
  const float r = std::clamp(std::nearbyint(y), -127.0f, 127.0f);
  return r == r ? static_cast<std::int8_t>(r) : 0;
}
std::uint8_t int4_code(float x, float m, float s) {
  const float r = std::clamp(std::nearbyint((x - m) / s), 0.0f, 15.0f);
  return r == r ? static_cast<std::uint8_t>(r) : 0;
}

void require_quantized(Dtype kv, const char* who) {
  if (!is_quantized(kv))
    throw InvalidArgument(std::string(who) + ": " + std::string(to_string(kv)) + " is not a quantized K/V type");
}

void require_groups(Dtype kv, std::int64_t d, const char* who) {
  if (kv == Dtype::int4 && d % 32 != 0)
    throw InvalidArgument(std::string(who) + ": int4 needs d to be a multiple of 32 (groups of 32), got " +
                          std::to_string(d));
}

bool per_token(Dtype kv, bool is_k) {
  return kv == Dtype::int8 || kv == Dtype::int4 || (kv == Dtype::int8_kc && !is_k);
}

}  // namespace

std::int64_t scale_record_elements(Dtype kv, std::int64_t d, bool is_k) {
  if (kv == Dtype::int4) return d / 32 * 2;
  return per_token(kv, is_k) ? 1 : 0;
}

std::size_t scale_element_bytes(Dtype kv) { return kv == Dtype::int4 ? 2 : 4; }

std::int64_t scale_elements(const Problem& p, bool is_k) {
  const Dtype kv = p.kv_type();
  const std::int64_t d = is_k ? p.d_k : p.d_v;
  if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) return p.heads_kv;
  if (kv == Dtype::int8_kc && is_k) return p.batch * p.heads_kv * p.d_k;
  // Paged: a record per row of every block, [num_blocks, heads_kv, block_size].
  const std::int64_t tokens = p.paged() ? p.num_blocks * p.block_size : p.batch * p.seq_kv;
  return tokens * p.heads_kv * scale_record_elements(kv, d, is_k);
}

void kv_head_scales(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, float* out) {
  if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) {
    float amax = 0.0f;
    for (std::int64_t i = 0; i < tokens * d; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float top = kv == Dtype::fp8_e4m3 ? 448.0f : 57344.0f;
    out[0] = amax > 0.0f && std::isfinite(amax) ? amax / top : 1.0f;
  } else if (kv == Dtype::int8_kc && is_k) {
    for (std::int64_t c = 0; c < d; ++c) {
      float amax = 0.0f;
      for (std::int64_t t = 0; t < tokens; ++t) amax = std::max(amax, std::fabs(x[t * d + c]));
      out[c] = quant::int8_row_scale(amax);  // the same rule over a channel
    }
  }
}

void quantize_kv(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, void* codes, void* scales,
                 const float* fixed_scale) {
  require_quantized(kv, "quantize_kv");
  require_groups(kv, d, "quantize_kv");
  if (per_token(kv, is_k) ? scales == nullptr : fixed_scale == nullptr)
    throw InvalidArgument("quantize_kv: " + std::string(to_string(kv)) + (is_k ? " K" : " V") + " needs its " +
                          (per_token(kv, is_k) ? "scales array" : "fixed scale"));
  static const quant::RowsFn rows = quant::rows_fn(quant::best_build());
  rows(kv, is_k, x, tokens, d, codes, scales, fixed_scale);
}

namespace quant {

void reference_rows(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, void* codes,
                    void* scales, const float* fixed_scale) {
  auto* out = static_cast<std::uint8_t*>(codes);
  const std::size_t rb = row_bytes(kv, d);
  for (std::int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * d;
    std::uint8_t* code = out + static_cast<std::size_t>(t) * rb;
    switch (kv) {
      case Dtype::int8:
      case Dtype::int8_kc: {
        if (kv == Dtype::int8_kc && is_k) {
          for (std::int64_t c = 0; c < d; ++c) code[c] = static_cast<std::uint8_t>(int8_code(row[c] / fixed_scale[c]));
          break;
        }
        float amax = 0.0f;
        for (std::int64_t c = 0; c < d; ++c) amax = std::max(amax, std::fabs(row[c]));
        const float s = int8_row_scale(amax);
        static_cast<float*>(scales)[t] = s;
        for (std::int64_t c = 0; c < d; ++c) code[c] = static_cast<std::uint8_t>(int8_code(row[c] / s));
        break;
      }
      case Dtype::fp8_e4m3:
      case Dtype::fp8_e5m2: {
        const Fp8Format& f = fp8_format(kv);
        for (std::int64_t c = 0; c < d; ++c) code[c] = fp8_encode(f, row[c] / fixed_scale[0]);
        break;
      }
      case Dtype::int4: {
        auto* rec = static_cast<std::uint16_t*>(scales) + t * (d / 32 * 2);
        for (std::int64_t g = 0; g < d / 32; ++g) {
          const float* v = row + g * 32;
          float mn = v[0], mx = v[0];
          for (int i = 1; i < 32; ++i) {
            mn = std::min(mn, v[i]);
            mx = std::max(mx, v[i]);
          }
          const Int4Group q = int4_group(mn, mx);
          rec[2 * g] = q.scale_bits;
          rec[2 * g + 1] = q.min_bits;
          std::uint8_t* block = code + g * 16;
          for (int i = 0; i < 16; ++i)
            block[i] = static_cast<std::uint8_t>(int4_code(v[i], q.min, q.scale) | int4_code(v[i + 16], q.min, q.scale) << 4);
        }
        break;
      }
      default:
        break;
    }
  }
}

// The vector builds compiled in (quant_isa_list.inc, from attune_add_quant_isa), best first.
#define ATTUNE_QUANT_ISA(name) RowsFn rows_##name();
#include "quant_isa_list.inc"
#undef ATTUNE_QUANT_ISA

Isa build_for(Isa isa) {
  // avx512_bf16 and amx imply AVX-512F (cpu_supports): they run avx512's build.
  [[maybe_unused]] const Isa want = isa == Isa::avx512_bf16 || isa == Isa::amx ? Isa::avx512 : isa;
#define ATTUNE_QUANT_ISA(name) \
  if (want == Isa::name) return Isa::name;
#include "quant_isa_list.inc"
#undef ATTUNE_QUANT_ISA
  return Isa::scalar;
}

RowsFn rows_fn(Isa isa) {
  [[maybe_unused]] const Isa build = build_for(isa);
#define ATTUNE_QUANT_ISA(name) \
  if (build == Isa::name) return rows_##name();
#include "quant_isa_list.inc"
#undef ATTUNE_QUANT_ISA
  return &reference_rows;
}

Isa best_build() {
  for (Isa isa : runnable_isas())
    if (build_for(isa) != Isa::scalar) return build_for(isa);
  return Isa::scalar;
}

}  // namespace quant

float kv_code_value(Dtype kv, const void* row, std::int64_t index) {
  const auto* b = static_cast<const std::uint8_t*>(row);
  switch (kv) {
    case Dtype::int8:
    case Dtype::int8_kc:
      return static_cast<float>(static_cast<std::int8_t>(b[index]));
    case Dtype::fp8_e4m3:
    case Dtype::fp8_e5m2:
      return fp8_decode(fp8_format(kv), b[index]);
    case Dtype::int4: {
      const std::int64_t g = index / 32, i = index % 32;
      const std::uint8_t byte = b[g * 16 + i % 16];
      return static_cast<float>(i < 16 ? byte & 15 : byte >> 4);
    }
    default:
      throw InvalidArgument("kv_code_value: " + std::string(to_string(kv)) + " is not a quantized K/V type");
  }
}

void dequantize_kv(Dtype kv, bool is_k, const void* codes, const void* scales, std::int64_t tokens, std::int64_t d,
                   float* x, const float* fixed_scale) {
  require_quantized(kv, "dequantize_kv");
  require_groups(kv, d, "dequantize_kv");
  const std::size_t rb = row_bytes(kv, d);
  for (std::int64_t t = 0; t < tokens; ++t) {
    const void* row = static_cast<const std::uint8_t*>(codes) + static_cast<std::size_t>(t) * rb;
    float* o = x + t * d;
    for (std::int64_t c = 0; c < d; ++c) {
      const float code = kv_code_value(kv, row, c);
      switch (kv) {
        case Dtype::int8_kc:
          o[c] = code * (is_k ? fixed_scale[c] : static_cast<const float*>(scales)[t]);
          break;
        case Dtype::int8:
          o[c] = code * static_cast<const float*>(scales)[t];
          break;
        case Dtype::int4: {
          const auto* rec = static_cast<const std::uint16_t*>(scales) + t * (d / 32 * 2) + 2 * (c / 32);
          o[c] = std::fma(code, detail::fp16_to_float(rec[0]), detail::fp16_to_float(rec[1]));
          break;
        }
        default:  // fp8
          o[c] = code * fixed_scale[0];
          break;
      }
    }
  }
}

namespace {
// Per (batch, KV head): its rows, codes and scale pointers (contiguous layouts), for f.
template <class F>
void for_each_head(const Problem& p, bool is_k, const F& f) {
  const Dtype kv = p.kv_type();
  const std::int64_t d = is_k ? p.d_k : p.d_v, rec = scale_record_elements(kv, d, is_k);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.heads_kv; ++h) {
      const std::int64_t bh = b * p.heads_kv + h, row0 = bh * p.seq_kv;
      std::int64_t fixed = -1;  // element offset of the fixed scale(s) in the scale array
      if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) fixed = h;
      if (kv == Dtype::int8_kc && is_k) fixed = bh * d;
      f(b, h, row0 * d, row_bytes(kv, row0 * d), rec > 0 ? row0 * rec : -1, fixed);
    }
}
}  // namespace

void quantize_kv_tensor(const Problem& p, bool is_k, const float* x, void* codes, void* scales) {
  const Dtype kv = p.kv_type();
  require_quantized(kv, "quantize_kv_tensor");
  const std::int64_t d = is_k ? p.d_k : p.d_v;
  const std::size_t esize = scale_element_bytes(kv);
  auto* sbytes = static_cast<unsigned char*>(scales);
  auto* fscales = static_cast<float*>(scales);
  if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) {  // one scale per KV head, over every batch
    for (std::int64_t h = 0; h < p.heads_kv; ++h) {
      float best = 0.0f;
      for (std::int64_t b = 0; b < p.batch; ++b) {
        float s = 0.0f;
        kv_head_scales(kv, is_k, x + (b * p.heads_kv + h) * p.seq_kv * d, p.seq_kv, d, &s);
        best = std::max(best, s);
      }
      fscales[h] = best;
    }
  }
  for_each_head(p, is_k, [&](std::int64_t, std::int64_t, std::int64_t elem, std::size_t byte, std::int64_t rec,
                             std::int64_t fixed) {
    if (kv == Dtype::int8_kc && is_k) kv_head_scales(kv, true, x + elem, p.seq_kv, d, fscales + fixed);
    quantize_kv(kv, is_k, x + elem, p.seq_kv, d, static_cast<unsigned char*>(codes) + byte,
                rec >= 0 ? sbytes + static_cast<std::size_t>(rec) * esize : nullptr, fixed >= 0 ? fscales + fixed : nullptr);
  });
}

void dequantize_kv_tensor(const Problem& p, bool is_k, const void* codes, const void* scales, float* x) {
  const Dtype kv = p.kv_type();
  require_quantized(kv, "dequantize_kv_tensor");
  const std::int64_t d = is_k ? p.d_k : p.d_v;
  const std::size_t esize = scale_element_bytes(kv);
  const auto* sbytes = static_cast<const unsigned char*>(scales);
  for_each_head(p, is_k, [&](std::int64_t, std::int64_t, std::int64_t elem, std::size_t byte, std::int64_t rec,
                             std::int64_t fixed) {
    dequantize_kv(kv, is_k, static_cast<const unsigned char*>(codes) + byte,
                  rec >= 0 ? sbytes + static_cast<std::size_t>(rec) * esize : nullptr, p.seq_kv, d, x + elem,
                  fixed >= 0 ? static_cast<const float*>(scales) + fixed : nullptr);
  });
}

void check_kv_scales(const Problem& p, const KvScales& scales) {
  const Dtype kv = p.kv_type();
  if (!is_quantized(kv)) return;
  for (const bool is_k : {true, false}) {
    const char* name = is_k ? "K" : "V";
    const void* s = is_k ? scales.k : scales.v;
    if (s == nullptr) throw InvalidArgument(std::string(to_string(kv)) + " " + name + " scales missing");
    const std::int64_t n = scale_elements(p, is_k);
    for (std::int64_t i = 0; i < n; ++i) {
      float x;
      bool bad;
      if (kv == Dtype::int4) {
        x = detail::fp16_to_float(static_cast<const std::uint16_t*>(s)[i]);
        bad = i % 2 == 0 ? !(std::isfinite(x) && x > 0.0f) : !std::isfinite(x);
      } else {
        x = static_cast<const float*>(s)[i];
        bad = !std::isfinite(x) || x == 0.0f;
      }
      if (bad) {
        const char* what = kv == Dtype::int4 ? (i % 2 == 0 ? "scale" : "min") : "scale";
        throw InvalidArgument(std::string(to_string(kv)) + " " + name + " " + what + "s[" + std::to_string(i) +
                              "] = " + std::to_string(x) + (kv == Dtype::int4 && i % 2 == 1 ? " must be finite"
                                                                                           : " must be finite and non-zero" +
                                                                                                 std::string(kv == Dtype::int4 ? " (> 0)" : "")));
      }
    }
  }
}

}  // namespace attune
