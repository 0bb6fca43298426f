// Numerical robustness and concurrency: NaN/Inf inputs poison only the rows they reach,
// extreme scales, many threads calling the API at once (also from inside a TBB pool), and
// flash's threaded paths. The Concurrency tests are also ctest `threading`, run under TSan.
#include "reference.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#ifdef ATTUNE_WITH_TBB
#include <tbb/parallel_for.h>
#endif

namespace {

struct Pair {
  const attune::Kernel* kernel;
  attune::Isa isa;
};

// Every runnable (kernel, isa) pair that takes float32 problems (the cases below are fp32).
std::vector<Pair> pairs() {
  std::vector<Pair> out;
  for (const attune::Kernel* k : attune::kernels())
    for (attune::Isa isa : attune::runnable_isas(*k))
      if (k->supports(attune::Problem{}, isa)) out.push_back({k, isa});
  return out;
}

attune::Options options_for(const Pair& p, int threads = 0) {
  attune::Options o;
  o.kernel = std::string(p.kernel->name());
  o.isa = p.isa;
  o.config.threads = threads;
  return o;
}

using attune::reference::shape;

// A NaN in one query row makes exactly that row NaN; a NaN key poisons exactly the rows that see
// it (causal: the rows at and after it); every other row still matches the reference.
TEST(Robustness, NanPropagatesOnlyToAffectedRows) {
  for (std::int64_t sq : {1, 40}) {  // decoding form and tiled form
    const auto p = shape(4, 2, sq, 70, 32, true);
    auto in = attune::reference::make_inputs(p, 1.0f, 7);
    const std::int64_t bad_q = sq - 1;  // query row 'bad_q' of head 1
    in.q[static_cast<std::size_t>((1 * p.seq_q + bad_q) * p.d_k + 3)] = std::numeric_limits<float>::quiet_NaN();
    const std::int64_t bad_key = 69;  // the last key of K head 0: seen only by the last query row
    in.k[static_cast<std::size_t>(bad_key * p.d_k + 5)] = std::numeric_limits<float>::quiet_NaN();
    for (const Pair& pr : pairs()) {
      std::vector<float> out(static_cast<std::size_t>(p.out_elements()));
      attune::attention(p, in.q.data(), in.k.data(), in.v.data(), out.data(), options_for(pr));
      for (std::int64_t h = 0; h < p.heads_q; ++h) {
        for (std::int64_t i = 0; i < p.seq_q; ++i) {
          const bool sees_bad_key = h / p.group_size() == 0 && p.visible_keys(i) > bad_key;
          const bool poisoned = (h == 1 && i == bad_q) || sees_bad_key;
          for (std::int64_t d = 0; d < p.d_v; ++d) {
            const float x = out[static_cast<std::size_t>((h * p.seq_q + i) * p.d_v + d)];
            EXPECT_EQ(std::isnan(x), poisoned) << pr.kernel->name() << "/" << attune::to_string(pr.isa)
                                                << " sq " << sq << " head " << h << " row " << i << " col " << d;
          }
        }
      }
    }
  }
}

TEST(Robustness, ExtremeScalesMatchTheReference) {
  for (float scale : {1e-30f, 1e-3f, 50.0f}) {
    auto p = shape(2, 1, 33, 47, 16, false);
    p.scale = scale;
    const auto in = attune::reference::make_inputs(p, 1.0f, 11);
    const auto ref = attune::reference::attention(p, in.q.data(), in.k.data(), in.v.data());
    for (const Pair& pr : pairs()) {
      std::vector<float> out(static_cast<std::size_t>(p.out_elements()));
      attune::attention(p, in.q.data(), in.k.data(), in.v.data(), out.data(), options_for(pr));
      const auto check = attune::reference::compare(p, in, out.data(), ref);
      EXPECT_TRUE(check.ok()) << pr.kernel->name() << "/" << attune::to_string(pr.isa) << " scale " << scale
                              << ": error " << check.max_abs_error << " > " << check.tolerance;
    }
  }
}

// The determinism contract (docs/robustness.md, and Kernel::bit_reproducible): attune's own
// kernels give bits that depend only on the problem, the inputs and the plan (kernel, ISA,
// block_q, block_kv, kv_splits, micro); never on other callers, on the thread count, or on the
// call. The BLAS-backed `gemm` baseline is what the BLAS gives, held to the reference's bound.
bool bit_reproducible(const attune::Kernel& k) { return k.bit_reproducible(); }

// Many threads call the API at once with different shapes, kernels and thread counts; each
// result of attune's own kernels must be bit-identical to the same call made alone, and every
// result (gemm's too) must match the float64 reference.
TEST(Concurrency, ManyCallersGetTheirOwnResults) {
  struct Job {
    attune::Problem p;
    Pair pair;
    int threads;
    attune::reference::Inputs in;
    std::vector<float> alone, together;
  };
  std::vector<Job> jobs;
  const auto all = pairs();
  const attune::Problem shapes[] = {shape(4, 2, 65, 130, 32, true), shape(8, 8, 1, 700, 64, false),
                                    shape(2, 1, 129, 129, 7, true), shape(3, 3, 17, 1000, 16, false)};
  for (std::size_t i = 0; i < 24; ++i) {
    Job j;
    j.p = shapes[i % 4];
    j.pair = all[i % all.size()];
    j.threads = 1 + static_cast<int>(i % 3);
    j.in = attune::reference::make_inputs(j.p, 1.0f, i);
    j.alone.resize(static_cast<std::size_t>(j.p.out_elements()));
    j.together.resize(j.alone.size());
    attune::attention(j.p, j.in.q.data(), j.in.k.data(), j.in.v.data(), j.alone.data(), options_for(j.pair, j.threads));
    jobs.push_back(std::move(j));
  }
  std::vector<std::thread> callers;
  for (Job& j : jobs) {
    callers.emplace_back([&j] {
      for (int rep = 0; rep < 3; ++rep)
        attune::attention(j.p, j.in.q.data(), j.in.k.data(), j.in.v.data(), j.together.data(),
                          options_for(j.pair, j.threads));
    });
  }
  for (auto& t : callers) t.join();
  int exact = 0;
  for (const Job& j : jobs) {
    const std::string what = std::string(j.pair.kernel->name()) + "/" + std::string(attune::to_string(j.pair.isa)) +
                             " " + j.p.to_string() + " threads " + std::to_string(j.threads);
    const auto ref = attune::reference::attention(j.p, j.in.q.data(), j.in.k.data(), j.in.v.data());
    const auto check = attune::reference::compare(j.p, j.in, j.together.data(), ref);
    EXPECT_TRUE(check.ok()) << what << ": error " << check.max_abs_error << " > " << check.tolerance;
    if (!bit_reproducible(*j.pair.kernel)) continue;
    ++exact;
    EXPECT_EQ(0, std::memcmp(j.alone.data(), j.together.data(), j.alone.size() * sizeof(float))) << what;
  }
  EXPECT_GT(exact, 0) << "no kernel of attune's own was exercised";
}

// Bits depend on the plan, not on how it runs: the same (kernel, ISA, block_q, block_kv,
// kv_splits) gives the same bits on 1, 2 and 3 threads and on a repeated call, for every kernel
// of attune's own on every runnable ISA, in the tiled, decoding and split-KV forms.
TEST(Concurrency, OwnKernelsGiveThePlansBitsOnAnyThreadCount) {
  struct Case {
    attune::Problem p;
    attune::Config config;
  };
  auto config = [](std::int64_t block_q, std::int64_t block_kv, int kv_splits) {
    attune::Config c;
    c.block_q = block_q;
    c.block_kv = block_kv;
    c.kv_splits = kv_splits;
    return c;
  };
  const Case cases[] = {{shape(4, 2, 130, 130, 32, true), config(0, 0, 1)},
                        {shape(4, 2, 130, 130, 32, true), config(32, 48, 1)},
                        {shape(3, 3, 70, 257, 7, false), config(16, 64, 2)},
                        {shape(8, 2, 1, 2000, 64, false), config(0, 0, 4)},
                        {shape(4, 1, 3, 1500, 16, true), config(0, 128, 3)}};
  int compared = 0;
  for (const Case& c : cases) {
    const auto in = attune::reference::make_inputs(c.p, 1.0f, 23);
    for (const Pair& pr : pairs()) {
      if (!bit_reproducible(*pr.kernel)) continue;
      std::vector<float> first;
      for (int threads : {1, 2, 3, 2}) {
        auto o = options_for(pr, threads);
        o.config.block_q = c.config.block_q;
        o.config.block_kv = c.config.block_kv;
        o.config.kv_splits = c.config.kv_splits;
        std::vector<float> out(static_cast<std::size_t>(c.p.out_elements()));
        attune::attention(c.p, in.q.data(), in.k.data(), in.v.data(), out.data(), o);
        if (first.empty()) {
          first = std::move(out);
          continue;
        }
        ++compared;
        EXPECT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * sizeof(float)))
            << pr.kernel->name() << "/" << attune::to_string(pr.isa) << " " << c.p.to_string() << " threads "
            << threads << " block_q " << c.config.block_q << " block_kv " << c.config.block_kv << " kv_splits "
            << c.config.kv_splits;
      }
    }
  }
  EXPECT_GT(compared, 0);
}

