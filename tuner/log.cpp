// The JSON lines log: records written as lines (provenance, measurements, choices), read back
// and checked line by line, and the queries --resume and the header generator make of them.
#include "log.hpp"

#include "files.hpp"

#include <attune/error.hpp>
#include <attune/tuned.hpp>
#include <attune/version.hpp>

#include <chrono>
#include <ctime>
#include <thread>

namespace attune::tuner {
namespace {

std::string problem_fields(const Problem& p) {
  return "\"shape\":" + json_string(p.to_string()) + ",\"batch\":" + std::to_string(p.batch) +
         ",\"heads_q\":" + std::to_string(p.heads_q) + ",\"heads_kv\":" + std::to_string(p.heads_kv) +
         ",\"seq_q\":" + std::to_string(p.seq_q) + ",\"seq_kv\":" + std::to_string(p.seq_kv) +
         ",\"d_k\":" + std::to_string(p.d_k) + ",\"d_v\":" + std::to_string(p.d_v) +
         ",\"causal\":" + (p.causal ? "true" : "false") + ",\"dtype\":" + json_string(attune::to_string(p.dtype)) +
         ",\"kv_dtype\":" + json_string(attune::to_string(p.kv_type()));
}

std::string candidate_fields(const Candidate& c) {
  return "\"candidate\":" + json_string(c.key()) + ",\"kernel\":" + json_string(c.kernel) +
         ",\"isa\":" + json_string(attune::to_string(c.isa)) + ",\"block_q\":" + std::to_string(c.config.block_q) +
         ",\"block_kv\":" + std::to_string(c.config.block_kv) + ",\"threads\":" +
         std::to_string(c.config.threads) + ",\"kv_splits\":" + std::to_string(c.config.kv_splits) +
         ",\"micro\":" + std::to_string(c.config.micro);
}

double gflops(const Problem& p, double seconds) { return seconds > 0 ? p.flops() / seconds * 1e-9 : 0.0; }

// A storage type field; logs written before the dtype was a dimension lack it: `fallback`.
Dtype dtype_of(const JsonObject& o, const char* name, Dtype fallback) {
  if (!o.count(name)) return fallback;
  const std::string& text = json_str(o, name);
  const auto d = parse_dtype(text);
  if (!d) throw IoError(std::string("field \"") + name + "\" = \"" + text + "\" is not fp32, bf16 or fp16");
  return *d;
}

// Checks the fields a record type needs, so a bad line fails when read, not later.
void validate_record(const JsonObject& o) {
  const std::string& type = json_str(o, "type");
  if (type == "provenance") {
    for (const char* f : {"signature", "signature_text", "cpu", "isas", "cores", "compiler", "flags",
                          "version", "git_revision", "date", "strategy", "budget", "command"})
      json_str(o, f);
  } else if (type == "measurement") {
    record_problem(o);
    record_candidate(o);
    json_bool(o, "verified");
    json_field(o, "samples", JsonValue::Kind::array);
  } else if (type == "choice") {
    record_problem(o);
    record_candidate(o);
    json_number(o, "gflops");
    json_number(o, "spread");
    json_bool(o, "tie");
  } else {
    throw IoError("unknown record type \"" + type + "\"");
  }
}

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

Problem record_problem(const JsonObject& o) {
  Problem p;
  p.batch = json_integer(o, "batch");
  p.heads_q = json_integer(o, "heads_q");
  p.heads_kv = json_integer(o, "heads_kv");
  p.seq_q = json_integer(o, "seq_q");
  p.seq_kv = json_integer(o, "seq_kv");
  p.d_k = json_integer(o, "d_k");
  p.d_v = json_integer(o, "d_v");
  p.causal = json_bool(o, "causal");
  p.dtype = dtype_of(o, "dtype", Dtype::fp32);
  if (const Dtype kv = dtype_of(o, "kv_dtype", p.dtype); kv != p.dtype) p.kv_dtype = kv;
  try {
    p.validate();
  } catch (const InvalidArgument& e) {
    throw IoError(e.what());
  }
  return p;
}

Candidate record_candidate(const JsonObject& o) {
  Candidate c;
  c.kernel = json_str(o, "kernel");
  const auto isa = parse_isa(json_str(o, "isa"));
  if (!isa) throw IoError("unknown isa \"" + json_str(o, "isa") + "\"");
  c.isa = *isa;
  c.config.block_q = json_integer(o, "block_q");
  c.config.block_kv = json_integer(o, "block_kv");
  c.config.threads = static_cast<int>(json_integer(o, "threads"));
  c.config.kv_splits = static_cast<int>(json_integer(o, "kv_splits"));
  // Logs written before the micro-kernel became a parameter lack it: the automatic choice.
  if (o.count("micro")) c.config.micro = static_cast<int>(json_integer(o, "micro"));
  return c;
}

Log parse_log(const std::string& text, const std::string& name) {
  Log log;
  std::size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    ++line_no;
    const std::size_t nl = text.find('\n', pos);
    const bool complete = nl != std::string::npos;
    const std::string line = text.substr(pos, complete ? nl - pos : std::string::npos);
    const std::size_t next = complete ? nl + 1 : text.size();
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      if (complete) log.complete_text.append(text, pos, next - pos);
      pos = next;
      continue;
    }
    try {
      JsonObject o = parse_json_object(line);
      validate_record(o);
      if (!complete) {  // valid but unterminated: keep it, the writer was cut before '\n'
        log.records.push_back(std::move(o));
        log.complete_text += line + "\n";
        log.missing_newline = true;
        break;
      }
      log.records.push_back(std::move(o));
      log.complete_text.append(text, pos, next - pos);
    } catch (const IoError& e) {
      if (!complete) {
        log.dropped_partial = true;
        break;
      }
      throw IoError(name + ":" + std::to_string(line_no) + ": " + e.what());
    }
    pos = next;
  }
  return log;
}

