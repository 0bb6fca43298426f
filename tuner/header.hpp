// The generated attune_tuned.h: the tuned table `auto` dispatch reads, from a tuning log.
#pragma once

#include "log.hpp"
#include "tuning_file.hpp"

#include <string>
#include <vector>

namespace attune::tuner {

// One table row per key from a log's last choice per shape (shapes sharing a key: the one with
// the most FLOPs wins), sorted by tuned_order. kernel and isa point into the log's records.
struct TableRow {
  TunedEntry entry;
  std::string shape, runner_up;
};
std::vector<TableRow> table_rows(const Log& log);

// The log's machine (from its provenance) and its table: the same rows as the header. Entries
// point into the log.
detail::MachineTable log_machine_table(const Log& log);
// The run-time tuning file of a log: one machine, the same rows as generate_header().
std::string generate_tuning(const Log& log);

// A fleet header: one table per machine (kMachines, ATTUNE_TUNED_MACHINES defined), compiled into
// one build and chosen at start-up by the machine signature (detail::select_machine). IoError if
// the machines were measured with different builds. Deterministic.
std::string generate_fleet_header(const std::vector<detail::MachineTable>& machines, const std::string& source);

// attune_tuned.h from a log: its first provenance and the last choice per shape; one entry per
// table key (shapes sharing a key: the one with the most FLOPs wins). Deterministic: the same
// log text gives the same bytes.
std::string generate_header(const Log& log, const std::string& json_name);

}  // namespace attune::tuner
