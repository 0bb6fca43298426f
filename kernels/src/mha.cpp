// Multi-head attention (attune/mha.hpp): projections and the output projection as CBLAS GEMMs
// over all batch x seq rows at once and attune::attention in between, on the GEMMs'
// [rows, heads * dim] layout as strided tensors when the kernel reads strides (simd, flash),
// else with the heads rearranged to and from [batch, heads, seq, dim].
#include "blas.hpp"
#include "kernel_impl.hpp"
#include "memory_limit.hpp"

#include <attune/error.hpp>
#include <attune/mha.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace attune {
namespace {

[[noreturn]] void fail(const std::string& what) { throw InvalidArgument("invalid mha problem: " + what); }

// The product of the factors, refusing 64-bit overflow and counts too large to address in bytes.
std::int64_t checked_count(std::initializer_list<std::int64_t> factors, const char* what) {
  std::int64_t n = 1;
  for (std::int64_t f : factors) {
    if (__builtin_mul_overflow(n, f, &n)) fail(std::string(what) + " overflows a 64-bit element count");
  }
  if (n > std::numeric_limits<std::int64_t>::max() / 8) {
    fail(std::string(what) + " has " + std::to_string(n) + " elements, too many to address");
  }
  return n;
}

// [batch, seq, heads * dim] (a GEMM's output) <-> [batch, heads, seq, dim] (attention's layout).
void split_heads(const float* src, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t dim,
                 float* dst) {
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t s = 0; s < seq; ++s)
      for (std::int64_t h = 0; h < heads; ++h)
        std::memcpy(dst + ((b * heads + h) * seq + s) * dim, src + ((b * seq + s) * heads + h) * dim,
                    static_cast<std::size_t>(dim) * sizeof(float));
}

void merge_heads(const float* src, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t dim,
                 float* dst) {
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t s = 0; s < seq; ++s)
      for (std::int64_t h = 0; h < heads; ++h)
        std::memcpy(dst + ((b * seq + s) * heads + h) * dim, src + ((b * heads + h) * seq + s) * dim,
                    static_cast<std::size_t>(dim) * sizeof(float));
}

}  // namespace

void MhaProblem::validate() const {
  const std::pair<const char*, std::int64_t> positive[] = {
      {"batch", batch},       {"seq", seq}, {"d_model", d_model}, {"heads_q", heads_q},
      {"heads_kv", heads_kv}, {"d_k", d_k}, {"d_v", d_v}};
  for (const auto& [name, value] : positive) {
    if (value <= 0) fail(std::string(name) + " = " + std::to_string(value) + " must be positive");
  }
  if (heads_q % heads_kv != 0) {
    fail("heads_q = " + std::to_string(heads_q) +
         " is not a multiple of heads_kv = " + std::to_string(heads_kv));
  }
  if (scale && !std::isfinite(*scale)) fail("scale = " + std::to_string(*scale) + " must be finite");
  checked_count({batch, seq, d_model}, "x (batch x seq x d_model)");
  checked_count({d_model, heads_q, d_k}, "wq (d_model x heads_q * d_k)");
  checked_count({d_model, heads_kv, d_k}, "wk (d_model x heads_kv * d_k)");
  checked_count({d_model, heads_kv, d_v}, "wv (d_model x heads_kv * d_v)");
  checked_count({heads_q, d_v, d_model}, "wo (heads_q * d_v x d_model)");
  attention_problem().validate();  // the projected Q, K, V, O and the score matrix
  // The GEMMs' dimensions (all products are bounded by the counts checked above).
  detail::require_blas_int(batch * seq, "batch * seq");
  detail::require_blas_int(d_model, "d_model");
  detail::require_blas_int(heads_q * d_k, "heads_q * d_k");
  detail::require_blas_int(heads_kv * std::max(d_k, d_v), "heads_kv * max(d_k, d_v)");
  detail::require_blas_int(heads_q * d_v, "heads_q * d_v");
}

Problem MhaProblem::attention_problem() const {
  Problem p;
  p.batch = batch;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.seq_q = p.seq_kv = seq;
  p.d_k = d_k;
  p.d_v = d_v;
  p.causal = causal;
  p.scale = scale;
  return p;
}

