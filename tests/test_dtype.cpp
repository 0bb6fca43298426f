// Element types: the float32 <-> bf16/fp16 conversions (every bit pattern), and the 16-bit error
// bound of the reference (reference/reference.cpp): loose enough for correct storage and
// P rounding, tight enough that a broken kernel's output fails it.
#include "reference.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace {

using attune::Dtype;

float from_bits(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

TEST(Dtype, NamesRoundTrip) {
  for (Dtype t : attune::kAllDtypes) EXPECT_EQ(attune::parse_dtype(attune::to_string(t)), t);
  EXPECT_FALSE(attune::parse_dtype("float16").has_value());
  EXPECT_EQ(attune::size_of(Dtype::fp32), 4u);
  EXPECT_EQ(attune::size_of(Dtype::bf16), 2u);
  EXPECT_EQ(attune::size_of(Dtype::fp16), 2u);
}

// Every non-NaN bit pattern widens and narrows back to itself; NaNs stay NaN.
TEST(Dtype, EveryBitPatternRoundTrips) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f16 = attune::to_float(attune::fp16{bits});
    const float bf = attune::to_float(attune::bf16{bits});
    if (std::isnan(f16)) {
      EXPECT_TRUE(std::isnan(attune::to_float(attune::to_fp16(f16))));
    } else {
      ASSERT_EQ(attune::to_fp16(f16).bits, bits) << "fp16 " << b;
    }
    if (std::isnan(bf)) {
      EXPECT_TRUE(std::isnan(attune::to_float(attune::to_bf16(bf))));
    } else {
      ASSERT_EQ(attune::to_bf16(bf).bits, bits) << "bf16 " << b;
    }
  }
}