Log read_log(const std::string& path) { return parse_log(read_text(path), path); }

std::string provenance_line(const std::string& strategy, const std::string& budget,
                            const std::string& command) {
  std::string isas;
  for (Isa i : runnable_isas()) {
    if (!isas.empty()) isas += ' ';
    isas += attune::to_string(i);
  }
  const MachineSignature& m = machine_signature();
  return "{\"type\":\"provenance\",\"signature\":" + json_string(build_signature()) +
         ",\"signature_text\":" + json_string(build_signature_text()) + ",\"cpu\":" + json_string(cpu_model()) +
         ",\"isas\":" + json_string(isas) + ",\"cores\":" + json_string(std::to_string(std::thread::hardware_concurrency())) +
         ",\"compiler\":" + json_string(compiler()) + ",\"flags\":" + json_string(compile_flags()) +
         ",\"version\":" + json_string(version()) + ",\"git_revision\":" + json_string(git_revision()) +
         ",\"date\":" + json_string(utc_now()) + ",\"strategy\":" + json_string(strategy) +
         ",\"budget\":" + json_string(budget) + ",\"command\":" + json_string(command) +
         ",\"isa_set\":" + json_string(m.isas) + ",\"l1d\":" + std::to_string(m.l1d) +
         ",\"l2\":" + std::to_string(m.l2) + ",\"l3\":" + std::to_string(m.l3) + "}\n";
}

std::string measurement_line(const Problem& p, const Measurement& m) {
  std::string samples;
  for (double s : m.samples) {
    if (!samples.empty()) samples += ',';
    samples += number_text("%.9g", s);
  }
  return "{\"type\":\"measurement\"," + problem_fields(p) + "," + candidate_fields(m.candidate) +
         ",\"verified\":" + (m.verified ? "true" : "false") + ",\"error\":" + json_string(m.error) +
         ",\"samples\":[" + samples + "],\"median\":" + number_text("%.9g", m.median()) +
         ",\"min\":" + number_text("%.9g", m.min()) + ",\"spread\":" + number_text("%.6f", m.spread()) +
         ",\"gflops\":" + number_text("%.3f", gflops(p, m.median())) + "}\n";
}

std::string choice_line(const Problem& p, const SearchResult& r, const std::string& strategy) {
  return "{\"type\":\"choice\"," + problem_fields(p) + "," + candidate_fields(r.best.candidate) +
         ",\"gflops\":" + number_text("%.3f", gflops(p, r.best.median())) + ",\"spread\":" +
         number_text("%.6f", r.best.spread()) + ",\"samples\":" + std::to_string(r.best.samples.size()) +
         ",\"tie\":" + (r.tie ? "true" : "false") + ",\"runner_up\":" + json_string(r.runner_up) +
         ",\"evaluations\":" + std::to_string(r.evaluations) + ",\"space\":" +
         std::to_string(r.space_size) + ",\"strategy\":" + json_string(strategy) + "}\n";
}

const JsonObject& log_provenance(const Log& log) {
  for (const JsonObject& o : log.records)
    if (json_str(o, "type") == "provenance") return o;
  throw IoError("the tuning log has no provenance record (not a log written by attune tune, or empty)");
}

MachineSignature log_machine(const JsonObject& prov) {
  MachineSignature m;
  m.cpu = json_str(prov, "cpu");
  m.isas = prov.count("isa_set") ? json_str(prov, "isa_set") : json_str(prov, "isas");
  try {
    m.cores = std::stoi(json_str(prov, "cores"));
  } catch (const std::exception&) {
    m.cores = 0;
  }
  for (auto [name, field] : {std::pair{"l1d", &m.l1d}, std::pair{"l2", &m.l2}, std::pair{"l3", &m.l3}})
    if (prov.count(name)) *field = json_integer(prov, name);
  return m;
}

std::map<std::string, Measurement> log_measurements(const Log& log, const Problem& problem) {
  std::map<std::string, Measurement> out;
  const std::string shape = problem.to_string();
  for (const JsonObject& o : log.records) {
    if (json_str(o, "type") != "measurement" || json_str(o, "shape") != shape) continue;
    Measurement m;
    m.candidate = record_candidate(o);
    m.verified = json_bool(o, "verified");
    if (auto it = o.find("error"); it != o.end() && it->second.kind == JsonValue::Kind::string)
      m.error = it->second.string;
    if (!m.verified && m.error.empty()) m.error = "failed verification";
    m.samples = json_field(o, "samples", JsonValue::Kind::array).array;
    out[m.candidate.key()] = std::move(m);
  }
  return out;
}

std::vector<std::string> log_choices(const Log& log) {
  std::vector<std::string> out;
  for (const JsonObject& o : log.records)
    if (json_str(o, "type") == "choice") out.push_back(json_str(o, "shape"));
  return out;
}

std::map<std::string, ChoiceRecord> log_choice_records(const Log& log) {
  std::map<std::string, ChoiceRecord> out;
  for (const JsonObject& o : log.records) {
    if (json_str(o, "type") != "choice") continue;
    ChoiceRecord r;
    r.problem = record_problem(o);
    r.candidate = record_candidate(o);
    r.evaluations = static_cast<std::size_t>(json_integer(o, "evaluations"));
    r.space = static_cast<std::size_t>(json_integer(o, "space"));
    r.gflops = json_number(o, "gflops");
    out[json_str(o, "shape")] = std::move(r);
  }
  return out;
}

}  // namespace attune::tuner