std::int64_t MhaProblem::x_elements() const { return batch * seq * d_model; }
std::int64_t MhaProblem::wq_elements() const { return d_model * heads_q * d_k; }
std::int64_t MhaProblem::wk_elements() const { return d_model * heads_kv * d_k; }
std::int64_t MhaProblem::wv_elements() const { return d_model * heads_kv * d_v; }
std::int64_t MhaProblem::wo_elements() const { return heads_q * d_v * d_model; }
std::int64_t MhaProblem::y_elements() const { return x_elements(); }

void mha(const MhaProblem& mp, const float* x, const float* wq, const float* wk, const float* wv,
         const float* wo, float* y, const Options& options) {
  mp.validate();
  if (x == nullptr || wq == nullptr || wk == nullptr || wv == nullptr || wo == nullptr || y == nullptr) {
    throw InvalidArgument("mha: x, wq, wk, wv, wo and y must be non-null");
  }
  const Problem p = mp.attention_problem();
  // Resolves the kernel: an unknown kernel, ISA or bad config is refused before allocating.
  const Choice choice = resolve(p, options);
  // Kernels that read strided tensors take the projections as the GEMMs write them,
  // [batch, seq, heads, dim], and write O in the layout WO multiplies: no transposes, no stage.
  Problem ps = p;
  ps.strided = true;
  const bool in_place = choice.kernel->supports(ps, choice.isa);
  const std::size_t attention_need = workspace_bytes(in_place ? ps : p, options);
  const std::int64_t rows = mp.batch * mp.seq;
  // One GEMM output at a time: the largest is Q or O (heads_kv <= heads_q), both validated counts.
  const std::int64_t stage_floats = in_place ? 0 : rows * mp.heads_q * std::max(mp.d_k, mp.d_v);
  // The staging buffer, the projected Q, K, V and the attention output, and attention's own
  // working memory: refused as a whole before any of it is allocated.
  std::size_t need = detail::float_bytes({stage_floats});
  for (std::int64_t n : {p.q_elements(), p.k_elements(), p.v_elements(), p.out_elements()})
    need = detail::saturating_add(need, detail::float_bytes({n}));
  need = detail::saturating_add(need, attention_need);
  detail::require_workspace("mha", need, options);
  detail::set_blas_threads(options.config.threads);

  try {
    std::vector<float> stage(static_cast<std::size_t>(stage_floats));
    std::vector<float> q(static_cast<std::size_t>(p.q_elements())), k(static_cast<std::size_t>(p.k_elements()));
    std::vector<float> v(static_cast<std::size_t>(p.v_elements())),
        o(static_cast<std::size_t>(p.out_elements()));

    // X W for `heads` heads of `dim` columns: [batch, seq, heads, dim] in place, else
    // rearranged to [batch, heads, seq, dim].
    auto project = [&](const float* w, std::int64_t heads, std::int64_t dim, float* dst) {
      const std::int64_t cols = heads * dim;
      float* out = in_place ? dst : stage.data();
      detail::sgemm(false, rows, cols, mp.d_model, 1.0f, x, mp.d_model, w, cols, 0.0f, out, cols);
      if (!in_place) split_heads(stage.data(), mp.batch, mp.seq, heads, dim, dst);
    };
    project(wq, mp.heads_q, mp.d_k, q.data());
    project(wk, mp.heads_kv, mp.d_k, k.data());
    project(wv, mp.heads_kv, mp.d_v, v.data());

    const std::int64_t concat_cols = mp.heads_q * mp.d_v;
    const float* concat = o.data();  // y = concat_h(O_h) wo
    if (in_place) {
      VariantData layout;
      layout.q_strides = Strides::seq_major(mp.heads_q, mp.seq, mp.d_k);
      layout.k_strides = Strides::seq_major(mp.heads_kv, mp.seq, mp.d_k);
      layout.v_strides = Strides::seq_major(mp.heads_kv, mp.seq, mp.d_v);
      layout.out_strides = Strides::seq_major(mp.heads_q, mp.seq, mp.d_v);
      attention(ps, q.data(), k.data(), v.data(), o.data(), layout, options);
    } else {
      attention(p, q.data(), k.data(), v.data(), o.data(), options);
      merge_heads(o.data(), mp.batch, mp.seq, mp.heads_q, mp.d_v, stage.data());
      concat = stage.data();
    }
    detail::sgemm(false, rows, mp.d_model, concat_cols, 1.0f, concat, concat_cols, wo, mp.d_model, 0.0f, y,
                  mp.d_model);
  } catch (const std::bad_alloc&) {
    throw MemoryError(detail::out_of_memory("mha", need));
  }
}

}  // namespace attune