// Values between two neighbours round to the nearer, ties to the even one; widening is exact
// against known values (fp16 max 65504, smallest subnormal 2^-24).
TEST(Dtype, RoundsToNearestEven) {
  EXPECT_EQ(attune::to_float(attune::fp16{0x7bff}), 65504.0f);
  EXPECT_EQ(attune::to_float(attune::fp16{0x0001}), std::ldexp(1.0f, -24));
  EXPECT_EQ(attune::to_float(attune::bf16{0x3f80}), 1.0f);
  // bf16 neighbours of 1: 1 and 1 + 2^-7. The midpoint ties to 1 (even), just above goes up.
  EXPECT_EQ(attune::to_bf16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80);
  EXPECT_EQ(attune::to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)).bits, 0x3f81);
  // 1 + 3 * 2^-8 is the midpoint of 0x3f81 and 0x3f82: ties to the even 0x3f82.
  EXPECT_EQ(attune::to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82);
  // fp16: 1 + 2^-11 ties to 1; 2049 ties to 2048, 2051 to 2052.
  EXPECT_EQ(attune::to_fp16(1.0f + std::ldexp(1.0f, -11)).bits, 0x3c00);
  EXPECT_EQ(attune::to_float(attune::to_fp16(2049.0f)), 2048.0f);
  EXPECT_EQ(attune::to_float(attune::to_fp16(2051.0f)), 2052.0f);
  // Range: fp16 overflows to inf from 65520 on; below it rounds to 65504.
  EXPECT_EQ(attune::to_float(attune::to_fp16(65519.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(attune::to_float(attune::to_fp16(65520.0f))));
  EXPECT_TRUE(std::isinf(attune::to_float(attune::to_bf16(std::numeric_limits<float>::max()))));
  // fp16 subnormals: 3 * 2^-26 is between 0 and 2^-24, nearer 2^-24; 2^-25 ties to 0.
  EXPECT_EQ(attune::to_fp16(3 * std::ldexp(1.0f, -26)).bits, 0x0001);
  EXPECT_EQ(attune::to_fp16(std::ldexp(1.0f, -25)).bits, 0x0000);
  EXPECT_EQ(attune::to_fp16(-std::ldexp(1.0f, -25)).bits, 0x8000);
  EXPECT_TRUE(std::isnan(attune::to_float(attune::to_bf16(from_bits(0x7f800001u)))));  // signalling NaN stays NaN
}

// Relative error of rounding a float to 16 bits is at most the unit roundoff the bound uses.
TEST(Dtype, RoundingErrorWithinUnitRoundoff) {
  std::uint32_t state = 12345;
  for (int i = 0; i < 100000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float x = std::ldexp(1.0f + static_cast<float>(state >> 8) / 16777216.0f, static_cast<int>(state % 20) - 10);
    for (Dtype t : {Dtype::bf16, Dtype::fp16}) {
      const double r = attune::round_to(t, x);
      EXPECT_LE(std::abs(r - x) / x, attune::reference::unit_roundoff(t)) << attune::to_string(t) << " " << x;
    }
  }
}

// The reference's bound on 16-bit problems: a correct float32 computation of the stored values,
// rounded once to the output type, passes (with P rounded to bf16 too); broken outputs fail.
struct Broken {
  const char* what;
  std::vector<double> out;
};

// The reference computed wrongly in the ways kernels go wrong.
std::vector<Broken> broken_outputs(const attune::Problem& p, const attune::reference::Inputs& in) {
  std::vector<Broken> out;
  // The last visible key of every row dropped (an off-by-one mask or a skipped tail).
  auto w = attune::reference::attention_weights(p, in.q.data(), in.k.data());
  std::vector<double> dropped(static_cast<std::size_t>(p.out_elements()), 0.0);
  for (std::int64_t h = 0; h < p.batch * p.heads_q; ++h) {
    const std::int64_t hk = (h / p.heads_q) * p.heads_kv + (h % p.heads_q) / p.group_size();
    for (std::int64_t i = 0; i < p.seq_q; ++i) {
      double* row = w.data() + (h * p.seq_q + i) * p.seq_kv;
      const std::int64_t n = p.visible_keys(i);
      if (n == 0) continue;
      double sum = 0.0;
      for (std::int64_t j = 0; j + 1 < n; ++j) sum += row[j];
      for (std::int64_t j = 0; j + 1 < n; ++j)
        for (std::int64_t d = 0; d < p.d_v; ++d)
          dropped[static_cast<std::size_t>((h * p.seq_q + i) * p.d_v + d)] +=
              row[j] / sum * in.v[static_cast<std::size_t>((hk * p.seq_kv + j) * p.d_v + d)];
    }
  }
  out.push_back({"last key dropped", dropped});
  // The scale off by 10% (a wrong log2(e) fold or scale).
  attune::Problem scaled = p;
  scaled.scale = p.effective_scale() * 1.1f;
  out.push_back({"scale x1.1", attune::reference::attention(scaled, in.q.data(), in.k.data(), in.v.data())});
  // K/V head mapping broken for grouped-query heads (every query head reads K/V head 0).
  if (p.heads_kv > 1) {
    attune::Problem mqa = p;
    mqa.heads_kv = 1;
    std::vector<float> k0(in.k.begin(), in.k.begin() + p.seq_kv * p.d_k), v0(in.v.begin(), in.v.begin() + p.seq_kv * p.d_v);
    out.push_back({"kv head 0 for all", attune::reference::attention(mqa, in.q.data(), k0.data(), v0.data())});
  }
  return out;
}

class Bound16 : public ::testing::TestWithParam<std::pair<Dtype, Dtype>> {};

TEST_P(Bound16, HoldsForCorrectAndFailsForBrokenOutputs) {
  for (bool causal : {false, true}) {
    attune::Problem p = attune::reference::shape(4, 2, 65, 63, 16, causal);
    p.dtype = GetParam().first;
    p.kv_dtype = GetParam().second;
    const auto in = attune::reference::make_inputs(p, 1.0f, 3);
    const auto ref = attune::reference::attention(p, in.q.data(), in.k.data(), in.v.data());
    const auto abs_v = attune::reference::attention_abs_v(p, in.q.data(), in.k.data(), in.v.data());
    auto stored = [&](const std::vector<double>& x) {
      std::vector<float> o(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) o[i] = attune::round_to(p.dtype, static_cast<float>(x[i]));
      return o;
    };
    // Correct: the naive float32 kernel's output of the stored values, and the reference itself.
    std::vector<unsigned char> naive(static_cast<std::size_t>(p.out_elements()) * attune::size_of(p.dtype));
    const auto s = attune::reference::store(p, in);
    attune::Options naive_kernel;
    naive_kernel.kernel = "naive";
    attune::attention(p, s.q_data(), s.k_data(), s.v_data(), naive.data(), naive_kernel);
    const auto naive_f = attune::reference::load_output(p, naive.data());
    EXPECT_TRUE(attune::reference::compare(p, in, naive_f.data(), ref).ok()) << p.to_string();
    EXPECT_TRUE(attune::reference::compare(p, in, stored(ref).data(), ref).ok()) << p.to_string();
    // P rounded to bf16 (the AVX512-BF16 kernels' PV product) within the widened bound.
    std::vector<float> rounded_p(ref.size(), 0.0f);
    {
      auto w = attune::reference::attention_weights(p, in.q.data(), in.k.data());
      std::vector<double> o(ref.size(), 0.0);
      for (std::int64_t h = 0; h < p.heads_q; ++h) {
        const std::int64_t hk = h / p.group_size();
        for (std::int64_t i = 0; i < p.seq_q; ++i)
          for (std::int64_t j = 0; j < p.visible_keys(i); ++j) {
            const double pj = attune::round_to(Dtype::bf16, static_cast<float>(w[static_cast<std::size_t>((h * p.seq_q + i) * p.seq_kv + j)]));
            for (std::int64_t d = 0; d < p.d_v; ++d)
              o[static_cast<std::size_t>((h * p.seq_q + i) * p.d_v + d)] += pj * in.v[static_cast<std::size_t>((hk * p.seq_kv + j) * p.d_v + d)];
          }
      }
      rounded_p = stored(o);
    }
    EXPECT_TRUE(attune::reference::compare(p, in, rounded_p.data(), ref, Dtype::bf16, &abs_v).ok()) << p.to_string();
    // Broken: fails even under the widest bound (P in bf16).
    for (const Broken& b : broken_outputs(p, in)) {
      const auto check = attune::reference::compare(p, in, stored(b.out).data(), ref, Dtype::bf16, &abs_v);
      EXPECT_FALSE(check.ok()) << b.what << " passed on " << p.to_string() << ": error " << check.max_abs_error
                               << " <= bound " << check.tolerance;
      EXPECT_GT(check.max_abs_error, 3.0 * check.tolerance) << b.what << " is not caught by a wide margin";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, Bound16,
                         ::testing::Values(std::pair{Dtype::bf16, Dtype::bf16}, std::pair{Dtype::fp16, Dtype::fp16},
                                           std::pair{Dtype::fp32, Dtype::bf16}, std::pair{Dtype::fp32, Dtype::fp16}),
                         [](const auto& param_info) {
                           return std::string(attune::to_string(param_info.param.first)) + "_kv" +
                                  std::string(attune::to_string(param_info.param.second));
                         });

// A 16-bit problem is named after its types and moves fewer bytes.
TEST(Dtype, ProblemKnowsItsTypes) {
  attune::Problem p = attune::reference::shape(2, 1, 8, 8, 4);
  const double fp32_bytes = p.min_bytes();
  p.dtype = Dtype::bf16;
  EXPECT_EQ(p.kv_type(), Dtype::bf16);
  EXPECT_EQ(p.to_string(), "b1_hq2_hkv1_sq8_skv8_dk4_dv4_causal0_bf16");
  EXPECT_DOUBLE_EQ(p.min_bytes(), fp32_bytes / 2);
  p.dtype = Dtype::fp32;
  p.kv_dtype = Dtype::fp16;
  EXPECT_EQ(p.to_string(), "b1_hq2_hkv1_sq8_skv8_dk4_dv4_causal0_kvfp16");
  p.kv_dtype = static_cast<Dtype>(7);
  EXPECT_THROW(p.validate(), attune::InvalidArgument);
}

}  // namespace
