// The tuned tables: the run-time tuning files (ATTUNE_TUNING, load_tuning(), the per-user file)
// and the compiled-in header (attune_tuned.h, copied by CMake from ATTUNE_TUNED_CONFIG or
// tuned_default.h), their checks, and the lookup `auto` uses.
#include "tuned_impl.hpp"

#include <attune/kernel.hpp>

#include "attune_tuned.h"

#include <attune/error.hpp>

#include "tuning_file.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <vector>

namespace attune {
namespace {

bool entry_usable(const TunedEntry& e) {
  const Kernel* k = find_kernel(e.kernel);
  const auto isa = parse_isa(e.isa);
  if (k == nullptr || !isa) return false;
  const auto isas = runnable_isas(*k);
  if (std::find(isas.begin(), isas.end(), *isa) == isas.end()) return false;
  return e.block_q >= 0 && e.block_kv >= 0 && e.threads >= 0 && e.kv_splits >= 0 && e.micro >= micro_auto &&
         e.micro <= micro_wide;
}

// What dispatch reads, checked once per (re)arming: the run-time table chosen for this machine
// from the tuning files, then the compiled table (signature, then each entry's kernel and ISA).
struct Active {
  // Run-time files.
  std::vector<std::string> paths;    // the files asked for (ATTUNE_TUNING, load_tuning, default)
  std::vector<TunedEntry> runtime;   // usable entries of the chosen machine, sorted
  std::string runtime_summary;       // "" if no files were asked for
  // The compiled header.
  const TunedTable* table = nullptr;
  bool signature_ok = false;
  std::vector<TunedEntry> usable;  // in table order
  std::size_t refused = 0;
};

void check_compiled(Active& a, const TunedTable& table) {
  a.table = &table;
  if (table.signature.empty()) return;  // the default: no table
  if (table.signature != build_signature()) {
    std::fprintf(stderr,
                 "attune: warning: tuned table ignored: generated for build signature %.*s, this "
                 "build is %s (%s); re-run `attune tune` with this build\n",
                 static_cast<int>(table.signature.size()), table.signature.data(),
                 build_signature().c_str(), build_signature_text().c_str());
    return;
  }
  a.signature_ok = true;
  for (const TunedEntry& e : table.entries) {
    if (entry_usable(e)) {
      a.usable.push_back(e);
    } else {
      ++a.refused;
    }
  }
  if (a.refused > 0) {
    std::fprintf(stderr,
                 "attune: warning: tuned table: %zu of %zu entries name a kernel or ISA that "
                 "cannot run here; they are never used (defaults apply there)\n",
                 a.refused, table.entries.size());
  }
}

std::vector<std::string> split_paths(const std::string& list) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    const std::size_t colon = std::min(list.find(':', pos), list.size());
    if (colon > pos) out.push_back(list.substr(pos, colon - pos));
    pos = colon + 1;
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw IoError(path + ": is a directory, not a tuning file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > detail::kTuningMaxBytes) throw IoError(path + ": larger than a tuning file (" +
                                                             std::to_string(detail::kTuningMaxBytes) + " bytes)");
  }
  if (in.bad()) throw IoError(path + ": read error");
  return text;
}

// Reads the files, picks this machine's table (detail::select_machine over the machines of
// this build), merges the sections of that machine (earlier files win on a key), and keeps
// the entries that can run here. One warning per file that is unusable, one for the choice.
void load_runtime(Active& a) {
  if (a.paths.empty()) return;
  struct Section {
    detail::MachineTable table;
    std::string path;
  };
  std::vector<Section> sections;
  std::size_t warned = 0;  // the "no table for this machine" warning only if no other was given
  for (const std::string& path : a.paths) {
    std::vector<detail::MachineTable> machines;
    try {
      machines = detail::parse_tuning(read_file(path), path);
    } catch (const Error& e) {
      std::fprintf(stderr, "attune: warning: tuning file ignored: %s\n", e.what());
      ++warned;
      continue;
    }
    std::size_t foreign = 0, unknown = 0;
    std::string other_signature;
    for (detail::MachineTable& m : machines) {
      if (m.signature != build_signature()) {
        ++foreign;
        other_signature = m.signature;
        continue;
      }
      unknown += m.unknown;
      sections.push_back({std::move(m), path});
    }
    if (foreign > 0) {
      ++warned;
      std::fprintf(stderr,
                   "attune: warning: tuning file %s: %zu of %zu machine tables ignored: measured with build "
                   "signature %s, this build is %s (%s); re-run `attune tune` with this build\n",
                   path.c_str(), foreign, machines.size(), other_signature.c_str(), build_signature().c_str(),
                   build_signature_text().c_str());
    }
    if (unknown > 0) {
      ++warned;
      std::fprintf(stderr,
                   "attune: warning: tuning file %s: %zu entries name a kernel, ISA or storage type this build "
                   "does not know; they are never used\n",
                   path.c_str(), unknown);
    }
  }
  std::string files;
  for (const std::string& p : a.paths) files += (files.empty() ? "" : ":") + p;
  std::vector<MachineSignature> signatures;
  for (const Section& s : sections) signatures.push_back(s.table.machine);
  const detail::MachineMatch match = detail::select_machine(signatures, machine_signature());
  if (match.index < 0) {
    a.runtime_summary = "none for this machine (" + match.how + ") in " + files;
    if (warned == 0)
      std::fprintf(stderr, "attune: warning: tuning files %s hold no table for this machine (%s): %s\n",
                   files.c_str(), to_string(machine_signature()).c_str(), match.how.c_str());
    return;
  }
  const Section& chosen = sections[static_cast<std::size_t>(match.index)];
  std::vector<TunedEntry> merged;
  std::size_t refused = 0;
  for (const Section& s : sections) {
    if (!detail::same_machine(s.table.machine, chosen.table.machine)) continue;
    for (const TunedEntry& e : s.table.entries) {
      const bool have = std::any_of(merged.begin(), merged.end(),
                                    [&](const TunedEntry& m) { return !tuned_order(m, e) && !tuned_order(e, m); });
      if (have) continue;
      if (!entry_usable(e)) {
        ++refused;
        continue;
      }
      merged.push_back(e);
    }
  }
  std::stable_sort(merged.begin(), merged.end(), tuned_order);
  if (refused > 0) {
    std::fprintf(stderr,
                 "attune: warning: tuning file %s: %zu entries name an ISA that cannot run here; they are "
                 "never used\n",
                 chosen.path.c_str(), refused);
  }
  const detail::TuningProvenance& p = chosen.table.provenance;
  const MachineSignature& m = chosen.table.machine;
  a.runtime = std::move(merged);
  a.runtime_summary = std::to_string(a.runtime.size()) + " entries" +
                      (refused > 0 ? " (+" + std::to_string(refused) + " refused)" : "") + " from " + chosen.path +
                      ", machine " + chosen.table.id + " (" + match.how + "), measured " + p.date + " on " + m.cpu +
                      " (" + std::to_string(m.cores) + " cores, " + m.isas + "), strategy " + p.strategy +
                      ", attune " + p.version + " " + p.git_revision;
}

std::mutex g_mutex;
const TunedTable* g_override = nullptr;
bool g_paths_set = false;  // by load_tuning(); else the environment decides
std::vector<std::string> g_paths;
std::shared_ptr<const Active> g_active;

std::vector<std::string> paths_from_environment() {
  if (const char* env = std::getenv("ATTUNE_TUNING")) return split_paths(env);
  const std::string user = default_tuning_path();
  std::error_code ec;
  if (!user.empty() && std::filesystem::exists(user, ec)) return {user};
  return {};
}

std::shared_ptr<const Active> active() {
  std::lock_guard lock(g_mutex);
  if (!g_active) {
    auto a = std::make_shared<Active>();
    a->paths = g_paths_set ? g_paths : paths_from_environment();
    load_runtime(*a);
    check_compiled(*a, g_override != nullptr ? *g_override : compiled_tuned_table());
    g_active = std::move(a);
  }
  return g_active;
}

std::uint64_t fnv1a64(std::string_view text) {
  std::uint64_t h = 14695981039346656037ull;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

TunedKey tuned_key(const Problem& p) {
  TunedKey k;
  k.d_k = p.d_k;
  k.causal = p.causal;
  k.decode = is_decode(p);
  k.gqa = p.heads_q != p.heads_kv;
  k.log2_seq_q = log2_bucket(p.seq_q);
  // A sliding window bounds the keys each query tile visits: the key range that sets the best
  // tiles is the band's width, not the cache's length (window 512 at seq 8192 runs like 512).
  std::int64_t keys = p.seq_kv;
  if (p.window > 0 && p.window <= p.seq_kv) keys = p.causal ? p.window : std::min(p.seq_kv, 2 * p.window - 1);
  k.log2_seq_kv = log2_bucket(keys);
  k.dtype = p.dtype;
  k.kv_dtype = p.kv_type();
  return k;
}

std::string build_signature_text() {
  std::string s = "kernels=";
  bool first = true;
  for (const Kernel* k : kernels()) {
    if (!first) s += ',';
    s += k->name();
    first = false;
  }
  s += ";isas=";
  first = true;
  for (Isa isa : compiled_isas()) {
    if (!first) s += ',';
    s += to_string(isa);
    first = false;
  }
  return s;
}

std::string build_signature() {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a64(build_signature_text())));
  return std::string("fnv1a64:") + hex;
}

