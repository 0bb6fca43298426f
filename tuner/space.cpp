// The search space as data: each kernel's params() x its runnable ISAs that take the problem's
// storage types, deduplicated against the problem's extents (tiles past the sequence all behave
// alike).
#include "tuner.hpp"

#include <attune/error.hpp>

#include <algorithm>
#include <thread>

namespace attune::tuner {
namespace {

// Keeps 0 (the default), the values up to `extent` and the first value at or past it; a tile
// larger than that is clamped by the kernel into one already in the list.
std::vector<std::int64_t> tile_values(const std::vector<std::int64_t>& spec, std::int64_t extent,
                                      std::size_t& pruned) {
  std::vector<std::int64_t> sorted(spec);
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::int64_t> out = {0};
  bool past = false;
  for (std::int64_t v : sorted) {
    if (v <= 0) continue;
    if (past) {
      ++pruned;
      continue;
    }
    out.push_back(v);
    if (v >= extent) past = true;
  }
  return out;
}

}  // namespace

std::string Candidate::key() const {
  return kernel + "/" + std::string(attune::to_string(isa)) + "/bq" + std::to_string(config.block_q) +
         "/bkv" + std::to_string(config.block_kv) + "/t" + std::to_string(config.threads) + "/s" +
         std::to_string(config.kv_splits) + "/m" + std::to_string(config.micro);
}

Options Candidate::options() const {
  Options o;
  o.kernel = kernel;
  o.isa = isa;
  o.config = config;
  return o;
}

Space make_space(const Problem& p, int max_threads) {
  Space space;
  // Threads: 0 means all cores; under a cap below that, the cap itself replaces 0.
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int cap = max_threads > 0 ? std::min(max_threads, cores) : cores;
  const std::int64_t all_threads = cap < cores ? cap : 0;
  const Kernel* best = nullptr;
  std::vector<Isa> best_isas;
  for (const Kernel* k : kernels()) {
    if (k->rank() <= 0) continue;
    // Only ISAs on which the kernel takes the problem's storage types.
    const auto isas = runnable_isas(*k, p);
    if (isas.empty()) continue;
    if (best == nullptr || k->rank() > best->rank()) {
      best = k;
      best_isas = isas;
    }

    // Per Config field: the values to try (always including 0, the default).
    std::vector<std::int64_t> bq = {0}, bkv = {0}, threads = {0}, splits = {0}, micro = {0};
    const auto specs = k->params();
    std::int64_t largest_bq = 1;
    for (const ParamSpec& spec : specs)
      if (spec.name == "block_q")
        for (std::int64_t v : spec.values) largest_bq = std::max(largest_bq, v);
    // Splitting the key range only creates parallelism: with at least two query-row tasks per
    // thread even at the largest block_q, the automatic choice (no split) is the only one kept.
    const std::int64_t fewest_row_sets =
        p.batch * p.heads_kv * ((p.seq_q * p.group_size() + largest_bq - 1) / largest_bq);
    const bool splits_useful = fewest_row_sets < 2 * cap;
    for (const ParamSpec& spec : specs) {
      if (spec.name == "block_q") {
        // Grouped-query decoding packs the whole group into one tile: the extent is seq_q x group.
        bq = tile_values(spec.values, p.seq_q * p.group_size(), space.pruned);
      } else if (spec.name == "block_kv") {
        bkv = tile_values(spec.values, p.seq_kv, space.pruned);
      } else if (spec.name == "threads") {
        threads = {all_threads};
        for (std::int64_t v : spec.values) {
          if (v > 0 && v < cap) threads.push_back(v);
        }
      } else if (spec.name == "micro") {
        for (std::int64_t v : spec.values)
          if (v > 0) micro.push_back(v);
      } else if (spec.name == "kv_splits") {
        for (std::int64_t v : spec.values) {
          if (v <= 0) continue;
          if (!splits_useful) {
            ++space.pruned;
            continue;
          }
          if (v > 1 && p.seq_kv / v < 64) {  // splits of under 64 keys: pure overhead
            ++space.pruned;
            continue;
          }
          splits.push_back(v);
        }
      }
    }
    for (Isa isa : isas) {
      for (auto q : bq) {
        for (auto kv : bkv) {
          for (auto t : threads) {
            for (auto s : splits) {
              for (auto m : micro) {
                Candidate c;
                c.kernel = std::string(k->name());
                c.isa = isa;
                c.config = Config{q, kv, static_cast<int>(t), static_cast<int>(s), static_cast<int>(m)};
                space.all.push_back(std::move(c));
              }
            }
          }
        }
      }
    }
  }
  if (best == nullptr)
    throw InvalidArgument("no kernel to tune " + p.to_string() + ": none runs its storage types on this CPU");
  space.start.kernel = std::string(best->name());
  space.start.isa = best_isas.front();
  for (const ParamSpec& spec : best->params()) {
    if (spec.name == "threads") space.start.config.threads = static_cast<int>(all_threads);
  }
  return space;
}

}  // namespace attune::tuner
