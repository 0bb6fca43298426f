// The run-time tuning file: JSON lines (a header record, a record per machine, a record per
// entry), strictly checked when read, written with the JSON quoting the tuner's log uses; and
// the machine signature and the rule that picks which machine's table applies here.
#include "tuning_file.hpp"

#include "json.hpp"
#include "tuned_impl.hpp"

#include <attune/error.hpp>
#include <attune/kernel.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <thread>
#include <unistd.h>

namespace attune {
namespace {

using tuner::json_bool;
using tuner::json_integer;
using tuner::json_number;
using tuner::json_str;
using tuner::json_string;
using tuner::JsonObject;
using tuner::number_text;

// "32K" / "1024K" / "32M" as sysfs writes cache sizes; 0 if unreadable.
std::int64_t sysfs_size(const std::string& text) {
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (...) {
    return 0;
  }
  const char unit = used < text.size() ? text[used] : ' ';
  if (unit == 'K') return n << 10;
  if (unit == 'M') return n << 20;
  if (unit == 'G') return n << 30;
  return n;
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

MachineSignature detect_machine() {
  MachineSignature m;
  m.cpu = std::string(cpu_model());
  for (Isa i : compiled_isas()) {
    if (!cpu_supports(i)) continue;
    if (!m.isas.empty()) m.isas += ' ';
    m.isas += to_string(i);
  }
  m.cores = static_cast<int>(std::thread::hardware_concurrency());
  for (int index = 0; index < 16; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    const std::string level = read_line(dir + "level");
    if (level.empty()) break;
    const std::string type = read_line(dir + "type");
    const std::int64_t size = sysfs_size(read_line(dir + "size"));
    if (level == "1" && type == "Data") m.l1d = size;
    if (level == "2") m.l2 = size;
    if (level == "3") m.l3 = size;
  }
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  if (m.l1d <= 0) m.l1d = std::max(0L, sysconf(_SC_LEVEL1_DCACHE_SIZE));
  if (m.l2 <= 0) m.l2 = std::max(0L, sysconf(_SC_LEVEL2_CACHE_SIZE));
  if (m.l3 <= 0) m.l3 = std::max(0L, sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
  return m;
}

const MachineSignature* g_injected = nullptr;

std::string size_text(std::int64_t bytes) {
  if (bytes <= 0) return "?";
  if (bytes % (1 << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes % (1 << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

}  // namespace

const MachineSignature& machine_signature() {
  static const MachineSignature detected = detect_machine();
  return g_injected != nullptr ? *g_injected : detected;
}

std::string to_string(const MachineSignature& m) {
  return m.cpu + " | " + m.isas + " | " + std::to_string(m.cores) + " cores | L1d " + size_text(m.l1d) + ", L2 " +
         size_text(m.l2) + ", L3 " + size_text(m.l3);
}

std::string default_tuning_path() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && *xdg != '\0')
    return std::string(xdg) + "/attune/tuning.json";
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0')
    return std::string(home) + "/.config/attune/tuning.json";
  return "";
}

namespace detail {
namespace {

// An integer field within [lo, hi]: a hostile file's huge numbers are refused by name.
std::int64_t bounded(const JsonObject& o, const char* name, std::int64_t lo, std::int64_t hi) {
  const std::int64_t x = json_integer(o, name);
  if (x < lo || x > hi)
    throw IoError(std::string("field \"") + name + "\" = " + std::to_string(x) + " is outside [" +
                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

double finite_nonnegative(const JsonObject& o, const char* name) {
  const double x = json_number(o, name);
  if (!(x >= 0.0) || x > 1e18) throw IoError(std::string("field \"") + name + "\" is out of range");
  return x;
}

// A string field of at most `max` bytes (CPU names, versions, commands).
const std::string& bounded_str(const JsonObject& o, const char* name, std::size_t max = 4096) {
  const std::string& s = json_str(o, name);
  if (s.size() > max) throw IoError(std::string("field \"") + name + "\" is longer than " + std::to_string(max));
  return s;
}

MachineTable read_machine(const JsonObject& o) {
  MachineTable m;
  m.id = bounded_str(o, "id", 64);
  m.signature = bounded_str(o, "signature");
  m.signature_text = bounded_str(o, "signature_text");
  m.machine.cpu = bounded_str(o, "cpu");
  m.machine.isas = bounded_str(o, "isas");
  m.machine.cores = static_cast<int>(bounded(o, "cores", 0, 1 << 20));
  constexpr std::int64_t kMaxCache = std::int64_t{1} << 40;
  m.machine.l1d = bounded(o, "l1d", 0, kMaxCache);
  m.machine.l2 = bounded(o, "l2", 0, kMaxCache);
  m.machine.l3 = bounded(o, "l3", 0, kMaxCache);
  TuningProvenance& p = m.provenance;
  p.compiler = bounded_str(o, "compiler");
  p.flags = bounded_str(o, "flags");
  p.version = bounded_str(o, "version");
  p.git_revision = bounded_str(o, "git_revision");
  p.date = bounded_str(o, "date");
  p.strategy = bounded_str(o, "strategy");
  p.budget = bounded_str(o, "budget");
  p.command = bounded_str(o, "command");
  return m;
}

// An entry, or false if it names a kernel, ISA or storage type this build does not know.
bool read_entry(const JsonObject& o, TunedEntry& e, std::string& shape) {
  // Range checks first: a malformed entry rejects the file even if its names are unknown.
  e.d_k = bounded(o, "d_k", 1, 1 << 20);
  e.causal = json_bool(o, "causal");
  e.decode = json_bool(o, "decode");
  e.gqa = json_bool(o, "gqa");
  e.log2_seq_q = static_cast<int>(bounded(o, "log2_seq_q", 0, 62));
  e.log2_seq_kv = static_cast<int>(bounded(o, "log2_seq_kv", 0, 62));
  e.block_q = bounded(o, "block_q", 0, 1 << 24);
  e.block_kv = bounded(o, "block_kv", 0, 1 << 24);
  e.threads = static_cast<int>(bounded(o, "threads", 0, 1 << 16));
  e.kv_splits = static_cast<int>(bounded(o, "kv_splits", 0, 1 << 16));
  e.micro = static_cast<int>(bounded(o, "micro", micro_auto, micro_wide));
  e.gflops = finite_nonnegative(o, "gflops");
  e.spread = finite_nonnegative(o, "spread");
  e.tie = json_bool(o, "tie");
  shape = bounded_str(o, "shape", 512);
  const Kernel* k = find_kernel(bounded_str(o, "kernel", 64));
  const auto isa = parse_isa(bounded_str(o, "isa", 64));
  const auto dtype = parse_dtype(bounded_str(o, "dtype", 64));
  const auto kv_dtype = parse_dtype(bounded_str(o, "kv_dtype", 64));
  if (k == nullptr || !isa || !dtype || !kv_dtype) return false;
  e.kernel = k->name().data();  // string literals: NUL-terminated, static
  e.isa = to_string(*isa).data();
  e.dtype = *dtype;
  e.kv_dtype = *kv_dtype;
  return true;
}

bool same_key(const TunedEntry& a, const TunedEntry& b) { return !tuned_order(a, b) && !tuned_order(b, a); }

}  // namespace

std::vector<MachineTable> parse_tuning(const std::string& text, const std::string& name) {
  if (text.size() > kTuningMaxBytes)
    throw IoError(name + ": " + std::to_string(text.size()) + " bytes, more than a tuning file holds (" +
                  std::to_string(kTuningMaxBytes) + ")");
  std::vector<MachineTable> machines;
  std::map<std::string, std::size_t> by_id;
  // Per machine: key -> (entry, shape), a later line superseding an earlier one.
  std::vector<std::vector<std::pair<TunedEntry, std::string>>> rows;
  bool header = false;
  std::size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    ++line_no;
    const std::size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = name + ":" + std::to_string(line_no) + ": ";
    try {
      if (nl == std::string::npos) throw IoError("the last line has no newline (a truncated file)");
      const JsonObject o = tuner::parse_json_object(line);
      const std::string& type = json_str(o, "type");
      if (!header) {
        if (type != "tuning") throw IoError("not a tuning file (the first record's type is \"" + type + "\", not \"tuning\")");
        const std::int64_t schema = json_integer(o, "schema");
        if (schema != kTuningSchema)
          throw IoError("schema " + std::to_string(schema) + "; this build reads schema " + std::to_string(kTuningSchema));
        header = true;
      } else if (type == "machine") {
        MachineTable m = read_machine(o);
        if (by_id.count(m.id)) throw IoError("machine \"" + m.id + "\" is declared twice");
        if (machines.size() >= 4096) throw IoError("more than 4096 machines");
        by_id[m.id] = machines.size();
        machines.push_back(std::move(m));
        rows.emplace_back();
      } else if (type == "entry") {
        const std::string& id = bounded_str(o, "machine", 64);
        const auto it = by_id.find(id);
        if (it == by_id.end()) throw IoError("entry of undeclared machine \"" + id + "\"");
        TunedEntry e{};
        std::string shape;
        if (!read_entry(o, e, shape)) {
          ++machines[it->second].unknown;
          continue;
        }
        auto& r = rows[it->second];
        const auto same = std::find_if(r.begin(), r.end(), [&](const auto& x) { return same_key(x.first, e); });
        if (same != r.end()) {
          *same = {e, shape};
        } else {
          if (r.size() >= 100000) throw IoError("more than 100000 entries for one machine");
          r.emplace_back(e, shape);
        }
      } else if (type == "tuning") {
        throw IoError("a second header record");
      } else {
        throw IoError("unknown record type \"" + type + "\"");
      }
    } catch (const IoError& e) {
      throw IoError(where + e.what());
    }
  }
  if (!header) throw IoError(name + ": empty (no \"tuning\" header record)");
  for (std::size_t i = 0; i < machines.size(); ++i) {
    auto& r = rows[i];
    std::stable_sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return tuned_order(a.first, b.first); });
    for (auto& [e, shape] : r) {
      machines[i].entries.push_back(e);
      machines[i].shapes.push_back(std::move(shape));
    }
  }
  return machines;
}

std::string tuning_header_line() {
  return "{\"type\":\"tuning\",\"schema\":" + std::to_string(kTuningSchema) +
         ",\"about\":\"attune run-time tuning file (docs/tuning.md)\"}\n";
}

std::string tuning_machine_line(const MachineTable& m) {
  const TuningProvenance& p = m.provenance;
  return "{\"type\":\"machine\",\"id\":" + json_string(m.id) + ",\"signature\":" + json_string(m.signature) +
         ",\"signature_text\":" + json_string(m.signature_text) + ",\"cpu\":" + json_string(m.machine.cpu) +
         ",\"isas\":" + json_string(m.machine.isas) + ",\"cores\":" + std::to_string(m.machine.cores) +
         ",\"l1d\":" + std::to_string(m.machine.l1d) + ",\"l2\":" + std::to_string(m.machine.l2) +
         ",\"l3\":" + std::to_string(m.machine.l3) + ",\"compiler\":" + json_string(p.compiler) +
         ",\"flags\":" + json_string(p.flags) + ",\"version\":" + json_string(p.version) +
         ",\"git_revision\":" + json_string(p.git_revision) + ",\"date\":" + json_string(p.date) +
         ",\"strategy\":" + json_string(p.strategy) + ",\"budget\":" + json_string(p.budget) +
         ",\"command\":" + json_string(p.command) + "}\n";
}

std::string tuning_entry_line(const std::string& machine_id, const TunedEntry& e, const std::string& shape) {
  auto b = [](bool x) { return x ? "true" : "false"; };
  return "{\"type\":\"entry\",\"machine\":" + json_string(machine_id) + ",\"shape\":" + json_string(shape) +
         ",\"dtype\":" + json_string(to_string(e.dtype)) + ",\"kv_dtype\":" + json_string(to_string(e.kv_dtype)) +
         ",\"d_k\":" + std::to_string(e.d_k) + ",\"causal\":" + b(e.causal) + ",\"decode\":" + b(e.decode) +
         ",\"gqa\":" + b(e.gqa) + ",\"log2_seq_q\":" + std::to_string(e.log2_seq_q) +
         ",\"log2_seq_kv\":" + std::to_string(e.log2_seq_kv) + ",\"kernel\":" + json_string(e.kernel) +
         ",\"isa\":" + json_string(e.isa) + ",\"block_q\":" + std::to_string(e.block_q) +
         ",\"block_kv\":" + std::to_string(e.block_kv) + ",\"threads\":" + std::to_string(e.threads) +
         ",\"kv_splits\":" + std::to_string(e.kv_splits) + ",\"micro\":" + std::to_string(e.micro) +
         ",\"gflops\":" + number_text("%.3f", e.gflops) + ",\"spread\":" + number_text("%.6f", e.spread) +
         ",\"tie\":" + b(e.tie) + "}\n";
}

std::string tuning_text(std::vector<MachineTable> machines) {
  std::string out = tuning_header_line();
  for (std::size_t i = 0; i < machines.size(); ++i) {
    MachineTable& m = machines[i];
    m.id = std::to_string(i);
    m.id.insert(0, 1, 'm');  // not "m" + ...: GCC 12's -Wrestrict misfires on that
    out += tuning_machine_line(m);
    for (std::size_t j = 0; j < m.entries.size(); ++j)
      out += tuning_entry_line(m.id, m.entries[j], j < m.shapes.size() ? m.shapes[j] : "");
  }
  return out;
}

bool same_machine(const MachineSignature& a, const MachineSignature& b) {
  return a.cpu == b.cpu && a.isas == b.isas && a.cores == b.cores && a.l1d == b.l1d && a.l2 == b.l2 && a.l3 == b.l3;
}

MachineMatch select_machine(const std::vector<MachineSignature>& candidates, const MachineSignature& here) {
  MachineMatch match;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (same_machine(candidates[i], here)) {
      match.index = static_cast<int>(i);
      match.how = "exact match";
      return match;
    }
  }
  auto log_ratio = [](double a, double b) {
    if (a <= 0 || b <= 0) return (a <= 0 && b <= 0) ? 0.0 : 1.0;
    return std::abs(std::log2(a / b));
  };
  double best_cache = 0, best_cores = 0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const MachineSignature& c = candidates[i];
    if (c.isas != here.isas) continue;
    const double cache = log_ratio(static_cast<double>(c.l1d), static_cast<double>(here.l1d)) +
                         log_ratio(static_cast<double>(c.l2), static_cast<double>(here.l2)) +
                         log_ratio(static_cast<double>(c.l3), static_cast<double>(here.l3));
    const double cores = log_ratio(c.cores, here.cores);
    if (match.index < 0 || cache < best_cache || (cache == best_cache && cores < best_cores)) {
      match.index = static_cast<int>(i);
      best_cache = cache;
      best_cores = cores;
    }
  }
  if (match.index >= 0) {
    match.how = "nearest: same ISA set, cache distance " + number_text("%.2f", best_cache) + ", core distance " +
                number_text("%.2f", best_cores);
  } else {
    match.how = candidates.empty() ? "no machine in the files" : "no machine with this ISA set (" + here.isas + ")";
  }
  return match;
}

void set_machine_signature_for_testing(const MachineSignature* m) {
  g_injected = m;
  rearm_tuned_tables();
}

}  // namespace detail
}  // namespace attune
