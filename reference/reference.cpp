// The float64 reference and the verification grid.
//
// Why the tolerance is 1e-4 (max abs error) on unit-normal inputs: an output row is a convex
// combination of V rows (|v| < ~5 for unit-normal data), so its error is about |v| times the
// relative error of the softmax weights. Those come from float32 logits (a d_k-term dot
// product: ~sqrt(d_k) * 2^-24 * sum|q_d k_d| * scale, ~1e-6 at d_k 129), from exp
// (a few ulp, ~1e-7 relative) and from float32 sums over up to seq_kv terms (~1e-6 with the
// tiled/online summation kernels use). That is ~1e-5 in the worst observed cases, so 1e-4
// leaves a 10x margin for reordered summation while any real bug (a wrong mask, a missed
// rescale, a skipped tail) gives errors of order 1e-2 to 1.
// With large logits the float32 rounding of the logits alone can exceed that: the bound
// then becomes 2 * max|v| * 2 * sqrt(d_k) * 2^-24 * L, where L = scale * max_ij sum_d |q_id k_jd|
// (a logit error of delta moves the weights by at most 2 * delta relative).
//
// 16-bit storage (bf16: 8 significant bits, unit roundoff u = 2^-8; fp16: 11 bits, u = 2^-11).
// Inputs are rounded to their storage type before anything runs (make_inputs), and the reference
// computes from those stored values, so input rounding is the problem's, not an error. Kernels
// widen 16-bit values exactly and compute in float32, so their arithmetic is held to the float32
// bound tol_f above. Two roundings remain, each bounded per output element:
// - O stored in 16 bits: the float32 result o_f (|o_f - ref| <= tol_f) is rounded once, adding at
//   most u_out |o_f| <= u_out (|ref| + tol_f). Bound: tol_f (1 + u_out) + u_out |ref|.
// - P rounded to 16 bits for the PV product (Kernel::pv_dtype; the AVX512-BF16 kernels do this,
//   as the fast peers do): each weight numerator gets a relative error |delta_j| <= u_pv, moving
//   O by sum_j w_j delta_j v_jd, at most u_pv sum_j w_j |v_jd| (attention_abs_v); normalising by
//   the sum of the rounded numerators instead can add as much again, hence 2 u_pv sum_j w_j |v_jd|.
// Both are first-order bounds; the second-order terms (u^2 ~ 1.5e-5 relative at bf16) are
// covered by the 10x margin in tol_f. A bug still fails loudly: a wrong mask, a missed rescale or
// a dropped key on the grid's short rows moves an output by 1e-1 to 1, far beyond bf16's
// ~4e-3 at |ref| ~ 1 (tests/test_tolerance.cpp breaks outputs on purpose and checks that).
#include "reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <cstring>
#include <stdexcept>
#include <tuple>

namespace attune::reference {

namespace {

// Varlen: rows [t0, t0 + n) of every head of a [heads, total, dim] tensor, as [heads, n, dim].
std::vector<float> tokens_of(const float* x, std::int64_t heads, std::int64_t total, std::int64_t dim,
                             std::int64_t t0, std::int64_t n) {
  std::vector<float> out(static_cast<std::size_t>(heads * n * dim));
  for (std::int64_t h = 0; h < heads; ++h)
    std::copy(x + (h * total + t0) * dim, x + (h * total + t0 + n) * dim, out.begin() + h * n * dim);
  return out;
}

}  // namespace

std::vector<double> attention_weights(const Problem& p, const float* q, const float* k, const VariantData& var) {
  if (p.sequences > 0) {
    // Each sequence on its own, from copies of its tokens; pairs across sequences weigh 0.
    std::vector<double> w(static_cast<std::size_t>(p.heads_q * p.seq_q * p.seq_kv), 0.0);
    for (std::int64_t s = 0; s < p.sequences; ++s) {
      const Problem sub = p.sequence(s, var);
      if (sub.seq_q == 0 || sub.seq_kv == 0) continue;
      const std::int64_t tq = var.cu_seqlens_q[s], tk = var.cu_seqlens_kv[s];
      const auto qs = tokens_of(q, p.heads_q, p.seq_q, p.d_k, tq, sub.seq_q);
      const auto ks = tokens_of(k, p.heads_kv, p.seq_kv, p.d_k, tk, sub.seq_kv);
      // The mask of a packed batch is [planes, seq_q, seq_kv] over all tokens; sequence s reads
      // its diagonal block [tq, tq + len_q) x [tk, tk + len_kv) as its own mask (the definition).
      VariantData sub_var = var;
      std::vector<std::uint8_t> sub_bool;
      std::vector<float> sub_add;
      const std::int64_t planes = p.mask_elements() / (p.seq_q * p.seq_kv);
      for (std::int64_t pl = 0; pl < planes; ++pl) {
        for (std::int64_t i = 0; i < sub.seq_q; ++i) {
          const std::int64_t row = (pl * p.seq_q + tq + i) * p.seq_kv + tk;
          if (p.mask == MaskKind::boolean) {
            const auto* m = static_cast<const std::uint8_t*>(var.mask) + row;
            sub_bool.insert(sub_bool.end(), m, m + sub.seq_kv);
          } else {
            const auto* m = static_cast<const float*>(var.mask) + row;
            sub_add.insert(sub_add.end(), m, m + sub.seq_kv);
          }
        }
      }
      if (p.mask == MaskKind::boolean) sub_var.mask = sub_bool.data();
      if (p.mask == MaskKind::additive) sub_var.mask = sub_add.data();
      const auto ws = attention_weights(sub, qs.data(), ks.data(), sub_var);
      for (std::int64_t h = 0; h < p.heads_q; ++h)
        for (std::int64_t i = 0; i < sub.seq_q; ++i)
          for (std::int64_t j = 0; j < sub.seq_kv; ++j)
            w[static_cast<std::size_t>((h * p.seq_q + tq + i) * p.seq_kv + tk + j)] =
                ws[static_cast<std::size_t>((h * sub.seq_q + i) * sub.seq_kv + j)];
    }
    return w;
  }
  constexpr double kHidden = -std::numeric_limits<double>::infinity();
  std::vector<double> w(static_cast<std::size_t>(p.batch * p.heads_q * p.seq_q * p.seq_kv), 0.0);
  const double scale = p.effective_scale();
  std::vector<std::int64_t> keys;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      const float* qh = q + (b * p.heads_q + h) * p.seq_q * p.d_k;
      const float* kh = k + (b * p.heads_kv + h / p.group_size()) * p.seq_kv * p.d_k;
      const double sink = p.sinks ? static_cast<double>(var.sinks[h]) : kHidden;
      for (std::int64_t i = 0; i < p.seq_q; ++i) {
        double* row = w.data() + ((b * p.heads_q + h) * p.seq_q + i) * p.seq_kv;
        // Logits of the whole row, -inf outside the band or under the mask.
        const double pos = static_cast<double>(i + p.align_offset());
        for (std::int64_t j = 0; j < p.seq_kv; ++j) {
          row[j] = kHidden;
          if (j < p.key_begin(i) || j >= p.key_end(i)) continue;
          double s = 0.0;
          for (std::int64_t d = 0; d < p.d_k; ++d) s += static_cast<double>(qh[i * p.d_k + d]) * kh[j * p.d_k + d];
          s *= scale;
          if (p.softcap > 0.0f) s = p.softcap * std::tanh(s / p.softcap);
          if (p.alibi) s -= static_cast<double>(var.alibi_slopes[h]) * std::abs(pos - static_cast<double>(j));
          const std::int64_t m = (p.mask_plane(b, h) * p.seq_q + i) * p.seq_kv + j;
          if (p.mask == MaskKind::boolean && static_cast<const std::uint8_t*>(var.mask)[m] == 0) continue;
          if (p.mask == MaskKind::additive) s += static_cast<const float*>(var.mask)[m];
          row[j] = s;
        }
        if (p.top_k > 0) {
          // Rank the visible keys by (logit desc, index asc); all but the first k are hidden.
          keys.clear();
          for (std::int64_t j = 0; j < p.seq_kv; ++j)
            if (row[j] != kHidden) keys.push_back(j);
          std::stable_sort(keys.begin(), keys.end(), [&](std::int64_t a, std::int64_t c) { return row[a] > row[c]; });
          for (std::size_t n = static_cast<std::size_t>(p.top_k); n < keys.size(); ++n) row[keys[n]] = kHidden;
        }
        double m = kHidden;
        for (std::int64_t j = 0; j < p.seq_kv; ++j) m = std::max(m, row[j]);
        if (m == kHidden) {  // no visible key: the row's output is zero
          std::fill(row, row + p.seq_kv, 0.0);
          continue;
        }
        m = std::max(m, sink);
        double sum = std::exp(sink - m);
        for (std::int64_t j = 0; j < p.seq_kv; ++j) sum += (row[j] = std::exp(row[j] - m));
        for (std::int64_t j = 0; j < p.seq_kv; ++j) row[j] /= sum;
      }
    }
  }
  return w;
}

