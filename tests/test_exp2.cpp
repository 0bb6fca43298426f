// Accuracy of the softmax's exp2 on every runnable ISA, over the whole range softmax uses
// ([-126, 0] after max subtraction, plus positive inputs), and its edge cases.
#include "simd/tile.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

namespace {

class Exp2 : public ::testing::TestWithParam<attune::Isa> {};

TEST_P(Exp2, RelativeErrorBelow2e7OnSoftmaxRange) {
  const auto& ops = attune::simd::isa_ops(GetParam());
  std::vector<float> x;
  for (double v = -126.0; v <= 10.0; v += 1.0 / 4096) x.push_back(static_cast<float>(v));
  x.push_back(-0.0f);
  x.push_back(std::nextafter(0.0f, -1.0f));
  std::vector<float> y(x.size());
  ops.exp2(x.data(), y.data(), static_cast<std::int64_t>(x.size()));
  double worst = 0.0;
  float worst_x = 0.0f;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double exact = std::exp2(static_cast<double>(x[i]));
    const double rel = std::abs(y[i] - exact) / exact;
    if (rel > worst) {
      worst = rel;
      worst_x = x[i];
    }
  }
  RecordProperty("max_relative_error", std::to_string(worst));
  EXPECT_LT(worst, 2e-7) << "worst at x = " << worst_x;
}

TEST_P(Exp2, MaskedAndVeryNegativeInputsGiveExactZero) {
  const auto& ops = attune::simd::isa_ops(GetParam());
  const float inf = std::numeric_limits<float>::infinity();
  // Enough elements to exercise both the vector body and the scalar tail.
  std::vector<float> x = {-inf, -1e30f, -1000.0f, -150.0f, -126.5f, -127.0f, -inf, -200.0f,
                          -inf, -1e30f, -1000.0f, -150.0f, -126.5f, -127.0f, -inf, -200.0f, -inf};
  std::vector<float> y(x.size(), 1.0f);
  ops.exp2(x.data(), y.data(), static_cast<std::int64_t>(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(y[i], 0.0f) << "x = " << x[i];  // exactly zero: no subnormal, no NaN
  }
}

TEST_P(Exp2, SmallestNormalRangeIsNormal) {
  const auto& ops = attune::simd::isa_ops(GetParam());
  std::vector<float> x(33, -125.9f), y(33);
  ops.exp2(x.data(), y.data(), 33);
  for (float v : y) EXPECT_EQ(std::fpclassify(v), FP_NORMAL);
}

// The variants' soft-cap (cap tanh(x / cap), a rational approximation): absolute error at most
// 3.5e-7 x cap over the whole float line (the approximation's 4e-8, the clamp at 9's 3e-8, and
// float32 evaluation), so it moves a capped logit by about as much as its own float32 rounding
// (cap x 6e-8) a few times over. Large, infinite and NaN inputs as the reference gives them.
TEST_P(Exp2, SoftCapAbsoluteErrorBelow3p5e7TimesCap) {
  const auto& ops = attune::simd::isa_ops(GetParam());
  for (float cap : {1.0f, 4.0f, 30.0f * 1.44269504f, 1e-3f}) {
    std::vector<float> x;
    for (double u = -12.0; u <= 12.0; u += 1.0 / 2048) x.push_back(static_cast<float>(u * cap));
    std::vector<float> y(x.size());
    ops.softcap(x.data(), y.data(), static_cast<std::int64_t>(x.size()), cap);
    double worst = 0.0;
    float worst_x = 0.0f;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double exact = cap * std::tanh(static_cast<double>(x[i]) / cap);
      const double err = std::abs(y[i] - exact) / cap;
      if (err > worst) {
        worst = err;
        worst_x = x[i];
      }
    }
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", worst);
    RecordProperty("max_abs_error_over_cap_" + std::to_string(cap), text);
    EXPECT_LT(worst, 3.5e-7) << "cap " << cap << ", worst at x = " << worst_x;
  }
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-inf, inf, 1e30f, -1e30f, std::nanf(""), 0.0f, -0.0f, 1e-30f,
                          -inf, inf, 1e30f, -1e30f, std::nanf(""), 0.0f, -0.0f, 1e-30f, -inf};
  std::vector<float> y(x.size());
  ops.softcap(x.data(), y.data(), static_cast<std::int64_t>(x.size()), 5.0f);
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(y[i])) << "NaN stays NaN";
    } else if (std::isinf(x[i]) || std::abs(x[i]) > 1e20f) {
      EXPECT_NEAR(y[i], std::copysign(5.0f, x[i]), 5.0 * 3.5e-7) << "x = " << x[i];
    } else {
      EXPECT_NEAR(y[i], x[i], std::abs(x[i]) * 4e-7) << "x = " << x[i];  // tanh u = u for tiny u
    }
  }
}

// The vector ISAs (each has the softmax's exp2); amx's softmax is avx512's exp2.
std::vector<attune::Isa> runnable() {
  std::vector<attune::Isa> out = attune::runnable_isas();
  std::erase(out, attune::Isa::amx);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Isa, Exp2, ::testing::ValuesIn(runnable()),
                         [](const auto& param_info) { return std::string(attune::to_string(param_info.param)); });

}  // namespace
