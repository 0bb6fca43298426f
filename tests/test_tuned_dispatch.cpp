// `auto` dispatch through a tuned table: the fixture header is generated at build time from a
// synthetic log (tuned_fixture_gen.cpp) and compiled in here.
#include "attune_tuned_fixture.h"
#include "records.hpp"
#include "reference.hpp"
#include "tuned_impl.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace {

using attune::Config;
using attune::Problem;

// The table is keyed by sequence lengths first, so these tests name shapes in that order.
Problem shape(std::int64_t seq_q, std::int64_t seq_kv, std::int64_t d_k, bool causal = false,
              std::int64_t heads_q = 8, std::int64_t heads_kv = 8) {
  return attune::reference::shape(heads_q, heads_kv, seq_q, seq_kv, d_k, causal);
}

std::string describe(const attune::Choice& c) {
  return std::string(c.kernel->name()) + "/" + std::string(attune::to_string(c.isa)) + "/bq" +
         std::to_string(c.config.block_q) + "/bkv" + std::to_string(c.config.block_kv) + "/t" +
         std::to_string(c.config.threads) + "/s" + std::to_string(c.config.kv_splits);
}

// What `auto` gives without a table: the highest-ranked kernel on the best ISA, default tiles.
std::string defaults() { return "flash/" + std::string(attune::to_string(attune::default_isa())) + "/bq0/bkv0/t0/s0"; }

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TunedDispatch : public testing::Test {
 protected:
  void SetUp() override { attune::detail::use_tuned_table(&table_); }
  void TearDown() override { attune::detail::use_tuned_table(nullptr); }
  std::string resolve(const Problem& p, const attune::Options& o = {}) { return describe(attune::resolve(p, o)); }

  attune::TunedTable table_{std::span<const attune::TunedEntry>(attune::tuned_data::kEntries),
                            attune::tuned_data::kProvenance, attune::tuned_data::kSignature};
};

TEST_F(TunedDispatch, GeneratedTableIsSortedWithOneEntryPerKey) {
  const auto& e = attune::tuned_data::kEntries;
  ASSERT_EQ(e.size(), 5u);  // six choices, two of them with the same key
  EXPECT_TRUE(std::is_sorted(e.begin(), e.end(), attune::tuned_order));
  EXPECT_EQ(std::string(attune::tuned_data::kSignature), attune::build_signature());
  EXPECT_STREQ(attune::tuned_data::kProvenance.command, "tuned_fixture_gen (synthetic)");
}

TEST_F(TunedDispatch, ExactBucketGivesTheTablesChoice) {
  // 128 and 32 heads share a key; the 32-head shape (more FLOPs) won it.
  EXPECT_EQ(resolve(shape(128, 128, 64)), "blocked/scalar/bq8/bkv32/t0/s0");
  EXPECT_EQ(resolve(shape(255, 200, 64)), "blocked/scalar/bq8/bkv32/t0/s0");  // same bucket (7, 7)
  EXPECT_EQ(resolve(shape(2048, 2048, 64)), "simd/scalar/bq16/bkv256/t0/s0");
  EXPECT_EQ(resolve(shape(1, 4096, 64, false, 32, 8)), "flash/scalar/bq16/bkv512/t1/s4");
}

TEST_F(TunedDispatch, NearestBucketWithTheSameExactKeys) {
  EXPECT_EQ(resolve(shape(256, 256, 64)), "blocked/scalar/bq8/bkv32/t0/s0");   // (8,8): 7 is nearer
  EXPECT_EQ(resolve(shape(1024, 1024, 64)), "simd/scalar/bq16/bkv256/t0/s0");  // (10,10): 11 is nearer
  EXPECT_EQ(resolve(shape(512, 512, 64)), "blocked/scalar/bq8/bkv32/t0/s0");   // equidistant: table order
  EXPECT_EQ(resolve(shape(2, 300, 64, false, 4, 1)), "flash/scalar/bq16/bkv512/t1/s4");  // decode, gqa
  // Different exact keys never borrow an entry: decode without GQA, causal, another d_k.
  EXPECT_EQ(resolve(shape(1, 4096, 64)), defaults());
  EXPECT_EQ(resolve(shape(128, 128, 64, true)), defaults());
  EXPECT_EQ(resolve(shape(128, 128, 80)), defaults());
}

