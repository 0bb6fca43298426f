// The per-shape loop of `attune tune`: the budget split, the seeds from similar shapes, the log
// appended as measurements finish (so an interrupted run resumes from it).
#include "grid.hpp"

#include <attune/tuned.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <utility>

namespace attune::tuner {

double shape_distance(const Problem& a, const Problem& b) {
  auto lg = [](std::int64_t x) { return std::log2(static_cast<double>(x)); };
  return 8.0 * (a.dtype != b.dtype) + 8.0 * (a.kv_type() != b.kv_type()) + 8.0 * (a.d_k != b.d_k) +
         4.0 * (a.causal != b.causal) + 4.0 * (is_decode(a) != is_decode(b)) +
         2.0 * (a.group_size() != b.group_size()) + std::abs(lg(a.seq_q) - lg(b.seq_q)) +
         std::abs(lg(a.seq_kv) - lg(b.seq_kv)) + 0.5 * std::abs(lg(a.heads_q) - lg(b.heads_q));
}

std::vector<Candidate> nearest_winners(const Problem& problem, const std::vector<Winner>& winners,
                                       std::size_t n) {
  std::vector<std::pair<double, std::size_t>> order;
  for (std::size_t i = 0; i < winners.size(); ++i)
    order.emplace_back(shape_distance(problem, winners[i].problem), i);
  std::stable_sort(order.begin(), order.end());
  std::vector<Candidate> out;
  for (const auto& [d, i] : order) {
    if (out.size() == n) break;
    const Candidate& c = winners[i].candidate;
    if (std::none_of(out.begin(), out.end(), [&](const Candidate& o) { return o.key() == c.key(); }))
      out.push_back(c);
  }
  return out;
}

void tune_grid(const std::vector<Problem>& shapes, const Log& log, const std::string& log_path,
               const GridOptions& options, const GridEvents& events) {
  const auto chosen = log_choices(log);
  const std::set<std::string> done_shapes(chosen.begin(), chosen.end());
  // Winners so far (the log's and this run's): seeds for the shapes still to tune.
  std::vector<Winner> winners;
  for (const auto& [name, record] : log_choice_records(log))
    winners.push_back({record.problem, record.candidate});

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(clock::now() - t0).count(); };
  std::size_t index = 0, measured_shapes = 0, todo = 0;
  for (const Problem& p : shapes) todo += done_shapes.count(p.to_string()) ? 0 : 1;
  // The mean time per shape so far times the shapes left; before the first, the budget left.
  auto progress = [&] {
    GridProgress g;
    g.index = index;
    g.count = shapes.size();
    g.elapsed = elapsed();
    g.eta = measured_shapes > 0 ? g.elapsed / static_cast<double>(measured_shapes) *
                                      static_cast<double>(todo - measured_shapes)
                                : options.budget - g.elapsed;
    return g;
  };

  for (const Problem& p : shapes) {
    ++index;
    if (done_shapes.count(p.to_string())) {
      if (events.skipped) events.skipped(p, progress());
      continue;
    }
    const double shape_deadline =
        elapsed() + (options.budget - elapsed()) / static_cast<double>(todo - measured_shapes);
    const Space space = make_space(p, options.max_threads);
    auto known = log_measurements(log, p);
    const std::size_t reused = known.size();
    KernelOracle oracle(p, options.window);
    oracle.set_max_wait(options.wait_quiet);
    SearchOptions opt = options.search;
    opt.seeds = nearest_winners(p, winners, options.seeds);
    opt.out_of_time = [&] { return elapsed() > shape_deadline; };
    std::string best_key;
    double best_time = 0.0;
    std::size_t evals = 0;
    std::set<std::string> seen;
    opt.on_measured = [&](const Measurement& m) {
      append_text(log_path, measurement_line(p, m));
      if (!m.samples.empty() && seen.insert(m.candidate.key()).second) ++evals;
      if (m.verified && !m.samples.empty() && (best_key.empty() || m.median() < best_time)) {
        best_key = m.candidate.key();
        best_time = m.median();
      }
      if (events.measured) events.measured(p, progress(), evals, best_key, best_time);
    };
    const SearchResult r = search(space, oracle, opt, known);
    append_text(log_path, choice_line(p, r, options.strategy));
    winners.push_back({p, r.best.candidate});
    ++measured_shapes;
    if (events.chosen) events.chosen(p, progress(), r, reused, oracle);
  }
}

}  // namespace attune::tuner
