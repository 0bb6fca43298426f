// The search strategies. Every one races its candidates round-robin (interleaved samples,
// Highway-style cut of anything > race_cut x the best) and ends with an interleaved confirmation
// of the top candidates and the start; smart races the start, the winners of similar shapes and
// every kernel's default config per thread count, then descends coordinate-wise over tiles,
// then threads, splits and the micro-kernel, then variant/ISA, moving only on a win larger than the noise.
#include "tuner.hpp"

#include <attune/error.hpp>

#include <algorithm>
#include <climits>
#include <cmath>
#include <random>
#include <set>
#include <tuple>

namespace attune::tuner {
namespace {

enum class Coordinate { block_q, block_kv, threads, kv_splits, micro, variant };

bool same_except(const Candidate& a, const Candidate& b, Coordinate c) {
  if (a.kernel != b.kernel || a.isa != b.isa) return false;
  const Config &x = a.config, &y = b.config;
  return (c == Coordinate::block_q || x.block_q == y.block_q) &&
         (c == Coordinate::block_kv || x.block_kv == y.block_kv) &&
         (c == Coordinate::threads || x.threads == y.threads) &&
         (c == Coordinate::kv_splits || x.kv_splits == y.kv_splits) &&
         (c == Coordinate::micro || x.micro == y.micro);
}

int mismatches(const Config& x, const Config& y) {
  return (x.block_q != y.block_q) + (x.block_kv != y.block_kv) + (x.threads != y.threads) +
         (x.kv_splits != y.kv_splits) + (x.micro != y.micro);
}

class Searcher {
 public:
  Searcher(const Space& space, Oracle& oracle, const SearchOptions& options,
           std::map<std::string, Measurement>& known)
      : space_(space), oracle_(oracle), opt_(options), known_(known) {}

