// The tuner's core: the search space (from each kernel's params()), the oracle that measures
// and verifies a candidate, and the strategies (exhaustive, random, smart) that search it.
#pragma once

#include <attune/attention.hpp>

#include "reference.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace attune::tuner {

// One point of the space: a kernel variant on an ISA with a config (0 fields: the kernel's
// default; threads 0: all cores).
struct Candidate {
  std::string kernel;
  Isa isa = Isa::scalar;
  Config config;
  // "flash/avx2/bq64/bkv128/t0/s0": unique in a space, the cache's key.
  std::string key() const;
  Options options() const;
};

struct Space {
  std::vector<Candidate> all;  // every valid candidate: exhaustive's denominator
  Candidate start;             // what `auto` runs without a table (all-default config)
  std::size_t pruned = 0;      // tile/split values that would only repeat another candidate
};
// Kernels with rank() > 0 (naive, the readable definition, is not a candidate) x their
// runnable ISAs that Kernel::supports() the problem's types x their params() values plus 0
// (default). Thread counts above max_threads are
// dropped; max_threads >= all cores is written as 0.
Space make_space(const Problem& problem, int max_threads);

// The median of a set of times (the mean of the middle two for an even count); 0 if empty.
double median_of(std::vector<double> values);

// Samples of one candidate on one shape; times in seconds (one sample = the median call time
// of a >= 20 ms window).
struct Measurement {
  Candidate candidate;
  bool verified = false;  // passed the reference check (false: `error` says why)
  std::string error;
  std::vector<double> samples;
  double median() const;
  double min() const;
  double spread() const;  // median absolute deviation / median
};

// What the search asks of the machine (or of a synthetic cost model in tests).
class Oracle {
 public:
  virtual ~Oracle() = default;
  // Output checked against the float64 reference on a small instance of the same kind.
  virtual bool verify(const Candidate& candidate, std::string& why) = 0;
  // One sample, in seconds.
  virtual double sample(const Candidate& candidate) = 0;
  // Early termination: a candidate whose first (warm-up) call already takes longer than this
  // may return that call's time as its sample instead of timing a whole window. The search
  // sets it to a multiple of the best median so far, so hopeless candidates cost one call.
  virtual void set_give_up_after(double /*seconds*/) {}
};

enum class Strategy { smart, exhaustive, random };
const char* to_string(Strategy s);

struct SearchOptions {
  Strategy strategy = Strategy::smart;
  std::size_t random_k = 32;           // random: evaluations besides the start
  std::uint64_t seed = 1;
  int race_samples = 2;                // samples before the first cut
  int race_rounds = 2;                 // cut, then double the survivors' samples
  double race_cut = 1.25;              // drop candidates slower than this x the best
  double min_gain = 0.02;              // smart moves only on a win > max(min_gain, 2 x spread)
  int confirm_samples = 9;             // the top 3 (and the start), interleaved
  std::size_t max_evaluations = static_cast<std::size_t>(-1);
  // smart: winners of similar shapes, raced against the start before the descent begins
  // (candidates not in this shape's space are ignored).
  std::vector<Candidate> seeds;
  std::function<bool()> out_of_time;  // empty: no time limit
  // Called each time a candidate's samples grew or it was verified (the cache and progress).
  std::function<void(const Measurement&)> on_measured;
};

struct SearchResult {
  Measurement best;
  std::string runner_up;          // key, empty if none
  bool tie = false;               // a simpler candidate within the noise was taken
  std::size_t evaluations = 0;    // unique candidates measured at least once
  std::size_t space_size = 0;
};

// `known` holds what was measured before (resume, keyed by Candidate::key()) and receives every
// new measurement. Throws attune::Error if not even the start candidate passes verification.
SearchResult search(const Space& space, Oracle& oracle, const SearchOptions& options,
                    std::map<std::string, Measurement>& known);

// The real oracle: times attune::attention on the problem's tensors, stored in its types (dtype,
// kv_dtype), and verifies on a small instance (same d_k, d_v, causal, heads, storage types;
// lengths capped at 193) against the float64 reference with its bound for those types.
class KernelOracle final : public Oracle {
 public:
  explicit KernelOracle(const Problem& problem, double window_seconds = 0.02);
  bool verify(const Candidate& candidate, std::string& why) override;
  double sample(const Candidate& candidate) override;
  void set_give_up_after(double seconds) override { give_up_after_ = seconds; }
  // Contention gating: before timing (at most every half second) the oracle waits, up to
  // `max_wait` seconds per check, while other processes compete for the cores (runnable tasks
  // in /proc/stat beyond this one). Seconds waited so far, and checks that gave up waiting:
  double waited_seconds() const { return waited_; }
  int busy_timeouts() const { return busy_timeouts_; }
  void set_max_wait(double seconds) { max_wait_ = seconds; }

 private:
  void wait_until_quiet();
  double waited_ = 0.0, max_wait_ = 30.0, last_check_ = -1.0;
  int busy_timeouts_ = 0;
  Problem problem_;
  double window_;
  double give_up_after_ = 1e300;
  reference::Stored tensors_;           // Q, K, V in the problem's storage types
  reference::Inputs inputs_;            // their values; a quantized K/V's scales (inputs_.variant())
  std::vector<unsigned char> out_;      // O in problem_.dtype
  std::map<std::string, bool> warmed_;
};

}  // namespace attune::tuner
