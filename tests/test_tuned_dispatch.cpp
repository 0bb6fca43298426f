// `auto` dispatch through a tuned table: the fixture header is generated at build time from a
// synthetic log (tuned_fixture_gen.cpp) and compiled in here.
#include "attune_tuned_fixture.h"
#include "records.hpp"
#include "reference.hpp"
#include "tuned_impl.hpp"
#include "tuning_file.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <unistd.h>

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
    attune::reference::Case c{t, 1.0f, t.to_string(), {}, {}, {}};
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

// ---- Run-time tuning files --------------------------------------------------------------------

namespace runtime {

namespace fs = std::filesystem;

std::string fixture_log_text() { return read(std::string(ATTUNE_FIXTURE_DIR) + "/tuned_fixture.json"); }

// A scratch file under the build tree, removed at exit of the test.
struct TempFile {
  explicit TempFile(const std::string& name, const std::string& text)
      : path((fs::temp_directory_path() / ("attune_test_" + std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream(path, std::ios::binary) << text;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
  std::string path;
};

// The shapes the comparisons probe: every exact key of the fixture (d_k, causal, decode, gqa,
// storage types) at every bucket from 2^0 to 2^13, so exact and nearest buckets both count.
std::vector<Problem> probe_shapes() {
  std::vector<Problem> out;
  for (std::int64_t d_k : {32, 64, 96, 128})
    for (bool causal : {false, true})
      for (auto [hq, hkv] : {std::pair{8, 8}, std::pair{32, 8}})
        for (std::int64_t seq : {1, 3, 100, 128, 300, 512, 1000, 2048, 4096, 9000})
          for (std::int64_t seq_q : {seq, std::int64_t{1}})
            for (auto [dt, kv] : {std::pair{Dtype::fp32, Dtype::fp32}, std::pair{Dtype::bf16, Dtype::bf16},
                                  std::pair{Dtype::fp32, Dtype::bf16}, std::pair{Dtype::fp16, Dtype::fp16}}) {
              if (causal && seq_q > seq) continue;
              out.push_back(typed(shape(seq_q, seq, d_k, causal, hq, hkv), dt, kv));
            }
  return out;
}

class RuntimeTuning : public testing::Test {
 protected:
  void SetUp() override {
    attune::load_tuning("");
    attune::detail::use_tuned_table(&none_);
  }
  void TearDown() override {
    attune::detail::set_machine_signature_for_testing(nullptr);
    attune::load_tuning("");
    attune::detail::use_tuned_table(nullptr);
  }
  static std::string resolve(const Problem& p, const attune::Options& o = {}) {
    return describe(attune::resolve(p, o));
  }
  // The fixture's tune as a run-time tuning file (one machine: this one, as the test runs; the
  // fixture log was written where the build ran, which under an emulated CPU is another machine).
  static std::string fixture_tuning() {
    const auto log = attune::tuner::parse_log(fixture_log_text(), "fixture");
    attune::detail::MachineTable m = attune::tuner::log_machine_table(log);
    m.machine = attune::machine_signature();
    return attune::detail::tuning_text({m});
  }
  // Loads `text` as the only tuning file; returns what load_tuning() said and the warnings.
  static std::pair<bool, std::string> load_text(const std::string& text, const std::string& name = "t.json") {
    TempFile f(name, text);
    testing::internal::CaptureStderr();
    const bool ok = attune::load_tuning(f.path);
    return {ok, testing::internal::GetCapturedStderr()};
  }
  static std::size_t warnings(const std::string& err) {
    std::size_t n = 0;
    for (std::size_t pos = err.find("warning"); pos != std::string::npos; pos = err.find("warning", pos + 1)) ++n;
    return n;
  }

  attune::TunedTable none_{{}, attune::tuned_data::kProvenance, ""};
  attune::TunedTable compiled_{std::span<const attune::TunedEntry>(attune::tuned_data::kEntries),
                               attune::tuned_data::kProvenance, attune::tuned_data::kSignature};
};

TEST_F(RuntimeTuning, LoadedTableChoosesAsTheCompiledHeaderOnEveryEntry) {
  // The compiled fixture header alone ...
  attune::detail::use_tuned_table(&compiled_);
  std::vector<std::string> compiled;
  testing::internal::CaptureStderr();
  for (const Problem& p : probe_shapes()) compiled.push_back(resolve(p));
  testing::internal::GetCapturedStderr();
  // ... and the same tune loaded at run time, with no compiled table.
  attune::detail::use_tuned_table(&none_);
  const auto [ok, err] = load_text(fixture_tuning());
  ASSERT_TRUE(ok) << err;
  const auto shapes = probe_shapes();
  std::size_t tuned = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_EQ(resolve(shapes[i]), compiled[i]) << shapes[i].to_string();
    tuned += compiled[i] != defaults(shapes[i]);
  }
  EXPECT_GT(tuned, 40u) << "the probes should hit tuned entries";
  // Every usable entry of the header, at its own bucket, is reached.
  for (const attune::TunedEntry& e : attune::tuned_data::kEntries) {
    Problem p = shape(e.decode ? 1 : std::int64_t{1} << e.log2_seq_q, std::int64_t{1} << e.log2_seq_kv, e.d_k,
                      e.causal, e.gqa ? 32 : 8, 8);
    p = typed(p, e.dtype, e.kv_dtype);
    attune::detail::use_tuned_table(&compiled_);
    attune::load_tuning("");
    testing::internal::CaptureStderr();
    const std::string want = resolve(p);
    testing::internal::GetCapturedStderr();
    attune::detail::use_tuned_table(&none_);
    ASSERT_TRUE(load_text(fixture_tuning()).first);
    EXPECT_EQ(resolve(p), want) << p.to_string();
  }
  EXPECT_NE(attune::tuned_table_summary().find("exact match"), std::string::npos) << attune::tuned_table_summary();
}

TEST_F(RuntimeTuning, PrecedenceConfigThenRuntimeThenCompiledThenDefaults) {
  attune::detail::use_tuned_table(&compiled_);
  // A run-time table with one fp32 entry at the fixture's (64, 128, 128) key, another choice.
  attune::detail::MachineTable m;
  m.id = "m0";
  m.machine = attune::machine_signature();
  m.signature = attune::build_signature();
  m.entries.push_back({64, false, false, false, 7, 7, "simd", "scalar", 4, 8, 1, 0, 0, 1.0, 0.0, false});
  m.shapes.push_back("");
  const auto [ok, err] = load_text(attune::detail::tuning_text({m}));
  ASSERT_TRUE(ok) << err;
  EXPECT_EQ(resolve(shape(128, 128, 64)), "simd/scalar/bq4/bkv8/t1/s0");   // run-time beats compiled
  EXPECT_EQ(resolve(shape(2048, 2048, 64)), "simd/scalar/bq4/bkv8/t1/s0"); // its nearest bucket too
  // Keys the run-time table lacks: the compiled header, then the defaults.
  EXPECT_EQ(resolve(typed(shape(128, 128, 64), Dtype::bf16)), "simd/scalar/bq4/bkv16/t1/s0");
  EXPECT_EQ(resolve(shape(128, 128, 80)), defaults());
  // Explicit config fields beat both.
  attune::Options o;
  o.config.block_q = 24;
  EXPECT_EQ(resolve(shape(128, 128, 64), o), "simd/scalar/bq24/bkv8/t1/s0");
  // Unloading goes back to the compiled table.
  attune::load_tuning("");
  EXPECT_EQ(resolve(shape(128, 128, 64)), "blocked/scalar/bq8/bkv32/t0/s0");
  EXPECT_EQ(attune::tuned_table_summary().rfind("7 entries", 0), 0u) << attune::tuned_table_summary();
}

TEST_F(RuntimeTuning, TheEnvironmentVariableLoadsAPathList) {
  TempFile good("env.json", fixture_tuning());
  ::setenv("ATTUNE_TUNING", ("/nonexistent/attune.json:" + good.path).c_str(), 1);
  attune::detail::use_environment_tuning();
  testing::internal::CaptureStderr();
  const std::string got = resolve(shape(2048, 2048, 64));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(got, "simd/scalar/bq16/bkv256/t0/s0");
  // The missing file; the fixture's entries of an unknown kernel and of a foreign ISA.
  EXPECT_EQ(warnings(err), 3u) << err;
  EXPECT_NE(err.find("/nonexistent/attune.json"), std::string::npos) << err;
  EXPECT_NE(attune::tuned_table_summary().find(good.path), std::string::npos) << attune::tuned_table_summary();
  // An empty variable loads nothing (not even the per-user file).
  ::setenv("ATTUNE_TUNING", "", 1);
  attune::detail::use_environment_tuning();
  EXPECT_EQ(resolve(shape(2048, 2048, 64)), defaults());
  EXPECT_EQ(attune::tuned_table_summary(), "none (built-in defaults)");
  ::unsetenv("ATTUNE_TUNING");
}

TEST_F(RuntimeTuning, BadFilesWarnOnceAndFallBack) {
  const std::string good = fixture_tuning();
  const std::string header = attune::detail::tuning_header_line();
  const std::string machine_line = good.substr(header.size(), good.find('\n', header.size()) + 1 - header.size());
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return s.replace(pos, from.size(), to);
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"not json", "this is not json\n"},
      {"binary", std::string("\x00\xff\x7f{\"", 5) + "\n"},
      {"truncated", good.substr(0, good.size() - 40)},
      {"cut at a line", header},  // no machine: nothing for this machine
      {"a log, not a tuning file", fixture_log_text()},
      {"newer schema", replaced("\"schema\":1", "\"schema\":2")},
      {"nested", replaced("\"d_k\":64", "\"d_k\":{\"a\":[[[[[[[[[[1]]]]]]]]]]}")},
      {"deep arrays", header + std::string(10000, '[') + "\n"},
      {"huge number", replaced("\"block_q\":16", "\"block_q\":1e300")},
      {"huge integer", replaced("\"block_q\":16", "\"block_q\":123456789012345678")},
      {"negative", replaced("\"threads\":0", "\"threads\":-4")},
      {"nan", replaced("\"gflops\":12.500", "\"gflops\":NaN")},
      {"fraction", replaced("\"d_k\":64", "\"d_k\":64.5")},
      {"bucket", replaced("\"log2_seq_q\":11", "\"log2_seq_q\":99999")},
      {"micro", replaced("\"micro\":0", "\"micro\":7")},
      {"unknown record", good + "{\"type\":\"wisdom\"}\n"},
      {"undeclared machine", replaced("\"machine\":\"m0\"", "\"machine\":\"m9\"")},
      {"twice declared", header + machine_line + machine_line},
      {"other build", replaced(attune::build_signature(), "fnv1a64:0000000000000000")},
      {"long string", replaced("\"cpu\":\"", "\"cpu\":\"" + std::string(5000, 'x'))},
  };
  const std::string fallback = "blocked/scalar/bq8/bkv32/t0/s0";  // the compiled fixture's choice
  attune::detail::use_tuned_table(&compiled_);
  testing::internal::CaptureStderr();
  resolve(shape(128, 128, 64));  // the compiled table's own warnings, once, before the cases
  testing::internal::GetCapturedStderr();
  for (const auto& [name, text] : cases) {
    const auto [ok, err] = load_text(text, "bad.json");
    EXPECT_FALSE(ok) << name;
    testing::internal::CaptureStderr();
    EXPECT_EQ(resolve(shape(128, 128, 64)), fallback) << name;
    EXPECT_EQ(resolve(shape(128, 128, 64, true)), defaults()) << name;
    const std::string later = testing::internal::GetCapturedStderr();
    // One warning when loading (the compiled table's own warnings come again: it is re-checked).
    const std::size_t compiled_warnings = 1;  // "2 of 9 entries ..."
    EXPECT_EQ(warnings(err), 1u + compiled_warnings) << name << ": " << err;
    EXPECT_EQ(warnings(later), 0u) << name << ": " << later;
    EXPECT_NE(attune::tuned_table_summary().find("then compiled: 7 entries"), std::string::npos)
        << name << ": " << attune::tuned_table_summary();
  }
}

TEST_F(RuntimeTuning, UnknownNamesAndForeignIsasAreRefusedEntryByEntry) {
  // The fixture already holds a foreign-ISA entry and one of kernel "warp9"; add unknown ISA
  // and storage-type names.
  std::string text = fixture_tuning();
  text += "{\"type\":\"entry\",\"machine\":\"m0\",\"shape\":\"\",\"dtype\":\"int3\",\"kv_dtype\":\"int3\",\"d_k\":64,"
          "\"causal\":false,\"decode\":false,\"gqa\":false,\"log2_seq_q\":7,\"log2_seq_kv\":7,\"kernel\":\"flash\","
          "\"isa\":\"avx9000\",\"block_q\":1,\"block_kv\":1,\"threads\":0,\"kv_splits\":0,\"micro\":0,\"gflops\":1,"
          "\"spread\":0,\"tie\":false}\n";
  const auto [ok, err] = load_text(text);
  EXPECT_TRUE(ok) << err;
  EXPECT_EQ(warnings(err), 2u) << err;  // unknown names (2 entries), an ISA not runnable (1)
  EXPECT_EQ(resolve(shape(512, 512, 128, true)), defaults());  // the foreign-ISA entry's key
  EXPECT_EQ(resolve(shape(512, 512, 32)), defaults());         // "warp9"'s key
  EXPECT_EQ(resolve(shape(128, 128, 64)), "blocked/scalar/bq8/bkv32/t0/s0");
  EXPECT_NE(attune::tuned_table_summary().find("7 entries (+1 refused)"), std::string::npos)
      << attune::tuned_table_summary();
}

attune::MachineSignature machine(const std::string& cpu, const std::string& isas, int cores, std::int64_t l2,
                                 std::int64_t l3) {
  return attune::MachineSignature{cpu, isas, cores, 32 << 10, l2, l3};
}

// A one-entry table for `m` at the (64, 128, 128) fp32 key with block_q = `tag`.
attune::detail::MachineTable tagged(const attune::MachineSignature& m, int tag) {
  attune::detail::MachineTable t;
  t.machine = m;
  t.signature = attune::build_signature();
  t.entries.push_back({64, false, false, false, 7, 7, "flash", "scalar", tag, 64, 0, 0, 0, 1.0, 0.0, false});
  t.shapes.push_back("");
  return t;
}

TEST_F(RuntimeTuning, AMergedFleetFileDispatchesEachMachineToItsOwnEntries) {
  const auto zen4 = machine("AMD EPYC Zen 4", "avx512 avx512_bf16 avx2 sse4_2 scalar", 2, 1 << 20, 32 << 20);
  const auto spr = machine("Intel Xeon SPR", "amx avx512 avx512_bf16 avx2 sse4_2 scalar", 4, 2 << 20, 105 << 20);
  const auto zen3 = machine("AMD EPYC Zen 3", "avx2 sse4_2 scalar", 2, 512 << 10, 32 << 20);
  TempFile fleet("fleet.json", attune::detail::tuning_text({tagged(zen4, 4), tagged(spr, 5), tagged(zen3, 3)}));
  const std::vector<std::pair<attune::MachineSignature, std::string>> expect = {
      {zen4, "flash/scalar/bq4/bkv64/t0/s0"}, {spr, "flash/scalar/bq5/bkv64/t0/s0"},
      {zen3, "flash/scalar/bq3/bkv64/t0/s0"}};
  for (const auto& [m, want] : expect) {
    attune::detail::set_machine_signature_for_testing(&m);
    ASSERT_TRUE(attune::load_tuning(fleet.path)) << m.cpu;
    EXPECT_EQ(resolve(shape(128, 128, 64)), want) << m.cpu;
    EXPECT_NE(attune::tuned_table_summary().find("exact match"), std::string::npos) << attune::tuned_table_summary();
    EXPECT_NE(attune::tuned_table_summary().find(m.cpu), std::string::npos) << attune::tuned_table_summary();
  }
  // Another Zen 4 size (16 cores, 1 MiB L2, 256 MiB L3): nearest with the same ISA set.
  const auto big = machine("AMD EPYC Zen 4 (other SKU)", zen4.isas, 16, 1 << 20, 256 << 20);
  attune::detail::set_machine_signature_for_testing(&big);
  ASSERT_TRUE(attune::load_tuning(fleet.path));
  EXPECT_EQ(resolve(shape(128, 128, 64)), "flash/scalar/bq4/bkv64/t0/s0");
  EXPECT_NE(attune::tuned_table_summary().find("nearest: same ISA set"), std::string::npos)
      << attune::tuned_table_summary();
  // An ISA set no machine of the file has: defaults, one warning, and info says why.
  const auto arm = machine("Neoverse", "neon scalar", 8, 1 << 20, 32 << 20);
  attune::detail::set_machine_signature_for_testing(&arm);
  testing::internal::CaptureStderr();
  EXPECT_FALSE(attune::load_tuning(fleet.path));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(warnings(err), 1u) << err;
  EXPECT_EQ(resolve(shape(128, 128, 64)), defaults());
  EXPECT_NE(attune::tuned_table_summary().find("no machine with this ISA set"), std::string::npos)
      << attune::tuned_table_summary();
}

TEST(MachineSelection, ExactThenSameIsaNearestCachesThenCores) {
  const auto a = machine("A", "avx2 scalar", 4, 1 << 20, 32 << 20);
  const auto b = machine("B", "avx2 scalar", 16, 2 << 20, 32 << 20);
  const auto c = machine("C", "avx512 avx2 scalar", 4, 1 << 20, 32 << 20);
  using attune::detail::select_machine;
  EXPECT_EQ(select_machine({a, b, c}, b).index, 1);
  EXPECT_EQ(select_machine({a, b, c}, b).how, "exact match");
  // Same caches as A, more cores: A (cache distance 0) beats B.
  EXPECT_EQ(select_machine({a, b, c}, machine("X", "avx2 scalar", 16, 1 << 20, 32 << 20)).index, 0);
  // Same caches as A and B both (B's L2 matches): the nearer core count decides.
  const auto d = machine("D", "avx2 scalar", 16, 1 << 20, 32 << 20);
  EXPECT_EQ(select_machine({a, d}, machine("Y", "avx2 scalar", 12, 1 << 20, 32 << 20)).index, 1);
  // C is the only one with AVX-512; an AVX-512 machine never takes A's or B's table.
  EXPECT_EQ(select_machine({a, b, c}, machine("Z", "avx512 avx2 scalar", 64, 2 << 20, 256 << 20)).index, 2);
  EXPECT_EQ(select_machine({a, b}, machine("Z", "avx512 avx2 scalar", 4, 1 << 20, 32 << 20)).index, -1);
  EXPECT_EQ(select_machine({}, a).index, -1);
}

TEST(MachineSelection, ThisMachinesSignatureIsDetected) {
  const attune::MachineSignature& m = attune::machine_signature();
  EXPECT_EQ(m.cpu, std::string(attune::cpu_model()));
  EXPECT_GT(m.cores, 0);
  EXPECT_NE(m.isas.find("scalar"), std::string::npos);
  EXPECT_NE(attune::to_string(m).find(" cores"), std::string::npos);
}

TEST(TuningFile, WriterAndReaderRoundTrip) {
  const auto log = attune::tuner::parse_log(runtime::fixture_log_text(), "fixture");
  const std::string text = attune::tuner::generate_tuning(log);
  EXPECT_EQ(text, attune::tuner::generate_tuning(log));  // deterministic
  const auto machines = attune::detail::parse_tuning(text, "t");
  ASSERT_EQ(machines.size(), 1u);
  // The header's rows, less the one whose kernel this build does not know.
  EXPECT_EQ(machines[0].entries.size(), attune::tuned_data::kEntries.size() - 1);
  EXPECT_EQ(machines[0].unknown, 1u);
  // A later line for a key supersedes an earlier one (an appended online tune).
  std::string appended = text;
  attune::TunedEntry e = machines[0].entries[0];
  e.block_q = 12345;
  appended += attune::detail::tuning_entry_line("m0", e, "later");
  const auto again = attune::detail::parse_tuning(appended, "t");
  EXPECT_EQ(again[0].entries[0].block_q, 12345);
  EXPECT_EQ(again[0].entries.size(), machines[0].entries.size());
}

}  // namespace runtime

