// The tuner on a synthetic cost model: smart search finds the known optimum within its budget,
// verification gates winners, and an interrupted log resumes without losing complete lines.
#include "grid.hpp"
#include "records.hpp"
#include "reference.hpp"
#include "tuner.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

namespace {

using namespace attune::tuner;

attune::Problem problem() {
  attune::Problem p;
  // Few query rows against many keys, so that key splits stay in the space.
  p.heads_q = p.heads_kv = 1;
  p.seq_q = 256;
  p.seq_kv = 4096;
  p.d_k = p.d_v = 64;
  return p;
}

double distance(std::int64_t value, std::int64_t fallback, double best_log2) {
  return std::abs(std::log2(static_cast<double>(value > 0 ? value : fallback)) - best_log2);
}

// A separable cost with a unique optimum away from the start in every coordinate (tiles
// 128 x 256, one thread if the machine has more, 2 key splits, the wide register tile, flash on
// the start ISA), and
// +-0.5% multiplicative noise.
class Synthetic : public Oracle {
 public:
  explicit Synthetic(attune::Isa best_isa) : best_isa_(best_isa) {}
  double cost(const Candidate& c) const {
    double t = 1.0;
    t *= c.kernel == "flash" ? 1.0 : c.kernel == "simd" ? 1.3 : 2.5;
    t *= c.isa == best_isa_ ? 1.0 : 1.2;
    t *= 1.0 + 0.3 * distance(c.config.block_q, 64, 7.0);
    t *= 1.0 + 0.2 * distance(c.config.block_kv, 128, 8.0);
    t *= c.config.threads == 1 ? 0.9 : 1.0;
    t *= c.config.kv_splits == 2 ? 0.85 : c.config.kv_splits == 0 ? 1.0 : 1.1;
    t *= c.config.micro == 2 ? 0.95 : c.config.micro == 1 ? 1.05 : 1.0;
    return t * 1e-3;
  }
  bool verify(const Candidate& c, std::string& why) override {
    ++verifications;
    if (refuse.count(c.key())) {
      why = "wrong output (synthetic)";
      return false;
    }
    return true;
  }
  double sample(const Candidate& c) override {
    ++samples;
    return cost(c) * (1.0 + noise_(rng_));
  }
  std::set<std::string> refuse;
  int samples = 0, verifications = 0;

