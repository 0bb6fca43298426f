// The tuned table: the compiled-in header (attune_tuned.h, copied by CMake from
// ATTUNE_TUNED_CONFIG or tuned_default.h), its signature check, and the lookup `auto` uses.
#include "tuned_impl.hpp"

#include <attune/kernel.hpp>

#include "attune_tuned.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <vector>

namespace attune {
namespace {

// The table dispatch reads, checked once: signature, then each entry's kernel and ISA.
struct Active {
  const TunedTable* table = nullptr;
  bool signature_ok = false;
  std::vector<TunedEntry> usable;  // in table order
  std::size_t refused = 0;
};

bool entry_usable(const TunedEntry& e) {
  const Kernel* k = find_kernel(e.kernel);
  const auto isa = parse_isa(e.isa);
  if (k == nullptr || !isa) return false;
  const auto isas = runnable_isas(*k);
  if (std::find(isas.begin(), isas.end(), *isa) == isas.end()) return false;
  return e.block_q >= 0 && e.block_kv >= 0 && e.threads >= 0 && e.kv_splits >= 0 && e.micro >= micro_auto &&
         e.micro <= micro_wide;
}

Active check(const TunedTable& table) {
  Active a;
  a.table = &table;
  if (table.signature.empty()) return a;  // the default: no table
  if (table.signature != build_signature()) {
    std::fprintf(stderr,
                 "attune: warning: tuned table ignored: generated for build signature %.*s, this "
                 "build is %s (%s); re-run `attune tune` with this build\n",
                 static_cast<int>(table.signature.size()), table.signature.data(),
                 build_signature().c_str(), build_signature_text().c_str());
    return a;
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
  return a;
}

std::mutex g_mutex;
const TunedTable* g_override = nullptr;
bool g_checked = false;
Active g_active;

const Active& active() {
  std::lock_guard lock(g_mutex);
  if (!g_checked) {
    g_active = check(g_override != nullptr ? *g_override : compiled_tuned_table());
    g_checked = true;
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
  static const TunedTable table{std::span<const TunedEntry>(tuned_data::kEntries),
                                tuned_data::kProvenance, tuned_data::kSignature};
  return table;
}

std::string tuned_table_summary() {
  const Active& a = active();
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
  return s;
}

namespace detail {

const TunedEntry* tuned_entry(const Problem& problem, std::optional<Isa> forced_isa) {
  const Active& a = active();
  if (a.usable.empty()) return nullptr;
  return nearest_entry(a.usable, tuned_key(problem), [&](const TunedEntry& e) {
    // Kernel and ISA exist here (checked once); whether they take these types is per problem.
    const Isa isa = *parse_isa(e.isa);
    return (!forced_isa || isa == *forced_isa) && find_kernel(e.kernel)->supports(problem, isa);
  });
}

void use_tuned_table(const TunedTable* table) {
  std::lock_guard lock(g_mutex);
  g_override = table;
  g_checked = false;
}

}  // namespace detail
}  // namespace attune
