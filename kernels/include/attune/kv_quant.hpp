// Quantized K/V storage (Dtype::int8, int8_kc, fp8_e4m3, fp8_e5m2, int4): the scales passed beside
// the codes (KvScales), and the conversions from and to float32 rows (quantize_kv, dequantize_kv).
// docs/quantized-kv.md describes every format byte for byte, with its measured error.
#pragma once

#include <attune/dtype.hpp>

#include <cstddef>
#include <cstdint>

namespace attune {

struct Problem;

// Scales of a quantized K and V, one array each (K and V of a problem have the same type).
// "Token records" are per (batch, KV head, token); their strides (in records) default to the
// contiguous [batch, heads_kv, seq_kv] when all three are zero, so a strided cache (capacity >
// seq_kv, [batch, seq, heads] order, varlen packing) can keep its scales in its own order. Paged
// K/V: records per (block, KV head, row), contiguous [num_blocks, heads_kv, block_size], the batch
// stride stepping between blocks.
//   int8      k, v: float [token records]: x = code * scale (codes -127..127, symmetric)
//   int8_kc   k: float [batch, heads_kv, d_k] per channel (KIVI: K's outliers are per channel),
//                contiguous, not strided;  v: float [token records] as int8
//   fp8_e4m3, fp8_e5m2
//             k, v: float [heads_kv]: x = fp8 * scale (vLLM's per-tensor k_scale / v_scale is the
//                same value for every head)
//   int4      k, v: fp16 [token records][d / 32][2]: per group of 32 along d a (scale, min) pair,
//                x = code * scale + min (codes 0..15)
// Every scale must be finite and non-zero (int4: scale finite and > 0, min finite);
// attention() does not scan them per call: check_kv_scales does (the CLI and Python call it).
struct KvScales {
  const void* k = nullptr;
  const void* v = nullptr;
  struct RecordStrides {
    std::int64_t batch = 0, head = 0, token = 0;
    bool contiguous_default() const { return batch == 0 && head == 0 && token == 0; }
  };
  RecordStrides k_strides, v_strides;
};

// Scale elements of one token record: 1 float (int8, int8_kc's V), d / 32 x 2 fp16 (int4), 0 when
// the type has none per token (fp8, int8_kc's K, float types).
std::int64_t scale_record_elements(Dtype kv, std::int64_t d, bool is_k);
// Elements of the whole K or V scale array of a problem with contiguous scales (float or fp16
// elements, as above): what quantize_kv writes and the CLI's scales files hold.
std::int64_t scale_elements(const Problem& p, bool is_k);
// Bytes of one scale element: 4 (float) or 2 (int4's fp16).
std::size_t scale_element_bytes(Dtype kv);

// Quantizes `tokens` rows of `d` floats (the rows of one KV head, consecutive, row-major) into
// `codes` (row_bytes(kv, d) bytes per row) and their per-token scale records (scales, nullptr for
// the per-head types). Rounding: to nearest, ties to even, for every type; codes saturate (int8:
// -127..127; fp8: to +-448 (e4m3) / +-57344 (e5m2) after dividing by the scale, NaN kept as the
// format's NaN).
//   int8, int8_kc's V: scale = max |x| / 127 per row (1 for an all-zero row).
//   int4: per group of 32, scale = (max - min) / 15 rounded to fp16 (1 when max == min), min
//         rounded to fp16, code = round((x - min) / scale) clamped to 0..15.
//   fp8 and int8_kc's K: the given `fixed_scale` (fp8: per head; int8_kc: d_k floats per channel,
//         see kv_head_scales), x / scale rounded.
// Throws InvalidArgument on a float type, int4 with d % 32 != 0, or a missing scale.
void quantize_kv(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, void* codes,
                 void* scales, const float* fixed_scale = nullptr);

// The per-head scales a whole head's rows suggest, for the types with scales fixed across tokens:
// fp8 -> one float, max |x| / 448 (e4m3) or / 57344 (e5m2) (1 for all zeros); int8_kc's K -> d
// floats, per channel max |x| / 127 (1 for an all-zero channel). Other types: nothing written.
void kv_head_scales(Dtype kv, bool is_k, const float* x, std::int64_t tokens, std::int64_t d, float* out);

// The float32 values of `tokens` rows (the documented decoding; exact: every code times its scale
// is computed in float32 as the kernels' tiles hold them). `fixed_scale`: as quantize_kv.
void dequantize_kv(Dtype kv, bool is_k, const void* codes, const void* scales, std::int64_t tokens, std::int64_t d,
                   float* x, const float* fixed_scale = nullptr);

// One element of a quantized row decoded without its scale (int8: the code; fp8: its value; int4:
// the code 0..15), for tests and the reference.
float kv_code_value(Dtype kv, const void* row, std::int64_t index);

// A whole K (is_k) or V of a problem, [batch, heads_kv, seq_kv, d] floats (contiguous), quantized
// into codes (the same layout, row_bytes(kv, d) bytes a row) and its contiguous scale array
// (scale_elements(p, is_k) elements): fp8 scales per KV head over every batch (max |x| / 448 or
// / 57344), int8_kc's K per (batch, KV head, channel), the rest per row or group as above.
void quantize_kv_tensor(const Problem& p, bool is_k, const float* x, void* codes, void* scales);
// The inverse (the documented decoding) of a whole contiguous K or V with contiguous scales.
void dequantize_kv_tensor(const Problem& p, bool is_k, const void* codes, const void* scales, float* x);

// Throws InvalidArgument (naming K or V, the index and the value) unless every scale a problem
// reads (contiguous arrays, scale_elements) is finite and non-zero (int4: scale > 0, min finite).
void check_kv_scales(const Problem& p, const KvScales& scales);

}  // namespace attune
