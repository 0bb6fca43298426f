// Problem validation, the FLOP and pair counts, causal alignment, and API-level errors.
#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace {

attune::Problem shape(std::int64_t sq, std::int64_t skv, bool causal) {
  attune::Problem p;
  p.seq_q = sq;
  p.seq_kv = skv;
  p.d_k = p.d_v = 4;
  p.causal = causal;
  return p;
}

void expect_invalid(const attune::Problem& p, const std::string& needle) {
  try {
    p.validate();
    FAIL() << "accepted " << p.to_string();
  } catch (const attune::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Problem, RejectsEveryNonPositiveField) {
  for (auto field : {&attune::Problem::batch, &attune::Problem::heads_q, &attune::Problem::heads_kv,
                     &attune::Problem::seq_q, &attune::Problem::seq_kv, &attune::Problem::d_k,
                     &attune::Problem::d_v}) {
    for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-3}}) {
      attune::Problem p;
      p.*field = bad;
      if (field == &attune::Problem::heads_kv) p.heads_q = 1;
      expect_invalid(p, "must be positive");
    }
  }
}

TEST(Problem, RejectsHeadsNotDivisible) {
  attune::Problem p;
  p.heads_q = 6;
  p.heads_kv = 4;
  expect_invalid(p, "not a multiple of heads_kv");
}

TEST(Problem, RejectsNonFiniteScale) {
  attune::Problem p;
  p.scale = std::numeric_limits<float>::infinity();
  expect_invalid(p, "scale");
  p.scale = std::numeric_limits<float>::quiet_NaN();
  expect_invalid(p, "scale");
}

TEST(Problem, RejectsOverflowBeforeAllocation) {
  attune::Problem p;
  p.batch = std::int64_t{1} << 40;
  p.seq_q = p.seq_kv = std::int64_t{1} << 30;
  expect_invalid(p, "overflows");
  attune::Problem q;
  q.seq_q = std::int64_t{1} << 31;
  q.seq_kv = std::int64_t{1} << 31;  // score matrix 2^62: too many to address
  expect_invalid(q, "score matrix");
}

TEST(Problem, DefaultScaleIsInverseSqrtDk) {
  attune::Problem p;
  p.d_k = 64;
  EXPECT_FLOAT_EQ(p.effective_scale(), 0.125f);
  p.scale = 2.0f;
  EXPECT_FLOAT_EQ(p.effective_scale(), 2.0f);
}

TEST(Problem, CausalAlignsLastQueryWithLastKey) {
  const auto p = shape(3, 5, true);  // query i sees keys j <= i + 2
  EXPECT_EQ(p.visible_keys(0), 3);
  EXPECT_EQ(p.visible_keys(2), 5);
  const auto q = shape(5, 3, true);  // query i sees j <= i - 2: rows 0, 1 see nothing
  EXPECT_EQ(q.visible_keys(0), 0);
  EXPECT_EQ(q.visible_keys(1), 0);
  EXPECT_EQ(q.visible_keys(2), 1);
  EXPECT_EQ(q.visible_keys(4), 3);
}

TEST(Problem, VisiblePairsMatchesBruteForce) {
  for (std::int64_t sq : {1, 2, 3, 7, 64, 65, 100}) {
    for (std::int64_t skv : {1, 2, 5, 63, 64, 100, 1000}) {
      for (bool causal : {false, true}) {
        const auto p = shape(sq, skv, causal);
        std::int64_t pairs = 0;
        for (std::int64_t i = 0; i < sq; ++i) pairs += p.visible_keys(i);
        EXPECT_EQ(p.visible_pairs(), pairs) << p.to_string();
      }
    }
  }
}

TEST(Problem, FlopsFollowTheDesignConvention) {
  attune::Problem p;
  p.batch = 2;
  p.heads_q = 8;
  p.heads_kv = 2;
  p.seq_q = p.seq_kv = 2048;
  p.d_k = p.d_v = 128;
  EXPECT_DOUBLE_EQ(p.flops(), 4.0 * 2 * 8 * 2048.0 * 2048.0 * 128);
  p.causal = true;  // only the unmasked half: seq (seq + 1) / 2 pairs
  EXPECT_DOUBLE_EQ(p.flops(), 4.0 * 2 * 8 * (2048.0 * 2049.0 / 2) * 128);
}

