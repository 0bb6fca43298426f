// Tuning a grid of shapes (`attune tune`): one search per shape, seeded with the winners of the
// most similar shapes tuned before it (in this run or in the log), the time budget shared by the
// shapes still to tune, every measurement and choice appended to the log as it finishes.
#pragma once

#include "records.hpp"
#include "tuner.hpp"

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace attune::tuner {

// Similarity of two shapes for seeding: exact keys (storage types, d_k, causal, decode, GQA)
// weigh most, then the log2 distance of the lengths and head counts. 0: the same shape.
double shape_distance(const Problem& a, const Problem& b);

// A shape tuned before, and the candidate that won it.
struct Winner {
  Problem problem;
  Candidate candidate;
};

// The candidates of the `n` winners nearest `problem` (shape_distance; ties in `winners` order),
// each candidate once: the seeds of smart's search.
std::vector<Candidate> nearest_winners(const Problem& problem, const std::vector<Winner>& winners,
                                       std::size_t n);

struct GridOptions {
  SearchOptions search;      // every shape's; tune_grid sets seeds, out_of_time and on_measured
  std::string strategy;      // its name, as the choice records give it
  double budget = 600.0;     // seconds, shared by the shapes still to tune
  int max_threads = 0;       // make_space's cap (0: all cores)
  double window = 0.02;      // KernelOracle's timing window, seconds
  double wait_quiet = 30.0;  // KernelOracle::set_max_wait, seconds
  std::size_t seeds = 2;     // winners of the most similar shapes raced per shape
};

// Where the grid stands, for progress lines.
struct GridProgress {
  std::size_t index = 0;  // 1-based position of the shape in the grid
  std::size_t count = 0;  // shapes in the grid
  double elapsed = 0.0;   // seconds since tune_grid began
  double eta = 0.0;       // seconds for the shapes left: the mean per shape so far, else the budget left
};

// What the caller shows; every callback is optional.
struct GridEvents {
  // A shape the log already has a choice for: not tuned again.
  std::function<void(const Problem&, const GridProgress&)> skipped;
  // After each measurement of the shape being tuned: the candidates timed so far in this run,
  // and the fastest verified one ("" and 0 while there is none).
  std::function<void(const Problem&, const GridProgress&, std::size_t evaluations,
                     const std::string& best_key, double best_time)>
      measured;
  // A shape's choice was logged; `reused` of its measurements came from the log.
  std::function<void(const Problem&, const GridProgress&, const SearchResult&, std::size_t reused,
                     const KernelOracle&)>
      chosen;
};

// Tunes each shape of `shapes` that `log` has no choice for, in order, appending every
// measurement and then the choice to the JSON lines log at `log_path` (`log` is what it held
// before: its measurements are reused, its choices seed). Throws as search() and append_text().
void tune_grid(const std::vector<Problem>& shapes, const Log& log, const std::string& log_path,
               const GridOptions& options, const GridEvents& events = {});

}  // namespace attune::tuner
