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
#include <stdexcept>

namespace attune::reference {

std::vector<double> attention_weights(const Problem& p, const float* q, const float* k) {
  std::vector<double> w(static_cast<std::size_t>(p.batch * p.heads_q * p.seq_q * p.seq_kv), 0.0);
  const double scale = p.effective_scale();
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      const float* qh = q + (b * p.heads_q + h) * p.seq_q * p.d_k;
      const float* kh = k + (b * p.heads_kv + h / p.group_size()) * p.seq_kv * p.d_k;
      for (std::int64_t i = 0; i < p.seq_q; ++i) {
        double* row = w.data() + ((b * p.heads_q + h) * p.seq_q + i) * p.seq_kv;
        const std::int64_t visible = p.visible_keys(i);
        double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (std::int64_t j = 0; j < visible; ++j) {
          double dot = 0.0;
          for (std::int64_t d = 0; d < p.d_k; ++d) dot += static_cast<double>(qh[i * p.d_k + d]) * kh[j * p.d_k + d];
          row[j] = scale * dot;
          m = std::max(m, row[j]);
        }
        for (std::int64_t j = 0; j < visible; ++j) sum += (row[j] = std::exp(row[j] - m));
        for (std::int64_t j = 0; j < visible; ++j) row[j] /= sum;
      }
    }
  }
  return w;
}

namespace {

// O = W V, or W |V| (abs_v): the weighted sums of the value rows.
std::vector<double> weighted_values(const Problem& p, const float* q, const float* k, const float* v, bool abs_v) {
  const std::vector<double> w = attention_weights(p, q, k);
  std::vector<double> out(static_cast<std::size_t>(p.out_elements()), 0.0);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      const float* vh = v + (b * p.heads_kv + h / p.group_size()) * p.seq_kv * p.d_v;
      for (std::int64_t i = 0; i < p.seq_q; ++i) {
        const double* row = w.data() + ((b * p.heads_q + h) * p.seq_q + i) * p.seq_kv;
        double* o = out.data() + ((b * p.heads_q + h) * p.seq_q + i) * p.d_v;
        for (std::int64_t j = 0; j < p.visible_keys(i); ++j)
          for (std::int64_t d = 0; d < p.d_v; ++d) {
            const double x = vh[j * p.d_v + d];
            o[d] += row[j] * (abs_v ? std::abs(x) : x);
          }
      }
    }
  }
  return out;
}

}  // namespace

std::vector<double> attention(const Problem& p, const float* q, const float* k, const float* v) {
  return weighted_values(p, q, k, v, false);
}

std::vector<double> attention_abs_v(const Problem& p, const float* q, const float* k, const float* v) {
  return weighted_values(p, q, k, v, true);
}

Inputs make_inputs(const Problem& p, float q_scale, std::uint64_t seed) {
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
  s.k = stored_bytes(p.kv_type(), in.k, pad);
  s.v = stored_bytes(p.kv_type(), in.v, pad);
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
    case Dtype::fp32:
      break;
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
  const double logits = scale * max_row_norm(in.q, p.d_k) * max_row_norm(in.k, p.d_k);
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

Check run_and_compare(const Case& c, const Inputs& in, const std::vector<double>& ref,
                      const Options& options) {
  // Inputs are stored in buffers offset by one element, so no kernel can rely on alignment.
  const Problem& p = c.problem;
  const Stored s = store(p, in, 1);
  const std::size_t osize = size_of(p.dtype);
  // All-ones bytes are NaN in every type: an element the kernel never writes fails.
  std::vector<unsigned char> out((static_cast<std::size_t>(p.out_elements()) + 1) * osize, 0xff);
  attune::attention(p, s.q_data(), s.k_data(), s.v_data(), out.data() + osize, options);
  const std::vector<float> o = load_output(p, out.data() + osize);
  const Choice choice = resolve(p, options);
  const Dtype pv = choice.kernel->pv_dtype(p, choice.isa);
  if (pv == Dtype::fp32) return compare(p, in, o.data(), ref);
  const auto abs_v = attention_abs_v(p, in.q.data(), in.k.data(), in.v.data());
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
