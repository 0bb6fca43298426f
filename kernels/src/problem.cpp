// Validation and derived quantities of attune::Problem.
#include <attune/error.hpp>
#include <attune/problem.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <sstream>
#include <tuple>
#include <utility>

namespace attune {
namespace {

[[noreturn]] void fail(const std::string& field, std::int64_t value, const char* why) {
  std::ostringstream os;
  os << "invalid problem: " << field << " = " << value << " " << why;
  throw InvalidArgument(os.str());
}

std::int64_t checked_product(std::initializer_list<std::int64_t> factors, const char* what) {
  std::int64_t result = 1;
  for (std::int64_t f : factors) {
    if (__builtin_mul_overflow(result, f, &result)) {
      throw InvalidArgument(std::string("invalid problem: ") + what +
                            " overflows a 64-bit element count");
    }
  }
  // Byte counts must fit as well (at most 4 bytes an element), with headroom for index arithmetic.
  if (result > std::numeric_limits<std::int64_t>::max() / 8) {
    throw InvalidArgument(std::string("invalid problem: ") + what + " has " +
                          std::to_string(result) + " elements, too many to address");
  }
  return result;
}

}  // namespace

void Problem::validate() const {
  const std::pair<const char*, std::int64_t> positive[] = {
      {"batch", batch}, {"heads_q", heads_q}, {"heads_kv", heads_kv}, {"seq_q", seq_q},
      {"seq_kv", seq_kv}, {"d_k", d_k},       {"d_v", d_v}};
  for (const auto& [name, value] : positive) {
    if (value <= 0) fail(name, value, "must be positive");
  }
  if (heads_q % heads_kv != 0) {
    std::ostringstream os;
    os << "invalid problem: heads_q = " << heads_q << " is not a multiple of heads_kv = " << heads_kv;
    throw InvalidArgument(os.str());
  }
  if (scale && !std::isfinite(*scale)) {
    throw InvalidArgument("invalid problem: scale = " + std::to_string(*scale) +
                          " must be finite");
  }
  for (const auto& [name, type] : {std::pair{"dtype", dtype}, std::pair{"kv_dtype", kv_type()}}) {
    if (attune::to_string(type) == "unknown")
      fail(name, static_cast<std::int64_t>(type),
           "is not an element type (fp32, bf16, fp16; K/V also int8, int8_kc, fp8_e4m3, fp8_e5m2, int4)");
  }
  if (is_quantized(dtype))
    throw InvalidArgument("invalid problem: dtype = " + std::string(attune::to_string(dtype)) +
                          " is a K/V-only type (Q and O are fp32, bf16 or fp16; set kv_dtype)");
  if (kv_type() == Dtype::int4) {
    if (d_k % 32 != 0) fail("d_k", d_k, "must be a multiple of 32 with int4 K/V (groups of 32 along d)");
    if (d_v % 32 != 0) fail("d_v", d_v, "must be a multiple of 32 with int4 K/V (groups of 32 along d)");
  }
  if (causal_align != CausalAlign::bottom_right && causal_align != CausalAlign::top_left)
    fail("causal_align", static_cast<std::int64_t>(causal_align), "is not an alignment (bottom_right, top_left)");
  if (window < 0) fail("window", window, "must be >= 0 (0: no window)");
  if (!std::isfinite(softcap) || softcap < 0.0f) {
    throw InvalidArgument("invalid problem: softcap = " + std::to_string(softcap) +
                          " must be finite and >= 0 (0: off)");
  }
  if (mask != MaskKind::none && mask != MaskKind::boolean && mask != MaskKind::additive)
    fail("mask", static_cast<std::int64_t>(mask), "is not a mask kind (none, boolean, additive)");
  if (mask_broadcast != MaskBroadcast::shared && mask_broadcast != MaskBroadcast::per_batch &&
      mask_broadcast != MaskBroadcast::per_head)
    fail("mask_broadcast", static_cast<std::int64_t>(mask_broadcast), "is not a broadcast (shared, per_batch, per_head)");
  if (top_k < 0) fail("top_k", top_k, "must be >= 0 (0: off)");
  if (sequences < 0) fail("sequences", sequences, "must be >= 0 (0: not varlen)");
  if (sequences > 0 && batch != 1) fail("batch", batch, "must be 1 with sequences (varlen packs them along seq)");
  if (block_size < 0) fail("block_size", block_size, "must be >= 0 (0: not paged)");
  if (paged()) {
    if (sequences == 0) fail("sequences", sequences, "must be > 0 with paged K/V (block_size > 0)");
    if (num_blocks <= 0) fail("num_blocks", num_blocks, "must be positive with paged K/V");
    if (max_blocks <= 0) fail("max_blocks", max_blocks, "must be positive with paged K/V");
    checked_product({num_blocks, block_size, heads_kv, std::max(d_k, d_v)}, "the K/V block pool");
    checked_product({sequences, max_blocks, block_size}, "the block table's keys");
  } else if (num_blocks != 0 || max_blocks != 0) {
    fail(num_blocks != 0 ? "num_blocks" : "max_blocks", num_blocks != 0 ? num_blocks : max_blocks,
         "is set but block_size = 0 (not paged)");
  }
  checked_product({batch, heads_q, seq_q, d_k}, "Q");
  checked_product({batch, heads_kv, seq_kv, d_k}, "K");
  checked_product({batch, heads_kv, seq_kv, d_v}, "V");
  checked_product({batch, heads_q, seq_q, d_v}, "O");
  checked_product({batch, heads_q, seq_q, seq_kv}, "the score matrix");
}

float Problem::effective_scale() const {
  return scale ? *scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d_k)));
}

