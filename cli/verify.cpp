// `attune verify`: every runnable (kernel, isa) against the float64 reference over a shape grid.
#include "commands.hpp"

#include "common.hpp"
#include "reference.hpp"

#include <attune/attune.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace attune::cli {

const char* const kVerifyHelp =
    "usage: attune verify [--kernel NAME] [--isa ISA] [--threads N] [--block-q N] [--block-kv N]\n"
    "                     [--kv-splits N] [--micro auto|narrow|wide] [--grid full|quick|paged] [--quiet]\n\n"
    "Runs every runnable (kernel, isa) pair over the built-in shape grid (odd d_k and\n"
    "lengths, causal, grouped-query, large logits) and prints the worst error per pair.\n"
    "--grid quick: a small part of it (d_k 1, 7, 129, odd lengths, decoding, large logits,\n"
    "each storage type, the variants on one shape, each quantized K/V type), for slow or\n"
    "emulated CPUs. --grid paged: paged K/V only (block tables, mixed batches, every K/V\n"
    "type). Storage rows read like fp32/kvint8 (fp32 Q/O, int8 K/V; +var: variants; +paged:\n"
    "K/V read from a pool of blocks).\n"
    "Exit status 1 if any case exceeds its tolerance.\n";

int cmd_verify(const std::vector<std::string>& argv) {
  auto flags = kRunFlags;
  flags.insert("--grid");
  const Args a(argv, flags, {"--quiet"});
  no_positional(a);
  const Options base = parse_options(a);
  const std::string grid_name = a.get("--grid").value_or("full");
  if (grid_name != "full" && grid_name != "quick" && grid_name != "paged")
    throw UsageError("--grid must be 'full', 'quick' or 'paged', not '" + grid_name + "'");
  // One row per (kernel, isa, storage): storage "bf16" (every tensor) or "fp32/kvbf16" (Q/O, K/V),
  // with "+var" for the variants' matrix (reference::variant_grid).
  struct Row {
    const Kernel* kernel;
    Isa isa;
    std::string storage;
    int cases = 0, failed = 0;
    double worst = 0.0, worst_ratio = 0.0;
    std::string worst_case;
  };
  auto storage_of = [](const Problem& p) {
    const std::string dtype(to_string(p.dtype));
    const std::string types = p.kv_type() == p.dtype ? dtype : dtype + "/kv" + std::string(to_string(p.kv_type()));
    if (p.paged()) return types + "+paged";
    return p.plain() ? types : types + "+var";
  };
  std::vector<reference::Case> grid;
  if (grid_name == "paged") {
    grid = reference::paged_grid();
  } else if (grid_name == "quick") {
    grid = reference::quick_grid();
    // Quantized K/V (fp32 Q/O), two cases per type: a d_k tail (int4: one group) and causal
    // grouped-query decoding (emulated CPUs run this grid: keep it small).
    for (auto& c : reference::quant_grid()) {
      const Problem& p = c.problem;
      const bool tail = p.seq_q == 65 && p.seq_kv == 63 && p.plain() && (p.d_k == 7 || p.d_k == 32) && !p.causal;
      const bool decode = p.seq_q == 1 && p.seq_kv == 1000 && p.causal;
      if (p.dtype == Dtype::fp32 && (tail || decode)) grid.push_back(std::move(c));
    }
    // Paged: the mixed batch of fp32 and int8 K/V.
    for (auto& c : reference::paged_grid()) {
      const Dtype kv = c.problem.kv_type();
      if (c.name.ends_with("_mixed") && c.problem.dtype == Dtype::fp32 && (kv == Dtype::fp32 || kv == Dtype::int8))
        grid.push_back(std::move(c));
    }
  } else {
    grid = reference::verification_grid();
    for (auto& c : reference::variant_grid()) grid.push_back(std::move(c));
    // Quantized K/V under fp32 Q/O (the bf16 and fp16 Q copies run in the test suite's
    // Quantized/Equivalence; here they would double verify's time).
    for (auto& c : reference::quant_grid())
      if (c.problem.dtype == Dtype::fp32) grid.push_back(std::move(c));
    for (auto& c : reference::paged_grid()) grid.push_back(std::move(c));
  }
  std::vector<std::string> storages;  // in grid order
  for (const auto& c : grid)
    if (std::find(storages.begin(), storages.end(), storage_of(c.problem)) == storages.end())
      storages.push_back(storage_of(c.problem));
  std::vector<Row> rows;
  for (const Kernel* k : kernels()) {
    if (base.kernel != "auto" && k->name() != base.kernel) continue;
    for (Isa isa : runnable_isas(*k)) {
      if (base.isa && isa != *base.isa) continue;
      for (const std::string& st : storages) rows.push_back(Row{k, isa, st, 0, 0, 0.0, 0.0, ""});
    }
  }
  if (rows.empty()) throw UsageError("no runnable kernel matches --kernel/--isa");
  std::size_t done = 0;
  for (const auto& c : grid) {
    const auto in = reference::make_inputs(c, 42);
    // Paged cases: the reference of the gathered K/V.
    const auto ref = reference::attention(reference::unpaged(c.problem), in.q.data(), in.k.data(), in.v.data(), in.variant());
    const std::string storage = storage_of(c.problem);
    for (Row& r : rows) {
      if (r.storage != storage || !r.kernel->supports(c.problem, r.isa)) continue;
      Options o = base;
      o.kernel = std::string(r.kernel->name());
      o.isa = r.isa;
      const auto check = reference::run_and_compare(c, in, ref, o);
      ++r.cases;
      const double ratio = check.max_abs_error / check.tolerance;
      if (!check.ok()) ++r.failed;
      if (ratio >= r.worst_ratio) {
        r.worst_ratio = ratio;
        r.worst = check.max_abs_error;
        r.worst_case = c.name;
      }
    }
    ++done;
    if (!a.has("--quiet")) std::fprintf(stderr, "\rverify: %zu/%zu shapes", done, grid.size());
  }
  if (!a.has("--quiet")) std::fprintf(stderr, "\n");
  std::printf("%-8s %-11s %-11s %6s %7s %12s %10s  %s\n", "kernel", "isa", "storage", "cases", "failed",
              "worst_error", "err/tol", "worst_case");
  int failures = 0, checked = 0;
  for (const Row& r : rows) {
    if (r.cases == 0) continue;  // a storage the kernel does not take on this ISA
    std::printf("%-8s %-11s %-11s %6d %7d %12.3e %10.3f  %s\n", std::string(r.kernel->name()).c_str(),
                std::string(to_string(r.isa)).c_str(), r.storage.c_str(), r.cases, r.failed, r.worst, r.worst_ratio,
                r.worst_case.c_str());
    failures += r.failed;
    checked += r.cases;
  }
  std::printf("%s: %d (kernel, isa, case) checks over %zu shapes, %d failures\n", failures ? "FAILED" : "OK",
              checked, grid.size(), failures);
  return failures ? 1 : 0;
}

}  // namespace attune::cli
