// FMA-peak, bf16 dot-product peak, stream-triad and 16-bit read probes.
#include "probe_kernels.hpp"
#include "simd/tile.hpp"
#if defined(ATTUNE_HAVE_AMX)
#include "amx/amx.hpp"
#endif

#include <attune/probes.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
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

// Throughput of `loop(iterations)` (returning the FLOPs it did) on `threads` threads at once, one
// repetition sized to ~50 ms from a short calibration run on one thread.
template <class Loop>
ProbeResult compute_peak(int threads, int repetitions, const Loop& loop) {
  threads = std::max(threads, 1);
  std::int64_t iterations = 1 << 16;
  for (;;) {
    const auto start = Clock::now();
    loop(iterations);
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
    const double seconds = timed_parallel(threads, [&](int t) { flops[static_cast<std::size_t>(t)] = loop(iterations); });
    double total = 0.0;
    for (double f : flops) total += f;
    samples.push_back(total / seconds * 1e-9);
  }
  return summarize(samples);
}

// Thread t's share [begin, end) of n elements split over `threads`.
std::pair<std::size_t, std::size_t> share(std::size_t n, int threads, int t) {
  const std::size_t chunk = n / static_cast<std::size_t>(threads);
  const std::size_t begin = chunk * static_cast<std::size_t>(t);
  return {begin, t == threads - 1 ? n : begin + chunk};
}

// The read probe's loop for CPUs without AVX-512: bf16 widened by a shift, 16 independent sums.
float sum_bf16_baseline(const std::uint16_t* p, std::size_t n) {
  constexpr std::size_t kLanes = 16;
  float acc[kLanes] = {};
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::size_t j = 0; j < kLanes; ++j) acc[j] += std::bit_cast<float>(std::uint32_t{p[i + j]} << 16);
  }
  for (; i < n; ++i) acc[0] += std::bit_cast<float>(std::uint32_t{p[i]} << 16);
  float total = 0.0f;
  for (float a : acc) total += a;
  return total;
}

}  // namespace

ProbeResult probe_fma_peak(Isa isa, int threads, int repetitions) {
  require_isa(isa);
  const auto& ops = simd::isa_ops(isa);
  return compute_peak(threads, repetitions, ops.fma_probe);
}

std::optional<ProbeResult> probe_bf16_dot_peak(int threads, int repetitions) {
#if defined(ATTUNE_HAVE_AVX512_PROBES)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16"))
    return compute_peak(threads, repetitions, detail::bf16_dot_probe);
#endif
  (void)threads;
  (void)repetitions;
  return std::nullopt;
}

double bf16_dot_speedup() {
  static const double speedup = [] {
#if defined(ATTUNE_HAVE_AVX512_PROBES)
    const auto& runnable = runnable_isas();
    if (std::find(runnable.begin(), runnable.end(), Isa::avx512_bf16) == runnable.end()) return 0.0;
    const auto fma = simd::isa_ops(Isa::avx512).fma_probe;
    // FLOPs per second of one run of `loop`; the best of the rounds is the unit's rate (a
    // preempted or frequency-ramping round is only slower). ~10 us per run.
    auto rate = [](double (*loop)(std::int64_t), std::int64_t iterations) {
      const auto start = Clock::now();
      const double flops = loop(iterations);
      return flops / std::max(std::chrono::duration<double>(Clock::now() - start).count(), 1e-9);
    };
    rate(fma, 20000);  // warm-up: wide vector units powered up, frequency settled
    double best_fma = 0.0, best_dot = 0.0;
    for (int round = 0; round < 7; ++round) {
      best_fma = std::max(best_fma, rate(fma, 2000));
      best_dot = std::max(best_dot, rate(detail::bf16_dot_probe, 1000));
    }
    return best_fma > 0.0 ? best_dot / best_fma : 0.0;
#else
    return 0.0;
#endif
  }();
  return speedup;
}

std::optional<ProbeResult> probe_amx_peak(int threads, int repetitions) {
#if defined(ATTUNE_HAVE_AMX)
  if (cpu_supports(Isa::amx)) return compute_peak(threads, repetitions, amx::tdp_probe);
#endif
  (void)threads;
  (void)repetitions;
  return std::nullopt;
}

ProbeResult probe_triad(int threads, int repetitions) {
  threads = std::max(threads, 1);
  constexpr std::size_t kElements = std::size_t{1} << 24;  // 64 MiB per array, far past any cache
  std::vector<float> a(kElements), b(kElements, 1.0f), c(kElements, 2.0f);
  const float s = 3.0f;
  auto pass = [&](int t) {
    const auto [begin, end] = share(kElements, threads, t);
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

ProbeResult probe_read16(int threads, int repetitions) {
  threads = std::max(threads, 1);
  // 256 MiB: past the caches of most CPUs (the Xeon VMs of TOOLCHAIN-NOTES have 480 MiB of L3,
  // so there it is an L3 figure, as the triad's 192 MiB is). Values are small bf16 numbers.
  constexpr std::size_t kElements = std::size_t{1} << 27;
  std::vector<std::uint16_t> a(kElements);
  float (*sum)(const std::uint16_t*, std::size_t) = sum_bf16_baseline;
#if defined(ATTUNE_HAVE_AVX512_PROBES)
  if (__builtin_cpu_supports("avx512f")) sum = detail::sum_bf16_avx512;
#endif
  std::vector<float> sink(static_cast<std::size_t>(threads));
  auto pass = [&](int t) {
    const auto [begin, end] = share(kElements, threads, t);
    sink[static_cast<std::size_t>(t)] += sum(a.data() + begin, end - begin);
  };
  // First touch by the threads that read it (0x3c00 is bf16 1/128), then a warm-up pass.
  timed_parallel(threads, [&](int t) {
    const auto [begin, end] = share(kElements, threads, t);
    std::fill(a.begin() + static_cast<std::ptrdiff_t>(begin), a.begin() + static_cast<std::ptrdiff_t>(end),
              std::uint16_t{0x3c00});
  });
  timed_parallel(threads, pass);
  std::vector<double> samples;
  for (int r = 0; r < std::max(repetitions, 1); ++r) {
    const double seconds = timed_parallel(threads, pass);
    samples.push_back(2.0 * static_cast<double>(kElements) / seconds * 1e-9);
  }
  volatile float keep = sink[0];  // the sums must look used
  (void)keep;
  return summarize(samples);
}

}  // namespace attune