std::int64_t Problem::group_size() const { return heads_q / heads_kv; }
std::int64_t Problem::q_elements() const { return batch * heads_q * seq_q * d_k; }
std::int64_t Problem::k_elements() const {
  return paged() ? num_blocks * block_size * heads_kv * d_k : batch * heads_kv * seq_kv * d_k;
}
std::int64_t Problem::v_elements() const {
  return paged() ? num_blocks * block_size * heads_kv * d_v : batch * heads_kv * seq_kv * d_v;
}
std::int64_t Problem::out_elements() const { return batch * heads_q * seq_q * d_v; }

bool Problem::plain() const {
  const bool aligned = causal_align == CausalAlign::bottom_right || seq_q == seq_kv || (!causal && window == 0);
  return aligned && window == 0 && softcap == 0.0f && !alibi && !sinks && mask == MaskKind::none && top_k == 0 &&
         sequences == 0 && !strided;
}

std::int64_t Problem::align_offset() const {
  return causal_align == CausalAlign::top_left ? 0 : seq_kv - seq_q;
}

namespace {
std::int64_t clamp_key(std::int64_t j, std::int64_t seq_kv) { return j < 0 ? 0 : (j > seq_kv ? seq_kv : j); }
}  // namespace

// Windows wider than any distance are clamped first, so w + i' cannot overflow.
std::int64_t Problem::key_begin(std::int64_t i) const {
  if (window == 0 || window > seq_q + seq_kv) return 0;
  return clamp_key(i + align_offset() - window + 1, seq_kv);
}

std::int64_t Problem::key_end(std::int64_t i) const {
  const std::int64_t pos = i + align_offset();
  if (causal) return clamp_key(pos + 1, seq_kv);
  if (window == 0 || window > seq_q + seq_kv) return seq_kv;
  return clamp_key(pos + window, seq_kv);
}

std::int64_t Problem::visible_keys(std::int64_t i) const {
  const std::int64_t begin = key_begin(i), end = key_end(i);
  return end > begin ? end - begin : 0;
}

std::int64_t Problem::mask_elements() const {
  if (mask == MaskKind::none) return 0;
  const std::int64_t planes = mask_broadcast == MaskBroadcast::shared ? 1
                              : mask_broadcast == MaskBroadcast::per_batch ? batch : batch * heads_q;
  return planes * seq_q * seq_kv;  // <= the score matrix, checked in validate()
}

