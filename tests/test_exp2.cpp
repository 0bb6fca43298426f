// Accuracy of the softmax's exp2 on every runnable ISA, over the whole range softmax uses
// ([-126, 0] after max subtraction, plus positive inputs), and its edge cases.
#include "simd/tile.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cmath>
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

// The vector ISAs (each has the softmax's exp2); amx's softmax is avx512's exp2.
std::vector<attune::Isa> runnable() {
  std::vector<attune::Isa> out = attune::runnable_isas();
  std::erase(out, attune::Isa::amx);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Isa, Exp2, ::testing::ValuesIn(runnable()),
                         [](const auto& param_info) { return std::string(attune::to_string(param_info.param)); });

}  // namespace