TEST(Attention, FullyMaskedRowsAreZeroNotNan) {
  auto p = shape(6, 2, true);  // rows 0..3 see no key
  std::vector<float> q(p.q_elements(), 1.0f), k(p.k_elements(), 1.0f), v(p.v_elements(), 2.0f);
  for (const attune::Kernel* kernel : attune::kernels()) {
    for (attune::Isa isa : attune::runnable_isas(*kernel)) {
      if (!kernel->supports(p, isa)) continue;  // fp32 here; the bf16 kernels' zero rows are in test_amx
      std::vector<float> out(p.out_elements(), std::numeric_limits<float>::quiet_NaN());
      attune::Options o;
      o.kernel = std::string(kernel->name());
      o.isa = isa;
      attune::attention(p, q.data(), k.data(), v.data(), out.data(), o);
      for (std::int64_t i = 0; i < p.seq_q; ++i) {
        for (std::int64_t d = 0; d < p.d_v; ++d) {
          const float expect = i < 4 ? 0.0f : 2.0f;
          EXPECT_FLOAT_EQ(out[i * p.d_v + d], expect) << kernel->name() << "/" << attune::to_string(isa);
        }
      }
    }
  }
}

TEST(Attention, RejectsNullPointersAndUnknownKernels) {
  attune::Problem p;
  std::vector<float> buf(4, 1.0f);
  EXPECT_THROW(attune::attention(p, nullptr, buf.data(), buf.data(), buf.data()), attune::InvalidArgument);
  attune::Options o;
  o.kernel = "nonesuch";
  EXPECT_THROW(attune::attention(p, buf.data(), buf.data(), buf.data(), buf.data(), o), attune::InvalidArgument);
  o = {};
  o.config.block_q = -1;
  EXPECT_THROW(attune::attention(p, buf.data(), buf.data(), buf.data(), buf.data(), o), attune::InvalidArgument);
}

TEST(Attention, ForcingAnIsaThisCpuLacksIsAnError) {
  for (attune::Isa isa : {attune::Isa::sse4_2, attune::Isa::avx2, attune::Isa::avx512, attune::Isa::neon}) {
    if (attune::cpu_supports(isa)) continue;
    attune::Problem p;
    std::vector<float> buf(4, 1.0f);
    attune::Options o;
    o.isa = isa;
    EXPECT_THROW(attune::attention(p, buf.data(), buf.data(), buf.data(), buf.data(), o), attune::InvalidArgument)
        << attune::to_string(isa);
  }
}

// ... among the kernels whose runnable builds take the problem's element types.
TEST(Attention, AutoResolvesToTheHighestRankedRunnableKernel) {
  for (attune::Dtype dtype : attune::kAllDtypes) {
    attune::Problem p;
    p.dtype = dtype;
    const attune::Choice c = attune::resolve(p);
    EXPECT_TRUE(c.kernel->supports(p, c.isa)) << attune::to_string(dtype);
    for (const attune::Kernel* k : attune::kernels()) {
      for (attune::Isa isa : attune::runnable_isas(*k))
        if (k->supports(p, isa)) {
          EXPECT_GE(c.kernel->rank(), k->rank()) << attune::to_string(dtype);
        }
    }
    // The kernel's best ISA for this problem: its runnable builds that take it, in the order
    // Kernel::order_isas gives them (avx512_bf16 first for bf16 where its dot product is faster).
    const std::vector<attune::Isa> isas = attune::runnable_isas(*c.kernel, p);
    ASSERT_FALSE(isas.empty());
    for (attune::Isa i : isas) EXPECT_TRUE(c.kernel->supports(p, i));
    EXPECT_EQ(c.isa, isas.front());
  }
}

}  // namespace
