// `attune tune`: the shape grid from the command line, one search per shape (tuner/grid.hpp), every
// measurement appended to the JSON lines log as it finishes (so --resume loses nothing), the
// header regenerated from the whole log and written atomically at the end.
#include "commands.hpp"

#include "args.hpp"
#include "common.hpp"
#include "grid.hpp"
#include "records.hpp"
#include "tuner.hpp"

#include <attune/attune.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <unistd.h>

namespace attune::cli {

const char* const kTuneHelp =
    "usage: attune tune --seq 128,512,2048 --heads 8,32 --dk 64,128 --out attune_tuned.h --json tune.json\n"
    "                   [--tuning tune.tuning.json]\n"
    "                   [--seq-q LIST] [--group LIST] [--causal no|yes|both] [--dtype fp32,bf16,fp16]\n"
    "                   [--kv-dtype LIST]\n"
    "                   [--strategy smart|exhaustive|random] [--evals K] [--budget 10m] [--threads N]\n"
    "                   [--window-ms 20] [--seed S] [--wait-quiet 30] [--resume]\n\n"
    "Measures every shape of the grid (seq_q = seq_kv = --seq, or --seq-q x --seq for decoding;\n"
    "heads_kv = heads / group) and picks the fastest verified (kernel, isa, block_q, block_kv,\n"
    "threads, kv_splits). Each shape is tuned once per storage type of --dtype (default fp32;\n"
    "all tensors of that type); --kv-dtype LIST stores K/V as each of its types instead (e.g.\n"
    "--dtype fp32 --kv-dtype bf16: a bf16 KV cache; int8, int8_kc, fp8_e4m3, fp8_e5m2, int4: a\n"
    "quantized cache, quantized as quantize_kv does). A table entry serves only its own types.\n"
    "smart: coordinate descent from the default with racing; exhaustive: the whole space;\n"
    "random: --evals K random candidates (default 32). --evals also caps the evaluations of\n"
    "smart and exhaustive. --budget (s, m or h; default 10m) is shared by the\n"
    "shapes. Every measurement is appended to --json as one JSON line as it finishes; --resume\n"
    "continues such a log, reusing its measurements and skipping shapes already chosen.\n"
    "The header (--out) is generated from the whole log and written atomically; build with\n"
    "-DATTUNE_TUNED_CONFIG=<file> to make `auto` use it. The same table is also written as a\n"
    "run-time tuning file (--tuning; default: the --json path with .tuning.json), which `auto`\n"
    "uses without a rebuild: ATTUNE_TUNING=<file>, attune::load_tuning(), attune.load_tuning().\n"
    "Progress goes to stderr.\n"
    "smart seeds each shape with the winners of the two most similar shapes tuned before it.\n"
    "Before timing, the tuner waits (up to --wait-quiet seconds, 0: never) while other\n"
    "processes compete for the cores, and warns when they do not leave.\n"
    "Exit status: 0 success, 1 data/input error, 2 usage error.\n";

namespace {

// The comma-separated items of a flag's value, in order (empty items kept, for the error).
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    const std::size_t comma = text.find(',', pos);
    out.push_back(text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (comma == std::string::npos) return out;
    pos = comma + 1;
  }
}

std::vector<std::int64_t> int_list(const Args& a, const std::string& flag, std::vector<std::int64_t> fallback,
                                   std::int64_t min) {
  const auto text = a.get(flag);
  if (!text) return fallback;
  std::vector<std::int64_t> out;
  for (const std::string& item : split_list(*text)) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE)
      throw UsageError(flag + " = '" + *text + "': '" + item + "' is not an integer");
    if (v < min) throw UsageError(flag + " = '" + *text + "': " + item + " must be >= " + std::to_string(min));
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
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

// A comma-separated list of storage types ("fp32,bf16"), in the order given, without repeats.
// kv: the quantized K/V types too (--kv-dtype).
std::vector<Dtype> dtype_list(const Args& a, const std::string& flag, std::vector<Dtype> fallback, bool kv = false) {
  const auto text = a.get(flag);
  if (!text) return fallback;
  std::vector<Dtype> out;
  for (const std::string& item : split_list(*text)) {
    const auto d = parse_dtype(item);
    if (!d || (!kv && is_quantized(*d)))
      throw UsageError(flag + " = '" + *text + "': '" + item + "' is not fp32, bf16 or fp16" +
                       (kv ? " (or int8, int8_kc, fp8_e4m3, fp8_e5m2, int4)" : ""));
    if (std::find(out.begin(), out.end(), *d) == out.end()) out.push_back(*d);
  }
  return out;
}

// (dtype, kv_dtype) pairs of --dtype (Q/O; default fp32) and --kv-dtype (K/V; default: each
// dtype itself, else every pair of the two lists).
std::vector<std::pair<Dtype, Dtype>> storage_types(const Args& a) {
  const auto dtypes = dtype_list(a, "--dtype", {Dtype::fp32});
  const auto kv_dtypes = dtype_list(a, "--kv-dtype", {}, true);
  std::vector<std::pair<Dtype, Dtype>> out;
  for (Dtype d : dtypes) {
    if (kv_dtypes.empty()) out.emplace_back(d, d);
    for (Dtype kv : kv_dtypes) out.emplace_back(d, kv);
  }
  return out;
}

// The shape grid of --seq, --seq-q, --heads, --group, --dk, --causal, --dtype and --kv-dtype.
std::vector<Problem> grid_shapes(const Args& a) {
  const auto types = storage_types(a);
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
  // The whole grid once per storage-type pair (the types do not change what is valid).
  std::vector<Problem> typed;
  for (const auto& [dtype, kv_dtype] : types) {
    for (Problem p : shapes) {
      p.dtype = dtype;
      if (kv_dtype != dtype) p.kv_dtype = kv_dtype;
      typed.push_back(p);
    }
  }
  return typed;
}

// tune.json -> tune.tuning.json (next to the log).
std::string default_tuning_file(const std::string& json_path) {
  std::filesystem::path p(json_path);
  const std::string stem = p.extension() == ".json" ? p.stem().string() : p.filename().string();
  return (p.parent_path() / (stem + ".tuning.json")).string();
}

}  // namespace

