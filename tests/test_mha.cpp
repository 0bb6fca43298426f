// attune::mha against a float64 reference: projections in double, the float64 attention
// reference (reference/), the output projection in double. Every registered kernel runs.
//
// Tolerance: max abs error <= 1e-4 * max(1, max|y|). The weights are scaled so every stage is
// O(1): x ~ N(0, 1), wq/wk/wv ~ N(0, 1/d_model) (so Q, K, V are unit-normal like the attention
// suite's inputs), wo ~ N(0, 1/(heads_q d_v)). Errors, stage by stage:
//  - float32 projections: a d_model-term dot product, ~sqrt(d_model) 2^-24 ~ 5e-7 relative; the
//    reference rounds its double projections to float before attention, so what remains is that
//    GEMM error, which moves the logits by ~1e-6.
//  - attention: <= ~1e-5 observed on unit-normal inputs, 1e-4 bound (reference/reference.cpp).
//  - output projection: y = concat(O) wo sums heads_q d_v errors of O with weights of rms
//    1/sqrt(heads_q d_v) and random signs, so the attention's error passes through at about its
//    own size; the float32 GEMM adds ~sqrt(heads_q d_v) 2^-24 |y| ~ 1e-6.
// So at most ~1e-5 expected (about 1e-6 observed on these shapes) against a 1e-4 bound scaled by
// the output's magnitude (|y| reaches 1 to 4 here), while a wrong head mapping, layout or mask
// gives errors of order 0.1 to 1.
#include "reference.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using attune::MhaProblem;

struct Weights {
  std::vector<float> x, wq, wk, wv, wo;
};

Weights make_weights(const MhaProblem& p, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto fill = [&](std::int64_t n, double stddev) {
    std::normal_distribution<float> normal(0.0f, static_cast<float>(stddev));
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& f : v) f = normal(rng);
    return v;
  };
  Weights w;
  w.x = fill(p.x_elements(), 1.0);
  const double in_scale = 1.0 / std::sqrt(static_cast<double>(p.d_model));
  w.wq = fill(p.wq_elements(), in_scale);
  w.wk = fill(p.wk_elements(), in_scale);
  w.wv = fill(p.wv_elements(), in_scale);
  w.wo = fill(p.wo_elements(), 1.0 / std::sqrt(static_cast<double>(p.heads_q * p.d_v)));
  return w;
}

// x w in double, as [batch, heads, seq, dim], rounded to float (the attention reference's input).
std::vector<float> project(const MhaProblem& p, const std::vector<float>& x, const std::vector<float>& w,
                           std::int64_t heads, std::int64_t dim) {
  std::vector<float> out(static_cast<std::size_t>(p.batch * heads * p.seq * dim));
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t s = 0; s < p.seq; ++s)
      for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t c = 0; c < dim; ++c) {
          double acc = 0.0;
          for (std::int64_t m = 0; m < p.d_model; ++m)
            acc += static_cast<double>(x[(b * p.seq + s) * p.d_model + m]) * w[m * heads * dim + h * dim + c];
          out[((b * heads + h) * p.seq + s) * dim + c] = static_cast<float>(acc);
        }
  return out;
}

std::vector<double> reference_mha(const MhaProblem& p, const Weights& w) {
  const auto q = project(p, w.x, w.wq, p.heads_q, p.d_k);
  const auto k = project(p, w.x, w.wk, p.heads_kv, p.d_k);
  const auto v = project(p, w.x, w.wv, p.heads_kv, p.d_v);
  const auto o = attune::reference::attention(p.attention_problem(), q.data(), k.data(), v.data());
  std::vector<double> y(static_cast<std::size_t>(p.y_elements()), 0.0);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t s = 0; s < p.seq; ++s)
      for (std::int64_t h = 0; h < p.heads_q; ++h)
        for (std::int64_t c = 0; c < p.d_v; ++c) {
          const double oc = o[static_cast<std::size_t>(((b * p.heads_q + h) * p.seq + s) * p.d_v + c)];
          const float* wo_row = w.wo.data() + (h * p.d_v + c) * p.d_model;
          double* y_row = y.data() + (b * p.seq + s) * p.d_model;
          for (std::int64_t m = 0; m < p.d_model; ++m) y_row[m] += oc * wo_row[m];
        }
  return y;
}