 private:
  attune::Isa best_isa_;
  std::mt19937_64 rng_{42};
  std::uniform_real_distribution<double> noise_{-0.005, 0.005};
};

const Candidate& true_best(const Space& space, const Synthetic& oracle) {
  const Candidate* best = &space.all.front();
  for (const Candidate& c : space.all)
    if (!oracle.refuse.count(c.key()) && oracle.cost(c) < oracle.cost(*best)) best = &c;
  return *best;
}

TEST(Tuner, SpaceComesFromKernelParams) {
  const Space space = make_space(problem(), 0);
  std::set<std::string> kernels, keys;
  for (const Candidate& c : space.all) {
    kernels.insert(c.kernel);
    EXPECT_TRUE(keys.insert(c.key()).second) << "duplicate " << c.key();
  }
  EXPECT_EQ(kernels.count("naive"), 0u);  // rank 0: the definition, not a candidate
  EXPECT_EQ(kernels.count("flash"), 1u);
  EXPECT_EQ(space.start.kernel, "flash");
  EXPECT_TRUE(keys.count(space.start.key()));
  // Tiles past the sequence are pruned: 4096 keys keep every block_kv up to 512, a 16-row
  // query never needs tiles past 16.
  attune::Problem small = problem();
  small.seq_q = small.seq_kv = 16;
  EXPECT_GT(make_space(small, 0).pruned, 0u);
  EXPECT_LT(make_space(small, 0).all.size(), space.all.size());
  // Key splits only where the query rows cannot keep the threads busy.
  auto has_split = [](const Space& s) {
    return std::any_of(s.all.begin(), s.all.end(), [](const Candidate& c) { return c.config.kv_splits > 0; });
  };
  EXPECT_TRUE(has_split(space));
  attune::Problem prefill = problem();
  prefill.heads_q = prefill.heads_kv = 16;
  prefill.seq_q = prefill.seq_kv = 2048;
  EXPECT_FALSE(has_split(make_space(prefill, 2)));
  // The register tile is a coordinate of the kernels that declare it.
  std::set<int> micro;
  for (const Candidate& c : space.all)
    if (c.kernel == "flash") micro.insert(c.config.micro);
  EXPECT_EQ(micro, (std::set<int>{0, 1, 2}));
}

TEST(Tuner, SmartFindsTheKnownOptimumWithinItsBudget) {
  const Space space = make_space(problem(), 0);
  Synthetic oracle(space.start.isa);
  SearchOptions opt;
  opt.max_evaluations = space.all.size() * 3 / 10;  // <= 30% of exhaustive
  std::map<std::string, Measurement> known;
  const SearchResult r = search(space, oracle, opt, known);
  EXPECT_EQ(r.best.candidate.key(), true_best(space, oracle).key());
  EXPECT_LE(r.evaluations, opt.max_evaluations);
  EXPECT_LT(r.evaluations, space.all.size() / 4) << "space " << space.all.size();
  EXPECT_EQ(r.space_size, space.all.size());
  EXPECT_FALSE(r.tie);
  EXPECT_GE(r.best.samples.size(), 9u);  // confirmed
}

TEST(Tuner, SmartSeededWithTheOptimumNeedsFewerEvaluations) {
  const Space space = make_space(problem(), 0);
  Synthetic plain_oracle(space.start.isa), seeded_oracle(space.start.isa);
  SearchOptions opt;
  std::map<std::string, Measurement> plain_known, seeded_known;
  const SearchResult plain = search(space, plain_oracle, opt, plain_known);
  opt.seeds = {true_best(space, seeded_oracle)};
  Candidate foreign = space.start;
  foreign.kernel = "no-such-kernel";  // not in the space: ignored
  opt.seeds.push_back(foreign);
  const SearchResult seeded = search(space, seeded_oracle, opt, seeded_known);
  EXPECT_EQ(seeded.best.candidate.key(), true_best(space, seeded_oracle).key());
  EXPECT_EQ(plain.best.candidate.key(), seeded.best.candidate.key());
  EXPECT_LT(seeded.evaluations, plain.evaluations);
  EXPECT_EQ(seeded_known.count(foreign.key()), 0u);
}

// A grid's seeds: the winners of the most similar shapes tuned before, each candidate once;
// another storage type or d_k is farther than any length.
TEST(Tuner, SeedsComeFromTheMostSimilarShapes) {
  const attune::Problem p = problem();
  attune::Problem longer = p, other_dk = p, bf16 = p;
  longer.seq_kv *= 4;
  other_dk.d_k = other_dk.d_v = 128;
  bf16.dtype = attune::Dtype::bf16;
  EXPECT_EQ(shape_distance(p, p), 0.0);
  EXPECT_DOUBLE_EQ(shape_distance(p, longer), 2.0);  // two octaves of seq_kv
  EXPECT_LT(shape_distance(p, longer), shape_distance(p, other_dk));
  EXPECT_LT(shape_distance(p, other_dk), shape_distance(p, bf16));

  Candidate a = make_space(p, 0).start, b = a, c = a;
  b.config.block_kv = 64;
  c.config.block_kv = 256;
  const std::vector<Winner> winners = {{bf16, c}, {longer, a}, {other_dk, b}, {p, a}};
  const auto seeds = nearest_winners(p, winners, 2);
  ASSERT_EQ(seeds.size(), 2u);
  EXPECT_EQ(seeds[0].key(), a.key());  // p's own and longer's winner: the same candidate, once
  EXPECT_EQ(seeds[1].key(), b.key());
  EXPECT_TRUE(nearest_winners(p, {}, 2).empty());
}

TEST(Tuner, ExhaustiveAndRandomAgreeAndHonourTheBudget) {
  const Space space = make_space(problem(), 0);
  Synthetic oracle(space.start.isa);
  std::map<std::string, Measurement> known;
  SearchOptions opt;
  opt.strategy = Strategy::exhaustive;
  const SearchResult all = search(space, oracle, opt, known);
  EXPECT_EQ(all.best.candidate.key(), true_best(space, oracle).key());
  EXPECT_EQ(all.evaluations, space.all.size());

  std::map<std::string, Measurement> fresh;
  opt.strategy = Strategy::random;
  opt.random_k = 10;
  const SearchResult some = search(space, oracle, opt, fresh);
  EXPECT_LE(some.evaluations, 11u);
}

TEST(Tuner, ACandidateFailingVerificationNeverWins) {
  const Space space = make_space(problem(), 0);
  Synthetic oracle(space.start.isa);
  const std::string best = true_best(space, oracle).key();
  oracle.refuse.insert(best);
  std::map<std::string, Measurement> known;
  SearchOptions opt;
  opt.strategy = Strategy::exhaustive;
  const SearchResult r = search(space, oracle, opt, known);
  EXPECT_NE(r.best.candidate.key(), best);
  EXPECT_EQ(r.best.candidate.key(), true_best(space, oracle).key());  // the best verified one
  EXPECT_FALSE(known.at(best).verified);
  EXPECT_TRUE(known.at(best).samples.empty());
}

TEST(Tuner, TimeBudgetStopsTheSearchButKeepsAResult) {
  const Space space = make_space(problem(), 0);
  Synthetic oracle(space.start.isa);
  SearchOptions opt;
  opt.out_of_time = [] { return true; };
  std::map<std::string, Measurement> known;
  const SearchResult r = search(space, oracle, opt, known);
  EXPECT_EQ(r.evaluations, 1u);
  EXPECT_EQ(r.best.candidate.key(), space.start.key());
}

// Runs a smart search writing the log as the CLI does; returns the log text.
std::string logged_search(Synthetic& oracle, std::map<std::string, Measurement>& known, SearchResult* result) {
  const attune::Problem p = problem();
  const Space space = make_space(p, 0);
  std::string text = provenance_line("smart", "1m", "test");
  SearchOptions opt;
  opt.on_measured = [&](const Measurement& m) { text += measurement_line(p, m); };
  *result = search(space, oracle, opt, known);
  text += choice_line(p, *result, "smart");
  return text;
}

TEST(Tuner, ResumeAfterAnInterruptedWriteKeepsTheCompleteLines) {
  const Space space = make_space(problem(), 0);
  Synthetic first(space.start.isa);
  std::map<std::string, Measurement> known;
  SearchResult r1;
  const std::string text = logged_search(first, known, &r1);

  // Cut the file in the middle of a measurement line two thirds of the way in.
  std::size_t cut = text.find("{\"type\":\"measurement\"", text.size() * 2 / 3);
  ASSERT_NE(cut, std::string::npos);
  cut += 40;
  const std::string truncated = text.substr(0, cut);
  const std::string path = (std::filesystem::temp_directory_path() / "attune_test_resume.json").string();
  write_atomic(path, truncated);
  const Log log = read_log(path);
  std::remove(path.c_str());
  EXPECT_TRUE(log.dropped_partial);
  const std::size_t complete_lines = static_cast<std::size_t>(std::count(truncated.begin(), truncated.end(), '\n'));
  EXPECT_EQ(log.records.size(), complete_lines);
  EXPECT_EQ(log.complete_text, truncated.substr(0, truncated.rfind('\n') + 1));
  EXPECT_TRUE(log_choices(log).empty());

  // Resume: the cached measurements are reused, only the rest is measured again.
  auto cached = log_measurements(log, problem());
  EXPECT_FALSE(cached.empty());
  Synthetic second(space.start.isa);
  SearchResult r2;
  logged_search(second, cached, &r2);
  EXPECT_LT(second.samples, first.samples);
  EXPECT_LT(second.verifications, first.verifications);
  EXPECT_EQ(r2.best.candidate.key(), r1.best.candidate.key());
}

TEST(Tuner, CorruptLogLinesAreErrorsWithTheirLineNumber) {
  const std::string good = provenance_line("smart", "1m", "test");
  EXPECT_THROW(parse_log(good + "{\"type\":\"measurement\"\n" + good, "x.json"), attune::IoError);
  try {
    parse_log(good + good + "not json\n", "x.json");
    FAIL();
  } catch (const attune::IoError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("x.json:3:", 0), 0u) << e.what();
  }
  EXPECT_THROW(parse_log(good + "{\"type\":\"measurement\"}\n", "x.json"), attune::IoError);  // missing fields
  EXPECT_THROW(log_provenance(parse_log("", "x.json")), attune::IoError);
  // A valid last line without its newline is kept.
  const Log log = parse_log(good + good.substr(0, good.size() - 1), "x.json");
  EXPECT_EQ(log.records.size(), 2u);
  EXPECT_FALSE(log.dropped_partial);
}

