// `attune tune`: the shape grid from the command line, one search per shape (tuner/), every
// measurement appended to the JSON lines log as it finishes (so --resume loses nothing), the
// header regenerated from the whole log and written atomically at the end.
#include "tune.hpp"

#include "args.hpp"
#include "records.hpp"
#include "tuner.hpp"

#include <attune/attune.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <unistd.h>

namespace attune::cli {

const char* const kTuneHelp =
    "usage: attune tune --seq 128,512,2048 --heads 8,32 --dk 64,128 --out attune_tuned.h --json tune.json\n"
    "                   [--seq-q LIST] [--group LIST] [--causal no|yes|both]\n"
    "                   [--strategy smart|exhaustive|random] [--evals K] [--budget 10m] [--threads N]\n"
    "                   [--window-ms 20] [--seed S] [--resume]\n\n"
    "Measures every shape of the grid (seq_q = seq_kv = --seq, or --seq-q x --seq for decoding;\n"
    "heads_kv = heads / group) and picks the fastest verified (kernel, isa, block_q, block_kv,\n"
    "threads, kv_splits). smart: coordinate descent from the default with racing; exhaustive:\n"
    "the whole space; random: --evals K random candidates (default 32). --evals also caps the\n"
    "evaluations of smart and exhaustive. --budget (s, m or h; default 10m) is shared by the\n"
    "shapes. Every measurement is appended to --json as one JSON line as it finishes; --resume\n"
    "continues such a log, reusing its measurements and skipping shapes already chosen.\n"
    "The header (--out) is generated from the whole log and written atomically; build with\n"
    "-DATTUNE_TUNED_CONFIG=<file> to make `auto` use it. Progress goes to stderr.\n"
    "Exit status: 0 success, 1 data/input error, 2 usage error.\n";

namespace {

std::vector<std::int64_t> int_list(const Args& a, const std::string& flag, std::vector<std::int64_t> fallback,
                                   std::int64_t min) {
  const auto text = a.get(flag);
  if (!text) return fallback;
  std::vector<std::int64_t> out;
  std::size_t pos = 0;
  for (;;) {
    const std::size_t comma = text->find(',', pos);
    const std::string item = text->substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE)
      throw UsageError(flag + " = '" + *text + "': '" + item + "' is not an integer");
    if (v < min) throw UsageError(flag + " = '" + *text + "': " + item + " must be >= " + std::to_string(min));
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

// "90s", "10m", "1h", "30" (seconds).
double parse_budget(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(text.c_str(), &end);
  double unit = 1.0;
  const std::string suffix = end != nullptr ? end : "";
  if (suffix == "m") unit = 60.0;
  else if (suffix == "h") unit = 3600.0;
  else if (!suffix.empty() && suffix != "s") unit = -1.0;
  if (text.empty() || end == text.c_str() || errno == ERANGE || unit < 0 || !(x > 0) || x > 1e7)
    throw UsageError("--budget = '" + text + "' is not a positive duration (e.g. 90s, 10m, 1h)");
  return x * unit;
}

std::string clock_text(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

}  // namespace

int cmd_tune(const std::vector<std::string>& argv) {
  const Args a(argv,
               {"--seq", "--seq-q", "--heads", "--group", "--dk", "--causal", "--strategy", "--evals", "--budget",
                "--threads", "--out", "--json", "--window-ms", "--seed"},
               {"--resume"});
  if (!a.positional().empty()) throw UsageError("unexpected argument '" + a.positional().front() + "'");
  if (!a.has("--seq")) throw UsageError("missing required option --seq");
  const auto seqs = int_list(a, "--seq", {}, 1);
  const auto seq_qs = int_list(a, "--seq-q", {}, 1);
  const auto heads = int_list(a, "--heads", {8}, 1);
  const auto groups = int_list(a, "--group", {1}, 1);
  const auto dks = int_list(a, "--dk", {64}, 1);
  const std::string causal = a.get("--causal").value_or("no");
  std::vector<bool> causals;
  if (causal == "no") causals = {false};
  else if (causal == "yes") causals = {true};
  else if (causal == "both") causals = {false, true};
  else throw UsageError("--causal = '" + causal + "' must be no, yes or both");
  tuner::SearchOptions so;
  const std::string strategy = a.get("--strategy").value_or("smart");
  if (strategy == "smart") so.strategy = tuner::Strategy::smart;
  else if (strategy == "exhaustive") so.strategy = tuner::Strategy::exhaustive;
  else if (strategy == "random") so.strategy = tuner::Strategy::random;
  else throw UsageError("--strategy = '" + strategy + "' must be smart, exhaustive or random");
  if (auto k = a.get_int("--evals", 1)) {
    so.random_k = static_cast<std::size_t>(*k);
    so.max_evaluations = static_cast<std::size_t>(*k) + (so.strategy == tuner::Strategy::random ? 1 : 0);
  }
  if (auto s = a.get_int("--seed", 0)) so.seed = static_cast<std::uint64_t>(*s);
  const std::string budget_text = a.get("--budget").value_or("10m");
  const double budget = parse_budget(budget_text);
  const int max_threads = static_cast<int>(std::min<std::int64_t>(a.get_int("--threads", 1).value_or(0), 1 << 16));
  const double window = static_cast<double>(a.get_int("--window-ms", 1).value_or(20)) * 1e-3;
  const std::string out_path = a.required("--out"), json_path = a.required("--json");
  const bool resume = a.has("--resume");

  std::vector<Problem> shapes;
  for (bool c : causals)
    for (std::int64_t dk : dks)
      for (std::int64_t h : heads)
        for (std::int64_t g : groups)
          for (std::int64_t skv : seqs)
            for (std::int64_t sq : seq_qs.empty() ? std::vector<std::int64_t>{skv} : seq_qs) {
              if (h % g != 0)
                throw UsageError("--group " + std::to_string(g) + " does not divide --heads " + std::to_string(h));
              Problem p;
              p.heads_q = h;
              p.heads_kv = h / g;
              p.seq_q = sq;
              p.seq_kv = skv;
              p.d_k = p.d_v = dk;
              p.causal = c;
              try {
                p.validate();
              } catch (const InvalidArgument& e) {
                throw UsageError(e.what());
              }
              shapes.push_back(p);
            }

  check_output_dir(out_path);
  check_output_dir(json_path);
  std::string command = "attune tune";
  for (const auto& s : argv) command += " " + s;

  // The log: new, or resumed (checked first; an interrupted last line is cut off).
  const bool exists = std::filesystem::exists(json_path);
  tuner::Log log;
  if (resume) {
    if (!exists) throw IoError("--resume: '" + json_path + "' does not exist");
    log = tuner::read_log(json_path);
    const auto& prov = tuner::log_provenance(log);
    if (prov.at("signature").string != build_signature())
      throw IoError("--resume: '" + json_path + "' was measured by another build (" + prov.at("signature_text").string +
                    "; this build: " + build_signature_text() + ")");
    if (prov.at("cpu").string != cpu_model())
      throw IoError("--resume: '" + json_path + "' was measured on '" + prov.at("cpu").string + "', this is '" +
                    std::string(cpu_model()) + "'");
    if (log.dropped_partial) {
      std::fprintf(stderr, "tune: %s: dropped an interrupted last line; the complete lines are kept\n",
                   json_path.c_str());
      tuner::write_atomic(json_path, log.complete_text);
    }
    tuner::append_text(json_path, tuner::provenance_line(strategy, budget_text, command));
  } else {
    if (exists)
      throw UsageError("--json: '" + json_path + "' exists; pass --resume to continue it, or remove it");
    tuner::write_atomic(json_path, tuner::provenance_line(strategy, budget_text, command));
  }
  const auto chosen = tuner::log_choices(log);
  const std::set<std::string> done_shapes(chosen.begin(), chosen.end());

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(clock::now() - t0).count(); };
  const bool tty = isatty(2) != 0;
  std::size_t index = 0, measured_shapes = 0, todo = 0;
  for (const Problem& p : shapes) todo += done_shapes.count(p.to_string()) ? 0 : 1;

  for (const Problem& p : shapes) {
    ++index;
    const std::string shape = p.to_string();
    if (done_shapes.count(shape)) {
      std::fprintf(stderr, "[%zu/%zu] %s: chosen in the log, skipped\n", index, shapes.size(), shape.c_str());
      continue;
    }
    const double shape_deadline = elapsed() + (budget - elapsed()) / static_cast<double>(todo - measured_shapes);
    const tuner::Space space = tuner::make_space(p, max_threads);
    auto known = tuner::log_measurements(log, p);
    const std::size_t reused = known.size();
    tuner::KernelOracle oracle(p, window);
    tuner::SearchOptions opt = so;
    opt.out_of_time = [&] { return elapsed() > shape_deadline; };
    std::string best_key;
    double best_time = 0.0;
    std::size_t evals = 0;
    std::set<std::string> seen;
    opt.on_measured = [&](const tuner::Measurement& m) {
      tuner::append_text(json_path, tuner::measurement_line(p, m));
      if (!m.samples.empty() && seen.insert(m.candidate.key()).second) ++evals;
      if (m.verified && !m.samples.empty() && (best_key.empty() || m.median() < best_time)) {
        best_key = m.candidate.key();
        best_time = m.median();
      }
      if (tty) {
        const double eta = measured_shapes > 0
                               ? elapsed() / static_cast<double>(measured_shapes) * static_cast<double>(todo - measured_shapes)
                               : budget - elapsed();
        std::fprintf(stderr, "\r[%zu/%zu] %s: %zu evals, elapsed %s, ETA %s, best %s %.1f GFLOP/s\033[K", index,
                     shapes.size(), shape.c_str(), evals, clock_text(elapsed()).c_str(),
                     clock_text(std::max(0.0, eta)).c_str(), best_key.c_str(),
                     best_time > 0 ? p.flops() / best_time * 1e-9 : 0.0);
      }
    };
    const tuner::SearchResult r = tuner::search(space, oracle, opt, known);
    tuner::append_text(json_path, tuner::choice_line(p, r, strategy));
    ++measured_shapes;
    const double eta = elapsed() / static_cast<double>(measured_shapes) * static_cast<double>(todo - measured_shapes);
    std::fprintf(stderr, "%s[%zu/%zu] %s: %s %.1f GFLOP/s (spread %.1f%%%s), %zu/%zu evaluations (%zu reused), "
                 "elapsed %s, ETA %s\n", tty ? "\r\033[K" : "", index, shapes.size(), shape.c_str(),
                 r.best.candidate.key().c_str(), p.flops() / r.best.median() * 1e-9, 100.0 * r.best.spread(),
                 r.tie ? ", tie" : "", r.evaluations, r.space_size, reused, clock_text(elapsed()).c_str(),
                 clock_text(eta).c_str());
  }

  // The header is a function of the log alone: read it back and generate.
  const tuner::Log full = tuner::read_log(json_path);
  tuner::write_atomic(out_path, tuner::generate_header(full, std::filesystem::path(json_path).filename().string()));
  std::fprintf(stderr, "tune: wrote %s and %s (%s)\n", out_path.c_str(), json_path.c_str(),
               clock_text(elapsed()).c_str());
  return 0;
}

}  // namespace attune::cli