MhaProblem shape(std::int64_t batch, std::int64_t seq, std::int64_t d_model, std::int64_t heads_q,
                 std::int64_t heads_kv, std::int64_t d_k, std::int64_t d_v, bool causal) {
  MhaProblem p;
  p.batch = batch;
  p.seq = seq;
  p.d_model = d_model;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.d_k = d_k;
  p.d_v = d_v;
  p.causal = causal;
  return p;
}

struct MhaCase {
  std::string name;
  MhaProblem problem;
};

std::vector<MhaCase> cases() {
  MhaProblem scaled = shape(1, 20, 24, 3, 3, 8, 8, true);
  scaled.scale = 0.3f;
  return {
      {"mha_b2_s17_dm32_h4", shape(2, 17, 32, 4, 4, 8, 8, false)},
      {"gqa_b1_s33_dm48_h6to2_causal", shape(1, 33, 48, 6, 2, 16, 8, true)},
      {"mqa_b3_s65_dm64_h8to1_dv16_causal", shape(3, 65, 64, 8, 1, 8, 16, true)},
      {"odd_b1_s7_dm7_h1_dk5_dv3", shape(1, 7, 7, 1, 1, 5, 3, false)},
      {"single_token", shape(2, 1, 16, 4, 2, 4, 4, true)},
      {"long_b1_s257_dm128_h4to2_causal", shape(1, 257, 128, 4, 2, 32, 32, true)},
      {"scale_0.3_causal", scaled},
  };
}

// Keeps GoogleTest from dumping the parameter's bytes (padding included); the name says it all.
void PrintTo(const MhaCase& c, std::ostream* os) { *os << c.name; }

class Mha : public ::testing::TestWithParam<MhaCase> {};

TEST_P(Mha, MatchesFloat64ReferenceWithEveryKernel) {
  const MhaProblem& p = GetParam().problem;
  const Weights w = make_weights(p, 7);
  const auto ref = reference_mha(p, w);
  double max_ref = 0.0;
  for (double r : ref) max_ref = std::max(max_ref, std::abs(r));
  const double tolerance = 1e-4 * std::max(1.0, max_ref);

  std::vector<std::string> names = {"auto"};
  for (const attune::Kernel* k : attune::kernels()) {  // those that take fp32 (mha's type)
    const auto isas = attune::runnable_isas(*k);
    if (std::any_of(isas.begin(), isas.end(), [&](attune::Isa i) { return k->supports(attune::Problem{}, i); }))
      names.emplace_back(k->name());
  }
  for (const std::string& name : names) {
    attune::Options o;
    o.kernel = name;
    std::vector<float> y(static_cast<std::size_t>(p.y_elements()), -1.0f);
    attune::mha(p, w.x.data(), w.wq.data(), w.wk.data(), w.wv.data(), w.wo.data(), y.data(), o);
    double worst = 0.0;
    std::size_t worst_at = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      const double err = std::isnan(y[i]) ? INFINITY : std::abs(y[i] - ref[i]);
      if (err > worst) worst = err, worst_at = i;
    }
    EXPECT_LE(worst, tolerance) << "kernel " << name << " on " << GetParam().name
                                << ": worst error at flat index " << worst_at << " (reference "
                                << ref[worst_at] << ", got " << y[worst_at] << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Mha, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<MhaCase>& param_info) {
                           std::string n = param_info.param.name;
                           std::replace(n.begin(), n.end(), '.', '_');
                           return n;
                         });

// The BLAS threads of the projections follow Options::config.threads; results do not depend on it
// beyond float rounding. The projections are BLAS's arithmetic, so no bits are asserted
// (docs/robustness.md): two runs with one setting agree within rounding, and both match the reference.
TEST(MhaOptions, ThreadsAndDeterminism) {
  const MhaProblem p = shape(2, 64, 96, 4, 2, 24, 24, true);
  const Weights w = make_weights(p, 3);
  const auto ref = reference_mha(p, w);
  for (int threads : {1, 2}) {
    attune::Options o;
    o.kernel = "flash";
    o.config.threads = threads;
    std::vector<float> a(static_cast<std::size_t>(p.y_elements())), b(a.size());
    attune::mha(p, w.x.data(), w.wq.data(), w.wk.data(), w.wv.data(), w.wo.data(), a.data(), o);
    attune::mha(p, w.x.data(), w.wq.data(), w.wk.data(), w.wv.data(), w.wo.data(), b.data(), o);
    for (std::size_t i = 0; i < a.size(); ++i) {
      ASSERT_NEAR(a[i], b[i], 1e-6) << threads << " threads, index " << i;
      ASSERT_NEAR(a[i], ref[i], 1e-4) << threads << " threads, index " << i;
    }
  }
}