Problem Problem::sequence(std::int64_t s, const VariantData& data) const {
  if (sequences == 0) return *this;
  Problem sub = *this;
  sub.sequences = 0;
  sub.block_size = sub.num_blocks = sub.max_blocks = 0;
  sub.seq_q = data.cu_seqlens_q[s + 1] - data.cu_seqlens_q[s];
  sub.seq_kv = data.cu_seqlens_kv[s + 1] - data.cu_seqlens_kv[s];
  return sub;
}

std::int64_t Problem::visible_pairs(const VariantData& data) const {
  if (sequences == 0) return visible_pairs();
  std::int64_t pairs = 0;
  for (std::int64_t s = 0; s < sequences; ++s) pairs += sequence(s, data).visible_pairs();
  return pairs;
}

std::int64_t Problem::mask_plane(std::int64_t b, std::int64_t h) const {
  if (mask_broadcast == MaskBroadcast::per_head) return b * heads_q + h;
  return mask_broadcast == MaskBroadcast::per_batch ? b : 0;
}

std::int64_t Problem::visible_pairs() const {
  if (window != 0) {
    std::int64_t pairs = 0;  // the band's edges move by one key per row at most: sum the rows
    for (std::int64_t i = 0; i < seq_q; ++i) pairs += visible_keys(i);
    return pairs;
  }
  if (!causal) return seq_q * seq_kv;
  // Rows before `first` see nothing; rows from `full` on see every key; between, the count
  // grows by one per row: an arithmetic series.
  const std::int64_t offset = align_offset();  // row i sees i + offset + 1 keys, clamped
  const std::int64_t first = offset >= 0 ? 0 : -offset;                // first row seeing >= 1
  const std::int64_t full = std::max<std::int64_t>(seq_kv - 1 - offset, 0);  // first row seeing all
  std::int64_t pairs = 0;
  const std::int64_t ramp_end = std::min(full, seq_q);
  if (ramp_end > first) {
    const std::int64_t lo = first + offset + 1, hi = ramp_end - 1 + offset + 1;
    pairs += (lo + hi) * (ramp_end - first) / 2;
  }
  if (seq_q > std::max(full, first)) pairs += (seq_q - std::max(full, first)) * seq_kv;
  return pairs;
}

double Problem::flops() const {
  return 2.0 * static_cast<double>(d_k + d_v) * static_cast<double>(batch * heads_q) *
         static_cast<double>(visible_pairs());
}

double Problem::min_bytes() const {
  // Quantized K/V: the codes and every scale read (scales included, as the bench counts them).
  const double qo = static_cast<double>(size_of(dtype));
  const Dtype kv = kv_type();
  const double rows = static_cast<double>(batch * heads_kv * seq_kv);
  double kv_bytes = rows * static_cast<double>(row_bytes(kv, d_k) + row_bytes(kv, d_v));
  if (is_quantized(kv)) {
    // Paged: the token records of the context (the pool may hold more); the per-head and
    // per-channel scales are a few hundred bytes at most.
    const double scales = paged() ? rows * static_cast<double>(scale_record_elements(kv, d_k, true) +
                                                                 scale_record_elements(kv, d_v, false))
                                  : static_cast<double>(scale_elements(*this, true) + scale_elements(*this, false));
    kv_bytes += scales * static_cast<double>(scale_element_bytes(kv));
  }
  return qo * static_cast<double>(q_elements() + out_elements()) + kv_bytes;
}

std::string Problem::to_string() const {
  std::ostringstream os;
  os << "b" << batch << "_hq" << heads_q << "_hkv" << heads_kv << "_sq" << seq_q << "_skv"
     << seq_kv << "_dk" << d_k << "_dv" << d_v << "_causal" << (causal ? 1 : 0);
  if (dtype != Dtype::fp32) os << "_" << attune::to_string(dtype);
  if (kv_type() != dtype) os << "_kv" << attune::to_string(kv_type());
  os << variant_string();
  return os.str();
}