int cmd_tune(const std::vector<std::string>& argv) {
  const Args a(argv,
               {"--seq", "--seq-q", "--heads", "--group", "--dk", "--causal", "--dtype", "--kv-dtype",
                "--strategy", "--evals", "--budget", "--threads", "--out", "--json", "--tuning", "--window-ms",
                "--seed", "--wait-quiet"},
               {"--resume"});
  no_positional(a);
  if (!a.has("--seq")) throw UsageError("missing required option --seq");
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
  const std::string tuning_path = a.get("--tuning").value_or(default_tuning_file(json_path));
  const bool resume = a.has("--resume");
  const double wait_quiet = static_cast<double>(a.get_int("--wait-quiet", 0).value_or(30));

  const std::vector<Problem> shapes = grid_shapes(a);

  check_output_dir(out_path);
  check_output_dir(json_path);
  check_output_dir(tuning_path);
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
    }
    // Appending needs a log that ends in a newline: rewrite it as read (atomically).
    if (log.dropped_partial || log.missing_newline) tuner::write_atomic(json_path, log.complete_text);
    tuner::append_text(json_path, tuner::provenance_line(strategy, budget_text, command));
  } else {
    if (exists)
      throw UsageError("--json: '" + json_path + "' exists; pass --resume to continue it, or remove it");
    tuner::write_atomic(json_path, tuner::provenance_line(strategy, budget_text, command));
  }
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(clock::now() - t0).count(); };
  const bool tty = isatty(2) != 0;
  tuner::GridOptions grid;
  grid.search = so;
  grid.strategy = strategy;
  grid.budget = budget;
  grid.max_threads = max_threads;
  grid.window = window;
  grid.wait_quiet = wait_quiet;
  // Progress on stderr: a line per shape, and on a terminal a status line redrawn per measurement.
  tuner::GridEvents events;
  events.skipped = [&](const Problem& p, const tuner::GridProgress& g) {
    std::fprintf(stderr, "[%zu/%zu] %s: chosen in the log, skipped\n", g.index, g.count, p.to_string().c_str());
  };
  if (tty) {
    events.measured = [&](const Problem& p, const tuner::GridProgress& g, std::size_t evals,
                          const std::string& best_key, double best_time) {
      std::fprintf(stderr, "\r[%zu/%zu] %s: %zu evals, elapsed %s, ETA %s, best %s %.1f GFLOP/s\033[K", g.index,
                   g.count, p.to_string().c_str(), evals, clock_text(g.elapsed).c_str(),
                   clock_text(std::max(0.0, g.eta)).c_str(), best_key.c_str(),
                   best_time > 0 ? p.flops() / best_time * 1e-9 : 0.0);
    };
  }
  events.chosen = [&](const Problem& p, const tuner::GridProgress& g, const tuner::SearchResult& r,
                      std::size_t reused, const tuner::KernelOracle& oracle) {
    if (oracle.waited_seconds() >= 1.0 || oracle.busy_timeouts() > 0) {
      std::fprintf(stderr, "%stune: waited %.0f s for other processes to leave the cores%s\n", tty ? "\r\033[K" : "",
                   oracle.waited_seconds(),
                   oracle.busy_timeouts() > 0
                       ? "; warning: they did not, so some measurements of this shape ran on a busy machine"
                       : "");
    }
    std::fprintf(stderr, "%s[%zu/%zu] %s: %s %.1f GFLOP/s (spread %.1f%%%s), %zu/%zu evaluations (%zu reused), "
                 "elapsed %s, ETA %s\n", tty ? "\r\033[K" : "", g.index, g.count, p.to_string().c_str(),
                 r.best.candidate.key().c_str(), p.flops() / r.best.median() * 1e-9, 100.0 * r.best.spread(),
                 r.tie ? ", tie" : "", r.evaluations, r.space_size, reused, clock_text(g.elapsed).c_str(),
                 clock_text(g.eta).c_str());
  };
  tuner::tune_grid(shapes, log, json_path, grid, events);

  // The header is a function of the log alone: read it back and generate.
  const tuner::Log full = tuner::read_log(json_path);
  tuner::write_atomic(out_path, tuner::generate_header(full, std::filesystem::path(json_path).filename().string()));
  tuner::write_atomic(tuning_path, tuner::generate_tuning(full));
  std::fprintf(stderr, "tune: wrote %s, %s and %s (%s); run-time use: ATTUNE_TUNING=%s\n", out_path.c_str(),
               tuning_path.c_str(), json_path.c_str(), clock_text(elapsed()).c_str(), tuning_path.c_str());
  return 0;
}

}  // namespace attune::cli