TEST(Tuner, HeaderIsDeterministicAndStable) {
  const Space space = make_space(problem(), 0);
  Synthetic oracle(space.start.isa);
  std::map<std::string, Measurement> known;
  SearchResult r;
  const std::string text = logged_search(oracle, known, &r);
  const std::string h1 = generate_header(parse_log(text, "a"), "tune.json");
  const std::string h2 = generate_header(parse_log(text, "b"), "tune.json");
  EXPECT_EQ(h1, h2);
  EXPECT_NE(h1.find("constexpr std::array<TunedEntry, 1> kEntries"), std::string::npos);
  EXPECT_NE(h1.find("\"" + r.best.candidate.kernel + "\""), std::string::npos);
}

TEST(Tuner, StringsAreQuotedOneWayForJsonAndTheHeader) {
  const std::string text = std::string("a\"b\\c\nd") + '\x01' + "e\x7f";
  const std::string json = json_string(text);
  EXPECT_EQ(json, "\"a\\\"b\\\\c\\u000ad\\u0001e\x7f\"");
  EXPECT_EQ(json_str(parse_json_object("{\"s\":" + json + "}"), "s"), text);  // the log reads back what it wrote
  EXPECT_EQ(quoted(text, Syntax::cpp), "\"a\\\"b\\\\c\\012d\\001e\\177\"");
}

