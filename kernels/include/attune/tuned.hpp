// The tuned table: per-shape choices written by `attune tune`, as a generated header
// (attune_tuned.h) compiled in, or as a tuning file loaded at run time (load_tuning(),
// ATTUNE_TUNING); `auto` dispatch reads them (see resolve() and docs/tuning.md).
#pragma once

#include <attune/problem.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attune {

// Decoding, as the tuned table keys it (TunedEntry::decode) and the tuner compares shapes: at
// most this many query rows per sequence (one new token, or a few speculative ones).
inline constexpr std::int64_t kDecodeMaxSeqQ = 16;
inline bool is_decode(const Problem& problem) { return problem.seq_q <= kDecodeMaxSeqQ; }

// One row of a tuned table. Exact keys (d_k, causal, decode, gqa, dtype, kv_dtype) must match;
// the buckets are floor(log2(seq)), so bucket b holds lengths in [2^b, 2^(b+1)).
struct TunedEntry {
  // keys
  std::int64_t d_k;
  bool causal;
  bool decode;  // is_decode(): seq_q <= kDecodeMaxSeqQ
  bool gqa;     // heads_q != heads_kv
  int log2_seq_q;
  int log2_seq_kv;
  // the choice
  const char* kernel;
  const char* isa;
  std::int64_t block_q;  // 0: the kernel's default
  std::int64_t block_kv;
  int threads;    // 0: all cores
  int kv_splits;  // 0: the kernel decides
  int micro;      // Config::micro: a MicroTile (0 auto, 1 narrow, 2 wide register tile)
  // for readers
  double gflops;  // median of the chosen config at tuning time
  double spread;  // its relative spread (median absolute deviation / median)
  bool tie;       // a simpler config was within the noise and was taken
  // Exact keys too: the storage types the entry was measured with (Problem::dtype, kv_type()).
  // Last, with defaults, so that a header written before they existed still compiles, its
  // rows being what they were measured as: fp32 entries.
  Dtype dtype = Dtype::fp32;
  Dtype kv_dtype = Dtype::fp32;
};

// Where a table came from: the measuring machine and build, as text.
struct TunedProvenance {
  const char* cpu;
  const char* isas;
  const char* cores;
  const char* compiler;
  const char* flags;
  const char* version;
  const char* git_revision;
  const char* date;  // of the measurement, never of the build
  const char* strategy;
  const char* budget;
  const char* command;
};

struct TunedTable {
  // A constructor, not an aggregate, so that {entries, provenance, signature} (the form before
  // `machine` existed) stays warning-free.
  TunedTable(std::span<const TunedEntry> entries_ = {}, TunedProvenance provenance_ = {},
             std::string_view signature_ = {}, std::string machine_ = {})
      : entries(entries_), provenance(provenance_), signature(signature_), machine(std::move(machine_)) {}
  std::span<const TunedEntry> entries;  // sorted by tuned_order
  TunedProvenance provenance;
  std::string_view signature;  // build_signature() of the measuring build; empty: no table
  std::string machine;         // a fleet header: which of its machines this is, and why ("" otherwise)
};

// One machine's table in a fleet header (`attune tune-merge --header`): the header defines
// ATTUNE_TUNED_MACHINES and kMachines, and start-up picks the machine as for tuning files.
struct TunedMachine {
  const char* cpu;
  const char* isas;
  int cores;
  std::int64_t l1d, l2, l3;
  std::span<const TunedEntry> entries;  // sorted by tuned_order
  TunedProvenance provenance;
};

// Exact keys and buckets of a problem.
struct TunedKey {
  std::int64_t d_k = 0;
  bool causal = false;
  bool decode = false;
  bool gqa = false;
  int log2_seq_q = 0;
  int log2_seq_kv = 0;
  Dtype dtype = Dtype::fp32;
  Dtype kv_dtype = Dtype::fp32;
};
TunedKey tuned_key(const Problem& problem);

// floor(log2(length)) for length >= 1.
constexpr int log2_bucket(std::int64_t length) {
  int b = 0;
  while (length > 1) {
    length >>= 1;
    ++b;
  }
  return b;
}