// Each invalid field is refused with InvalidArgument naming it, before anything is allocated
// (the huge shapes would need terabytes).
void expect_refused(const MhaProblem& p, const std::string& field) {
  float dummy[1] = {0.0f};
  try {
    attune::mha(p, dummy, dummy, dummy, dummy, dummy, dummy);
    ADD_FAILURE() << "accepted; expected an error naming " << field;
  } catch (const attune::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(MhaValidation, NamesTheBadField) {
  const MhaProblem good = shape(1, 4, 8, 2, 1, 4, 4, false);
  const std::pair<const char*, std::int64_t MhaProblem::*> fields[] = {{"batch", &MhaProblem::batch},
                                                                       {"seq", &MhaProblem::seq},
                                                                       {"d_model", &MhaProblem::d_model},
                                                                       {"heads_q", &MhaProblem::heads_q},
                                                                       {"heads_kv", &MhaProblem::heads_kv},
                                                                       {"d_k", &MhaProblem::d_k},
                                                                       {"d_v", &MhaProblem::d_v}};
  for (const auto& [field, member] : fields) {
    for (std::int64_t bad : {0, -3}) {
      MhaProblem p = good;
      p.*member = bad;
      expect_refused(p, std::string(field) + " = " + std::to_string(bad));
    }
  }
  MhaProblem p = good;
  p.heads_q = 3;
  p.heads_kv = 2;
  expect_refused(p, "heads_q = 3 is not a multiple of heads_kv = 2");
  p = good;
  p.scale = NAN;
  expect_refused(p, "scale");
}

TEST(MhaValidation, RefusesOverflowBeforeAllocating) {
  expect_refused(shape(1, 1, std::int64_t{1} << 40, 1 << 20, 1, 1 << 20, 1, false), "wq");
  expect_refused(shape(std::int64_t{1} << 62, 4, 4, 1, 1, 1, 1, false), "x (batch x seq x d_model)");
  expect_refused(shape(1, std::int64_t{1} << 31, 1, 1, 1, 1, 1, false), "score matrix");
  // Within 64-bit counts but beyond CBLAS's 32-bit int dimensions.
  expect_refused(shape(1, 1, std::int64_t{3} << 30, 1, 1, 1, 1, false), "d_model");
}

TEST(MhaValidation, RefusesNullPointersAndBadOptions) {
  const MhaProblem p = shape(1, 4, 8, 2, 1, 4, 4, false);
  const Weights w = make_weights(p, 1);
  std::vector<float> y(static_cast<std::size_t>(p.y_elements()));
  EXPECT_THROW(attune::mha(p, nullptr, w.wq.data(), w.wk.data(), w.wv.data(), w.wo.data(), y.data()),
               attune::InvalidArgument);
  EXPECT_THROW(attune::mha(p, w.x.data(), w.wq.data(), w.wk.data(), w.wv.data(), nullptr, y.data()),
               attune::InvalidArgument);
  attune::Options o;
  o.kernel = "nosuch";
  EXPECT_THROW(attune::mha(p, w.x.data(), w.wq.data(), w.wk.data(), w.wv.data(), w.wo.data(), y.data(), o),
               attune::InvalidArgument);
  o.kernel = "auto";
  o.config.threads = -1;
  EXPECT_THROW(attune::mha(p, w.x.data(), w.wq.data(), w.wk.data(), w.wv.data(), w.wo.data(), y.data(), o),
               attune::InvalidArgument);
}

// The gemm kernel refuses a score matrix over its 1 GiB scratch limit before allocating it.
TEST(GemmKernel, RefusesScoreMatrixOverScratchLimit) {
  attune::Problem p;
  p.seq_q = 16385;  // 16385^2 floats > 1 GiB; 16384^2 would be exactly at the limit
  p.seq_kv = 16385;
  p.d_k = p.d_v = 1;
  float dummy[1] = {0.0f};
  try {
    attune::attention(p, dummy, dummy, dummy, dummy, {"gemm", std::nullopt, {}});
    ADD_FAILURE() << "accepted";
  } catch (const attune::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("score matrix"), std::string::npos) << e.what();
  }
}

}  // namespace
