// Online tuning on first use: the first attention() call of an untuned table key races a few
// candidates (the smart strategy's first stage, and the default kernel's one-parameter
// neighbours) on the caller's own tensors, each checked first
// against the `naive` kernel on a small instance; the winner serves the key for the process.
#include "tuned_impl.hpp"
#include "tuning_file.hpp"

#include <attune/error.hpp>
#include <attune/kernel.hpp>
#include <attune/version.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <vector>

namespace attune {
namespace {

using Clock = std::chrono::steady_clock;
// A candidate whose check on the small instance took more than this x the default's is not run
// on the caller's problem.
constexpr double kSmallCut = 4.0;
using KeyTuple = std::tuple<int, int, std::int64_t, bool, bool, bool, int, int>;

KeyTuple key_tuple(const TunedKey& k) {
  return {static_cast<int>(k.dtype), static_cast<int>(k.kv_dtype), k.d_k, k.causal, k.decode, k.gqa, k.log2_seq_q,
          k.log2_seq_kv};
}

struct Slot {
  bool done = false;
  std::optional<TunedEntry> winner;  // nullopt: no race ran (an exact entry, or it failed)
};

struct State {
  std::mutex mutex;  // guards everything below
  std::condition_variable raced;
  bool configured = false;  // set_tuning() called or the environment read
  TuningMode mode = TuningMode::table;
  OnlineTuning options;
  std::map<KeyTuple, Slot> slots;
  OnlineStats stats;
  std::mutex race;  // one race at a time: two races on the same cores would time each other
};

State& state() {
  static State s;
  return s;
}

void configure_from_environment(State& s) {
  if (s.configured) return;
  s.configured = true;
  const char* mode = std::getenv("ATTUNE_TUNE");
  if (mode == nullptr || std::string(mode).empty() || std::string(mode) == "table") return;
  if (std::string(mode) != "online") {
    std::fprintf(stderr, "attune: warning: ATTUNE_TUNE=%s is not 'online' or 'table'; online tuning stays off\n",
                 mode);
    return;
  }
  s.mode = TuningMode::online;
  if (const char* b = std::getenv("ATTUNE_TUNE_BUDGET_MS")) {
    char* end = nullptr;
    const double ms = std::strtod(b, &end);
    if (end != b && *end == '\0' && ms > 0 && ms <= 60000) {
      s.options.budget_ms = ms;
    } else {
      std::fprintf(stderr, "attune: warning: ATTUNE_TUNE_BUDGET_MS=%s is not a number of ms in (0, 60000]; using %.0f\n",
                   b, s.options.budget_ms);
    }
  }
  if (const char* save = std::getenv("ATTUNE_TUNE_SAVE")) s.options.save_path = save;
}

// Unit roundoff of a storage type (as the reference's bound uses it); nullopt for a type the
// online check does not know how to fill (then no race: the table's choice stays).
// (An if-chain, not a switch: storage types added later, e.g. quantized K/V, fall through to
// nullopt without a -Wswitch error, and their keys are simply not raced.)
std::optional<double> unit_roundoff(Dtype d) {
  if (d == Dtype::fp32) return 0.0;
  if (d == Dtype::bf16) return std::ldexp(1.0, -8);
  if (d == Dtype::fp16) return std::ldexp(1.0, -11);
  return std::nullopt;
}

// `n` pseudo-random values in [-1, 1] stored as `d`.
std::vector<unsigned char> random_tensor(std::int64_t n, Dtype d, std::uint32_t seed) {
  std::vector<unsigned char> out(static_cast<std::size_t>(n) * size_of(d));
  std::uint32_t x = seed * 2654435761u + 1u;
  for (std::int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    const float f = static_cast<float>(x >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
    const auto at = static_cast<std::size_t>(i);
    if (d == Dtype::fp32) reinterpret_cast<float*>(out.data())[at] = f;
    if (d == Dtype::bf16) reinterpret_cast<bf16*>(out.data())[at] = to_bf16(f);
    if (d == Dtype::fp16) reinterpret_cast<fp16*>(out.data())[at] = to_fp16(f);
  }
  return out;
}

float value_at(const std::vector<unsigned char>& t, Dtype d, std::size_t i) {
  if (d == Dtype::bf16) return to_float(reinterpret_cast<const bf16*>(t.data())[i]);
  if (d == Dtype::fp16) return to_float(reinterpret_cast<const fp16*>(t.data())[i]);
  return reinterpret_cast<const float*>(t.data())[i];
}

struct Candidate {
  const Kernel* kernel;
  Isa isa;
  Config config;
  std::vector<double> samples;
  bool dropped = false;
  double median() const {
    std::vector<double> s = samples;
    std::sort(s.begin(), s.end());
    return s.empty() ? 1e300 : s[s.size() / 2];
  }
};

bool same_candidate(const Candidate& a, const Candidate& b) {
  return a.kernel == b.kernel && a.isa == b.isa && a.config.block_q == b.config.block_q &&
         a.config.block_kv == b.config.block_kv && a.config.threads == b.config.threads &&
         a.config.kv_splits == b.config.kv_splits && a.config.micro == b.config.micro;
}

// The tuner's check, with the library's own definition as the reference: on a small instance of
// the same kind (lengths capped at 193, at most 2 K/V heads, the same grouping, d_k, d_v, causal
// and storage types) the candidate's output is within twice the reference's bound of naive's
// (each is within the bound of the float64 result; tests/test_equivalence.cpp holds naive to it).
// Returns the candidate's time on the small instance (seconds), or a negative number if it failed.
double verify(const Problem& p, const Candidate& c) {
  Problem s = p;
  s.batch = 1;
  s.heads_kv = std::min<std::int64_t>(p.heads_kv, 2);
  s.heads_q = s.heads_kv * (p.heads_q / p.heads_kv);
  s.seq_q = std::min<std::int64_t>(p.seq_q, 193);
  s.seq_kv = std::min<std::int64_t>(p.seq_kv, 193);
  const auto u_out = unit_roundoff(s.dtype);
  const auto u_kv = unit_roundoff(s.kv_type());
  const Kernel* naive = find_kernel("naive");
  if (!u_out || !u_kv || naive == nullptr) return -1.0;
  const auto u_pv = unit_roundoff(c.kernel->pv_dtype(s, c.isa)).value_or(1.0);
  double seconds = 0.0;
  try {
    s.validate();
    const auto q = random_tensor(s.q_elements(), s.dtype, 1), k = random_tensor(s.k_elements(), s.kv_type(), 2),
               v = random_tensor(s.v_elements(), s.kv_type(), 3);
    std::vector<unsigned char> want(static_cast<std::size_t>(s.out_elements()) * size_of(s.dtype));
    std::vector<unsigned char> got(want.size());
    const Isa naive_isa = runnable_isas(*naive, s).front();
    naive->run(s, Tensors{q.data(), k.data(), v.data(), want.data(), VariantData{}}, Config{}, naive_isa);
    const auto t0 = Clock::now();
    c.kernel->run(s, Tensors{q.data(), k.data(), v.data(), got.data(), VariantData{}}, c.config, c.isa);
    seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    for (std::size_t i = 0; i < static_cast<std::size_t>(s.out_elements()); ++i) {
      const double w = value_at(want, s.dtype, i), g = value_at(got, s.dtype, i);
      // |v| <= 1 here, so sum_j w_ij |v_jd| <= 1.
      const double bound = 2.0 * (1e-4 * (1.0 + *u_out) + *u_out * std::abs(w) + 2.0 * u_pv);
      if (!(std::abs(g - w) <= bound)) return -1.0;
    }
  } catch (const std::exception&) {
    return -1.0;
  }
  return seconds;
}

// Appends the winner to the tuning file (creating it, or this machine's section, if needed).
void save(const std::string& path, const TunedEntry& e, const Problem& p) {
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  std::string id, add;
  try {
    const auto machines = text.empty() ? std::vector<detail::MachineTable>{} : detail::parse_tuning(text, path);
    for (const auto& m : machines)
      if (m.signature == build_signature() && detail::same_machine(m.machine, machine_signature())) id = m.id;
    if (text.empty()) add = detail::tuning_header_line();
    if (id.empty()) {
      detail::MachineTable m;
      m.id = "online" + std::to_string(machines.size());
      m.machine = machine_signature();
      m.signature = build_signature();
      m.signature_text = build_signature_text();
      m.provenance = {std::string(compiler()), std::string(compile_flags()), std::string(version()),
                      std::string(git_revision()), "", "online", "", "online tuning on first use"};
      add += detail::tuning_machine_line(m);
      id = m.id;
    }
  } catch (const Error& err) {
    std::fprintf(stderr, "attune: warning: online tuning: not saved to %s: %s\n", path.c_str(), err.what());
    return;
  }
  add += detail::tuning_entry_line(id, e, p.to_string());
  std::error_code ec;  // the per-user file's folder may not exist yet
  if (const auto dir = std::filesystem::path(path).parent_path(); !dir.empty()) std::filesystem::create_directories(dir, ec);
  // One write with O_APPEND: lines of concurrent processes do not interleave.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0 || ::write(fd, add.data(), add.size()) != static_cast<ssize_t>(add.size()))
    std::fprintf(stderr, "attune: warning: online tuning: could not append to %s\n", path.c_str());
  if (fd >= 0) ::close(fd);
}

// The race for one key on the caller's tensors: the winner (the default included), or nullopt
// if not even the default passed the check (dispatch then stays as it was).
std::optional<TunedEntry> race(const Problem& p, const void* q, const void* k, const void* v,
                               const std::optional<TunedEntry>& nearest, double budget_ms, OnlineStats& stats) {
  const auto t0 = Clock::now();
  auto elapsed_ms = [&] { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); };
  std::vector<Candidate> list;
  auto add = [&](const Kernel* kernel, Isa isa, Config c) {
    Candidate cand{kernel, isa, c, {}, false};
    if (kernel == nullptr || !kernel->supports(p, isa)) return;
    for (const Candidate& x : list)
      if (same_candidate(x, cand)) return;
    list.push_back(cand);
  };
  const Kernel* def = detail::best_kernel_for(p, std::nullopt);
  if (def == nullptr) return std::nullopt;
  add(def, runnable_isas(*def, p).front(), Config{});  // the default: list[0]
  if (nearest) {
    add(find_kernel(nearest->kernel), *parse_isa(nearest->isa),
        Config{nearest->block_q, nearest->block_kv, nearest->threads, nearest->kv_splits, nearest->micro});
  }
  // The default kernel's one-parameter neighbours, where the tuner's winners mostly lie: each
  // query tile the shape fills (smallest first), each key tile (largest first), each micro tile,
  // and key splits for decoding; the budget decides how many of them start.
  const Isa def_isa = runnable_isas(*def, p).front();
  const std::int64_t q_extent = p.seq_q * p.group_size();
  for (const ParamSpec& spec : def->params()) {
    std::vector<std::int64_t> values = spec.values;
    if (spec.name == "block_kv") std::reverse(values.begin(), values.end());
    for (std::int64_t x : values) {
      Config c;
      if (spec.name == "block_q" && x < q_extent) {
        c.block_q = x;
      } else if (spec.name == "block_kv" && x < p.seq_kv) {
        c.block_kv = x;
      } else if (spec.name == "micro" && x > 0) {
        c.micro = static_cast<int>(x);
      } else if (spec.name == "kv_splits" && p.seq_q == 1 && x > 1 && p.seq_kv / x >= 64) {
        c.kv_splits = static_cast<int>(x);
      } else {
        continue;
      }
      add(def, def_isa, c);
    }
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (const Kernel* kernel : kernels()) {
    if (kernel->rank() <= 0) continue;  // naive: the definition, not a candidate
    const auto isas = runnable_isas(*kernel, p);
    if (isas.empty()) continue;
    for (int threads : {0, 1}) {
      if (threads == 1 && cores == 1) continue;
      Config c;
      c.threads = threads;
      add(kernel, isas.front(), c);
    }
  }
  std::vector<unsigned char> scratch(static_cast<std::size_t>(p.out_elements()) * size_of(p.dtype));
  auto time_call = [&](Candidate& c) {
    const auto s = Clock::now();
    c.kernel->run(p, Tensors{q, k, v, scratch.data(), VariantData{}}, c.config, c.isa);
    return std::chrono::duration<double>(Clock::now() - s).count();
  };
  double best = 1e300, default_small = 0.0, check_ms = 0.0;
  // Round 1: each candidate checked, then one warm-up call, while the budget allows the longest
  // check so far and a call as slow as the cut (2.5x the best) to finish in it.
  for (std::size_t i = 0; i < list.size(); ++i) {
    Candidate& c = list[i];
    if (i > 0 && elapsed_ms() + check_ms + 2.5 * best * 1e3 > budget_ms) {
      c.dropped = true;
      continue;
    }
    const double check_start = elapsed_ms();
    const double small = verify(p, c);
    check_ms = std::max(check_ms, elapsed_ms() - check_start);
    if (small < 0) {
      ++stats.rejected;
      c.dropped = true;
      if (i == 0) return std::nullopt;  // not even the default: leave dispatch as it is
      continue;
    }
    // The check's run on the small instance predicts a hopeless candidate (a scalar kernel
    // where the default is vectorised): skipped before its first call on the real problem,
    // which is the one call a race cannot cut short.
    if (i == 0) default_small = small;
    if (i > 0 && small > kSmallCut * default_small + 1e-4) {
      c.dropped = true;
      continue;
    }
    try {
      const double t = time_call(c);  // warm-up; hopeless candidates end here
      ++stats.candidates;
      // Too slow, or no room left for its first sample (the default always gets one).
      if (t > 2.5 * best || (i > 0 && elapsed_ms() + t * 1e3 > budget_ms)) {
        c.dropped = true;
        continue;
      }
      c.samples.push_back(time_call(c));
      best = std::min(best, c.samples.back());
    } catch (const std::exception&) {
      c.dropped = true;
      if (i == 0) return std::nullopt;
    }
  }
  // Rounds 2+: interleaved samples of the survivors until 5 each or the budget is spent;
  // anything > 1.25x the best median is dropped.
  for (int round = 0; round < 4; ++round) {
    for (Candidate& c : list) {
      if (c.dropped) continue;
      if (elapsed_ms() + 1.25 * best * 1e3 > budget_ms) break;
      c.samples.push_back(time_call(c));
    }
    for (const Candidate& c : list)
      if (!c.dropped) best = std::min(best, c.median());
    for (Candidate& c : list)
      if (!c.dropped && &c != &list[0] && c.median() > 1.25 * best) c.dropped = true;
  }
  const Candidate* win = &list[0];
  for (const Candidate& c : list)
    if (!c.dropped && c.median() < win->median()) win = &c;
  // A challenger must beat the default by 2% (ATLAS's rule against noise and complexity).
  if (win != &list[0] && !list[0].dropped && win->median() > 0.98 * list[0].median()) win = &list[0];
  if (win != &list[0]) ++stats.changed;
  const TunedKey key = tuned_key(p);
  TunedEntry e{key.d_k, key.causal, key.decode, key.gqa, key.log2_seq_q, key.log2_seq_kv,
               win->kernel->name().data(), to_string(win->isa).data(), win->config.block_q, win->config.block_kv,
               win->config.threads, win->config.kv_splits, win->config.micro,
               p.flops() / win->median() * 1e-9, 0.0, false, key.dtype, key.kv_dtype};
  return e;
}

}  // namespace

void set_tuning(TuningMode mode, const OnlineTuning& online) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.configured = true;
  s.mode = mode;
  s.options = online;
  if (!(s.options.budget_ms > 0)) s.options.budget_ms = OnlineTuning{}.budget_ms;
  s.slots.clear();  // a new mode or budget: keys race again
}

TuningMode tuning_mode() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  configure_from_environment(s);
  return s.mode;
}