std::string Problem::variant_string() const {
  std::ostringstream os;
  if (causal_align == CausalAlign::top_left) os << "_tl";
  if (window > 0) os << "_w" << window;
  if (softcap > 0.0f) os << "_cap" << softcap;
  if (alibi) os << "_alibi";
  if (sinks) os << "_sinks";
  if (mask != MaskKind::none) {
    os << (mask == MaskKind::boolean ? "_maskbool" : "_maskadd");
    if (mask_broadcast == MaskBroadcast::per_batch) os << "b";
    if (mask_broadcast == MaskBroadcast::per_head) os << "h";
  }
  if (top_k > 0) os << "_top" << top_k;
  if (sequences > 0) os << "_varlen" << sequences;
  if (paged()) os << "_paged" << block_size;
  if (strided) os << "_strided";
  std::string s = os.str();
  for (char& ch : s)
    if (ch == '.') ch = 'p';  // "_cap2p5": names stay usable in test names and files
  return s;
}

void VariantData::validate(const Problem& p) const {
  auto presence = [](const char* what, bool wanted, const void* ptr, const char* flag) {
    if (wanted && ptr == nullptr)
      throw InvalidArgument(std::string("invalid variant data: ") + what + " is null but the problem sets " + flag);
    if (!wanted && ptr != nullptr)
      throw InvalidArgument(std::string("invalid variant data: ") + what + " is given but the problem does not set " + flag);
  };
  presence("mask", p.mask != MaskKind::none, mask, "mask");
  presence("alibi_slopes", p.alibi, alibi_slopes, "alibi");
  presence("sinks", p.sinks, sinks, "sinks");
  const bool quantized = is_quantized(p.kv_type());
  presence("kv_scales.k", quantized, kv_scales.k, "a quantized kv_dtype");
  presence("kv_scales.v", quantized, kv_scales.v, "a quantized kv_dtype");
  if (quantized) {
    if (p.kv_type() == Dtype::int4 && p.strided) {
      for (const auto& [name, st] : {std::pair{"k_strides", k_strides}, std::pair{"v_strides", v_strides}}) {
        if (st.batch % 2 != 0 || st.head % 2 != 0 || st.row % 2 != 0)
          throw InvalidArgument(std::string("invalid variant data: ") + name +
                                " must be even with int4 K/V (two elements per byte)");
      }
    }
    for (const auto& [name, st] : {std::pair{"kv_scales.k_strides", kv_scales.k_strides},
                                   std::pair{"kv_scales.v_strides", kv_scales.v_strides}}) {
      for (std::int64_t x : {st.batch, st.head, st.token}) {
        if (x < 0 || x > (std::int64_t{1} << 48))
          throw InvalidArgument(std::string("invalid variant data: ") + name + " has a stride of " + std::to_string(x) +
                                " (must be in [0, 2^48])");
      }
    }
    if (p.kv_type() == Dtype::fp8_e4m3 || p.kv_type() == Dtype::fp8_e5m2) {
      // One float per KV head: cheap to check on every call (a zero or NaN scale is a silent
      // wrong answer otherwise).
      for (const auto& [name, s] : {std::pair{"k", kv_scales.k}, std::pair{"v", kv_scales.v}}) {
        for (std::int64_t h = 0; h < p.heads_kv; ++h) {
          const float x = static_cast<const float*>(s)[h];
          if (!std::isfinite(x) || x == 0.0f)
            throw InvalidArgument(std::string("invalid variant data: kv_scales.") + name + "[" + std::to_string(h) +
                                  "] = " + std::to_string(x) + " must be finite and non-zero");
        }
      }
    }
  }
  if (p.strided) {
    for (const auto& [name, st] : {std::pair{"q_strides", q_strides}, std::pair{"k_strides", k_strides},
                                   std::pair{"v_strides", v_strides}, std::pair{"out_strides", out_strides}}) {
      for (std::int64_t x : {st.batch, st.head, st.row}) {
        if (x < 0 || x > (std::int64_t{1} << 48))
          throw InvalidArgument(std::string("invalid variant data: ") + name + " has a stride of " + std::to_string(x) +
                                " (must be in [0, 2^48])");
      }
    }
    // Output rows must not overlap: each axis steps past everything the axes inside it cover.
    std::array<std::pair<std::int64_t, std::int64_t>, 3> axes = {
        {{out_strides.row, p.seq_q}, {out_strides.head, p.heads_q}, {out_strides.batch, p.batch}}};
    std::sort(axes.begin(), axes.end());
    std::int64_t covered = p.d_v;  // elements the inner axes span
    for (const auto& [stride, extent] : axes) {
      if (extent == 1) continue;
      if (stride < covered)
        throw InvalidArgument("invalid variant data: out_strides (batch " + std::to_string(out_strides.batch) + ", head " +
                              std::to_string(out_strides.head) + ", row " + std::to_string(out_strides.row) +
                              ") make output rows overlap");
      std::int64_t span;
      if (__builtin_mul_overflow(stride, extent - 1, &span) || __builtin_add_overflow(span, covered, &covered))
        throw InvalidArgument("invalid variant data: out_strides span more elements than can be addressed");
    }
  }
  presence("cu_seqlens_q", p.sequences > 0, cu_seqlens_q, "sequences");
  presence("cu_seqlens_kv", p.sequences > 0, cu_seqlens_kv, "sequences");
  for (const auto& [name, cu, total] : {std::tuple{"cu_seqlens_q", cu_seqlens_q, p.seq_q},
                                         std::tuple{"cu_seqlens_kv", cu_seqlens_kv, p.seq_kv}}) {
    if (cu == nullptr) continue;
    if (cu[0] != 0) throw InvalidArgument(std::string("invalid variant data: ") + name + "[0] = " + std::to_string(cu[0]) + " must be 0");
    for (std::int64_t s = 0; s < p.sequences; ++s) {
      if (cu[s + 1] < cu[s] || cu[s + 1] > total)
        throw InvalidArgument(std::string("invalid variant data: ") + name + "[" + std::to_string(s + 1) + "] = " +
                              std::to_string(cu[s + 1]) + " must be in [" + std::to_string(cu[s]) + ", " +
                              std::to_string(total) + "] (non-decreasing)");
    }
    if (cu[p.sequences] != total)
      throw InvalidArgument(std::string("invalid variant data: ") + name + "[" + std::to_string(p.sequences) + "] = " +
                            std::to_string(cu[p.sequences]) + " must equal the total " + std::to_string(total));
  }
  presence("block_table", p.paged(), block_table, "block_size");
  if (p.paged()) {
    for (std::int64_t s = 0; s < p.sequences; ++s) {
      const std::int64_t context = cu_seqlens_kv[s + 1] - cu_seqlens_kv[s];
      const std::int64_t blocks = (context + p.block_size - 1) / p.block_size;
      if (blocks > p.max_blocks)
        throw InvalidArgument("invalid variant data: sequence " + std::to_string(s) + " has " + std::to_string(context) +
                              " keys, more than its " + std::to_string(p.max_blocks) + " table entries of " +
                              std::to_string(p.block_size) + " keys hold");
      for (std::int64_t x = 0; x < blocks; ++x) {
        const std::int32_t id = block_table[s * p.max_blocks + x];
        if (id < 0 || id >= p.num_blocks)
          throw InvalidArgument("invalid variant data: block_table[" + std::to_string(s) + "][" + std::to_string(x) +
                                "] = " + std::to_string(id) + " is not a block of the pool [0, " +
                                std::to_string(p.num_blocks) + ")");
      }
    }
  }
  for (std::int64_t h = 0; alibi_slopes != nullptr && h < p.heads_q; ++h) {
    if (!std::isfinite(alibi_slopes[h]))
      throw InvalidArgument("invalid variant data: alibi_slopes[" + std::to_string(h) + "] = " +
                            std::to_string(alibi_slopes[h]) + " must be finite");
  }
  for (std::int64_t h = 0; sinks != nullptr && h < p.heads_q; ++h) {
    if (std::isnan(sinks[h]) || sinks[h] == std::numeric_limits<float>::infinity())
      throw InvalidArgument("invalid variant data: sinks[" + std::to_string(h) + "] = " + std::to_string(sinks[h]) +
                            " must be finite or -inf");
  }
}

}  // namespace attune