// flash's threaded paths (2 threads over query tiles; split-KV decoding with its merge) give the
// bits of the same plan on one thread, and match the reference. In the TSan build (ctest
// `threading`) this drives the driver's task scheduling, per-thread scratch and merge.
TEST(Concurrency, ThreadedFlashMatchesOneThread) {
  struct Case {
    attune::Problem p;
    int kv_splits;  // 0: auto (differs with the thread count, so only the reference is compared)
  };
  const Case cases[] = {{shape(4, 2, 200, 200, 32, true), 1},  {shape(4, 2, 200, 200, 32, true), 0},
                        {shape(8, 2, 1, 3000, 64, false), 4},  {shape(8, 2, 1, 3000, 64, false), 0},
                        {shape(4, 1, 3, 2500, 16, true), 3}};
  const attune::Kernel* flash = attune::find_kernel("flash");
  ASSERT_NE(flash, nullptr);
  for (const Case& c : cases) {
    const auto in = attune::reference::make_inputs(c.p, 1.0f, 17);
    const auto ref = attune::reference::attention(c.p, in.q.data(), in.k.data(), in.v.data());
    for (attune::Isa isa : attune::runnable_isas(*flash)) {
      std::vector<float> outs[2];
      for (int threads : {1, 2}) {
        auto o = options_for({flash, isa}, threads);
        o.config.kv_splits = c.kv_splits;
        auto& out = outs[threads - 1];
        out.resize(static_cast<std::size_t>(c.p.out_elements()));
        attune::attention(c.p, in.q.data(), in.k.data(), in.v.data(), out.data(), o);
        const auto check = attune::reference::compare(c.p, in, out.data(), ref);
        EXPECT_TRUE(check.ok()) << attune::to_string(isa) << " " << c.p.to_string() << " threads " << threads
                                << " kv_splits " << c.kv_splits << ": error " << check.max_abs_error;
      }
      if (c.kv_splits > 0) {
        EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)))
            << attune::to_string(isa) << " " << c.p.to_string() << " kv_splits " << c.kv_splits;
      }
    }
  }
}

#ifdef ATTUNE_WITH_TBB
// Calls from inside a user's own TBB parallel_for (nested arenas) neither deadlock nor change results.
TEST(Concurrency, CallsFromInsideATbbPool) {
  const auto p = shape(4, 2, 64, 256, 32, true);
  const auto in = attune::reference::make_inputs(p, 1.0f, 3);
  attune::Options o;
  o.kernel = "flash";
  o.config.threads = 2;
  std::vector<float> alone(static_cast<std::size_t>(p.out_elements()));
  attune::attention(p, in.q.data(), in.k.data(), in.v.data(), alone.data(), o);
  std::vector<std::vector<float>> outs(16, std::vector<float>(alone.size()));
  tbb::parallel_for(0, 16, [&](int i) {
    attune::attention(p, in.q.data(), in.k.data(), in.v.data(), outs[static_cast<std::size_t>(i)].data(), o);
  });
  for (const auto& out : outs) EXPECT_EQ(0, std::memcmp(alone.data(), out.data(), alone.size() * sizeof(float)));
}
#endif

}  // namespace
