// The float64 reference attention, the verification shape grid, and the documented tolerance.
#pragma once

#include <attune/attention.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace attune::reference {

// Attention computed in double from float inputs: the ground truth every kernel is held to.
// For 16-bit problems the inputs are the stored values (make_inputs rounds them), so storage
// rounding is part of the problem, not an error of the kernel.
// The variants (problem.hpp) are computed from their own double-precision definition: band,
// soft-cap, ALiBi, mask, top-k (selected on the double logits, ties to the lower key), softmax
// with the sink; `variant` holds the arrays the problem enables.
std::vector<double> attention(const Problem& p, const float* q, const float* k, const float* v,
                              const VariantData& variant = {});

// sum_j w_ij |v_jd| per output element (w the softmax weights): what a relative error of each
// weight moves the output by at most, for the bound on P rounded to 16 bits (see reference.cpp).
std::vector<double> attention_abs_v(const Problem& p, const float* q, const float* k, const float* v,
                                    const VariantData& variant = {});

// The softmax weights [batch, heads_q, seq_q, seq_kv] in double; masked entries are 0 (with a
// sink, a row's weights sum to less than 1).
std::vector<double> attention_weights(const Problem& p, const float* q, const float* k,
                                      const VariantData& variant = {});

// Batch 1, d_v = d_k: the shorthand the tests write shapes in.
Problem shape(std::int64_t heads_q, std::int64_t heads_kv, std::int64_t seq_q, std::int64_t seq_kv, std::int64_t d,
              bool causal = false);

struct Inputs {
  std::vector<float> q, k, v;
  // The variants' arrays, filled for the variants the problem enables (else empty).
  std::vector<std::uint8_t> mask_bool;
  std::vector<float> mask_add, slopes, sinks;
  std::vector<std::int64_t> cu_q, cu_kv;  // varlen: cumulative sequence lengths
  Strides q_strides, k_strides, v_strides, out_strides;  // strided problems: the buffers' layouts
  // Quantized K/V: the codes ([batch, heads_kv, seq_kv] rows of row_bytes(kv, d) bytes) and the
  // scale arrays (KvScales layouts, contiguous) that quantize_kv made from the float values; k and
  // v above then hold the dequantized values the reference computes from.
  std::vector<unsigned char> k_codes, v_codes, k_scales, v_scales;
  // Paged problems: the block table [sequences, max_blocks] (entries past a context are -1); the
  // values above are the packed varlen K/V of unpaged(p), which page_kv lays out in the pool.
  std::vector<std::int32_t> block_table;
  VariantData variant() const;  // pointers into the arrays above (nullptr where empty)
};

// A paged problem as the varlen problem of its gathered K/V (the same sequences, K/V packed along
// seq_kv): what the reference computes on. Other problems unchanged.
Problem unpaged(const Problem& p);


// Quantizes a problem's K/V rows (float, [batch, heads_kv, seq_kv, d]) as make_inputs does:
// per-head fp8 scales over all batches, int8_kc's K per (batch, head) channel, the rest per row;
// k and v are replaced by their dequantized values.
void quantize_inputs(const Problem& p, Inputs& in);
// Unit-normal Q, K, V from a fixed seed; Q is multiplied by q_scale (large logits when > 1).
// Each value is rounded to its tensor's storage type (p.dtype for Q, p.kv_type() for K and V),
// so the floats are exactly what a kernel reads. Variant arrays: ALiBi slopes 2^(-8 (h+1) / heads_q),
// unit-normal sinks, and a mask of 16 x 16 blocks that are hidden, visible (0 when additive) or
// mixed entry by entry (additive: N(0, 1) values and -inf), with every 7th row fully hidden;
// varlen: sorted random cut points of seq_q and seq_kv (so some sequences may be empty);
// paged: the inputs of unpaged(p), with sequence 1's first blocks equal to sequence 0's (both
// table rows name the same blocks: shared prefix blocks), and a table of shuffled block ids;
// strided: Q/O [batch, seq, heads, dim], K/V a KV cache of capacity seq_kv + 7 (K rows padded).
// The values (q, k, v) stay dense; run_and_compare lays them out with the strides.
enum class MaskPattern { blocks, all_hidden, all_visible, half_hidden };
// half_hidden: whole 64-key columns hidden in every other column block (half the tiles blank).
// `cu_q`, `cu_kv`: varlen offsets to use instead of random cuts (both or neither).
Inputs make_inputs(const Problem& p, float q_scale, std::uint64_t seed, MaskPattern pattern = MaskPattern::blocks,
                   const std::vector<std::int64_t>* cu_q = nullptr, const std::vector<std::int64_t>* cu_kv = nullptr);

// The inputs in their storage types, ready for attention(); `pad` elements of padding before
// each tensor (tensors then start at data() + pad * size_of(type), e.g. to misalign them).
struct Stored {
  std::vector<unsigned char> q, k, v;
  std::size_t q_offset = 0, kv_offset = 0;  // bytes before the first element
  const void* q_data() const { return q.data() + q_offset; }
  const void* k_data() const { return k.data() + kv_offset; }
  const void* v_data() const { return v.data() + kv_offset; }
};
Stored store(const Problem& p, const Inputs& in, std::size_t pad = 0);

