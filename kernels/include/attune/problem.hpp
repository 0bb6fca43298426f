// The problem description shared by every kernel: shapes, causal flag, scale, the attention
// variants (masks, causal alignment, sliding window, soft-cap, ALiBi, sinks, top-k, varlen,
// strided layouts), and the derived sizes and FLOP count that tests, benches and reports all use.
#pragma once

#include <attune/dtype.hpp>
#include <attune/kv_quant.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace attune {

// Which query lines up with which key when seq_q != seq_kv. Query i has the aligned position
//   i' = i + seq_kv - seq_q   (bottom_right: the last query meets the last key, as decoding
//                              with a KV cache needs; the default)
//   i' = i                    (top_left: the first query meets the first key, PyTorch's is_causal)
// Causal masking and the sliding window are placed at i'. With seq_q == seq_kv both agree.
enum class CausalAlign : std::uint8_t { bottom_right, top_left };

// An explicit mask M [seq_q, seq_kv] (see Problem::mask): none, boolean (one byte per entry,
// non-zero = visible) or additive (float32 added to the logit; -inf hides the key).
enum class MaskKind : std::uint8_t { none, boolean, additive };

// Which planes of the mask there are: one [seq_q, seq_kv] shared by every batch and head,
// one per batch [batch, 1, seq_q, seq_kv], or one per (batch, query head)
// [batch, heads_q, seq_q, seq_kv]. Row-major, contiguous.
enum class MaskBroadcast : std::uint8_t { shared, per_batch, per_head };

// Scaled dot-product attention  O = softmax(scale * Q K^T + mask) V  on row-major tensors
// laid out as [batch, heads, seq, dim], stored as `dtype` (Q and O) and `kv_dtype` (K and V):
//   Q [batch, heads_q,  seq_q,  d_k]     K [batch, heads_kv, seq_kv, d_k]
//   V [batch, heads_kv, seq_kv, d_v]     O [batch, heads_q,  seq_q,  d_v]
// Grouped-query attention: query head h reads K/V head h / (heads_q / heads_kv).
// Causal masking aligns the last query with the last key by default: query i sees keys
// j <= i + seq_kv - seq_q. A query that sees no key outputs zeros (never NaN).
//
// Variants (every one off by default; they compose). For query i of head h (batch b), with
// aligned position i' (CausalAlign) and s_ij = scale * q_i . k_j:
//   band       key j is in the band iff  lo(i) <= j < hi(i), where
//                causal, no window:  [0, i' + 1)
//                causal + window w:  (i' - w, i']          (sliding window / local attention)
//                window w only:      (i' - w, i' + w)      (symmetric local attention)
//                neither:            [0, seq_kv)
//              clamped to [0, seq_kv). Keys outside the band are never computed.
//   soft-cap   s <- softcap * tanh(s / softcap)             (Gemma 2; softcap > 0)
//   ALiBi      s <- s - slope_h * |i' - j|                  (slopes per query head, VariantData)
//   mask       boolean: M[i][j] == 0 hides key j; additive: s <- s + M[i][j] (-inf hides)
//   top-k      only the k largest logits of the row stay visible (after everything above; ties
//              go to the lower key index; hidden keys are never kept)
//   sinks      softmax denominator gains e^(sink_h):  o_i = sum_j e^(s_ij) v_j / (e^(sink_h) +
//              sum_j e^(s_ij)) over the visible keys (gpt-oss; sink_h in logit units, unscaled)
// The order is fixed: band, soft-cap, ALiBi, mask, top-k, softmax (with the sink). A row whose
// keys are all hidden outputs zeros. The per-call arrays (mask, slopes, sinks, cu_seqlens,
// strides) are passed in VariantData; the fields below say which are present. Kernels that
// implement none of this take only plain() problems (Kernel::supports).
struct Problem {
  std::int64_t batch = 1;
  std::int64_t heads_q = 1;
  std::int64_t heads_kv = 1;
  std::int64_t seq_q = 1;
  std::int64_t seq_kv = 1;
  std::int64_t d_k = 1;
  std::int64_t d_v = 1;
  bool causal = false;
  std::optional<float> scale;  // default 1 / sqrt(d_k)
  // Storage types. Every combination of the float types is valid; arithmetic is float32 whatever
  // they are (16-bit inputs are widened, the softmax and accumulators are float32, O is rounded
  // once when written). fp32 Q/O with 16-bit K/V is the decoding case (a 16-bit KV cache).
  // The quantized types (is_quantized) are for K/V only, with VariantData::kv_scales; int4 needs
  // d_k and d_v multiples of 32 (docs/quantized-kv.md).
  Dtype dtype = Dtype::fp32;        // Q and O: fp32, bf16 or fp16
  std::optional<Dtype> kv_dtype;    // K and V; default: dtype
  Dtype kv_type() const { return kv_dtype.value_or(dtype); }

