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
  // The default is the best runnable vector ISA: amx serves only its own kernel.
  const auto& r = attune::runnable_isas();
  const auto first_vector = std::find_if(r.begin(), r.end(), [](attune::Isa i) { return i != attune::Isa::amx; });
  ASSERT_NE(first_vector, r.end());
  EXPECT_EQ(attune::default_isa(), *first_vector);
  const auto& v = attune::vector_isas();
  EXPECT_EQ(std::find(v.begin(), v.end(), attune::Isa::amx), v.end());
}

// amx leads the compiled list where it is built, and it is runnable exactly when the CPU has
// AMX-BF16 (the permission request succeeds on any Linux new enough to know AMX).
TEST(Isa, AmxLeadsWhereBuilt) {
  const auto& c = attune::compiled_isas();
  const bool built = std::find(c.begin(), c.end(), attune::Isa::amx) != c.end();
#if defined(__x86_64__)
  ASSERT_TRUE(built);
  EXPECT_EQ(c.front(), attune::Isa::amx);
  const auto& r = attune::runnable_isas();
  if (!attune::cpu_supports(attune::Isa::amx)) GTEST_SKIP() << "this CPU (or kernel) has no AMX-BF16";
  EXPECT_EQ(r.front(), attune::Isa::amx);
#else
  EXPECT_FALSE(built);
#endif
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