namespace {

// O = W V, or W |V| (abs_v): the weighted sums of the value rows.
std::vector<double> weighted_values(const Problem& p, const float* q, const float* k, const float* v, bool abs_v,
                                    const VariantData& var) {
  const std::vector<double> w = attention_weights(p, q, k, var);
  std::vector<double> out(static_cast<std::size_t>(p.out_elements()), 0.0);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      const float* vh = v + (b * p.heads_kv + h / p.group_size()) * p.seq_kv * p.d_v;
      for (std::int64_t i = 0; i < p.seq_q; ++i) {
        const double* row = w.data() + ((b * p.heads_q + h) * p.seq_q + i) * p.seq_kv;
        double* o = out.data() + ((b * p.heads_q + h) * p.seq_q + i) * p.d_v;
        for (std::int64_t j = 0; j < p.seq_kv; ++j)
          for (std::int64_t d = 0; d < p.d_v && row[j] != 0.0; ++d) {
            const double x = vh[j * p.d_v + d];
            o[d] += row[j] * (abs_v ? std::abs(x) : x);
          }
      }
    }
  }
  return out;
}

}  // namespace

std::vector<double> attention(const Problem& p, const float* q, const float* k, const float* v,
                              const VariantData& variant) {
  return weighted_values(p, q, k, v, false, variant);
}

std::vector<double> attention_abs_v(const Problem& p, const float* q, const float* k, const float* v,
                                    const VariantData& variant) {
  return weighted_values(p, q, k, v, true, variant);
}

VariantData Inputs::variant() const {
  VariantData d;
  if (!mask_bool.empty()) d.mask = mask_bool.data();
  if (!mask_add.empty()) d.mask = mask_add.data();
  if (!slopes.empty()) d.alibi_slopes = slopes.data();
  if (!sinks.empty()) d.sinks = sinks.data();
  if (!cu_q.empty()) d.cu_seqlens_q = cu_q.data();
  if (!cu_kv.empty()) d.cu_seqlens_kv = cu_kv.data();
  d.q_strides = q_strides;
  d.k_strides = k_strides;
  d.v_strides = v_strides;
  d.out_strides = out_strides;
  if (!k_scales.empty()) d.kv_scales.k = k_scales.data();
  if (!v_scales.empty()) d.kv_scales.v = v_scales.data();
  if (!block_table.empty()) d.block_table = block_table.data();
  return d;
}

Problem unpaged(const Problem& p) {
  Problem u = p;
  u.block_size = u.num_blocks = u.max_blocks = 0;
  return u;
}

namespace {

// Paged inputs: every later sequence shares sequence 0's first whole blocks (half of those both
// contexts fill; its packed rows become copies of sequence 0's, scales included), so consecutive
// sequences with long contexts form a shared prefix (cascade attention); every other block is
// drawn from a shuffled pool; entries past a context are -1.
void make_paged(const Problem& p, Inputs& in, std::mt19937_64& rng) {
  const Problem u = unpaged(p);
  const std::int64_t bs = p.block_size;
  auto context = [&](std::int64_t s) { return in.cu_kv[static_cast<std::size_t>(s + 1)] - in.cu_kv[static_cast<std::size_t>(s)]; };
  std::vector<std::int64_t> shared(static_cast<std::size_t>(p.sequences), 0);  // blocks shared with sequence 0
  for (std::int64_t s = 1; s < p.sequences; ++s) shared[static_cast<std::size_t>(s)] = std::min(context(0), context(s)) / bs / 2;
  const Dtype kv = u.kv_type();
  for (std::int64_t sh = p.heads_kv; sh < p.sequences * p.heads_kv; ++sh) {  // (sequence >= 1, KV head)
    const std::int64_t s = sh / p.heads_kv, hk = sh % p.heads_kv;
    for (std::int64_t t = 0; t < shared[static_cast<std::size_t>(s)] * bs; ++t) {
      const std::int64_t from = hk * u.seq_kv + in.cu_kv[0] + t, to = hk * u.seq_kv + in.cu_kv[static_cast<std::size_t>(s)] + t;
      for (const bool is_k : {true, false}) {
        const std::int64_t d = is_k ? p.d_k : p.d_v;
        std::vector<float>& x = is_k ? in.k : in.v;
        std::copy_n(x.begin() + from * d, d, x.begin() + to * d);
        if (!is_quantized(kv)) continue;
        std::vector<unsigned char>& codes = is_k ? in.k_codes : in.v_codes;
        const std::int64_t rb = static_cast<std::int64_t>(row_bytes(kv, d));
        std::copy_n(codes.begin() + from * rb, rb, codes.begin() + to * rb);
        const std::int64_t rec = scale_record_elements(kv, d, is_k) * static_cast<std::int64_t>(scale_element_bytes(kv));
        std::vector<unsigned char>& scales = is_k ? in.k_scales : in.v_scales;
        if (rec > 0) std::copy_n(scales.begin() + from * rec, rec, scales.begin() + to * rec);
      }
    }
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(p.num_blocks));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(i);
  std::shuffle(ids.begin(), ids.end(), rng);
  in.block_table.assign(static_cast<std::size_t>(p.sequences * p.max_blocks), -1);
  std::size_t next = 0;
  for (std::int64_t s = 0; s < p.sequences; ++s) {
    for (std::int64_t x = 0; x < (context(s) + bs - 1) / bs; ++x) {
      std::int32_t& slot = in.block_table[static_cast<std::size_t>(s * p.max_blocks + x)];
      if (x < shared[static_cast<std::size_t>(s)]) {
        slot = in.block_table[static_cast<std::size_t>(x)];
      } else {
        if (next == ids.size()) throw std::logic_error("paged case " + p.to_string() + ": num_blocks is too small");
        slot = ids[next++];
      }
    }
  }
}

}  // namespace

