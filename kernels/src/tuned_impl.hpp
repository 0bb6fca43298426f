// The tuned tables as dispatch sees them: the run-time table chosen for this machine and the
// compiled table, once checked and their unusable entries (ISA not runnable here, kernel not
// registered) set aside.
#pragma once

#include <attune/attention.hpp>
#include <attune/isa.hpp>
#include <attune/kernel.hpp>
#include <attune/tuned.hpp>

#include <optional>
#include <span>

namespace attune::detail {

// The nearest usable entry for a problem in a sorted table: exact bucket, else the nearest in
// (log2 seq_q, log2 seq_kv) with the same exact keys (ties: the first in table order), else
// nullptr. Never an entry of other storage types: a config tuned for fp32 says nothing about
// bf16. `usable` filters entries (runnable ISA, registered kernel, Kernel::supports).
template <class Usable>
const TunedEntry* nearest_entry(std::span<const TunedEntry> entries, const TunedKey& key,
                                Usable&& usable) {
  const TunedEntry* best = nullptr;
  long best_distance = 0;
  for (const TunedEntry& e : entries) {
    if (e.dtype != key.dtype || e.kv_dtype != key.kv_dtype || e.d_k != key.d_k ||
        e.causal != key.causal || e.decode != key.decode || e.gqa != key.gqa)
      continue;
    if (!usable(e)) continue;
    const long dq = e.log2_seq_q - key.log2_seq_q, dkv = e.log2_seq_kv - key.log2_seq_kv;
    const long distance = dq * dq + dkv * dkv;
    if (best == nullptr || distance < best_distance) {
      best = &e;
      best_distance = distance;
    }
  }
  return best;
}

// The entry `auto` uses for a problem: from the run-time table for this machine, else from the
// compiled table; nullopt if neither has an entry with these exact keys and storage types whose
// kernel takes the problem on its ISA (and is of the forced ISA). Loads and checks the tables and
// warns on first use. A copy: a concurrent load_tuning() may replace the tables.
std::optional<TunedEntry> tuned_entry(const Problem& problem, std::optional<Isa> forced_isa);

// Replaces the compiled table dispatch reads (nullptr: back to the compiled one) and re-arms the
// start-up checks and their warnings. For tests.
void use_tuned_table(const TunedTable* table);
// Re-arms the checks: the next dispatch reloads the run-time files and re-selects the machine.
void rearm_tuned_tables();
// The highest-ranked kernel with a runnable build that takes the problem (on `isa` if given):
// `auto` without a table.
const Kernel* best_kernel_for(const Problem& problem, std::optional<Isa> isa);

// True if the run-time or compiled table has an entry of the problem's exact keys and buckets
// that can run it (the key is tuned: online tuning leaves it alone).
bool has_exact_entry(const Problem& problem);

// Online tuning (online.cpp). online_tune: in online mode, on the first call of a plain problem
// with `auto` and no forced ISA whose key has no exact entry, races candidates on q, k, v (the
// caller's tensors, read only) and records the winner; concurrent first calls of the key wait
// for the one race. Returns true if the key has an online winner (resolve again).
bool online_tune(const Problem& problem, const void* q, const void* k, const void* v, const Options& options);
// The online winner of a key, if online mode is on and its race is done.
std::optional<TunedEntry> online_entry(const TunedKey& key);

// The table of a fleet header (kMachines) for this machine (machine_signature(), the rule of
// select_machine): its entries and provenance, `machine` saying which and why; no entries if none.
TunedTable fleet_table(std::span<const TunedMachine> machines, std::string_view signature);

// Forgets load_tuning(): the next dispatch loads the files the environment names (ATTUNE_TUNING,
// else the per-user file). For tests.
void use_environment_tuning();

}  // namespace attune::detail
