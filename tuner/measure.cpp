// The real oracle: wall-clock samples of attune::attention on the tuned shape, and the
// reference check on a small instance of the same kind.
#include "tuner.hpp"

#include "reference.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

namespace attune::tuner {
namespace {

// Lengths capped at this for the reference check: odd, so tiles end ragged, and long enough
// for several tiles and key splits.
constexpr std::int64_t kCheckLength = 193;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runnable tasks on the machine right now, this thread included (Linux /proc/stat); 0 if unknown.
int runnable_tasks() {
  std::ifstream in("/proc/stat");
  std::string word;
  while (in >> word) {
    if (word == "procs_running") {
      int n = 0;
      in >> n;
      return n;
    }
  }
  return 0;
}

// Another process wants a core: more than one runnable task (this one) in one read, confirmed
// by most of 5 reads 10 ms apart (our own oneTBB workers may still spin for a moment).
bool machine_busy() {
  if (runnable_tasks() <= 1) return false;
  int busy = 0;
  for (int i = 0; i < 5; ++i) {
    if (runnable_tasks() > 1) ++busy;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return busy >= 3;
}

}  // namespace

KernelOracle::KernelOracle(const Problem& problem, double window_seconds)
    : problem_(problem), window_(window_seconds) {
  problem_.validate();
  // The tensors in their storage types: a 16-bit problem is timed on 16-bit buffers.
  inputs_ = reference::make_inputs(problem_, 1.0f, 7);
  tensors_ = reference::store(problem_, inputs_);
  out_.resize(static_cast<std::size_t>(problem_.out_elements()) * size_of(problem_.dtype));
}

bool KernelOracle::verify(const Candidate& c, std::string& why) {
  reference::Case small;
  small.problem = problem_;
  small.problem.batch = 1;
  small.problem.heads_kv = std::min<std::int64_t>(problem_.heads_kv, 2);
  small.problem.heads_q = small.problem.heads_kv * problem_.group_size();
  small.problem.seq_q = std::min(problem_.seq_q, kCheckLength);
  small.problem.seq_kv = std::min(problem_.seq_kv, kCheckLength);
  small.name = small.problem.to_string();
  const auto in = reference::make_inputs(small.problem, 1.0f, 11);
  const auto ref = reference::attention(small.problem, in.q.data(), in.k.data(), in.v.data());
  const auto check = reference::run_and_compare(small, in, ref, c.options());
  if (!check.ok()) {
    why = "max abs error " + std::to_string(check.max_abs_error) + " > tolerance " +
          std::to_string(check.tolerance) + " on " + small.name;
  }
  return check.ok();
}

void KernelOracle::wait_until_quiet() {
  if (max_wait_ <= 0.0) return;  // gating off
  const double t = now_seconds();
  if (last_check_ >= 0.0 && t - last_check_ < 0.5) return;
  const double start = t;
  while (machine_busy()) {
    if (now_seconds() - start > max_wait_) {
      ++busy_timeouts_;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double end = now_seconds();
  if (end - start > 0.1) waited_ += end - start;
  last_check_ = end;
}

double KernelOracle::sample(const Candidate& c) {
  using clock = std::chrono::steady_clock;
  wait_until_quiet();
  const Options options = c.options();
  const VariantData variant = inputs_.variant();  // a quantized K/V's scales
  auto call = [&] {
    attention(problem_, tensors_.q_data(), tensors_.k_data(), tensors_.v_data(), out_.data(), variant, options);
  };
  if (!warmed_[c.key()]) {  // first touch of the tensors, thread pool start-up, page faults
    const auto t0 = clock::now();
    call();
    warmed_[c.key()] = true;
    const double warm = std::chrono::duration<double>(clock::now() - t0).count();
    if (warm > give_up_after_) return warm;  // hopeless: not worth a window
  }
  std::vector<double> times;
  const auto window_start = clock::now();
  do {
    const auto t0 = clock::now();
    call();
    times.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  } while (std::chrono::duration<double>(clock::now() - window_start).count() < window_);
  return median_of(std::move(times));
}

}  // namespace attune::tuner