PagedKv page_kv(const Problem& p, const Inputs& in, const Stored& stored) {
  const Dtype kv = p.kv_type();
  const std::int64_t bs = p.block_size, total = p.seq_kv;
  PagedKv out;
  for (const bool is_k : {true, false}) {
    const std::int64_t d = is_k ? p.d_k : p.d_v;
    const std::int64_t rb = static_cast<std::int64_t>(row_bytes(kv, d));
    const unsigned char* packed = is_k ? static_cast<const unsigned char*>(stored.k_data())
                                       : static_cast<const unsigned char*>(stored.v_data());
    std::vector<unsigned char>& pool = is_k ? out.k : out.v;
    pool.assign(static_cast<std::size_t>(p.num_blocks * bs * p.heads_kv * rb), 0xff);
    const std::int64_t rec = scale_record_elements(kv, d, is_k) * static_cast<std::int64_t>(scale_element_bytes(kv));
    const std::vector<unsigned char>& scales = is_k ? in.k_scales : in.v_scales;
    std::vector<unsigned char>& scale_pool = is_k ? out.k_scales : out.v_scales;
    if (rec > 0) {
      scale_pool.assign(static_cast<std::size_t>(p.num_blocks * p.heads_kv * bs * rec), 0xff);
    } else {
      scale_pool = scales;  // per KV head or channel: not paged
    }
    for (std::int64_t s = 0; s < p.sequences; ++s) {
      for (std::int64_t j = 0; j < in.cu_kv[static_cast<std::size_t>(s + 1)] - in.cu_kv[static_cast<std::size_t>(s)]; ++j) {
        const std::int64_t block = in.block_table[static_cast<std::size_t>(s * p.max_blocks + j / bs)], row = j % bs;
        for (std::int64_t hk = 0; hk < p.heads_kv; ++hk) {
          const std::int64_t from = hk * total + in.cu_kv[static_cast<std::size_t>(s)] + j;
          std::copy_n(packed + from * rb, rb, pool.begin() + ((block * p.heads_kv + hk) * bs + row) * rb);
          if (rec > 0) std::copy_n(scales.begin() + from * rec, rec, scale_pool.begin() + ((block * p.heads_kv + hk) * bs + row) * rec);
        }
      }
    }
  }
  return out;
}

void quantize_inputs(const Problem& p, Inputs& in) {
  const Dtype kv = p.kv_type();
  for (const bool is_k : {true, false}) {
    const std::int64_t d = is_k ? p.d_k : p.d_v;
    std::vector<float>& x = is_k ? in.k : in.v;
    std::vector<unsigned char>& codes = is_k ? in.k_codes : in.v_codes;
    std::vector<unsigned char>& scales = is_k ? in.k_scales : in.v_scales;
    codes.assign(row_bytes(kv, p.batch * p.heads_kv * p.seq_kv * d), 0);
    scales.assign(static_cast<std::size_t>(scale_elements(p, is_k)) * scale_element_bytes(kv), 0);
    quantize_kv_tensor(p, is_k, x.data(), codes.data(), scales.data());
    dequantize_kv_tensor(p, is_k, codes.data(), scales.data(), x.data());
  }
}

Inputs make_inputs(const Case& c, std::uint64_t seed) {
  const bool given = !c.cu_q.empty();
  return make_inputs(c.problem, c.q_scale, seed, c.mask_pattern, given ? &c.cu_q : nullptr, given ? &c.cu_kv : nullptr);
}