// The pool of a paged problem: K and V [num_blocks, heads_kv, block_size, d] in the storage type
// (quantized: the codes, and the scale pools [num_blocks, heads_kv, block_size] of token records),
// filled from the packed stored K/V (`stored`, store(unpaged(p), in)) through in.block_table.
// Blocks no sequence uses hold all-ones bytes (NaN in the float types): a kernel that reads
// outside the table's blocks fails.
struct PagedKv {
  std::vector<unsigned char> k, v, k_scales, v_scales;
};
PagedKv page_kv(const Problem& p, const Inputs& in, const Stored& stored);
// An output buffer in p.dtype as float32 values (what compare() reads).
std::vector<float> load_output(const Problem& p, const void* out);

struct Case {
  Problem problem;
  float q_scale = 1.0f;
  std::string name;  // unique, usable in a GoogleTest name
  MaskPattern mask_pattern = MaskPattern::blocks;
  // Varlen and paged: the offsets cu_seqlens_q / cu_seqlens_kv (empty: random cut points).
  std::vector<std::int64_t> cu_q, cu_kv;
};
// make_inputs for a case (its q_scale and mask pattern).
Inputs make_inputs(const Case& c, std::uint64_t seed);
// Odd d_k (1, 3, 7, 65, 129) and lengths (1, 2, 17, 63, 65, 257, 1000), seq_q != seq_kv both
// ways, causal, grouped- and multi-query heads, d_v != d_k, batch > 1, large logits, decode.
std::vector<Case> verification_grid();

// The variants' matrix (problem.hpp): on a few base shapes (tails, seq_q != seq_kv both ways,
// grouped-query heads, decoding rows), each variant alone, both causal alignments, a generated
// set of combinations, and the degenerate cases (window 1, a window wider than the sequences,
// a mask that hides everything or nothing, top-k of 1 and k >= seq_kv). fp32, plus a bf16 and
// an fp32-Q/bf16-KV copy of every few cases. Names carry Problem::variant_string().
std::vector<Case> variant_grid();

// A small part of both grids for slow targets (emulated CPUs, `attune verify --grid quick`): the
// d_k tails 1, 7 and 129, lengths off every tile, causal and not, grouped-query decoding against
// a long cache, batch > 1, large logits, each storage type, and the variants on one base shape.
std::vector<Case> quick_grid();

// Quantized K/V (int8, int8_kc, fp8_e4m3, fp8_e5m2, int4) with fp32, bf16 and fp16 Q/O: odd d_k
// (1, 7, 129; int4 32 and 128), lengths off every tile, causal, grouped-query decoding against a
// long cache (split-KV in flash), batch > 1, d_v != d_k, large logits; and the variants' matrix
// (fp32 Q) with the K/V type rotating over the quantized types.
std::vector<Case> quant_grid();

// Paged K/V (Problem::paged) with every K/V type: decoding batches, a mixed batch (a sequence
// decoding, one verifying a few tokens, one prefilling a chunk on a cached prefix), an empty
// context, a sequence with more queries than cached keys, block sizes 1, 16, 32 and 256, shared
// blocks (make_inputs), GQA, odd d_k, and the variants (window, soft-cap, ALiBi, sinks).
std::vector<Case> paged_grid();

// The float32 part of the tolerance on the abs error of one output, see reference.cpp for the
// derivation: 1e-4, widened only when the logits are so large that float32 cannot represent
// them to 1e-4.
double tolerance(const Problem& p, const Inputs& in);

// Unit roundoff of a storage type: 2^-8 for bf16 (8 significant bits), 2^-11 for fp16, 0 for
// fp32 (whose rounding the float32 part of the bound already holds).
double unit_roundoff(Dtype type);

// The bound on output element i (reference.cpp derives it):
//   tol_i = tolerance(p, in) * (1 + u_out) + u_out * |ref_i| + 2 u_pv * sum_j w_ij |v_jd|
// u_out: the output's storage roundoff (p.dtype); u_pv: that of P when a kernel rounds the
// softmax weights for the PV product (Kernel::pv_dtype), 0 when it multiplies in float32.
struct Check {
  double max_abs_error = 0.0;  // the error at worst_index
  double tolerance = 0.0;      // the bound at worst_index
  std::int64_t worst_index = -1;  // flat index of the output with the largest error / bound
  bool ok() const { return max_abs_error <= tolerance; }
};
// Compares a kernel's output (as float32 values) with the reference. NaN anywhere counts as an
// infinite error. abs_v (attention_abs_v) is needed only when pv_type is a 16-bit type.
Check compare(const Problem& p, const Inputs& in, const float* out, const std::vector<double>& ref,
              Dtype pv_type = Dtype::fp32, const std::vector<double>* abs_v = nullptr);

// Runs one kernel/ISA/config on a case (inputs stored in the problem's types, misaligned by
// one element) and compares it with the (given) reference, with the P-rounding term of the
// resolved kernel's pv_dtype.
Check run_and_compare(const Case& c, const Inputs& in, const std::vector<double>& ref,
                      const Options& options);

}  // namespace attune::reference