OnlineStats online_tuning_stats() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  return s.stats;
}

namespace detail {

std::optional<TunedEntry> online_entry(const TunedKey& key) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.mode != TuningMode::online) return std::nullopt;
  const auto it = s.slots.find(key_tuple(key));
  if (it == s.slots.end() || !it->second.done) return std::nullopt;
  return it->second.winner;
}

bool online_tune(const Problem& p, const void* q, const void* k, const void* v, const Options& options) {
  State& s = state();
  OnlineTuning opts;
  const TunedKey key = tuned_key(p);
  {
    std::unique_lock lock(s.mutex);
    configure_from_environment(s);
    if (s.mode != TuningMode::online) return false;
    if (options.kernel != "auto" || options.isa || !p.plain() || p.strided) return false;
    const auto [it, fresh] = s.slots.try_emplace(key_tuple(key));
    if (!fresh) {
      auto& slot = it->second;  // clang before 16 cannot capture a structured binding in a lambda
      if (slot.done) return false;  // the common case: decided before
      // Another call of this key is racing: wait for its winner.
      s.raced.wait(lock, [&slot] { return slot.done; });
      return slot.winner.has_value();
    }
    opts = s.options;
  }
  std::optional<TunedEntry> winner;
  OnlineStats stats;
  double ms = 0.0;
  const bool tuned = has_exact_entry(p);  // an exact-bucket table entry: nothing to learn
  if (!tuned) {
    std::lock_guard race_lock(s.race);
    const auto t0 = Clock::now();
    try {
      winner = race(p, q, k, v, tuned_entry(p, std::nullopt), opts.budget_ms, stats);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "attune: warning: online tuning of %s failed (%s); the table's choice stays\n",
                   p.to_string().c_str(), e.what());
    }
    ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  {
    std::lock_guard lock(s.mutex);
    auto& slot = s.slots[key_tuple(key)];
    slot.winner = winner;
    slot.done = true;
    if (!tuned) {
      ++s.stats.races;
      s.stats.candidates += stats.candidates;
      s.stats.rejected += stats.rejected;
      s.stats.changed += stats.changed;
      s.stats.total_ms += ms;
      s.stats.max_ms = std::max(s.stats.max_ms, ms);
    }
  }
  s.raced.notify_all();
  if (winner && !opts.save_path.empty()) save(opts.save_path, *winner, p);
  return winner.has_value();
}

}  // namespace detail
}  // namespace attune