Inputs make_inputs(const Problem& p, float q_scale, std::uint64_t seed, MaskPattern pattern,
                   const std::vector<std::int64_t>* cu_q, const std::vector<std::int64_t>* cu_kv) {
  if (p.paged()) {
    Inputs in = make_inputs(unpaged(p), q_scale, seed, pattern, cu_q, cu_kv);
    std::mt19937_64 rng(seed + 1);
    make_paged(p, in, rng);
    return in;
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Inputs in;
  in.q.resize(static_cast<std::size_t>(p.q_elements()));
  in.k.resize(static_cast<std::size_t>(p.k_elements()));
  in.v.resize(static_cast<std::size_t>(p.v_elements()));
  const Dtype kv = p.kv_type();
  for (float& x : in.q) x = round_to(p.dtype, q_scale * normal(rng));
  for (float& x : in.k) x = round_to(kv, normal(rng));
  for (float& x : in.v) x = round_to(kv, normal(rng));
  if (is_quantized(kv)) quantize_inputs(p, in);
  if (p.alibi) {
    for (std::int64_t h = 0; h < p.heads_q; ++h)
      in.slopes.push_back(static_cast<float>(std::exp2(-8.0 * static_cast<double>(h + 1) / static_cast<double>(p.heads_q))));
  }
  if (p.sinks) {
    for (std::int64_t h = 0; h < p.heads_q; ++h) in.sinks.push_back(normal(rng));
  }
  if (p.strided) {
    // Q and O as projections give them ([batch, seq, heads, dim]); K and V as a KV cache with
    // room for 7 more positions, K's rows padded by 3 elements.
    in.q_strides = Strides::seq_major(p.heads_q, p.seq_q, p.d_k);
    in.out_strides = Strides::seq_major(p.heads_q, p.seq_q, p.d_v);
    // int4: strides count elements two to a byte and stay even (a whole group of padding).
    in.k_strides = Strides::contiguous(p.heads_kv, p.seq_kv + 7, p.d_k + (kv == Dtype::int4 ? 32 : 3));
    in.v_strides = Strides::contiguous(p.heads_kv, p.seq_kv + 7, p.d_v);
  }
  if (cu_q != nullptr && cu_kv != nullptr) {
    in.cu_q = *cu_q;
    in.cu_kv = *cu_kv;
  }
  for (auto [cu, total] : {std::pair{&in.cu_q, p.seq_q}, std::pair{&in.cu_kv, p.seq_kv}}) {
    if (p.sequences == 0 || !cu->empty()) break;
    std::uniform_int_distribution<std::int64_t> cut(0, total);
    cu->push_back(0);
    for (std::int64_t s = 1; s < p.sequences; ++s) cu->push_back(cut(rng));
    cu->push_back(total);
    std::sort(cu->begin(), cu->end());
  }
  if (p.mask != MaskKind::none) {
    // 16 x 16 blocks: hidden, visible or mixed (so kernels that classify tiles meet all three).
    const std::int64_t planes = p.mask_elements() / (p.seq_q * p.seq_kv);
    std::uniform_int_distribution<int> kind(0, 3), coin(0, 1);
    std::vector<int> block_kind(static_cast<std::size_t>(planes * ((p.seq_q + 15) / 16) * ((p.seq_kv + 15) / 16)));
    for (int& x : block_kind) x = kind(rng);  // 0 hidden, 1 visible, 2-3 mixed
    const bool additive = p.mask == MaskKind::additive;
    // Varlen: the blocks sit in each sequence's frame (its diagonal block of the packed mask),
    // every third sequence from the second is hidden entirely, and the entries no sequence owns
    // are NaN (additive) or alternate (boolean): a kernel that reads them fails.
    auto sequence_of = [](const std::vector<std::int64_t>& cu, std::int64_t t) {
      return static_cast<std::int64_t>(std::upper_bound(cu.begin(), cu.end(), t) - cu.begin()) - 1;
    };
    for (std::int64_t pl = 0; pl < planes; ++pl) {
      for (std::int64_t i = 0; i < p.seq_q; ++i) {
        const std::int64_t sq = p.sequences > 0 ? sequence_of(in.cu_q, i) : 0;
        for (std::int64_t j = 0; j < p.seq_kv; ++j) {
          std::int64_t fi = i, fj = j;  // the entry's position in its frame
          if (p.sequences > 0) {
            if (sequence_of(in.cu_kv, j) != sq) {
              if (additive) in.mask_add.push_back(std::numeric_limits<float>::quiet_NaN());
              else in.mask_bool.push_back(static_cast<std::uint8_t>((i + j) % 2));
              continue;
            }
            fi -= in.cu_q[static_cast<std::size_t>(sq)];
            fj -= in.cu_kv[static_cast<std::size_t>(sq)];
          }
          int bk = block_kind[static_cast<std::size_t>((pl * ((p.seq_q + 15) / 16) + fi / 16) * ((p.seq_kv + 15) / 16) + fj / 16)];
          bool visible = bk == 1 || (bk >= 2 && coin(rng) == 1);
          if (fi % 7 == 3) visible = false;
          if (pattern == MaskPattern::blocks && p.sequences > 0 && sq % 3 == 1) visible = false;
          if (pattern == MaskPattern::all_hidden) visible = false;
          if (pattern == MaskPattern::all_visible) visible = true;
          if (pattern == MaskPattern::half_hidden) visible = (fj / 64) % 2 == 0;
          if (pattern != MaskPattern::blocks) bk = 1;  // visible entries are 0 when additive
          if (additive) {
            in.mask_add.push_back(!visible ? -std::numeric_limits<float>::infinity() : bk == 1 ? 0.0f : normal(rng));
          } else {
            in.mask_bool.push_back(visible ? 1 : 0);
          }
        }
      }
    }
  }
  return in;
}

namespace {

std::vector<unsigned char> stored_bytes(Dtype type, const std::vector<float>& x, std::size_t pad) {
  const std::size_t size = size_of(type);
  std::vector<unsigned char> bytes((x.size() + pad) * size);
  convert_from_float(type, x.data(), bytes.data() + pad * size, x.size());
  return bytes;
}

}  // namespace

Stored store(const Problem& p, const Inputs& in, std::size_t pad) {
  Stored s;
  s.q = stored_bytes(p.dtype, in.q, pad);
  if (is_quantized(p.kv_type())) {
    for (auto [to, from] : {std::pair{&s.k, &in.k_codes}, std::pair{&s.v, &in.v_codes}}) {
      to->assign(pad, 0);
      to->insert(to->end(), from->begin(), from->end());
    }
  } else {
    s.k = stored_bytes(p.kv_type(), in.k, pad);
    s.v = stored_bytes(p.kv_type(), in.v, pad);
  }
  s.q_offset = pad * size_of(p.dtype);
  s.kv_offset = pad * size_of(p.kv_type());
  return s;
}

std::vector<float> load_output(const Problem& p, const void* out) {
  std::vector<float> o(static_cast<std::size_t>(p.out_elements()));
  convert_to_float(p.dtype, out, o.data(), o.size());
  return o;
}

double unit_roundoff(Dtype type) {
  switch (type) {
    case Dtype::bf16:
      return std::ldexp(1.0, -8);
    case Dtype::fp16:
      return std::ldexp(1.0, -11);
    default:
      break;  // fp32; quantized K/V: the reference computes from the dequantized values
  }
  return 0.0;
}

std::vector<Case> verification_grid() {
  std::vector<Case> cases;
  auto add = [&](Problem p, float q_scale = 1.0f, const char* tag = "") {
    Case c;
    c.problem = p;
    c.q_scale = q_scale;
    c.name = p.to_string() + tag;
    for (const Case& other : cases) {
      if (other.name == c.name) return;  // sweeps overlap; keep one
    }
    cases.push_back(c);
  };
  auto shape = [](std::int64_t sq, std::int64_t skv, std::int64_t dk, bool causal,
                  std::int64_t hq = 1, std::int64_t hkv = 1, std::int64_t batch = 1,
                  std::int64_t dv = 0) {
    Problem p;
    p.batch = batch;
    p.heads_q = hq;
    p.heads_kv = hkv;
    p.seq_q = sq;
    p.seq_kv = skv;
    p.d_k = dk;
    p.d_v = dv > 0 ? dv : dk;
    p.causal = causal;
    return p;
  };
  for (bool causal : {false, true}) {
    // d_k sweep: vector tails of every width.
    for (std::int64_t dk : {1, 3, 7, 16, 64, 65, 128, 129}) add(shape(65, 63, dk, causal, 2, 1));
    // Length sweep: lengths that are and are not multiples of any tile.
    for (std::int64_t s : {1, 2, 17, 63, 64, 65, 257}) add(shape(s, s, 16, causal));
    add(shape(1000, 1000, 64, causal));
    // seq_q != seq_kv both ways (causal alignment of the last query with the last key).
    add(shape(17, 1000, 7, causal));
    add(shape(257, 17, 16, causal));
    add(shape(64, 65, 65, causal));
    add(shape(65, 64, 3, causal));
    add(shape(2, 63, 129, causal));
    // Decode: one query (and a few) against a long KV cache, grouped heads.
    add(shape(1, 1000, 128, causal, 8, 2));
    add(shape(4, 1000, 64, causal, 4, 1));
    // Grouped-query and multi-query heads, batch > 1.
    add(shape(63, 65, 16, causal, 8, 2, 3));
    add(shape(65, 65, 32, causal, 4, 1, 2));
    // d_v != d_k.
    add(shape(33, 47, 7, causal, 2, 2, 1, 129));
    add(shape(47, 33, 64, causal, 1, 1, 2, 16));
    add(shape(17, 17, 1, causal, 1, 1, 1, 3));
    // Large logits (Q x 30): softmax needs the max subtraction.
    add(shape(65, 257, 64, causal, 2, 1), 30.0f, "_large");
    add(shape(128, 128, 129, causal), 30.0f, "_large");
  }
  Problem scaled = shape(31, 45, 8, false);
  scaled.scale = 0.9f;
  add(scaled, 1.0f, "_scale0p9");
  // Every case again in each 16-bit storage: all tensors, and 16-bit K/V with float32 Q/O (the
  // decoding mix). Names gain the type (Problem::to_string).
  const std::size_t fp32_cases = cases.size();
  const std::pair<Dtype, Dtype> storages[] = {
      {Dtype::bf16, Dtype::bf16}, {Dtype::fp16, Dtype::fp16}, {Dtype::fp32, Dtype::bf16}, {Dtype::fp32, Dtype::fp16}};
  for (const auto& [dtype, kv] : storages) {
    for (std::size_t i = 0; i < fp32_cases; ++i) {
      Case c = cases[i];
      const std::string tag = c.name.substr(c.problem.to_string().size());
      c.problem.dtype = dtype;
      c.problem.kv_dtype = kv;
      c.name = c.problem.to_string() + tag;
      cases.push_back(c);
    }
  }
  return cases;
}

std::vector<Case> quick_grid() {
  std::vector<Case> cases;
  for (Case& c : verification_grid()) {
    const Problem& p = c.problem;
    const bool tails = p.seq_q == 65 && p.seq_kv == 63 && (p.d_k == 1 || p.d_k == 7 || p.d_k == 129);
    const bool odd_length = p.seq_q == 17 && p.seq_kv == 17 && p.d_k == 16;
    const bool decode = p.seq_q == 1 && p.seq_kv == 1000;
    const bool large = c.q_scale > 1.0f && p.seq_kv == 257;
    if (tails || odd_length || decode || large || p.batch == 3) cases.push_back(std::move(c));
  }
  for (Case& c : variant_grid()) {
    const Problem& p = c.problem;
    if (p.seq_q == 65 && p.seq_kv == 63 && p.dtype == Dtype::fp32 && p.kv_type() == Dtype::fp32)
      cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<Case> quant_grid() {
  std::vector<Case> cases;
  auto add = [&](Problem p, float q_scale = 1.0f, const char* tag = "", MaskPattern pattern = MaskPattern::blocks) {
    Case c;
    c.problem = p;
    c.q_scale = q_scale;
    c.mask_pattern = pattern;
    c.name = p.to_string() + tag;
    for (const Case& other : cases)
      if (other.name == c.name) return;
    cases.push_back(c);
  };
  for (const Dtype kv : kQuantDtypes) {
    const bool int4 = kv == Dtype::int4;
    for (const Dtype q : kAllDtypes) {
      auto shape = [&](std::int64_t sq, std::int64_t skv, std::int64_t dk, bool causal, std::int64_t hq = 1,
                       std::int64_t hkv = 1, std::int64_t batch = 1, std::int64_t dv = 0) {
        Problem p;
        p.batch = batch;
        p.heads_q = hq;
        p.heads_kv = hkv;
        p.seq_q = sq;
        p.seq_kv = skv;
        p.d_k = dk;
        p.d_v = dv > 0 ? dv : dk;
        p.causal = causal;
        p.dtype = q;
        p.kv_dtype = kv;
        return p;
      };
      for (bool causal : {false, true}) {
        // d_k tails (int4: whole groups only).
        for (std::int64_t dk : int4 ? std::vector<std::int64_t>{32, 128} : std::vector<std::int64_t>{1, 7, 64, 129})
          add(shape(65, 63, dk, causal, 2, 1));
        add(shape(17, 17, int4 ? 32 : 16, causal));
        add(shape(257, 257, 64, causal));
        // Decoding: grouped heads against a long cache (flash splits the keys), a few rows.
        add(shape(1, 1000, 128, causal, 8, 2));
        add(shape(4, 1000, 64, causal, 4, 1));
        add(shape(1, 2048, 128, causal, 32, 8));
        // Grouped-query heads with batch > 1; d_v != d_k.
        add(shape(63, 65, int4 ? 32 : 16, causal, 8, 2, 3));
        add(shape(33, 47, int4 ? 32 : 7, causal, 2, 2, 1, int4 ? 64 : 129));
        // Large logits.
        add(shape(65, 257, 64, causal, 2, 1), 30.0f, "_large");
      }
    }
  }
  // The variants, fp32 Q, each case with one quantized type (rotating; int4 where d allows).
  std::size_t i = 0;
  for (const Case& c : variant_grid()) {
    if (c.problem.dtype != Dtype::fp32 || c.problem.kv_type() != Dtype::fp32) continue;
    Problem p = c.problem;
    p.kv_dtype = kQuantDtypes[i++ % kQuantDtypeCount];
    if (p.kv_dtype == Dtype::int4 && (p.d_k % 32 != 0 || p.d_v % 32 != 0)) p.d_k = p.d_v = 32;  // whole groups
    add(p, c.q_scale, c.name.substr(c.problem.to_string().size()).c_str(), c.mask_pattern);
  }
  return cases;
}

std::vector<Case> paged_grid() {
  std::vector<Case> cases;
  // A paged case from per-sequence query and context lengths; num_blocks leaves a few spare
  // blocks (never read) and max_blocks a spare column (-1 entries, never read).
  auto add = [&](std::int64_t hq, std::int64_t hkv, std::int64_t d, std::int64_t block_size,
                 const std::vector<std::int64_t>& q_lens, const std::vector<std::int64_t>& ctx, bool causal, Dtype q,
                 Dtype kv, const char* tag = "", void (*variant)(Problem&) = nullptr) {
    Case c;
    Problem& p = c.problem;
    p.heads_q = hq;
    p.heads_kv = hkv;
    p.d_k = p.d_v = d;
    p.causal = causal;
    p.dtype = q;
    p.kv_dtype = kv;
    p.sequences = static_cast<std::int64_t>(q_lens.size());
    p.block_size = block_size;
    c.cu_q = {0};
    c.cu_kv = {0};
    std::int64_t blocks = 0, widest = 0;
    for (std::size_t s = 0; s < q_lens.size(); ++s) {
      c.cu_q.push_back(c.cu_q.back() + q_lens[s]);
      c.cu_kv.push_back(c.cu_kv.back() + ctx[s]);
      blocks += (ctx[s] + block_size - 1) / block_size;
      widest = std::max(widest, (ctx[s] + block_size - 1) / block_size);
    }
    p.seq_q = std::max<std::int64_t>(c.cu_q.back(), 1);
    p.seq_kv = std::max<std::int64_t>(c.cu_kv.back(), 1);
    if (c.cu_q.back() == 0 || c.cu_kv.back() == 0) return;  // totals must be positive
    p.num_blocks = blocks + 3;
    p.max_blocks = widest + 1;
    if (variant != nullptr) variant(p);
    c.name = p.to_string() + tag;
    for (const Case& other : cases)
      if (other.name == c.name) return;
    cases.push_back(c);
  };
  std::size_t rotate = 0;
  for (const Dtype kv : {Dtype::fp32, Dtype::bf16, Dtype::fp16, Dtype::int8, Dtype::int8_kc, Dtype::fp8_e4m3,
                         Dtype::fp8_e5m2, Dtype::int4}) {
    const bool int4 = kv == Dtype::int4;
    const Dtype q = kv == Dtype::bf16 ? Dtype::bf16 : Dtype::fp32;  // bf16 K/V with bf16 Q: the dot tiles
    // Decoding: one query per sequence, GQA, contexts off every block and tile, one empty.
    add(8, 2, 64, 16, {1, 1, 1, 1}, {100, 0, 257, 33}, true, q, kv, "_decode");
    add(4, 1, 128, 32, {1, 1, 1}, {1000, 17, 600}, true, q, kv, "_decode");
    // Mixed: decoding, verifying 5 speculative tokens, prefilling 70 on a cached prefix, and a
    // sequence with more queries (9) than cached keys (3).
    add(4, 4, int4 ? 32 : 65, 16, {1, 5, 70, 9}, {300, 45, 200, 3}, true, q, kv, "_mixed");
    // A shared prefix (cascade attention): sequences 0-2 share 15 blocks (240 keys), decoding
    // and verifying 4 tokens; then a short sequence that ends the group.
    add(8, 2, 64, 16, {1, 1, 4, 1, 2}, {700, 520, 650, 90, 300}, true, q, kv, "_prefix");
    add(2, 1, int4 ? 32 : 65, 32, {3, 2, 1}, {900, 600, 1000}, false, q, kv, "_prefix");
    // Block sizes 1 and 256; odd d_k; not causal.
    add(2, 1, int4 ? 32 : 7, 1, {3, 1, 4}, {20, 9, 31}, true, q, kv, "_bs1");
    add(4, 2, 128, 256, {1, 17}, {600, 300}, true, q, kv, "_bs256");
    add(2, 2, int4 ? 64 : 129, 16, {17, 1, 2}, {65, 40, 7}, false, q, kv, "_noncausal");
    // The variants on a mixed batch (rotating so every type meets each).
    static void (*const kVariants[])(Problem&) = {
        [](Problem& p) { p.window = 24; },
        [](Problem& p) { p.softcap = 5.0f; },
        [](Problem& p) { p.alibi = true; },
        [](Problem& p) { p.sinks = true; },
        [](Problem& p) { p.window = 9; p.alibi = true; p.sinks = true; p.softcap = 20.0f; },
    };
    for (int v = 0; v < 2; ++v)
      add(4, 2, int4 ? 32 : 64, 16, {1, 6, 40}, {150, 50, 90}, true, q, kv, "", kVariants[rotate++ % 5]);
  }
  // 16-bit Q with fp32 K/V and fp16 Q with fp16 K/V.
  add(8, 2, 64, 16, {1, 3, 20}, {300, 21, 40}, true, Dtype::fp16, Dtype::fp16, "_mixed");
  add(8, 2, 64, 16, {1, 3, 20}, {300, 21, 40}, true, Dtype::bf16, Dtype::fp32, "_mixed");
  // Large logits.
  cases.push_back(cases.front());
  cases.back().q_scale = 30.0f;
  cases.back().name += "_large";
  return cases;
}

std::vector<Case> variant_grid() {
  std::vector<Case> cases;
  auto add = [&](Problem p, float q_scale = 1.0f, MaskPattern pattern = MaskPattern::blocks, const char* tag = "") {
    Case c;
    c.problem = p;
    c.q_scale = q_scale;
    c.mask_pattern = pattern;
    c.name = p.to_string() + tag;
    for (const Case& other : cases)
      if (other.name == c.name) return;
    cases.push_back(c);
  };
  auto base = [](std::int64_t sq, std::int64_t skv, std::int64_t d, std::int64_t hq, std::int64_t hkv, std::int64_t batch) {
    Problem p = shape(hq, hkv, sq, skv, d);
    p.batch = batch;
    return p;
  };
  const Problem bases[] = {base(65, 63, 16, 2, 1, 1),  base(200, 200, 32, 1, 1, 1), base(17, 300, 7, 1, 1, 1),
                           base(300, 17, 16, 1, 1, 1), base(1, 700, 64, 8, 2, 1),   base(4, 500, 64, 4, 1, 2)};
  // Each variant alone, causal and not, on every base.
  using Mod = void (*)(Problem&);
  const std::pair<const char*, Mod> singles[] = {
      {"top_left", [](Problem& p) { p.causal_align = CausalAlign::top_left; }},
      {"window1", [](Problem& p) { p.window = 1; }},
      {"window37", [](Problem& p) { p.window = 37; }},
      {"window_wide", [](Problem& p) { p.window = 5000; }},
      {"softcap", [](Problem& p) { p.softcap = 5.0f; }},
      {"alibi", [](Problem& p) { p.alibi = true; }},
      {"sinks", [](Problem& p) { p.sinks = true; }},
      {"mask_bool", [](Problem& p) { p.mask = MaskKind::boolean; }},
      {"mask_add_head", [](Problem& p) { p.mask = MaskKind::additive; p.mask_broadcast = MaskBroadcast::per_head; }},
      {"mask_bool_batch", [](Problem& p) { p.mask = MaskKind::boolean; p.mask_broadcast = MaskBroadcast::per_batch; }},
      {"top1", [](Problem& p) { p.top_k = 1; }},
      {"top5", [](Problem& p) { p.top_k = 5; }},
      {"top_all", [](Problem& p) { p.top_k = 100000; }},
  };
  for (const Problem& b : bases) {
    for (bool causal : {false, true}) {
      for (const auto& [name, mod] : singles) {
        Problem p = b;
        p.causal = causal;
        mod(p);
        add(p);
      }
    }
  }
  // Degenerate masks: everything hidden (zeros, never NaN) and nothing hidden.
  for (const Problem& b : {bases[0], bases[4]}) {
    for (MaskKind kind : {MaskKind::boolean, MaskKind::additive}) {
      Problem p = b;
      p.mask = kind;
      add(p, 1.0f, MaskPattern::all_hidden, "_allhidden");
      p.sinks = true;
      add(p, 1.0f, MaskPattern::all_hidden, "_allhidden");
      p.sinks = false;
      p.causal = true;
      add(p, 1.0f, MaskPattern::all_visible, "_allvisible");
      add(p, 1.0f, MaskPattern::half_hidden, "_halfhidden");
    }
  }
  // Generated combinations: a fixed pseudo-random draw of every variant per case.
  std::mt19937_64 rng(17);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); };
  for (int n = 0; n < 48; ++n) {
    Problem p = bases[n % std::size(bases)];
    p.causal = pick(2) == 1;
    p.causal_align = pick(2) == 1 ? CausalAlign::top_left : CausalAlign::bottom_right;
    const std::int64_t windows[] = {0, 0, 1, 16, 50, 129};
    p.window = windows[pick(6)];
    p.softcap = pick(3) == 0 ? 3.0f : 0.0f;
    p.alibi = pick(2) == 1;
    p.sinks = pick(2) == 1;
    const MaskKind masks[] = {MaskKind::none, MaskKind::none, MaskKind::boolean, MaskKind::additive};
    p.mask = masks[pick(4)];
    p.mask_broadcast = static_cast<MaskBroadcast>(pick(3));
    if (p.mask == MaskKind::none) p.mask_broadcast = MaskBroadcast::shared;
    p.top_k = pick(4) == 0 ? 3 : 0;
    add(p, pick(4) == 0 ? 20.0f : 1.0f);
  }
  // Large logits with the soft-cap (the cap really bites) and with ALiBi.
  for (const Problem& b : {bases[1], bases[4]}) {
    Problem p = b;
    p.causal = true;
    p.softcap = 4.0f;
    add(p, 30.0f, MaskPattern::blocks, "_large");
    p.softcap = 0.0f;
    p.alibi = true;
    p.window = 40;
    add(p, 30.0f, MaskPattern::blocks, "_large");
  }
  // Varlen: packed sequences at random cut points (some empty, seq_q != seq_kv within them),
  // each its own frame; alone and with a window, ALiBi, sinks, a soft-cap and top-left.
  // Packs: total seq_q, total seq_kv, sequences, d.
  const std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t> packs[] = {
      {300, 300, 4, 16}, {200, 350, 5, 32}, {4, 1000, 4, 64}, {65, 63, 7, 7}};
  for (bool causal : {false, true}) {
    for (const auto& [sq, skv, n, d] : packs) {
      Problem p = base(sq, skv, d, 4, 2, 1);
      p.causal = causal;
      p.sequences = n;
      add(p);
      p.window = 20;
      p.alibi = true;
      add(p);
      p.window = 0;
      p.alibi = false;
      p.sinks = true;
      p.softcap = 5.0f;
      p.causal_align = CausalAlign::top_left;
      add(p);
      p.sinks = false;
      p.softcap = 0.0f;
      p.top_k = 3;
      add(p);
    }
  }
  // Mask + varlen: the packed mask [total_q, total_kv] (shared or per head), each sequence reading
  // its diagonal block in its own frame (make_inputs: block classes in the frame, every third
  // sequence hidden entirely, NaN / junk where no sequence reads); boolean and additive, with
  // random cuts (empty sequences: the 4-query pack), with a window, and degenerate patterns.
  for (bool causal : {false, true}) {
    for (const auto& [sq, skv, n, d] : packs) {
      Problem p = base(sq, skv, d, 4, 2, 1);
      p.causal = causal;
      p.sequences = n;
      p.mask = MaskKind::boolean;
      add(p);
      p.mask = MaskKind::additive;
      p.mask_broadcast = MaskBroadcast::per_head;
      add(p);
      p.window = 20;
      p.sinks = true;
      p.causal_align = CausalAlign::top_left;
      add(p);
    }
  }
  for (MaskKind kind : {MaskKind::boolean, MaskKind::additive}) {
    Problem p = base(300, 300, 16, 4, 2, 1);
    p.sequences = 4;
    p.mask = kind;
    add(p, 1.0f, MaskPattern::all_hidden, "_allhidden");
    p.causal = true;
    add(p, 1.0f, MaskPattern::all_visible, "_allvisible");
    p.mask_broadcast = MaskBroadcast::per_head;
    add(p, 1.0f, MaskPattern::half_hidden, "_halfhidden");
  }
  // Strided tensors: Q/O in [batch, seq, heads, dim], K/V a padded KV cache (make_inputs); plain,
  // with variants and with varlen, on every base shape.
  for (const Problem& b : bases) {
    for (bool causal : {false, true}) {
      Problem p = b;
      p.causal = causal;
      p.strided = true;
      add(p);
      p.window = 33;
      p.softcap = 5.0f;
      p.sinks = true;
      add(p);
    }
  }
  {
    Problem p = base(300, 300, 16, 4, 2, 1);
    p.causal = p.strided = true;
    p.sequences = 4;
    add(p);
  }
  // Storage types: every third case again in bf16 and with fp32 Q/O on a bf16 KV cache.
  const std::size_t fp32_cases = cases.size();
  for (std::size_t i = 0; i < fp32_cases; i += 3) {
    for (Dtype dtype : {Dtype::bf16, Dtype::fp32}) {
      Case c = cases[i];
      const std::string tag = c.name.substr(c.problem.to_string().size());
      c.problem.dtype = dtype;
      c.problem.kv_dtype = Dtype::bf16;
      c.name = c.problem.to_string() + tag;
      cases.push_back(c);
    }
  }
  return cases;
}

double tolerance(const Problem& p, const Inputs& in) {
  const double scale = std::abs(p.effective_scale());
  double max_v = 0.0;
  for (float x : in.v) max_v = std::max(max_v, static_cast<double>(std::abs(x)));
  // L = scale * max_ij sum_d |q_id k_jd| <= scale * max_i |q_i|_2 * max_j |k_j|_2 (Cauchy-Schwarz),
  // cheap and within a small factor.
  auto max_row_norm = [](const std::vector<float>& x, std::int64_t d) {
    double best = 0.0;
    for (std::size_t r = 0; r + static_cast<std::size_t>(d) <= x.size(); r += static_cast<std::size_t>(d)) {
      double n = 0.0;
      for (std::int64_t i = 0; i < d; ++i) n += static_cast<double>(x[r + i]) * x[r + i];
      best = std::max(best, n);
    }
    return std::sqrt(best);
  };
  double logits = scale * max_row_norm(in.q, p.d_k) * max_row_norm(in.k, p.d_k);
  // Terms added to the logits in float32 round with them: the largest ALiBi bias and mask value.
  for (float s : in.slopes) logits += std::abs(s) * static_cast<double>(p.seq_q + p.seq_kv);
  double max_mask = 0.0;
  for (float m : in.mask_add)
    if (std::isfinite(m)) max_mask = std::max(max_mask, static_cast<double>(std::abs(m)));
  logits += max_mask;
  const double unit = std::ldexp(1.0, -24);
  const double bound = 2.0 * max_v * 2.0 * std::sqrt(static_cast<double>(p.d_k)) * unit * logits;
  return std::max(1e-4, bound);
}

Check compare(const Problem& p, const Inputs& in, const float* out, const std::vector<double>& ref, Dtype pv_type,
              const std::vector<double>* abs_v) {
  const double u_out = unit_roundoff(p.dtype), u_pv = unit_roundoff(pv_type);
  const double base = tolerance(p, in) * (1.0 + u_out);
  if (u_pv > 0.0 && (abs_v == nullptr || abs_v->size() != ref.size()))
    throw std::invalid_argument("reference::compare: a 16-bit pv_type needs attention_abs_v");
  Check c;
  double worst_ratio = -1.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double err = std::isfinite(out[i]) ? std::abs(out[i] - ref[i])
                                             : std::numeric_limits<double>::infinity();
    double tol = base + u_out * std::abs(ref[i]);
    if (u_pv > 0.0) tol += 2.0 * u_pv * (*abs_v)[i];
    const double ratio = err / tol;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      c.max_abs_error = err;
      c.tolerance = tol;
      c.worst_index = static_cast<std::int64_t>(i);
    }
  }
  return c;
}