// ---- Online tuning on first use ---------------------------------------------------------------

namespace online {

class OnlineTuning : public testing::Test {
 protected:
  void SetUp() override {
    attune::load_tuning("");
    attune::detail::use_tuned_table(&none_);
    attune::set_tuning(attune::TuningMode::online, {50.0, ""});
  }
  void TearDown() override {
    attune::set_tuning(attune::TuningMode::table);
    attune::load_tuning("");
    attune::detail::use_tuned_table(nullptr);
  }
  // Runs `auto` on p and checks the output against the float64 reference's bound.
  static void run_checked(const Problem& p, int seed = 3) {
    attune::reference::Case c{p, 1.0f, p.to_string(), {}, {}, {}};
    const auto in = attune::reference::make_inputs(p, 1.0f, seed);
    const auto ref = attune::reference::attention(p, in.q.data(), in.k.data(), in.v.data());
    const auto check = attune::reference::run_and_compare(c, in, ref, attune::Options{});
    EXPECT_TRUE(check.ok()) << c.name << ": " << check.max_abs_error << " > " << check.tolerance;
  }
  attune::TunedTable none_{{}, attune::tuned_data::kProvenance, ""};
};

TEST_F(OnlineTuning, EachNewKeyRacesOnceAndResultsStayWithinTheBound) {
  const auto before = attune::online_tuning_stats();
  const std::vector<Problem> shapes = {shape(64, 64, 64), shape(100, 100, 64), shape(1, 300, 64, false, 8, 2),
                                       shape(96, 96, 32, true), typed(shape(64, 64, 64), Dtype::bf16)};
  for (const Problem& p : shapes) run_checked(p);
  const auto first = attune::online_tuning_stats();
  // 64 and 100 share a key (bucket 6): four keys.
  EXPECT_EQ(first.races - before.races, 4u);
  EXPECT_GE(first.candidates - before.candidates, 4u);
  EXPECT_EQ(first.rejected, before.rejected);
  // Second calls reuse the winners: no new race, same choice as resolve() reports.
  for (const Problem& p : shapes) run_checked(p, 5);
  EXPECT_EQ(attune::online_tuning_stats().races, first.races);
}

TEST_F(OnlineTuning, TheDefaultKernelsTileNeighboursRaceToo) {
  // With room in the budget, the race times more than the kernels' defaults: the default
  // kernel's query tiles under the shape's extent (16, 32, 64 here), key tiles (64, 32) and
  // micro tiles (1, 2) each start; every one passes the check.
  attune::set_tuning(attune::TuningMode::online, {2000.0, ""});
  const auto before = attune::online_tuning_stats();
  run_checked(shape(128, 128, 32, true));
  const auto after = attune::online_tuning_stats();
  EXPECT_EQ(after.races - before.races, 1u);
  EXPECT_GE(after.candidates - before.candidates, 8u);
  EXPECT_EQ(after.rejected, before.rejected);
}

TEST_F(OnlineTuning, ConcurrentFirstCallsOfOneKeyRaceOnce) {
  const Problem p = shape(200, 200, 48);
  const auto before = attune::online_tuning_stats().races;
  const auto in = attune::reference::make_inputs(p, 1.0f, 3);
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> outs(6, std::vector<float>(static_cast<std::size_t>(p.out_elements())));
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      attune::attention(p, in.q.data(), in.k.data(), in.v.data(), outs[static_cast<std::size_t>(t)].data());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(attune::online_tuning_stats().races - before, 1u);
  run_checked(p);
}

TEST_F(OnlineTuning, KeysWithAnExactTableEntryAndExplicitChoicesAreNotRaced) {
  attune::detail::MachineTable m;
  m.id = "m0";
  m.machine = attune::machine_signature();
  m.signature = attune::build_signature();
  m.entries.push_back({64, false, false, false, 9, 9, "flash", "scalar", 16, 32, 1, 0, 0, 1.0, 0.0, false});
  m.shapes.push_back("");
  runtime::TempFile f("exact.json", attune::detail::tuning_text({m}));
  ASSERT_TRUE(attune::load_tuning(f.path));
  const auto before = attune::online_tuning_stats().races;
  run_checked(shape(512, 512, 64));  // exact entry
  EXPECT_EQ(attune::resolve(shape(512, 512, 64)).config.block_q, 16);
  const Problem other = shape(40, 40, 16);
  const auto in = attune::reference::make_inputs(other, 1.0f, 3);
  std::vector<float> out(static_cast<std::size_t>(other.out_elements()));
  attune::Options o;
  o.kernel = "flash";  // not auto
  attune::attention(other, in.q.data(), in.k.data(), in.v.data(), out.data(), o);
  o = {};
  o.isa = attune::Isa::scalar;  // a forced ISA
  attune::attention(other, in.q.data(), in.k.data(), in.v.data(), out.data(), o);
  EXPECT_EQ(attune::online_tuning_stats().races, before);
  // Table mode: no race at all.
  attune::set_tuning(attune::TuningMode::table);
  run_checked(shape(24, 24, 24));
  EXPECT_EQ(attune::online_tuning_stats().races, before);
}

TEST_F(OnlineTuning, WinnersAreAppendedToTheTuningFileAndServeTheNextLoad) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("attune_online_" + std::to_string(::getpid()) + ".json")).string();
  std::filesystem::remove(path);
  attune::set_tuning(attune::TuningMode::online, {50.0, path});
  const Problem p = shape(300, 300, 40);
  run_checked(p);
  const std::string chosen = describe(attune::resolve(p));
  const auto machines = attune::detail::parse_tuning(read(path), path);
  ASSERT_EQ(machines.size(), 1u);
  EXPECT_TRUE(attune::detail::same_machine(machines[0].machine, attune::machine_signature()));
  ASSERT_EQ(machines[0].entries.size(), 1u);
  EXPECT_EQ(machines[0].entries[0].d_k, 40);
  // A second key appends to the same machine.
  run_checked(shape(20, 20, 40));
  EXPECT_EQ(attune::detail::parse_tuning(read(path), path).at(0).entries.size(), 2u);
  // The next process (here: table mode and a load) dispatches the key as the race chose.
  attune::set_tuning(attune::TuningMode::table);
  ASSERT_TRUE(attune::load_tuning(path));
  EXPECT_EQ(describe(attune::resolve(p)), chosen);
  std::filesystem::remove(path);
}

}  // namespace online
