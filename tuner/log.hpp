// The tuner's JSON lines log: provenance, every measurement as it finishes and the chosen
// configs (also the resume cache); its records written as lines and read back.
#pragma once

#include "json.hpp"
#include "tuner.hpp"

#include <attune/tuned.hpp>

#include <map>
#include <string>
#include <vector>

namespace attune::tuner {

struct Log {
  std::vector<JsonObject> records;
  std::string complete_text;     // the complete lines, as read
  bool dropped_partial = false;  // an interrupted last line (no newline, not valid) was dropped
  bool missing_newline = false;  // the last line is complete but lacks its '\n' (kept)
};
// Reads a log. A last line without its newline is an interrupted write and is dropped; any
// other malformed line is an IoError "<name>:<line>: <reason>".
Log parse_log(const std::string& text, const std::string& name);
Log read_log(const std::string& path);

// Lines (with '\n') of the log.
std::string provenance_line(const std::string& strategy, const std::string& budget,
                            const std::string& command);
std::string measurement_line(const Problem& problem, const Measurement& m);
std::string choice_line(const Problem& problem, const SearchResult& r, const std::string& strategy);

// The provenance record the log starts with; IoError if there is none.
const JsonObject& log_provenance(const Log& log);
// The machine signature a provenance record holds (logs written before it had one: the "isas"
// and "cores" fields, caches unknown).
MachineSignature log_machine(const JsonObject& provenance);
// Measurements of one shape in the log (a later line for a candidate supersedes earlier ones).
std::map<std::string, Measurement> log_measurements(const Log& log, const Problem& problem);
// Shapes (Problem::to_string()) that have a choice in the log.
std::vector<std::string> log_choices(const Log& log);

// A shape's choice as the log records it (the last one per shape).
struct ChoiceRecord {
  Problem problem;
  Candidate candidate;
  std::size_t evaluations = 0;  // unique candidates measured
  std::size_t space = 0;        // the space's size
  double gflops = 0.0;          // at tuning time
};
// Shape name -> its last choice.
std::map<std::string, ChoiceRecord> log_choice_records(const Log& log);

// The problem and the candidate of a measurement or choice record; IoError on bad fields.
Problem record_problem(const JsonObject& record);
Candidate record_candidate(const JsonObject& record);

}  // namespace attune::tuner