  // Variants; the defaults mean "off" (see above for the formulas).
  CausalAlign causal_align = CausalAlign::bottom_right;  // also places the window
  std::int64_t window = 0;    // sliding window width w > 0 (0: off); wider than every distance: all keys
  float softcap = 0.0f;       // logit cap > 0 (0: off)
  bool alibi = false;         // VariantData::alibi_slopes holds heads_q slopes
  bool sinks = false;         // VariantData::sinks holds heads_q sink logits
  MaskKind mask = MaskKind::none;                    // VariantData::mask's element type
  MaskBroadcast mask_broadcast = MaskBroadcast::shared;
  std::int64_t top_k = 0;     // keep the k largest logits per row (0: off); k >= seq_kv: all
  // Variable-length batch (FlashAttention's varlen): `sequences` > 0 packs that many sequences
  // along the seq axes of a batch-1 problem. Sequence s owns the query tokens
  // [cu_seqlens_q[s], cu_seqlens_q[s+1]) and the keys [cu_seqlens_kv[s], cu_seqlens_kv[s+1])
  // (VariantData), so seq_q and seq_kv are the total token counts; each sequence is its own
  // frame (its own alignment, causal mask, window and ALiBi positions; no key of another
  // sequence is visible). A mask then spans the packed tokens ([total_q, total_kv] planes):
  // sequence s reads its diagonal block [cu_q[s], cu_q[s+1]) x [cu_kv[s], cu_kv[s+1]) in its
  // own frame, and nothing outside the diagonal blocks is read.
  std::int64_t sequences = 0;
  // Paged K/V (the block tables of vLLM's PagedAttention; docs/paged-kv.md): block_size > 0 turns a
  // varlen problem's K and V into pools of `num_blocks` blocks of `block_size` keys each,
  // [num_blocks, heads_kv, block_size, d]: a KV head's rows of a block are contiguous (with
  // `strided`, K/V strides of (block, head, row) give any other order, e.g. vLLM's
  // [num_blocks, block_size, heads_kv, d] as (block_size*heads_kv*d, d, heads_kv*d)).
  // VariantData::block_table [sequences, max_blocks] (int32) lists each sequence's blocks in key
  // order: key j of sequence s is row j % block_size of block block_table[s][j / block_size].
  // cu_seqlens_kv gives the context lengths as for varlen (seq_kv is their total); each
  // sequence's queries are the last positions of its context by default (bottom_right). Blocks may
  // be shared between sequences and are only read; table entries past a context are never read.
  std::int64_t block_size = 0;
  std::int64_t num_blocks = 0;
  std::int64_t max_blocks = 0;
  bool paged() const { return block_size > 0; }
  // Strided tensors: VariantData::q_strides ... out_strides give each tensor's layout (element
  // strides of batch, head and position; the d elements of a row stay contiguous), e.g.
  // [batch, seq, heads, dim] as a projection writes it, or a KV cache whose capacity exceeds
  // seq_kv. Read and written in place, never copied by simd/flash.
  bool strided = false;

  // True when no variant changes the result: no mask, window, soft-cap, ALiBi, sinks or top-k,
  // and the causal alignment is the default or makes no difference (not causal, or
  // seq_q == seq_kv). Kernels that implement no variant take only plain problems.
  bool plain() const;
  // i' - i: seq_kv - seq_q (bottom_right) or 0 (top_left).
  std::int64_t align_offset() const;
  // The band of query row i: keys [key_begin(i), key_end(i)), both non-decreasing in i.
  std::int64_t key_begin(std::int64_t i) const;
  std::int64_t key_end(std::int64_t i) const;
  // The problem of sequence `s` of a varlen problem on its own (seq_q, seq_kv its lengths,
  // not varlen); the problem itself when not varlen.
  Problem sequence(std::int64_t s, const struct VariantData& data) const;
  // Elements of the mask VariantData::mask points to (0 without a mask), and the plane that
  // batch b, query head h reads (its [seq_q, seq_kv] entries start at plane * seq_q * seq_kv).
  std::int64_t mask_elements() const;
  std::int64_t mask_plane(std::int64_t b, std::int64_t h) const;

  // Throws InvalidArgument naming the first bad field; also refuses shapes whose element or
  // byte counts overflow, so callers may allocate q/k/v/out_elements() floats afterwards.
  void validate() const;

