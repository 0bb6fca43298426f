// The working-memory limit: byte counts as text, refusals before anything is allocated, the
// limit's sources (Options, ATTUNE_MAX_MEMORY, half the physical memory), a long sequence under a
// tiny limit, and allocation failures surfacing as attune::MemoryError instead of a crash.
#include "memory_limit.hpp"
#include "reference.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#ifdef ATTUNE_WITH_TBB
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ATTUNE_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ATTUNE_TEST_SANITIZED 1
#endif
#endif

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

using attune::reference::shape;

attune::Options options(const std::string& kernel, std::size_t limit, std::optional<attune::Isa> isa = {}) {
  attune::Options o;
  o.kernel = kernel;
  o.isa = isa;
  o.max_workspace_bytes = limit;
  return o;
}

// Sets (or with nullptr unsets) an environment variable for one scope, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The message of the MemoryError that `call` throws ("" and a test failure if it throws none).
template <class Call>
std::string memory_error(const Call& call) {
  try {
    call();
  } catch (const attune::MemoryError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no attune::MemoryError";
  return "";
}

TEST(Limits, ParseBytes) {
  EXPECT_EQ(attune::detail::parse_bytes("1"), 1u);
  EXPECT_EQ(attune::detail::parse_bytes("1048576"), kMiB);
  EXPECT_EQ(attune::detail::parse_bytes("1K"), 1024u);
  EXPECT_EQ(attune::detail::parse_bytes("1k"), 1024u);
  EXPECT_EQ(attune::detail::parse_bytes("512M"), 512 * kMiB);
  EXPECT_EQ(attune::detail::parse_bytes("4G"), std::size_t{4} << 30);
  EXPECT_EQ(attune::detail::parse_bytes("4g"), std::size_t{4} << 30);
  EXPECT_EQ(attune::detail::parse_bytes("2T"), std::size_t{2} << 40);
  EXPECT_EQ(attune::detail::parse_bytes("16777215T"), std::size_t{16777215} << 40);
  EXPECT_EQ(attune::detail::parse_bytes("18446744073709551615"), std::numeric_limits<std::size_t>::max());
  for (const char* bad : {"", "0", "0K", "K", "-1", "+1", " 1", "1 ", "1.5G", "1KB", "1KiB", "G4", "abc", "1e9",
                          "0x10", "18446744073709551616", "16777216T", "17179869184G"}) {
    EXPECT_EQ(attune::detail::parse_bytes(bad), std::nullopt) << "'" << bad << "'";
  }
}

TEST(Limits, FormatBytes) {
  EXPECT_EQ(attune::detail::format_bytes(1), "1 byte");
  EXPECT_EQ(attune::detail::format_bytes(512), "512 bytes");
  EXPECT_EQ(attune::detail::format_bytes(1024), "1.0 KiB");
  EXPECT_EQ(attune::detail::format_bytes(3 * kMiB / 2), "1.5 MiB");
  EXPECT_EQ(attune::detail::format_bytes(std::size_t{12} << 30), "12.0 GiB");
  EXPECT_EQ(attune::detail::format_bytes(std::numeric_limits<std::size_t>::max()), "16.0 EiB");
}

// Shapes far above a 1 MiB limit are refused by attention() before the kernel runs. The tensors
// are a single float each, so a kernel that started would read far out of bounds (and ASan would
// say so): the refusal comes first, from the sizes alone.
TEST(Limits, RefusedBeforeAllocating) {
  const auto p = shape(1, 1, 1'000'000, 1'000'000, 64);
  float one = 0.0f, out = 0.0f;
  struct Case {
    std::string kernel;
    attune::Config config;
    std::size_t need;  // 0: not checked exactly
  };
  attune::Config whole;  // tiles as large as the whole problem: 4 TB of scores for blocked
  whole.block_q = whole.block_kv = 1'000'000;
  std::vector<Case> cases = {{"naive", {}, 4'000'000},  // one score row of seq_kv floats
                             {"blocked", whole, 0}};
  if (attune::find_kernel("gemm")) cases.push_back({"gemm", {}, std::size_t{4} * 1'000'000 * 1'000'001});
  for (const Case& c : cases) {
    auto o = options(c.kernel, kMiB);
    o.config = c.config;
    const std::size_t need = attune::workspace_bytes(p, o);
    if (c.need) {
      EXPECT_EQ(need, c.need) << c.kernel;
    }
    const auto start = std::chrono::steady_clock::now();
    const std::string what = memory_error([&] { attune::attention(p, &one, &one, &one, &out, o); });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 1.0) << c.kernel << ": a refusal must not do any work";
    EXPECT_NE(what.find("attention: kernel '" + c.kernel + "' needs " + attune::detail::format_bytes(need) + " (" +
                        std::to_string(need) + " bytes) of working memory, above the limit of 1.0 MiB"),
              std::string::npos)
        << what;
  }
}