namespace {

// Strided tests: the elements (rows of `dim`) of a [batch, heads, seq, dim] tensor moved between
// its dense form and a strided buffer (gather: strided -> dense). The strided buffer's other
// bytes stay all-ones (NaN in every type), so a kernel that reads or leaves padding fails.
std::size_t strided_span(const Strides& st, std::int64_t batch, std::int64_t heads, std::int64_t seq, std::int64_t dim) {
  return static_cast<std::size_t>((batch - 1) * st.batch + (heads - 1) * st.head + (seq - 1) * st.row + dim);
}

void move_rows(const Strides& st, std::int64_t batch, std::int64_t heads, std::int64_t seq, std::int64_t dim,
               Dtype type, unsigned char* dense, unsigned char* strided, bool gather) {
  // row_bytes: int4 elements take half a byte (its strides are even).
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < seq; ++i) {
        unsigned char* d = dense + row_bytes(type, ((b * heads + h) * seq + i) * dim);
        unsigned char* x = strided + row_bytes(type, b * st.batch + h * st.head + i * st.row);
        if (gather) {
          std::memcpy(d, x, row_bytes(type, dim));
        } else {
          std::memcpy(x, d, row_bytes(type, dim));
        }
      }
}

}  // namespace

Check run_and_compare(const Case& c, const Inputs& in, const std::vector<double>& ref,
                      const Options& options) {
  // Inputs are stored in buffers offset by one element, so no kernel can rely on alignment.
  const Problem& p = c.problem;
  Stored s = store(p, in, 1);
  const std::size_t osize = size_of(p.dtype);
  // All-ones bytes are NaN in every type: an element the kernel never writes fails.
  std::vector<unsigned char> out((static_cast<std::size_t>(p.out_elements()) + 1) * osize, 0xff);
  const VariantData var = in.variant();
  if (p.paged()) {
    // The packed K/V laid out in a pool of blocks through the case's table.
    const Stored packed = store(unpaged(p), in, 1);
    const PagedKv pool = page_kv(p, in, packed);
    VariantData paged_var = var;
    if (!pool.k_scales.empty()) paged_var.kv_scales.k = pool.k_scales.data();
    if (!pool.v_scales.empty()) paged_var.kv_scales.v = pool.v_scales.data();
    attune::attention(p, packed.q_data(), pool.k.data(), pool.v.data(), out.data() + osize, paged_var, options);
  } else if (p.strided) {
    // The same values laid out with the case's strides (one element of misalignment kept).
    auto restride = [&](std::vector<unsigned char>& bytes, std::size_t offset, const Strides& st, std::int64_t heads,
                        std::int64_t seq, std::int64_t dim, Dtype type) {
      std::vector<unsigned char> x(offset + row_bytes(type, static_cast<std::int64_t>(strided_span(st, p.batch, heads, seq, dim))), 0xff);
      move_rows(st, p.batch, heads, seq, dim, type, bytes.data() + offset, x.data() + offset, false);
      bytes = std::move(x);
    };
    restride(s.q, s.q_offset, var.q_strides, p.heads_q, p.seq_q, p.d_k, p.dtype);
    restride(s.k, s.kv_offset, var.k_strides, p.heads_kv, p.seq_kv, p.d_k, p.kv_type());
    restride(s.v, s.kv_offset, var.v_strides, p.heads_kv, p.seq_kv, p.d_v, p.kv_type());
    std::vector<unsigned char> strided_out(osize + strided_span(var.out_strides, p.batch, p.heads_q, p.seq_q, p.d_v) * osize, 0xff);
    attune::attention(p, s.q_data(), s.k_data(), s.v_data(), strided_out.data() + osize, var, options);
    move_rows(var.out_strides, p.batch, p.heads_q, p.seq_q, p.d_v, p.dtype, out.data() + osize, strided_out.data() + osize, true);
  } else {
    attune::attention(p, s.q_data(), s.k_data(), s.v_data(), out.data() + osize, var, options);
  }
  const std::vector<float> o = load_output(p, out.data() + osize);
  const Choice choice = resolve(p, options);
  const Dtype pv = choice.kernel->pv_dtype(p, choice.isa);
  if (pv == Dtype::fp32) return compare(p, in, o.data(), ref);
  const auto abs_v = attention_abs_v(unpaged(p), in.q.data(), in.k.data(), in.v.data(), in.variant());
  return compare(p, in, o.data(), ref, pv, &abs_v);
}

Problem shape(std::int64_t heads_q, std::int64_t heads_kv, std::int64_t seq_q, std::int64_t seq_kv, std::int64_t d,
              bool causal) {
  Problem p;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.seq_q = seq_q;
  p.seq_kv = seq_kv;
  p.d_k = p.d_v = d;
  p.causal = causal;
  return p;
}

}  // namespace attune::reference
