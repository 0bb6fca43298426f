// The tuner's files: the JSON lines log (provenance, every measurement as it finishes, the
// chosen configs; also the resume cache) and the generated attune_tuned.h.
#pragma once

#include "tuner.hpp"

#include <map>
#include <string>
#include <vector>

namespace attune::tuner {

// A JSON value as the log holds it: null, bool, number, string, or an array of numbers.
struct JsonValue {
  enum class Kind { null, boolean, number, string, array } kind = Kind::null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<double> array;
};
using JsonObject = std::map<std::string, JsonValue>;

// One JSON object per line; throws IoError naming the column on malformed text.
JsonObject parse_json_object(const std::string& line);

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

// attune_tuned.h from a log: its first provenance and the last choice per shape; one entry per
// table key (shapes sharing a key: the one with the most FLOPs wins). Deterministic: the same
// log text gives the same bytes.
std::string generate_header(const Log& log, const std::string& json_name);

// Writes through a temporary file in the same directory and a rename; IoError on failure.
void write_atomic(const std::string& path, const std::string& text);
// Appends and flushes one line; IoError on failure.
void append_text(const std::string& path, const std::string& text);

}  // namespace attune::tuner