// A config whose working memory overflows 64 bits (absurd key splits) is refused, not wrapped
// around to a small size that would pass the limit.
TEST(Limits, OverflowingWorkingMemorySaturates) {
  auto p = shape(1, 1, 1 << 20, 16, 1);
  p.batch = 1 << 10;
  auto o = options("flash", std::numeric_limits<std::size_t>::max() - 1);
  o.config.block_q = 1;
  o.config.kv_splits = std::numeric_limits<int>::max();
  EXPECT_EQ(attune::workspace_bytes(p, o), std::numeric_limits<std::size_t>::max());
  float one = 0.0f, out = 0.0f;
  const std::string what = memory_error([&] { attune::attention(p, &one, &one, &one, &out, o); });
  EXPECT_NE(what.find("needs more than 16.0 EiB (its size overflows 64 bits)"), std::string::npos) << what;
}

// The limit is inclusive and matches what each kernel reports: every kernel and ISA runs with a
// limit of exactly its workspace_bytes() and is refused one byte below it, in fp32 and in bf16
// (the storage of the kernels that take only 16-bit problems, amx).
TEST(Limits, EveryKernelRunsAtItsOwnNeed) {
  for (attune::Dtype dtype : {attune::Dtype::fp32, attune::Dtype::bf16}) {
    auto p = shape(4, 2, 37, 300, 24, true);
    p.dtype = dtype;
    const auto in = attune::reference::make_inputs(p, 1.0f, 5);
    const auto ref = attune::reference::attention(p, in.q.data(), in.k.data(), in.v.data());
    const auto stored = attune::reference::store(p, in);
    for (const attune::Kernel* k : attune::kernels()) {
      for (attune::Isa isa : attune::runnable_isas(*k)) {
        if (!k->supports(p, isa)) continue;
        for (int threads : {1, 2}) {
          auto o = options(std::string(k->name()), 0, isa);
          o.config.threads = threads;
          const std::size_t need = attune::workspace_bytes(p, o);
          const std::string name = std::string(k->name()) + "/" + std::string(attune::to_string(isa)) + "/" +
                                   std::string(attune::to_string(dtype));
          if (dtype == attune::Dtype::fp32 || need > 0) {
            ASSERT_GT(need, 1u) << name;
          }
          std::vector<unsigned char> out(static_cast<std::size_t>(p.out_elements()) * attune::size_of(dtype));
          auto run = [&] { attune::attention(p, stored.q_data(), stored.k_data(), stored.v_data(), out.data(), o); };
          if (need > 0) {
            o.max_workspace_bytes = need - 1;
            memory_error(run);
          }
          o.max_workspace_bytes = need;
          run();
          const auto abs_v = attune::reference::attention_abs_v(p, in.q.data(), in.k.data(), in.v.data());
          const auto check = attune::reference::compare(p, in, attune::reference::load_output(p, out.data()).data(), ref,
                                                        k->pv_dtype(p, isa), &abs_v);
          EXPECT_TRUE(check.ok()) << name << ": error " << check.max_abs_error << " > " << check.tolerance;
        }
      }
    }
  }
}