namespace attune::cli {

const char* const kTuneCheckHelp =
    "usage: attune tune-check [LOG.json ...] [--seq LIST [--seq-q LIST] [--heads LIST] [--group LIST]\n"
    "                         [--dk LIST] [--causal no|yes|both] [--dtype LIST] [--kv-dtype LIST]]\n"
    "                         [--samples 15] [--window-ms 20] [--json OUT.json] [--wait-quiet 30]\n\n"
    "Fresh, interleaved re-measurement of tuning results. Per shape (the shapes chosen in the\n"
    "logs, plus the --seq grid, e.g. held-out shapes) it times, round-robin for --samples\n"
    "rounds: 'default' (what auto runs without a tuned table), 'auto' (this build's dispatch,\n"
    "with its compiled table and nearest-bucket lookup) and each log's choice for the shape.\n"
    "Every candidate is first checked against the float64 reference. Prints GFLOP/s medians,\n"
    "spreads and ratios to 'default'; --json writes every sample.\n"
    "Exit status: 0 success, 1 data/input error, 2 usage error.\n";

namespace {

struct Entry {
  std::string label;
  tuner::Candidate candidate;
  std::size_t evaluations = 0, space = 0;  // logs only
};

std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6e", x);
  return buf;
}

}  // namespace

int cmd_tune_check(const std::vector<std::string>& argv) {
  const Args a(argv,
               {"--seq", "--seq-q", "--heads", "--group", "--dk", "--causal", "--dtype", "--kv-dtype",
                "--samples", "--window-ms", "--json", "--wait-quiet"},
               {});
  const double wait_quiet = static_cast<double>(a.get_int("--wait-quiet", 0).value_or(30));
  const int samples = static_cast<int>(std::min<std::int64_t>(a.get_int("--samples", 3).value_or(15), 1000));
  const double window = static_cast<double>(a.get_int("--window-ms", 1).value_or(20)) * 1e-3;
  const auto json_path = a.get("--json");
  if (json_path) check_output_dir(*json_path);

  // Shapes in first-seen order: the logs' choices, then the grid.
  std::vector<std::string> labels;
  std::vector<std::map<std::string, tuner::ChoiceRecord>> choices;
  std::vector<Problem> shapes;
  std::set<std::string> seen;
  for (const std::string& path : a.positional()) {
    const tuner::Log log = tuner::read_log(path);
    labels.push_back(std::filesystem::path(path).filename().string());
    choices.push_back(tuner::log_choice_records(log));
    for (const auto& [name, record] : choices.back())
      if (seen.insert(name).second) shapes.push_back(record.problem);
  }
  if (a.has("--seq")) {
    for (const Problem& p : grid_shapes(a))
      if (seen.insert(p.to_string()).second) shapes.push_back(p);
  }
  if (shapes.empty()) throw UsageError("nothing to check: give tuning logs and/or a --seq grid");

  std::string json = "[\n";
  std::map<std::string, std::vector<double>> ratios;  // label -> time(default) / time(label)
  for (std::size_t si = 0; si < shapes.size(); ++si) {
    const Problem& p = shapes[si];
    const std::string shape = p.to_string();
    std::vector<Entry> entries;
    entries.push_back({"default", tuner::make_space(p, 0).start});
    const Choice auto_choice = resolve(p, Options{});
    tuner::Candidate auto_candidate;
    auto_candidate.kernel = std::string(auto_choice.kernel->name());
    auto_candidate.isa = auto_choice.isa;
    auto_candidate.config = auto_choice.config;
    entries.push_back({"auto", auto_candidate});
    for (std::size_t li = 0; li < labels.size(); ++li) {
      auto it = choices[li].find(shape);
      if (it != choices[li].end())
        entries.push_back({labels[li], it->second.candidate, it->second.evaluations, it->second.space});
    }
    // Unique candidates, verified, then sampled round-robin (the order rotating each round).
    tuner::KernelOracle oracle(p, window);
    oracle.set_max_wait(wait_quiet);
    std::map<std::string, tuner::Measurement> m;
    std::vector<std::string> keys;
    for (const Entry& e : entries) {
      const std::string key = e.candidate.key();
      if (m.count(key)) continue;
      keys.push_back(key);
      tuner::Measurement& x = m[key];
      x.candidate = e.candidate;
      std::string why;
      x.verified = oracle.verify(e.candidate, why);
      if (!x.verified) x.error = why;
    }
    for (int round = 0; round < samples; ++round) {
      for (std::size_t i = 0; i < keys.size(); ++i) {
        tuner::Measurement& x = m[keys[(i + static_cast<std::size_t>(round)) % keys.size()]];
        if (x.verified) x.samples.push_back(oracle.sample(x.candidate));
      }
    }
    if (oracle.busy_timeouts() > 0)
      std::fprintf(stderr, "tune-check: warning: %s was measured while other processes held the cores\n", shape.c_str());
    const double base = m[entries.front().candidate.key()].median();
    std::printf("%s\n", shape.c_str());
    if (si > 0) json += ",\n";
    json += "{\"shape\":" + tuner::json_string(shape) + ",\"dtype\":\"" + std::string(to_string(p.dtype)) +
            "\",\"kv_dtype\":\"" + std::string(to_string(p.kv_type())) + "\",\"flops\":" + sci(p.flops()) +
            ",\"entries\":[";
    for (std::size_t ei = 0; ei < entries.size(); ++ei) {
      const Entry& e = entries[ei];
      const tuner::Measurement& x = m[e.candidate.key()];
      const double ratio = x.verified && x.median() > 0 ? base / x.median() : 0.0;
      if (x.verified) ratios[e.label].push_back(ratio);
      std::printf("  %-22s %-40s %s\n", e.label.c_str(), e.candidate.key().c_str(),
                  x.verified ? (std::to_string(p.flops() / x.median() * 1e-9).substr(0, 7) + " GFLOP/s, spread " +
                                std::to_string(100.0 * x.spread()).substr(0, 4) + "%, x" +
                                std::to_string(ratio).substr(0, 5) + " of default")
                                   .c_str()
                             : ("FAILS VERIFICATION: " + x.error).c_str());
      if (ei > 0) json += ',';
      json += "{\"label\":" + tuner::json_string(e.label) + ",\"candidate\":" +
              tuner::json_string(e.candidate.key()) + ",\"verified\":" + (x.verified ? "true" : "false") +
              ",\"evaluations\":" + std::to_string(e.evaluations) + ",\"space\":" + std::to_string(e.space) +
              ",\"median_s\":" + sci(x.median()) + ",\"spread\":" + sci(x.spread()) +
              ",\"samples\":[";
      for (std::size_t k = 0; k < x.samples.size(); ++k) {
        if (k > 0) json += ',';
        json += sci(x.samples[k]);
      }
      json += "]}";
    }
    json += "]}";
    std::fflush(stdout);
  }
  json += "\n]\n";
  std::printf("summary (speed relative to 'default', over %zu shapes):\n", shapes.size());
  for (const auto& [label, r] : ratios) {
    double log_sum = 0.0;
    for (double x : r) log_sum += std::log(x);
    std::printf("  %-22s median x%.3f, geometric mean x%.3f, worst x%.3f, best x%.3f (%zu shapes)\n", label.c_str(),
                tuner::median_of(r), std::exp(log_sum / static_cast<double>(r.size())),
                *std::min_element(r.begin(), r.end()), *std::max_element(r.begin(), r.end()), r.size());
  }
  if (json_path) tuner::write_atomic(*json_path, json);
  return 0;
}

}  // namespace attune::cli