const TunedTable& compiled_tuned_table() {
#ifdef ATTUNE_TUNED_MACHINES  // a fleet header: this machine's table
  static const TunedTable table =
      detail::fleet_table(std::span<const TunedMachine>(tuned_data::kMachines), tuned_data::kSignature);
#else
  static const TunedTable table{std::span<const TunedEntry>(tuned_data::kEntries),
                                tuned_data::kProvenance, tuned_data::kSignature};
#endif
  return table;
}

namespace {

std::string compiled_summary(const Active& a) {
  const TunedTable& t = *a.table;
  if (t.signature.empty()) return "none (built-in defaults)";
  const TunedProvenance& p = t.provenance;
  if (!a.signature_ok) {
    return "ignored (signature " + std::string(t.signature) + " != this build's " +
           build_signature() + "); built-in defaults";
  }
  std::string s = std::to_string(a.usable.size()) + " entries";
  if (a.refused > 0) s += " (+" + std::to_string(a.refused) + " refused)";
  s += ", measured " + std::string(p.date) + " on " + p.cpu + " (" + p.cores + " cores, " + p.isas +
       "), strategy " + p.strategy + ", budget " + p.budget + ", attune " + p.version + " " +
       p.git_revision;
  if (!t.machine.empty()) s += "; " + t.machine;
  return s;
}

}  // namespace