// flash never materialises the score matrix: 4 Mi keys run under a 1 MiB limit (K and V are
// 64 MiB each), where naive's single score row (16 MiB) is refused. The reference here is a
// direct float64 softmax over every key.
TEST(Limits, LongSequenceUnderATinyLimit) {
  const auto p = shape(2, 1, 1, std::int64_t{1} << 22, 4);
  std::vector<float> q(static_cast<std::size_t>(p.q_elements())), k(static_cast<std::size_t>(p.k_elements())),
      v(static_cast<std::size_t>(p.v_elements()));
  std::uint32_t state = 12345;  // a cheap generator: 32 Mi normal samples would dominate the test
  auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
  };
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = next();
  for (float& e : q) e *= 4.0f;  // peaked enough that the weights are far from uniform

  std::vector<float> out(static_cast<std::size_t>(p.out_elements()));
  attune::attention(p, q.data(), k.data(), v.data(), out.data(), options("flash", kMiB));
  const std::string what = memory_error(
      [&] { attune::attention(p, q.data(), k.data(), v.data(), out.data(), options("naive", kMiB)); });
  EXPECT_NE(what.find("kernel 'naive' needs 16.0 MiB"), std::string::npos) << what;

  const double scale = 1.0 / std::sqrt(static_cast<double>(p.d_k));
  for (std::int64_t h = 0; h < p.heads_q; ++h) {
    std::vector<double> s(static_cast<std::size_t>(p.seq_kv));
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < p.seq_kv; ++j) {
      double dot = 0.0;
      for (std::int64_t d = 0; d < p.d_k; ++d) dot += double(q[h * p.d_k + d]) * double(k[j * p.d_k + d]);
      s[j] = scale * dot;
      m = std::max(m, s[j]);
    }
    double sum = 0.0;
    std::vector<double> o(static_cast<std::size_t>(p.d_v), 0.0);
    for (std::int64_t j = 0; j < p.seq_kv; ++j) {
      const double w = std::exp(s[j] - m);
      sum += w;
      for (std::int64_t d = 0; d < p.d_v; ++d) o[d] += w * double(v[j * p.d_v + d]);
    }
    for (std::int64_t d = 0; d < p.d_v; ++d) {
      EXPECT_NEAR(out[h * p.d_v + d], o[d] / sum, 1e-4) << "head " << h << " column " << d;
    }
  }
}

TEST(Limits, TheLimitsSources) {
  const auto p = shape(1, 1, 4, 1000, 8);
  const auto in = attune::reference::make_inputs(p, 1.0f, 1);
  std::vector<float> out(static_cast<std::size_t>(p.out_elements()));
  auto run = [&](const attune::Options& o) {
    attune::attention(p, in.q.data(), in.k.data(), in.v.data(), out.data(), o);
  };
  {
    // Default: half the physical memory.
    const ScopedEnv unset("ATTUNE_MAX_MEMORY", nullptr);
    const auto physical = static_cast<std::size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::size_t>(sysconf(_SC_PAGE_SIZE));
    EXPECT_EQ(attune::workspace_limit(), physical / 2);
    const ScopedEnv empty("ATTUNE_MAX_MEMORY", "");  // empty means unset
    EXPECT_EQ(attune::workspace_limit(), physical / 2);
  }
  {
    const ScopedEnv env("ATTUNE_MAX_MEMORY", "1K");
    EXPECT_EQ(attune::workspace_limit(), 1024u);
    const std::string what = memory_error([&] { run(options("naive", 0)); });
    EXPECT_NE(what.find("kernel 'naive' needs 3.9 KiB (4000 bytes) of working memory, above the limit of 1.0 KiB "
                        "(ATTUNE_MAX_MEMORY=1K)"),
              std::string::npos)
        << what;
    run(options("naive", kMiB));  // the option wins over the environment
    EXPECT_EQ(attune::workspace_limit(options("naive", kMiB)), kMiB);
  }
  {
    const ScopedEnv env("ATTUNE_MAX_MEMORY", "lots");
    try {
      run(options("naive", 0));
      ADD_FAILURE() << "a malformed ATTUNE_MAX_MEMORY was accepted";
    } catch (const attune::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("ATTUNE_MAX_MEMORY = 'lots' is not a size"), std::string::npos) << e.what();
    }
    run(options("naive", kMiB));  // not read at all when the option is set
  }
}

#ifdef ATTUNE_WITH_TBB
// attention() turns std::bad_alloc into MemoryError on the calling thread, which covers a task
// run by a oneTBB worker only because parallel_for carries the task's exception to its caller:
// checked here in the driver's own pattern (a task_arena executing a parallel_for).
TEST(Limits, TbbCarriesATaskFailureToTheCaller) {
  tbb::task_arena arena(2);
  EXPECT_THROW(arena.execute([] {
    tbb::parallel_for(0, 64, [](int i) {
      if (i == 37) throw std::bad_alloc();
    });
  }),
               std::bad_alloc);
}
#endif