TEST_F(TunedDispatch, ExplicitConfigFieldsWin) {
  attune::Options o;
  o.config.block_q = 24;
  o.config.threads = 2;
  EXPECT_EQ(resolve(shape(128, 128, 64), o), "blocked/scalar/bq24/bkv32/t2/s0");
  // An explicit kernel is not overridden by the table.
  o = {};
  o.kernel = "simd";
  EXPECT_EQ(resolve(shape(128, 128, 64), o).rfind("simd/", 0), 0u);
  // A forced ISA uses only entries of that ISA.
  o = {};
  o.isa = attune::Isa::scalar;
  EXPECT_EQ(resolve(shape(128, 128, 64), o), "blocked/scalar/bq8/bkv32/t0/s0");
  if (attune::default_isa() != attune::Isa::scalar) {
    o.isa = attune::default_isa();
    EXPECT_EQ(resolve(shape(128, 128, 64), o), defaults());
  }
}

TEST_F(TunedDispatch, EntriesForAForeignIsaOrUnknownKernelAreNeverUsed) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(resolve(shape(512, 512, 128, true)), defaults());  // the entry's ISA cannot run here
  EXPECT_EQ(resolve(shape(512, 512, 32)), defaults());         // kernel "warp9" is not registered
  EXPECT_EQ(resolve(shape(600, 600, 128, true)), defaults());
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("2 of 5 entries"), std::string::npos) << err;
  EXPECT_EQ(err.find("warning"), err.rfind("warning")) << "warned more than once: " << err;
  EXPECT_EQ(attune::tuned_table_summary().rfind("3 entries (+2 refused)", 0), 0u)
      << attune::tuned_table_summary();
}

TEST_F(TunedDispatch, AnotherBuildsTableIsIgnoredWithOneWarning) {
  attune::TunedTable other = table_;
  other.signature = "fnv1a64:0000000000000000";
  attune::detail::use_tuned_table(&other);
  testing::internal::CaptureStderr();
  EXPECT_EQ(resolve(shape(128, 128, 64)), defaults());
  EXPECT_EQ(resolve(shape(2048, 2048, 64)), defaults());
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("tuned table ignored"), std::string::npos) << err;
  EXPECT_EQ(err.find("warning"), err.rfind("warning")) << err;
  EXPECT_EQ(attune::tuned_table_summary().rfind("ignored", 0), 0u);
}

TEST_F(TunedDispatch, TheTableIsUsedByAttentionAndStaysCorrect) {
  const Problem p = shape(128, 128, 64);
  std::vector<float> q(static_cast<std::size_t>(p.q_elements()), 0.5f), k(q), v(q), out(q.size());
  attune::attention(p, q.data(), k.data(), v.data(), out.data());
  EXPECT_FLOAT_EQ(out[0], 0.5f);
}

TEST(TunedHeader, SameLogGivesTheSameBytes) {
  const std::string dir = ATTUNE_FIXTURE_DIR;
  const auto log = attune::tuner::read_log(dir + "/tuned_fixture.json");
  const std::string header = attune::tuner::generate_header(log, "tuned_fixture.json");
  EXPECT_EQ(header, read(dir + "/attune_tuned_fixture.h"));
  EXPECT_EQ(header, attune::tuner::generate_header(attune::tuner::parse_log(log.complete_text, "copy"),
                                                    "tuned_fixture.json"));
  EXPECT_NE(header.find("// Generated by `attune tune` from tuned_fixture.json"), std::string::npos);
}

TEST(TunedHeader, CompiledDefaultTable) {
  if (!attune::compiled_tuned_table().signature.empty()) GTEST_SKIP() << "built with ATTUNE_TUNED_CONFIG";
  EXPECT_TRUE(attune::compiled_tuned_table().entries.empty());
  EXPECT_EQ(attune::tuned_table_summary(), "none (built-in defaults)");
}

}  // namespace
