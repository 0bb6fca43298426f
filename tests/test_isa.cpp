// ISA names, detection and the compiled/runnable lists.
#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <algorithm>

namespace {

TEST(Isa, NamesRoundTrip) {
  for (attune::Isa isa : {attune::Isa::scalar, attune::Isa::sse4_2, attune::Isa::avx2, attune::Isa::avx512,
                          attune::Isa::neon}) {
    EXPECT_EQ(attune::parse_isa(attune::to_string(isa)), isa);
  }
  EXPECT_FALSE(attune::parse_isa("avx1024"));
  EXPECT_FALSE(attune::parse_isa(""));
}

TEST(Isa, ScalarIsAlwaysRunnableAndLast) {
  const auto& r = attune::runnable_isas();
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r.back(), attune::Isa::scalar);
  EXPECT_TRUE(attune::cpu_supports(attune::Isa::scalar));
}

TEST(Isa, RunnableIsCompiledAndSupported) {
  for (attune::Isa isa : attune::runnable_isas()) {
    EXPECT_TRUE(attune::cpu_supports(isa)) << attune::to_string(isa);
    const auto& c = attune::compiled_isas();
    EXPECT_NE(std::find(c.begin(), c.end(), isa), c.end());
  }
  EXPECT_EQ(attune::default_isa(), attune::runnable_isas().front());
}

TEST(Isa, ArchitectureSpecificIsasAreCompiledWhereTheyBelong) {
  const auto& c = attune::compiled_isas();
  auto has = [&](attune::Isa i) { return std::find(c.begin(), c.end(), i) != c.end(); };
#if defined(__x86_64__)
  EXPECT_FALSE(has(attune::Isa::neon));
#elif defined(__aarch64__)
  EXPECT_TRUE(has(attune::Isa::neon));
  EXPECT_TRUE(attune::cpu_supports(attune::Isa::neon));
  EXPECT_EQ(attune::default_isa(), attune::Isa::neon);  // the NEON path is the one selected
#endif
  EXPECT_TRUE(has(attune::Isa::scalar));
}

}  // namespace