std::string tuned_table_summary() {
  const auto a = active();
  const std::string compiled = compiled_summary(*a);
  if (a->paths.empty()) return compiled;
  return "run-time: " + a->runtime_summary + "; then compiled: " + compiled;
}

bool load_tuning(const std::string& paths) {
  {
    std::lock_guard lock(g_mutex);
    g_paths_set = true;
    g_paths = split_paths(paths);
    g_active.reset();
  }
  return !active()->runtime.empty();
}

namespace detail {

std::optional<TunedEntry> tuned_entry(const Problem& problem, std::optional<Isa> forced_isa) {
  const auto a = active();
  const TunedKey key = tuned_key(problem);
  auto usable = [&](const TunedEntry& e) {
    // Kernel and ISA exist here (checked once); whether they take these types is per problem.
    const Isa isa = *parse_isa(e.isa);
    return (!forced_isa || isa == *forced_isa) && find_kernel(e.kernel)->supports(problem, isa);
  };
  // Precedence: the run-time table for this machine, then the compiled one; for a key neither
  // has an exact-bucket entry for, an online winner comes before their nearest bucket.
  const TunedEntry* e = nearest_entry(a->runtime, key, usable);
  if (e == nullptr) e = nearest_entry(a->usable, key, usable);
  const bool exact = e != nullptr && e->log2_seq_q == key.log2_seq_q && e->log2_seq_kv == key.log2_seq_kv;
  if (!exact && !forced_isa) {
    if (std::optional<TunedEntry> online = online_entry(key)) return online;
  }
  if (e != nullptr) return *e;
  return std::nullopt;
}

bool has_exact_entry(const Problem& problem) {
  const auto a = active();
  const TunedKey key = tuned_key(problem);
  auto usable = [&](const TunedEntry& e) {
    return e.log2_seq_q == key.log2_seq_q && e.log2_seq_kv == key.log2_seq_kv &&
           find_kernel(e.kernel)->supports(problem, *parse_isa(e.isa));
  };
  return nearest_entry(a->runtime, key, usable) != nullptr || nearest_entry(a->usable, key, usable) != nullptr;
}

void use_tuned_table(const TunedTable* table) {
  std::lock_guard lock(g_mutex);
  g_override = table;
  g_active.reset();
}

TunedTable fleet_table(std::span<const TunedMachine> machines, std::string_view signature) {
  std::vector<MachineSignature> signatures;
  for (const TunedMachine& m : machines) signatures.push_back({m.cpu, m.isas, m.cores, m.l1d, m.l2, m.l3});
  const MachineMatch match = select_machine(signatures, machine_signature());
  const std::string of = " of " + std::to_string(machines.size());
  if (match.index < 0) {
    // No table for this machine: an empty one of this signature (so "ignored" is not claimed).
    TunedTable none{{}, machines.empty() ? TunedProvenance{} : machines.front().provenance, signature,
                    "fleet header: none" + of + " machines (" + match.how + ")"};
    return none;
  }
  const TunedMachine& m = machines[static_cast<std::size_t>(match.index)];
  return TunedTable{m.entries, m.provenance, signature,
                    "fleet header: machine " + std::to_string(match.index) + of + " (" + match.how + ")"};
}

void use_environment_tuning() {
  std::lock_guard lock(g_mutex);
  g_paths_set = false;
  g_active.reset();
}

void rearm_tuned_tables() {
  std::lock_guard lock(g_mutex);
  g_active.reset();
}

}  // namespace detail
}  // namespace attune
