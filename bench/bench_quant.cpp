// attune_bench_quant: quantize_kv (the reshape_and_cache step) on each ISA's build and on the
// scalar reference, in rows per second: 8 KV heads of d 128, one row per head (a decoding step,
// as paged_append calls it) and 256 (a prefill chunk), unit-normal rows. All --benchmark_* flags
// work. Names: quantize_kv/<isa>/kv:<type>/hkv:8/d:128/tokens:<n>, <isa> the build that runs
// (scalar: the reference loops); int8_kc runs its K (fixed channel scales), the others their V
// (K and V take the same path for them).
#include "quant/quant.hpp"

#include <attune/attune.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

using attune::Dtype;
using attune::Isa;

constexpr std::int64_t kHeads = 8, kD = 128;

void run(benchmark::State& state, Isa isa, Dtype kv, std::int64_t tokens) {
  const bool is_k = kv == Dtype::int8_kc;
  const std::int64_t rows = kHeads * tokens;
  std::vector<float> x(static_cast<std::size_t>(rows * kD));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (float& e : x) e = normal(rng);
  const std::size_t rb = attune::row_bytes(kv, kD);
  const std::int64_t rec = attune::scale_record_elements(kv, kD, is_k);
  const std::size_t esize = attune::scale_element_bytes(kv);
  std::vector<unsigned char> codes(static_cast<std::size_t>(rows) * rb),
      scales(static_cast<std::size_t>(rows * std::max<std::int64_t>(rec, 1)) * esize);
  // The fixed scales of fp8 (one per head) and int8_kc's K (d per head), from each head's rows.
  const std::int64_t fixed_per_head = is_k ? kD : 1;
  std::vector<float> fixed(static_cast<std::size_t>(kHeads * fixed_per_head), 1.0f);
  for (std::int64_t h = 0; h < kHeads; ++h)
    attune::kv_head_scales(kv, is_k, x.data() + h * tokens * kD, tokens, kD, fixed.data() + h * fixed_per_head);
  const attune::quant::RowsFn quantize = attune::quant::rows_fn(isa);
  for (auto _ : state) {
    for (std::int64_t h = 0; h < kHeads; ++h)
      quantize(kv, is_k, x.data() + h * tokens * kD, tokens, kD, codes.data() + static_cast<std::size_t>(h * tokens) * rb,
               rec > 0 ? scales.data() + static_cast<std::size_t>(h * tokens * rec) * esize : nullptr,
               fixed.data() + h * fixed_per_head);
    benchmark::ClobberMemory();
  }
  state.counters["rows_per_second"] =
      benchmark::Counter(static_cast<double>(rows), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes_per_second"] =  // the float rows read
      benchmark::Counter(static_cast<double>(rows * kD * 4), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("attune_version", std::string(attune::version()));
  benchmark::AddCustomContext("attune_git_revision", std::string(attune::git_revision()));
  benchmark::AddCustomContext("attune_compiler", std::string(attune::compiler()));
  benchmark::AddCustomContext("cpu_model", std::string(attune::cpu_model()));
  benchmark::AddCustomContext("quantize_kv_build", std::string(attune::to_string(attune::quant::best_build())));
  // Each build once, best first: the runnable ISAs with their own build, then the reference.
  std::vector<Isa> builds;
  for (Isa isa : attune::runnable_isas()) {
    const Isa b = attune::quant::build_for(isa);
    if (std::find(builds.begin(), builds.end(), b) == builds.end()) builds.push_back(b);
  }
  for (Isa isa : builds)
    for (Dtype kv : attune::kQuantDtypes)
      for (std::int64_t tokens : {std::int64_t{1}, std::int64_t{256}}) {
        const std::string name = "quantize_kv/" + std::string(attune::to_string(isa)) + "/kv:" +
                                 std::string(attune::to_string(kv)) + "/hkv:" + std::to_string(kHeads) +
                                 "/d:" + std::to_string(kD) + "/tokens:" + std::to_string(tokens);
        benchmark::RegisterBenchmark(name.c_str(), run, isa, kv, tokens);
      }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
