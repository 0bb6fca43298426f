// FMA-peak and stream-triad probes.
#include "simd/tile.hpp"

#include <attune/probes.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace attune {
namespace {

using Clock = std::chrono::steady_clock;

// Runs work(thread index) on `threads` threads started together; returns the wall seconds.
template <class Work>
double timed_parallel(int threads, const Work& work) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      work(t);
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  const auto start = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

ProbeResult summarize(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  ProbeResult r;
  r.repetitions = static_cast<int>(samples.size());
  r.min = samples.front();
  r.max = samples.back();
  r.median = samples[samples.size() / 2];
  return r;
}

}  // namespace

ProbeResult probe_fma_peak(Isa isa, int threads, int repetitions) {
  require_isa(isa);
  const auto& ops = simd::isa_ops(isa);
  threads = std::max(threads, 1);
  // Size one repetition to ~50 ms on this ISA from a short calibration run.
  std::int64_t iterations = 1 << 16;
  for (;;) {
    const auto start = Clock::now();
    ops.fma_probe(iterations);
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (s > 0.01) {
      iterations = static_cast<std::int64_t>(static_cast<double>(iterations) * 0.05 / s) + 1;
      break;
    }
    iterations *= 4;
  }
  std::vector<double> samples;
  for (int r = 0; r < std::max(repetitions, 1); ++r) {
    std::vector<double> flops(static_cast<std::size_t>(threads));
    const double seconds = timed_parallel(threads, [&](int t) { flops[static_cast<std::size_t>(t)] = ops.fma_probe(iterations); });
    double total = 0.0;
    for (double f : flops) total += f;
    samples.push_back(total / seconds * 1e-9);
  }
  return summarize(samples);
}

ProbeResult probe_triad(int threads, int repetitions) {
  threads = std::max(threads, 1);
  constexpr std::size_t kElements = std::size_t{1} << 24;  // 64 MiB per array, far past any cache
  std::vector<float> a(kElements), b(kElements, 1.0f), c(kElements, 2.0f);
  const float s = 3.0f;
  auto pass = [&](int t) {
    const std::size_t chunk = kElements / static_cast<std::size_t>(threads);
    const std::size_t begin = chunk * static_cast<std::size_t>(t);
    const std::size_t end = t == threads - 1 ? kElements : begin + chunk;
    for (std::size_t i = begin; i < end; ++i) a[i] = b[i] + s * c[i];
  };
  timed_parallel(threads, pass);  // first touch and warm-up
  std::vector<double> samples;
  for (int r = 0; r < std::max(repetitions, 1); ++r) {
    const double seconds = timed_parallel(threads, pass);
    samples.push_back(12.0 * static_cast<double>(kElements) / seconds * 1e-9);
  }
  return summarize(samples);
}

}  // namespace attune