// Strict weak order of entries (keys, then buckets): the table's sort order, checked by a
// static_assert in every generated header.
constexpr bool tuned_order(const TunedEntry& a, const TunedEntry& b) {
  if (a.dtype != b.dtype) return a.dtype < b.dtype;
  if (a.kv_dtype != b.kv_dtype) return a.kv_dtype < b.kv_dtype;
  if (a.d_k != b.d_k) return a.d_k < b.d_k;
  if (a.causal != b.causal) return b.causal;
  if (a.decode != b.decode) return b.decode;
  if (a.gqa != b.gqa) return b.gqa;
  if (a.log2_seq_q != b.log2_seq_q) return a.log2_seq_q < b.log2_seq_q;
  return a.log2_seq_kv < b.log2_seq_kv;
}

// "fnv1a64:<16 hex digits>" of the registered kernel names and compiled ISAs: a table generated
// by another build (different kernels or ISAs) is ignored.
std::string build_signature();
// The text hashed by build_signature(), e.g. "kernels=naive,blocked,...;isas=avx512,...".
std::string build_signature_text();

// The table compiled into this build (the default has no entries).
const TunedTable& compiled_tuned_table();
// One line for `attune info`: which table `auto` reads (run-time file and machine, compiled
// header, or none), its entry count, source machine, date, strategy, or why it is unused.
std::string tuned_table_summary();

// The machine a table was measured on, as run-time selection compares machines.
struct MachineSignature {
  std::string cpu;   // cpu_model()
  std::string isas;  // this build's ISAs the CPU runs (no ATTUNE_ISA cap), best first, space-separated
  int cores = 0;     // hardware threads
  std::int64_t l1d = 0, l2 = 0, l3 = 0;  // cache sizes in bytes (L1 data and L2 of one core, L3); 0: unknown
};
// This machine's, detected once (caches from /sys/devices/system/cpu, else sysconf).
const MachineSignature& machine_signature();
// "AMD EPYC 9R14 | avx512 avx2 sse4_2 scalar | 2 cores | L1d 32 KiB, L2 1 MiB, L3 32 MiB".
std::string to_string(const MachineSignature& m);

// Run-time tuning files (JSON lines, schema in docs/tuning.md), written by `attune tune --tuning`
// and joined for a fleet by `attune tune-merge`. `paths` is a ':'-separated list (earlier files
// win on the same machine and key) that replaces the files loaded before; "" unloads them. A
// file that cannot be read, is malformed, or comes from another build is skipped with one
// warning on stderr. Of the machines the files hold, `auto` uses the one that matches this
// machine (machine_signature()), else the nearest with the same ISA set, else none (see
// docs/tuning.md). Returns true if a run-time table for this machine is now in use.
// Precedence for `auto`: explicit config fields > the run-time table > the compiled header >
// the built-in defaults. Without a call, the first dispatch loads $ATTUNE_TUNING, or if that is
// unset the per-user file default_tuning_path() when it exists (ATTUNE_TUNING= loads none).
bool load_tuning(const std::string& paths);
// Online tuning on first use (opt-in; cuDNN's benchmark mode is the model). In `online` mode the
// first attention() call of a plain problem whose table key has no exact-bucket entry (in the
// run-time or compiled table) races the default, the nearest table entry and every kernel's
// default config per thread count (1, all) on its best ISA, the smart strategy's first stage;
// each candidate is first checked against the `naive` kernel on a small instance of the same
// kind within twice the reference's bound, and a challenger must beat the default by 2%. The
// winner serves the key for the rest of the process (and is appended to `save_path` if set).
// Concurrent first calls of one key race once; races run one at a time. Cost: candidates start
// only while under `budget_ms` (and if their check ran within 4x the default's), so a race takes
// at most budget_ms plus one call of a started candidate (docs/tuning.md). Results stay within the kernels' documented bounds: only verified
// candidates run. Environment: ATTUNE_TUNE=online, ATTUNE_TUNE_BUDGET_MS, ATTUNE_TUNE_SAVE.
enum class TuningMode { table, online };
struct OnlineTuning {
  double budget_ms = 200.0;
  std::string save_path;  // "": keep winners in the process only
};
void set_tuning(TuningMode mode, const OnlineTuning& online = {});
TuningMode tuning_mode();
struct OnlineStats {
  std::size_t races = 0;       // keys raced
  std::size_t candidates = 0;  // candidates timed
  std::size_t rejected = 0;    // failed the check against naive (never run on the caller's data)
  std::size_t changed = 0;     // races whose winner is not the default
  double total_ms = 0.0, max_ms = 0.0;  // wall time of the races, in total and the longest
};
OnlineStats online_tuning_stats();

// $XDG_CONFIG_HOME/attune/tuning.json, else $HOME/.config/attune/tuning.json ("" if neither is set).
std::string default_tuning_path();

}  // namespace attune
