// `auto` dispatch through a tuned table: the fixture header is generated at build time from a
// synthetic log (tuned_fixture_gen.cpp) and compiled in here.
#include "attune_tuned_fixture.h"
#include "records.hpp"
#include "reference.hpp"
#include "tuned_impl.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <sstream>

namespace {

using attune::Config;
using attune::Problem;

using attune::Dtype;

// The table is keyed by sequence lengths first, so these tests name shapes in that order.
Problem shape(std::int64_t seq_q, std::int64_t seq_kv, std::int64_t d_k, bool causal = false,
              std::int64_t heads_q = 8, std::int64_t heads_kv = 8) {
  return attune::reference::shape(heads_q, heads_kv, seq_q, seq_kv, d_k, causal);
}

// The same shape stored as `dtype` (Q/O) and `kv_dtype` (K/V; default: dtype).
Problem typed(Problem p, Dtype dtype, std::optional<Dtype> kv_dtype = std::nullopt) {
  p.dtype = dtype;
  if (kv_dtype && *kv_dtype != dtype) p.kv_dtype = kv_dtype;
  return p;
}

// A row as headers wrote it before the storage types were keys: it still compiles, as fp32.
constexpr attune::TunedEntry kUntypedRow = {64, false, false, false, 7, 7, "flash", "scalar", 0, 0, 0, 0, 0,
                                            1.0, 0.0, false};
static_assert(kUntypedRow.dtype == Dtype::fp32 && kUntypedRow.kv_dtype == Dtype::fp32);

std::string describe(const attune::Choice& c) {
  return std::string(c.kernel->name()) + "/" + std::string(attune::to_string(c.isa)) + "/bq" +
         std::to_string(c.config.block_q) + "/bkv" + std::to_string(c.config.block_kv) + "/t" +
         std::to_string(c.config.threads) + "/s" + std::to_string(c.config.kv_splits);
}

// What `auto` gives without a table: the highest-ranked kernel on the best ISA, default tiles:
// amx for problems stored entirely in bf16 where the CPU has it, else flash.
std::string defaults(const attune::Problem& p = attune::Problem{}) {
  if (p.dtype == attune::Dtype::bf16 && p.kv_type() == attune::Dtype::bf16 && attune::cpu_supports(attune::Isa::amx))
    return "amx/amx/bq0/bkv0/t0/s0";
  // flash's best ISA for the problem (avx512_bf16 for bf16 where its dot product is faster).
  return "flash/" + std::string(attune::to_string(attune::runnable_isas(*attune::find_kernel("flash"), p).front())) +
         "/bq0/bkv0/t0/s0";
}

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
  ASSERT_EQ(e.size(), 9u);  // ten choices, two of them with the same key
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

TEST_F(TunedDispatch, EachStorageTypeDispatchesToItsOwnEntries) {
  // One bucket (128, 128, d_k 64) with an fp32, a bf16 and an fp32-with-bf16-K/V entry.
  const Problem p = shape(128, 128, 64);
  EXPECT_EQ(resolve(p), "blocked/scalar/bq8/bkv32/t0/s0");
  EXPECT_EQ(resolve(typed(p, Dtype::bf16)), "simd/scalar/bq4/bkv16/t1/s0");
  EXPECT_EQ(resolve(typed(p, Dtype::fp32, Dtype::bf16)), "flash/scalar/bq8/bkv128/t0/s0");
  // Types with no entry of their own take the defaults, never another type's entry.
  EXPECT_EQ(resolve(typed(p, Dtype::fp16)), defaults());
  EXPECT_EQ(resolve(typed(p, Dtype::bf16, Dtype::fp32)), defaults());
  EXPECT_EQ(resolve(typed(p, Dtype::fp32, Dtype::fp16)), defaults());
  // The nearest bucket is searched within the same types: a bf16 2048 problem takes the bf16
  // entry of bucket 7, not the fp32 entry of its own bucket 11.
  EXPECT_EQ(resolve(typed(shape(2048, 2048, 64), Dtype::bf16)), "simd/scalar/bq4/bkv16/t1/s0");
  EXPECT_EQ(resolve(shape(2048, 2048, 64)), "simd/scalar/bq16/bkv256/t0/s0");
  // A key tuned only in fp32 (decoding with GQA): bf16 falls back to the defaults.
  EXPECT_EQ(resolve(shape(1, 4096, 64, false, 32, 8)), "flash/scalar/bq16/bkv512/t1/s4");
  EXPECT_EQ(resolve(typed(shape(1, 4096, 64, false, 32, 8), Dtype::bf16)), defaults(typed(p, Dtype::bf16)));
  // A key tuned in both, from two typed lines.
  EXPECT_EQ(resolve(shape(2048, 2048, 96)), "simd/scalar/bq16/bkv32/t0/s0");
  EXPECT_EQ(resolve(typed(shape(2048, 2048, 96), Dtype::bf16)), "blocked/scalar/bq32/bkv64/t0/s0");
  EXPECT_EQ(resolve(typed(shape(2048, 2048, 96), Dtype::fp16)), defaults());
}

TEST_F(TunedDispatch, UntypedLogLinesAreFp32Entries) {
  // The fixture's first six choices carry no dtype fields, as logs written before the types
  // were keys: the header has them as fp32 entries.
  std::size_t fp32 = 0, bf16 = 0, mixed = 0;
  for (const attune::TunedEntry& e : attune::tuned_data::kEntries) {
    if (e.dtype == Dtype::fp32 && e.kv_dtype == Dtype::fp32) ++fp32;
    if (e.dtype == Dtype::bf16 && e.kv_dtype == Dtype::bf16) ++bf16;
    if (e.dtype == Dtype::fp32 && e.kv_dtype == Dtype::bf16) ++mixed;
  }
  EXPECT_EQ(fp32, 6u);  // 5 untyped keys and 1 typed fp32
  EXPECT_EQ(bf16, 2u);
  EXPECT_EQ(mixed, 1u);
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
  EXPECT_NE(err.find("2 of 9 entries"), std::string::npos) << err;
  EXPECT_EQ(err.find("warning"), err.rfind("warning")) << "warned more than once: " << err;
  EXPECT_EQ(attune::tuned_table_summary().rfind("7 entries (+2 refused)", 0), 0u)
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
  // Each typed entry runs on real 16-bit buffers and meets the reference's bound for its types.
  for (const Problem& t : {typed(p, Dtype::bf16), typed(p, Dtype::fp32, Dtype::bf16)}) {
    attune::reference::Case c{t, 1.0f, t.to_string()};
    const auto in = attune::reference::make_inputs(t, 1.0f, 3);
    const auto ref = attune::reference::attention(t, in.q.data(), in.k.data(), in.v.data());
    const auto check = attune::reference::run_and_compare(c, in, ref, attune::Options{});
    EXPECT_TRUE(check.ok()) << c.name << ": " << check.max_abs_error << " > " << check.tolerance;
  }
}

TEST(TunedHeader, SameLogGivesTheSameBytes) {
  const std::string dir = ATTUNE_FIXTURE_DIR;
  const auto log = attune::tuner::read_log(dir + "/tuned_fixture.json");
  const std::string header = attune::tuner::generate_header(log, "tuned_fixture.json");
  EXPECT_EQ(header, read(dir + "/attune_tuned_fixture.h"));
  EXPECT_EQ(header, attune::tuner::generate_header(attune::tuner::parse_log(log.complete_text, "copy"),
                                                    "tuned_fixture.json"));
  EXPECT_NE(header.find("// Generated by `attune tune` from tuned_fixture.json"), std::string::npos);
  // The writer emits the storage types of every row, and the table compiled from it has them.
  const std::string from = ", Dtype::bf16, Dtype::bf16},\n    //   from ";
  EXPECT_NE(header.find(from + "b1_hq8_hkv8_sq128_skv128_dk64_dv64_causal0_bf16\n"), std::string::npos) << header;
  const std::string from_kv = ", Dtype::fp32, Dtype::bf16},\n    //   from ";
  EXPECT_NE(header.find(from_kv + "b1_hq8_hkv8_sq128_skv128_dk64_dv64_causal0_kvbf16\n"), std::string::npos)
      << header;
  for (const attune::TunedEntry& e : attune::tuned_data::kEntries) {
    const std::string row = ", Dtype::" + std::string(attune::to_string(e.dtype)) + ", Dtype::" +
                            std::string(attune::to_string(e.kv_dtype)) + "},";
    const std::string choice = std::string(e.kernel) + "\", \"" + e.isa + "\", " + std::to_string(e.block_q) +
                               ", " + std::to_string(e.block_kv);
    EXPECT_NE(header.find(choice), std::string::npos) << choice;
    EXPECT_NE(header.find(row), std::string::npos) << row;
  }
}

TEST(TunedHeader, CompiledDefaultTable) {
  if (!attune::compiled_tuned_table().signature.empty()) GTEST_SKIP() << "built with ATTUNE_TUNED_CONFIG";
  EXPECT_TRUE(attune::compiled_tuned_table().entries.empty());
  EXPECT_EQ(attune::tuned_table_summary(), "none (built-in defaults)");
}

}  // namespace