  float effective_scale() const;
  std::int64_t group_size() const;  // heads_q / heads_kv
  std::int64_t q_elements() const;
  // K and V elements: the pools when paged.
  std::int64_t k_elements() const;
  std::int64_t v_elements() const;
  std::int64_t out_elements() const;
  // Keys in query row i's band: key_end(i) - key_begin(i) (for problems without a window the
  // band starts at 0, so this is also its end).
  std::int64_t visible_keys(std::int64_t i) const;
  // (query, key) pairs in the band: seq_q * seq_kv, or the causal / windowed part. Explicit
  // masks and top-k are not counted out (they depend on the data).
  std::int64_t visible_pairs() const;
  // The same summed over the sequences of a varlen problem (visible_pairs() of a varlen problem
  // counts it as one sequence of seq_q x seq_kv).
  std::int64_t visible_pairs(const struct VariantData& data) const;
  // FLOPs of one forward pass: 2 * (d_k + d_v) per visible pair per head and batch
  // (= 4 * d per pair when d_k == d_v, DESIGN.md's convention).
  double flops() const;
  // Bytes that must move at least once: Q, K, V read and O written, at their storage sizes.
  double min_bytes() const;
  // "b1_hq8_hkv8_sq128_skv128_dk64_dv64_causal0", used in test names and messages; 16-bit
  // storage appends "_bf16" (all tensors) or "_kvbf16" (K/V only), "_bf16_kvfp16" (both differ).
  // Variants append their segments: "_tl" (top-left), "_w512", "_cap30", "_alibi", "_sinks",
  // "_maskbool" / "_maskadd" (+ "b" per batch / "h" per head), "_top8", "_varlen4", "_paged16",
  // "_strided".
  std::string to_string() const;
  // The variant segments of to_string() alone ("" for a plain problem).
  std::string variant_string() const;
};

// The per-call arrays of the variants a Problem enables (nullptr when off). They are read,
// never written, and must stay valid for the call.
//   mask          [planes, seq_q, seq_kv] row-major: uint8 (MaskKind::boolean, 0 = hidden) or
//                 float (MaskKind::additive: finite values or -inf); planes per mask_broadcast.
//   alibi_slopes  [heads_q] floats, finite (the usual slopes are 2^(-8 h / heads_q), h = 1..)
//   sinks         [heads_q] floats, finite or -inf (-inf: no sink)
//   cu_seqlens_q, cu_seqlens_kv  [sequences + 1] cumulative token counts: 0, non-decreasing,
//                 ending at seq_q (seq_kv)
//   q/k/v/out_strides  element strides of (batch, head, position) per tensor (Problem::strided);
//                 paged K/V: of (block, head, row in the block)
//   block_table   [sequences, max_blocks] int32 block ids (Problem::paged): the first
//                 ceil(context / block_size) of each row are read and must be in [0, num_blocks)

// Element strides of one tensor's batch, head and position (row) axes.
struct Strides {
  std::int64_t batch = 0, head = 0, row = 0;
  // The default layout [batch, heads, seq, dim].
  static Strides contiguous(std::int64_t heads, std::int64_t seq, std::int64_t dim) {
    return {heads * seq * dim, seq * dim, dim};
  }
  // [batch, seq, heads, dim]: what `x W` projections give, without a transpose.
  static Strides seq_major(std::int64_t heads, std::int64_t seq, std::int64_t dim) {
    return {seq * heads * dim, dim, heads * dim};
  }
};

struct VariantData {
  const void* mask = nullptr;
  const float* alibi_slopes = nullptr;
  const float* sinks = nullptr;
  const std::int64_t* cu_seqlens_q = nullptr;
  const std::int64_t* cu_seqlens_kv = nullptr;
  const std::int32_t* block_table = nullptr;
  Strides q_strides, k_strides, v_strides, out_strides;  // read only when Problem::strided
  // The scales of a quantized K/V (Problem::kv_dtype int8, int8_kc, fp8_e4m3, fp8_e5m2, int4):
  // layouts in attune/kv_quant.hpp. For int4, K/V strides count elements (nibbles) and must be
  // even.
  KvScales kv_scales;
  // Throws InvalidArgument unless exactly the arrays `p` enables are given (kv_scales: both
  // for a quantized kv_dtype, neither otherwise) and the slopes, sinks and per-head fp8 scales
  // are valid (the mask's values are not scanned); strides must be >= 0, rows of Q/K/V
  // may overlap (broadcasts), rows of O may not. A paged problem's table is checked entry by
  // entry: no context may outgrow its row and no block id it reads may leave the pool.
  void validate(const Problem& p) const;
};

}  // namespace attune