TEST(Tuner, TheDecodeKeyIsTheLibrarysRule) {
  EXPECT_EQ(attune::kDecodeMaxSeqQ, 16);  // the key of every table generated so far
  attune::Problem p = problem();
  for (const std::int64_t seq_q : {std::int64_t{1}, std::int64_t{16}, std::int64_t{17}}) {
    p.seq_q = seq_q;
    EXPECT_EQ(attune::tuned_key(p).decode, attune::is_decode(p)) << seq_q;
    EXPECT_EQ(attune::is_decode(p), seq_q <= 16) << seq_q;
  }
}

TEST(Tuner, RecordsCarryTheStorageTypesAndUntypedOnesAreFp32) {
  attune::Problem p = problem();
  p.dtype = attune::Dtype::fp32;
  p.kv_dtype = attune::Dtype::bf16;
  const Space space = make_space(p, 0);
  Synthetic oracle(space.start.isa);
  std::map<std::string, Measurement> known;
  SearchOptions opt;
  opt.max_evaluations = 3;
  const SearchResult r = search(space, oracle, opt, known);
  const std::string choice = choice_line(p, r, "smart");
  EXPECT_NE(choice.find("\"dtype\":\"fp32\",\"kv_dtype\":\"bf16\""), std::string::npos) << choice;
  const std::string text = provenance_line("smart", "1m", "test") + measurement_line(p, r.best) + choice;
  const Log log = parse_log(text, "x.json");
  const auto choices = log_choice_records(log);
  ASSERT_EQ(choices.size(), 1u);
  const attune::Problem back = choices.begin()->second.problem;
  EXPECT_EQ(back.to_string(), p.to_string());
  EXPECT_EQ(back.kv_type(), attune::Dtype::bf16);
  EXPECT_EQ(log_measurements(log, p).size(), 1u);
  EXPECT_NE(generate_header(log, "x.json").find(", Dtype::fp32, Dtype::bf16},"), std::string::npos);

  // A line without the fields (a log from before the types were keys) is fp32.
  std::string untyped = choice;
  untyped.erase(untyped.find(",\"dtype\""), std::string(",\"dtype\":\"fp32\",\"kv_dtype\":\"bf16\"").size());
  const std::string prov = provenance_line("smart", "1m", "test");
  const auto old = log_choice_records(parse_log(prov + untyped, "old.json"));
  EXPECT_EQ(old.begin()->second.problem.dtype, attune::Dtype::fp32);
  EXPECT_EQ(old.begin()->second.problem.kv_type(), attune::Dtype::fp32);

  // An unknown type is an error naming the field and the value.
  std::string bad = choice;
  const std::string kv = "\"kv_dtype\":\"bf16\"";
  bad.replace(bad.find(kv), kv.size(), "\"kv_dtype\":\"fp64\"");
  try {
    parse_log(prov + bad, "bad.json");
    FAIL() << bad;
  } catch (const attune::IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.json:2: field \"kv_dtype\" = \"fp64\""), std::string::npos) << what;
  }
}

TEST(Tuner, TheOracleTimesAndVerifiesInTheStorageTypes) {
  for (const attune::Dtype d : attune::kAllDtypes) {
    attune::Problem p = attune::reference::shape(2, 2, 40, 40, 16);
    p.dtype = d;
    const Space space = make_space(p, 1);
    for (const Candidate& c : space.all) {
      const attune::Kernel* k = attune::find_kernel(c.kernel);
      ASSERT_NE(k, nullptr);
      EXPECT_TRUE(k->supports(p, c.isa)) << c.key() << " on " << p.to_string();
    }
    KernelOracle oracle(p, 0.001);
    std::string why;
    EXPECT_TRUE(oracle.verify(space.start, why)) << p.to_string() << ": " << why;
    EXPECT_GT(oracle.sample(space.start), 0.0);
  }
}

}  // namespace