// Allocation failures: in a child process (a death test re-running this binary) whose address
// space is capped at its current size plus 256 MiB, with a limit that allows the 1 GiB the call
// needs, the allocation fails and the caller gets MemoryError, not std::bad_alloc or an abort.
// Skipped under ASan and TSan (their allocators reserve terabytes of address space and abort on
// a failed operator new instead of throwing) and under qemu (see below).
#if !defined(ATTUNE_TEST_SANITIZED) && !defined(ATTUNE_TESTS_EMULATED)
// The death test's child: caps its own address space, makes the call, and exits 0 only if the
// call threw MemoryError (whose message goes to stderr for the parent to match).
[[noreturn]] void call_with_capped_address_space(const std::function<void()>& call) {
  long pages = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  const rlim_t cap = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGE_SIZE)) + (rlim_t{256} << 20);
  const rlimit limit{cap, cap};
  if (pages == 0 || setrlimit(RLIMIT_AS, &limit) != 0) std::_Exit(5);
  try {
    call();
  } catch (const attune::MemoryError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::_Exit(0);
  } catch (...) {
    std::_Exit(3);
  }
  std::_Exit(4);
}
#endif

void expect_memory_error_when_allocation_fails(const std::function<void()>& call, const char* message) {
#if defined(ATTUNE_TEST_SANITIZED)
  (void)call;
  (void)message;
  GTEST_SKIP() << "address-space limits do not work under ASan/TSan";
#elif defined(ATTUNE_TESTS_EMULATED)
  (void)call;
  (void)message;
  GTEST_SKIP() << "under qemu-user the child cannot re-execute the binary, and RLIMIT_AS would cap the emulator";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(call_with_capped_address_space(call), ::testing::ExitedWithCode(0), message);
#endif
}

TEST(Limits, AllocationFailureIsAMemoryError) {
  // blocked with tiles as large as the problem: one 16384 x 16384 score tile, 1 GiB.
  expect_memory_error_when_allocation_fails([] {
    const auto p = shape(1, 1, 16384, 16384, 1);
    std::vector<float> x(16384, 0.5f), out(16384);
    auto o = options("blocked", std::size_t{2} << 30);
    o.config.block_q = o.config.block_kv = 16384;
    attune::attention(p, x.data(), x.data(), x.data(), out.data(), o);
  }, "attention: kernel 'blocked' could not allocate its 1\\.0 GiB .* of working memory: out of memory");
}

TEST(Limits, AllocationFailureInTheThreadedDriverIsAMemoryError) {
  // flash decoding with 65536 key splits: 1 GiB of partial results, allocated by the driver.
  expect_memory_error_when_allocation_fails([] {
    const auto p = shape(64, 64, 1, 1024, 64);
    std::vector<float> q(static_cast<std::size_t>(p.q_elements()), 0.5f), kv(static_cast<std::size_t>(p.k_elements()), 0.5f);
    std::vector<float> out(static_cast<std::size_t>(p.out_elements()));
    auto o = options("flash", std::size_t{2} << 30);
    o.config.kv_splits = 65536;
    o.config.threads = 2;
    attune::attention(p, q.data(), kv.data(), kv.data(), out.data(), o);
  }, "attention: kernel 'flash' could not allocate its 1\\.0 GiB .* of working memory: out of memory");
}

#ifdef ATTUNE_WITH_BLAS
TEST(Limits, MhaAllocationFailureIsAMemoryError) {
  // 65536 positions x 64 heads x d_k 64 projected from d_model 1: Q, K, V and O of 1 GiB each
  // (flash reads the projections in place, so there is no staging buffer).
  expect_memory_error_when_allocation_fails([] {
    attune::MhaProblem mp;
    mp.seq = 65536;
    mp.d_model = 1;
    mp.heads_q = mp.heads_kv = 64;
    mp.d_k = mp.d_v = 64;
    std::vector<float> x(65536, 0.5f), w(64 * 64, 0.01f), y(65536);
    auto o = options("flash", std::size_t{16} << 30);
    attune::mha(mp, x.data(), w.data(), w.data(), w.data(), w.data(), y.data(), o);
  }, "mha could not allocate its 4\\.0 GiB .* of working memory: out of memory");
}
#endif

}  // namespace