  SearchResult run() {
    const Candidate& start = space_.start;
    if (!usable(start)) {
      throw Error("tuner: the start candidate " + start.key() + " fails verification: " +
                  entry(start).error);
    }
    Candidate winner = start;
    if (opt_.strategy == Strategy::smart) {
      winner = smart();
    } else {
      std::vector<Candidate> list = {start};
      if (opt_.strategy == Strategy::exhaustive) {
        for (const Candidate& c : space_.all)
          if (c.key() != start.key()) list.push_back(c);
      } else {
        std::vector<std::size_t> order(space_.all.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::mt19937_64 rng(opt_.seed);
        std::shuffle(order.begin(), order.end(), rng);
        for (std::size_t i : order) {
          if (list.size() > opt_.random_k) break;
          if (space_.all[i].key() != start.key()) list.push_back(space_.all[i]);
        }
      }
      const auto ranked = race(list);
      if (!ranked.empty()) winner = ranked.front();
    }
    return confirm(winner);
  }

 private:
  Measurement& entry(const Candidate& c) {
    auto [it, inserted] = known_.try_emplace(c.key());
    if (inserted) it->second.candidate = c;
    return it->second;
  }

  bool checked(const Measurement& m) const { return m.verified || !m.error.empty(); }

  // Verifies once (cached); false if the candidate may not win.
  bool usable(const Candidate& c) {
    Measurement& m = entry(c);
    if (!checked(m)) {
      std::string why;
      try {
        m.verified = oracle_.verify(c, why);
      } catch (const Error& e) {
        m.verified = false;
        why = e.what();
      }
      if (!m.verified) m.error = why.empty() ? "output differs from the reference" : why;
      if (opt_.on_measured) opt_.on_measured(m);
    }
    return m.verified;
  }

  bool can_add() const {
    if (evaluated_.empty()) return true;  // the first candidate (the start) is always measured
    return evaluated_.size() < opt_.max_evaluations && !(opt_.out_of_time && opt_.out_of_time());
  }

  // Brings the candidates to n samples each, one sample per candidate per round (interleaved).
  // A candidate not measured before joins only while the budget allows. Returns the verified
  // candidates that have samples.
  std::vector<Candidate> sample_to(const std::vector<Candidate>& list, int n) {
    std::vector<Candidate> live;
    for (const Candidate& c : list) {
      const std::string key = c.key();
      const bool is_new = !evaluated_.count(key);
      if (is_new && !can_add()) continue;  // over budget: not even verified
      if (!usable(c)) continue;
      if (is_new) evaluated_.insert(key);
      live.push_back(c);
    }
    std::set<std::string> grew;
    for (int round = 1; round <= n; ++round) {
      if (round > 1 && opt_.out_of_time && opt_.out_of_time()) break;
      for (const Candidate& c : live) {
        Measurement& m = entry(c);
        if (!m.verified || static_cast<int>(m.samples.size()) >= round) continue;
        try {
          oracle_.set_give_up_after(give_up_factor * best_median_);
          m.samples.push_back(oracle_.sample(c));
          best_median_ = std::min(best_median_, m.median());
        } catch (const Error& e) {
          m.verified = false;
          m.error = e.what();
        }
        grew.insert(c.key());
      }
    }
    std::vector<Candidate> out;
    for (const Candidate& c : live) {
      const Measurement& m = entry(c);
      if (grew.count(c.key()) && opt_.on_measured) opt_.on_measured(m);
      if (m.verified && !m.samples.empty()) out.push_back(c);
    }
    return out;
  }

  // Successive elimination: sample, cut the slow, double the survivors' samples. Returns the
  // survivors fastest first (ties: list order).
  std::vector<Candidate> race(const std::vector<Candidate>& list) {
    std::vector<Candidate> survivors = list;
    int n = opt_.race_samples;
    for (int round = 0; round < opt_.race_rounds; ++round) {
      survivors = sample_to(survivors, n);
      if (survivors.empty()) return survivors;
      double best = INFINITY;
      for (const Candidate& c : survivors) best = std::min(best, entry(c).median());
      std::erase_if(survivors, [&](const Candidate& c) { return entry(c).median() > opt_.race_cut * best; });
      n *= 2;
      if (opt_.out_of_time && opt_.out_of_time()) break;
    }
    std::stable_sort(survivors.begin(), survivors.end(), [&](const Candidate& a, const Candidate& b) {
      return entry(a).median() < entry(b).median();
    });
    return survivors;
  }

  bool wins(const Candidate& challenger, const Candidate& incumbent) {
    const Measurement &c = entry(challenger), &i = entry(incumbent);
    const double margin = std::max(opt_.min_gain, 2.0 * i.spread());
    return c.median() < i.median() * (1.0 - margin);
  }

  std::vector<Candidate> neighbours(const Candidate& inc, Coordinate coord) const {
    std::vector<Candidate> out;
    if (coord != Coordinate::variant) {
      for (const Candidate& c : space_.all)
        if (same_except(c, inc, coord) && c.key() != inc.key()) out.push_back(c);
      return out;
    }
    // Every other (kernel, ISA) pair, with the config closest to the incumbent's (space order
    // breaks ties, so fields the other kernel lacks stay at their default, 0).
    std::map<std::pair<std::string, Isa>, const Candidate*> nearest;
    std::vector<std::pair<std::string, Isa>> pairs;
    for (const Candidate& c : space_.all) {
      if (c.kernel == inc.kernel && c.isa == inc.isa) continue;
      const auto pair = std::make_pair(c.kernel, c.isa);
      auto it = nearest.find(pair);
      if (it == nearest.end()) {
        nearest.emplace(pair, &c);
        pairs.push_back(pair);
      } else if (mismatches(c.config, inc.config) < mismatches(it->second->config, inc.config)) {
        it->second = &c;
      }
    }
    for (const auto& pair : pairs) out.push_back(*nearest.at(pair));
    return out;
  }

  Candidate smart() {
    Candidate inc = space_.start;
    std::vector<Candidate> first = {inc};
    std::set<std::string> in_space;
    for (const Candidate& c : space_.all) in_space.insert(c.key());
    auto add = [&](const Candidate& s) {
      const bool fresh = std::none_of(first.begin(), first.end(), [&](const Candidate& f) { return f.key() == s.key(); });
      if (fresh && in_space.count(s.key())) first.push_back(s);
    };
    for (const Candidate& s : opt_.seeds) add(s);
    // Multi-start: every kernel's all-default config on its best ISA (the first in the space),
    // with each thread count, so a descent that begins in the wrong variant (a tiny problem,
    // where one thread or the BLAS path wins) is not stuck there.
    std::map<std::string, Isa> best_isa;
    for (const Candidate& c : space_.all) {
      best_isa.try_emplace(c.kernel, c.isa);
      const Config& k = c.config;
      if (c.isa == best_isa.at(c.kernel) && k.block_q == 0 && k.block_kv == 0 && k.kv_splits == 0 && k.micro == 0)
        add(c);
    }
    if (first.size() == 1) {
      sample_to(first, opt_.race_samples);
    } else {
      const auto ranked = race(first);
      if (!ranked.empty() && ranked.front().key() != inc.key() && wins(ranked.front(), inc)) inc = ranked.front();
    }
    const Coordinate order[] = {Coordinate::block_q, Coordinate::block_kv, Coordinate::threads,
                                Coordinate::kv_splits, Coordinate::micro, Coordinate::variant};
    for (int pass = 0; pass < 3; ++pass) {
      bool moved = false;
      for (Coordinate coord : order) {
        if (!can_add()) break;
        std::vector<Candidate> list = {inc};
        for (Candidate& c : neighbours(inc, coord)) list.push_back(std::move(c));
        if (list.size() == 1) continue;
        const auto ranked = race(list);
        for (const Candidate& c : ranked) {
          if (c.key() == inc.key()) continue;
          if (wins(c, inc)) {
            inc = c;
            moved = true;
          }
          break;  // only the fastest challenger may move the incumbent
        }
      }
      if (!moved) break;
    }
    return inc;
  }

  // The winner, the best other measured candidate and the start, interleaved to
  // confirm_samples each; within the noise of the fastest, the simplest is taken (a tie).
  SearchResult confirm(const Candidate& winner) {
    const std::string start_key = space_.start.key();
    const Candidate* runner = nullptr;
    for (const std::string& key : evaluated_) {
      const Measurement& m = known_.at(key);
      if (key == winner.key() || !m.verified || m.samples.empty()) continue;
      if (runner == nullptr || m.median() < entry(*runner).median()) runner = &m.candidate;
    }
    std::vector<Candidate> finalists = {winner};
    if (runner != nullptr) finalists.push_back(*runner);
    if (winner.key() != start_key && (runner == nullptr || runner->key() != start_key))
      finalists.push_back(space_.start);
    finalists = sample_to(finalists, opt_.confirm_samples);
    std::stable_sort(finalists.begin(), finalists.end(), [&](const Candidate& a, const Candidate& b) {
      return entry(a).median() < entry(b).median();
    });
    const Measurement& fastest = entry(finalists.front());
    const double limit = fastest.median() * (1.0 + std::max(opt_.min_gain, 2.0 * fastest.spread()));
    auto simplicity = [&](const Candidate& c) {
      const Config& k = c.config;
      return std::make_tuple(c.key() != start_key, k.threads == 0 ? INT_MAX : k.threads, k.block_q,
                             k.block_kv, k.kv_splits, k.micro);
    };
    const Candidate* chosen = &finalists.front();
    for (const Candidate& c : finalists) {
      if (entry(c).median() <= limit && simplicity(c) < simplicity(*chosen)) chosen = &c;
    }
    SearchResult r;
    r.best = entry(*chosen);
    r.tie = chosen->key() != finalists.front().key();
    for (const Candidate& c : finalists) {
      if (c.key() != chosen->key()) {
        r.runner_up = c.key();
        break;
      }
    }
    r.evaluations = evaluated_.size();
    r.space_size = space_.all.size();
    return r;
  }

  const Space& space_;
  Oracle& oracle_;
  const SearchOptions& opt_;
  std::map<std::string, Measurement>& known_;
  std::set<std::string> evaluated_;
  // The fastest median seen so far; candidates slower than give_up_factor x it on their first
  // call are not timed further (Oracle::set_give_up_after). Twice the race cut: such a
  // candidate would be cut anyway.
  double best_median_ = INFINITY;
  const double give_up_factor = 2.0 * opt_.race_cut;
};

}  // namespace

double median_of(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Measurement::median() const { return median_of(samples); }

double Measurement::min() const {
  return samples.empty() ? 0.0 : *std::min_element(samples.begin(), samples.end());
}

double Measurement::spread() const {
  const double med = median();
  if (samples.size() < 2 || med <= 0.0) return 0.0;
  std::vector<double> dev;
  for (double s : samples) dev.push_back(std::abs(s - med));
  return median_of(dev) / med;
}

const char* to_string(Strategy s) {
  switch (s) {
    case Strategy::smart: return "smart";
    case Strategy::exhaustive: return "exhaustive";
    case Strategy::random: return "random";
  }
  return "unknown";
}

SearchResult search(const Space& space, Oracle& oracle, const SearchOptions& options,
                    std::map<std::string, Measurement>& known) {
  return Searcher(space, oracle, options, known).run();
}

}  // namespace attune::tuner
