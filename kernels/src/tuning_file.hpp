// The run-time tuning file (JSON lines): its records read and written, and the rule that picks
// the machine whose table `auto` uses. Shared by the library's loader, `attune tune` (writer) and
// `attune tune-merge`.
#pragma once

#include <attune/tuned.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace attune::detail {

// The schema this build reads and writes (the "schema" field of the file's first record).
inline constexpr int kTuningSchema = 1;
// Larger files are refused unread: a tuning file holds one line per tuned key per machine.
inline constexpr std::size_t kTuningMaxBytes = std::size_t{64} << 20;

// Provenance of one machine's tune, as text (the fields of the log's provenance record).
struct TuningProvenance {
  std::string compiler, flags, version, git_revision, date, strategy, budget, command;
};

// One machine's table: its signature, the build it was measured with, and its entries.
struct MachineTable {
  std::string id;  // the file's name for the machine ("m0", ...)
  MachineSignature machine;
  std::string signature;       // build_signature() of the measuring build
  std::string signature_text;  // build_signature_text() of it
  TuningProvenance provenance;
  // Sorted by tuned_order, one per key. kernel and isa point at this build's static names.
  std::vector<TunedEntry> entries;
  std::vector<std::string> shapes;  // the shape each entry was tuned on (same order; may be "")
  // Entries naming a kernel, ISA or storage type this build does not know: dropped when read.
  std::size_t unknown = 0;
};

// Reads a tuning file. Throws IoError "<name>:<line>: <reason>" on anything malformed: bad JSON,
// nesting, a missing or mistyped field, a number out of range, a schema this build does not read,
// an entry of an undeclared machine. Within one machine, a later line for a key supersedes an
// earlier one (an online tune appended to the file).
std::vector<MachineTable> parse_tuning(const std::string& text, const std::string& name);

// The file's lines: the header record, then each machine and its entries.
std::string tuning_header_line();
std::string tuning_machine_line(const MachineTable& m);
std::string tuning_entry_line(const std::string& machine_id, const TunedEntry& e, const std::string& shape);
// A whole file: the header and the machines (renumbered m0, m1, ... in order).
std::string tuning_text(std::vector<MachineTable> machines);

// Same machine: every signature field equal.
bool same_machine(const MachineSignature& a, const MachineSignature& b);

// The machine whose table this one uses (docs/tuning.md): the first with an equal signature;
// else, among those with the same ISA set, the nearest by cache sizes (sum of |log2| ratios of
// L1d, L2 and L3; an unknown size on either side counts 1), then by |log2| of the core ratio,
// then the first listed; else none (index -1). `how` says which rule chose.
struct MachineMatch {
  int index = -1;
  std::string how;  // "exact match", "nearest: same ISA set, ...", or why none
};
MachineMatch select_machine(const std::vector<MachineSignature>& candidates, const MachineSignature& here);

// Tests: make machine_signature() return `m` (nullptr: the detected one again) and re-arm the
// run-time tables' machine selection. Not thread-safe against concurrent dispatch.
void set_machine_signature_for_testing(const MachineSignature* m);

}  // namespace attune::detail
