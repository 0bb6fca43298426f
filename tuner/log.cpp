// JSON lines in and out (a small reader for the flat objects the tuner writes), the resume
// cache, and the deterministic header writer.
#include "records.hpp"

#include <attune/error.hpp>
#include <attune/tuned.hpp>
#include <attune/version.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace attune::tuner {
namespace {

// ---- JSON reading -------------------------------------------------------------------------

class Reader {
 public:
  explicit Reader(const std::string& s) : s_(s) {}

  JsonObject object() {
    JsonObject out;
    expect('{');
    skip();
    if (peek() == '}') {
      ++i_;
    } else {
      for (;;) {
        skip();
        std::string key = string();
        skip();
        expect(':');
        out[key] = value();
        skip();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        break;
      }
    }
    skip();
    if (i_ != s_.size()) fail("trailing characters after the object");
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw IoError("column " + std::to_string(i_ + 1) + ": " + why);
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    skip();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      const char e = s_[i_++];
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          if (i_ + 4 > s_.size()) fail("short \\u escape");
          const unsigned long cp = std::strtoul(s_.substr(i_, 4).c_str(), nullptr, 16);
          i_ += 4;
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
          } else {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
          }
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  }

  double number() {
    const char* begin = s_.c_str() + i_;
    char* end = nullptr;
    errno = 0;
    const double x = std::strtod(begin, &end);
    if (end == begin || errno == ERANGE || !std::isfinite(x)) fail("bad number");
    i_ += static_cast<std::size_t>(end - begin);
    return x;
  }

  bool literal(const char* word) {
    const std::size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) return false;
    i_ += n;
    return true;
  }

  JsonValue value() {
    skip();
    JsonValue v;
    const char c = peek();
    if (c == '"') {
      v.kind = JsonValue::Kind::string;
      v.string = string();
    } else if (c == '[') {
      ++i_;
      v.kind = JsonValue::Kind::array;
      skip();
      if (peek() == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        skip();
        v.array.push_back(number());
        skip();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        break;
      }
    } else if (literal("true") || literal("false")) {
      v.kind = JsonValue::Kind::boolean;
      v.boolean = s_[i_ - 1] == 'e' && s_[i_ - 2] == 'u';
    } else if (literal("null")) {
      v.kind = JsonValue::Kind::null;
    } else {
      v.kind = JsonValue::Kind::number;
      v.number = number();
    }
    return v;
  }

  const std::string& s_;
  std::size_t i_ = 0;
};

const JsonValue& field(const JsonObject& o, const char* name, JsonValue::Kind kind) {
  const auto it = o.find(name);
  if (it == o.end()) throw IoError(std::string("missing field \"") + name + "\"");
  if (it->second.kind != kind) throw IoError(std::string("field \"") + name + "\" has the wrong type");
  return it->second;
}
const std::string& str(const JsonObject& o, const char* name) {
  return field(o, name, JsonValue::Kind::string).string;
}
double num(const JsonObject& o, const char* name) { return field(o, name, JsonValue::Kind::number).number; }
std::int64_t integer(const JsonObject& o, const char* name) {
  const double x = num(o, name);
  if (x != std::floor(x) || std::abs(x) > 9.0e15) throw IoError(std::string("field \"") + name + "\" is not an integer");
  return static_cast<std::int64_t>(x);
}
bool boolean(const JsonObject& o, const char* name) { return field(o, name, JsonValue::Kind::boolean).boolean; }

// ---- JSON writing -------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string fmt(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, x);
  return buf;
}

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
  const std::string& text = str(o, name);
  const auto d = parse_dtype(text);
  if (!d) throw IoError(std::string("field \"") + name + "\" = \"" + text + "\" is not fp32, bf16 or fp16");
  return *d;
}

Problem problem_of(const JsonObject& o) {
  Problem p;
  p.batch = integer(o, "batch");
  p.heads_q = integer(o, "heads_q");
  p.heads_kv = integer(o, "heads_kv");
  p.seq_q = integer(o, "seq_q");
  p.seq_kv = integer(o, "seq_kv");
  p.d_k = integer(o, "d_k");
  p.d_v = integer(o, "d_v");
  p.causal = boolean(o, "causal");
  p.dtype = dtype_of(o, "dtype", Dtype::fp32);
  if (const Dtype kv = dtype_of(o, "kv_dtype", p.dtype); kv != p.dtype) p.kv_dtype = kv;
  try {
    p.validate();
  } catch (const InvalidArgument& e) {
    throw IoError(e.what());
  }
  return p;
}

Candidate candidate_of(const JsonObject& o) {
  Candidate c;
  c.kernel = str(o, "kernel");
  const auto isa = parse_isa(str(o, "isa"));
  if (!isa) throw IoError("unknown isa \"" + str(o, "isa") + "\"");
  c.isa = *isa;
  c.config.block_q = integer(o, "block_q");
  c.config.block_kv = integer(o, "block_kv");
  c.config.threads = static_cast<int>(integer(o, "threads"));
  c.config.kv_splits = static_cast<int>(integer(o, "kv_splits"));
  // Logs written before the micro-kernel became a parameter lack it: the automatic choice.
  if (o.count("micro")) c.config.micro = static_cast<int>(integer(o, "micro"));
  return c;
}

// Checks the fields a record type needs, so a bad line fails when read, not later.
void validate_record(const JsonObject& o) {
  const std::string& type = str(o, "type");
  if (type == "provenance") {
    for (const char* f : {"signature", "signature_text", "cpu", "isas", "cores", "compiler", "flags",
                          "version", "git_revision", "date", "strategy", "budget", "command"})
      str(o, f);
  } else if (type == "measurement") {
    problem_of(o);
    candidate_of(o);
    boolean(o, "verified");
    field(o, "samples", JsonValue::Kind::array);
  } else if (type == "choice") {
    problem_of(o);
    candidate_of(o);
    num(o, "gflops");
    num(o, "spread");
    boolean(o, "tie");
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

std::string cpp_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// A comment line must not end in a backslash (line splicing) or hold a newline.
std::string comment_text(std::string_view s) {
  std::string out;
  for (char c : s) out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  while (!out.empty() && (out.back() == '\\' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

JsonObject parse_json_object(const std::string& line) { return Reader(line).object(); }

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

Log read_log(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError("cannot read '" + path + "'");
  return parse_log(ss.str(), path);
}

std::string provenance_line(const std::string& strategy, const std::string& budget,
                            const std::string& command) {
  std::string isas;
  for (Isa i : runnable_isas()) isas += (isas.empty() ? "" : " ") + std::string(attune::to_string(i));
  return "{\"type\":\"provenance\",\"signature\":" + json_string(build_signature()) +
         ",\"signature_text\":" + json_string(build_signature_text()) + ",\"cpu\":" + json_string(cpu_model()) +
         ",\"isas\":" + json_string(isas) + ",\"cores\":" + json_string(std::to_string(std::thread::hardware_concurrency())) +
         ",\"compiler\":" + json_string(compiler()) + ",\"flags\":" + json_string(compile_flags()) +
         ",\"version\":" + json_string(version()) + ",\"git_revision\":" + json_string(git_revision()) +
         ",\"date\":" + json_string(utc_now()) + ",\"strategy\":" + json_string(strategy) +
         ",\"budget\":" + json_string(budget) + ",\"command\":" + json_string(command) + "}\n";
}

std::string measurement_line(const Problem& p, const Measurement& m) {
  std::string samples;
  for (double s : m.samples) samples += (samples.empty() ? "" : ",") + fmt("%.9g", s);
  return "{\"type\":\"measurement\"," + problem_fields(p) + "," + candidate_fields(m.candidate) +
         ",\"verified\":" + (m.verified ? "true" : "false") + ",\"error\":" + json_string(m.error) +
         ",\"samples\":[" + samples + "],\"median\":" + fmt("%.9g", m.median()) +
         ",\"min\":" + fmt("%.9g", m.min()) + ",\"spread\":" + fmt("%.6f", m.spread()) +
         ",\"gflops\":" + fmt("%.3f", gflops(p, m.median())) + "}\n";
}

std::string choice_line(const Problem& p, const SearchResult& r, const std::string& strategy) {
  return "{\"type\":\"choice\"," + problem_fields(p) + "," + candidate_fields(r.best.candidate) +
         ",\"gflops\":" + fmt("%.3f", gflops(p, r.best.median())) + ",\"spread\":" +
         fmt("%.6f", r.best.spread()) + ",\"samples\":" + std::to_string(r.best.samples.size()) +
         ",\"tie\":" + (r.tie ? "true" : "false") + ",\"runner_up\":" + json_string(r.runner_up) +
         ",\"evaluations\":" + std::to_string(r.evaluations) + ",\"space\":" +
         std::to_string(r.space_size) + ",\"strategy\":" + json_string(strategy) + "}\n";
}

const JsonObject& log_provenance(const Log& log) {
  for (const JsonObject& o : log.records)
    if (str(o, "type") == "provenance") return o;
  throw IoError("the tuning log has no provenance record (not a log written by attune tune, or empty)");
}

std::map<std::string, Measurement> log_measurements(const Log& log, const Problem& problem) {
  std::map<std::string, Measurement> out;
  const std::string shape = problem.to_string();
  for (const JsonObject& o : log.records) {
    if (str(o, "type") != "measurement" || str(o, "shape") != shape) continue;
    Measurement m;
    m.candidate = candidate_of(o);
    m.verified = boolean(o, "verified");
    if (auto it = o.find("error"); it != o.end() && it->second.kind == JsonValue::Kind::string)
      m.error = it->second.string;
    if (!m.verified && m.error.empty()) m.error = "failed verification";
    m.samples = field(o, "samples", JsonValue::Kind::array).array;
    out[m.candidate.key()] = std::move(m);
  }
  return out;
}

std::vector<std::string> log_choices(const Log& log) {
  std::vector<std::string> out;
  for (const JsonObject& o : log.records)
    if (str(o, "type") == "choice") out.push_back(str(o, "shape"));
  return out;
}

std::map<std::string, ChoiceRecord> log_choice_records(const Log& log) {
  std::map<std::string, ChoiceRecord> out;
  for (const JsonObject& o : log.records) {
    if (str(o, "type") != "choice") continue;
    ChoiceRecord r;
    r.problem = problem_of(o);
    r.candidate = candidate_of(o);
    r.evaluations = static_cast<std::size_t>(integer(o, "evaluations"));
    r.space = static_cast<std::size_t>(integer(o, "space"));
    r.gflops = num(o, "gflops");
    out[str(o, "shape")] = std::move(r);
  }
  return out;
}

std::string generate_header(const Log& log, const std::string& json_name) {
  const JsonObject& prov = log_provenance(log);
  // The last choice per shape (a resumed run may re-choose).
  std::map<std::string, const JsonObject*> by_shape;
  for (const JsonObject& o : log.records)
    if (str(o, "type") == "choice") by_shape[str(o, "shape")] = &o;

  struct Row {
    TunedEntry entry;
    double flops;
    std::string shape, runner_up;
  };
  std::vector<Row> rows;
  for (const auto& [shape, o] : by_shape) {
    const Problem p = problem_of(*o);
    const Candidate c = candidate_of(*o);
    const TunedKey k = tuned_key(p);
    Row r{TunedEntry{k.d_k, k.causal, k.decode, k.gqa, k.log2_seq_q, k.log2_seq_kv, nullptr, nullptr,
                     c.config.block_q, c.config.block_kv, c.config.threads, c.config.kv_splits,
                     c.config.micro, num(*o, "gflops"), num(*o, "spread"), boolean(*o, "tie"), k.dtype,
                     k.kv_dtype},
          p.flops(), shape, ""};
    if (auto it = o->find("runner_up"); it != o->end() && it->second.kind == JsonValue::Kind::string)
      r.runner_up = it->second.string;
    r.entry.kernel = str(*o, "kernel").c_str();
    r.entry.isa = str(*o, "isa").c_str();
    rows.push_back(std::move(r));
  }
  auto same_key = [](const TunedEntry& a, const TunedEntry& b) {
    return !tuned_order(a, b) && !tuned_order(b, a);
  };
  // Shapes are in map (name) order here; stable sorts keep that order among equals.
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.flops > b.flops; });
  std::stable_sort(rows.begin(), rows.end(),
                   [](const Row& a, const Row& b) { return tuned_order(a.entry, b.entry); });
  std::vector<Row> unique;
  for (Row& r : rows)
    if (unique.empty() || !same_key(unique.back().entry, r.entry)) unique.push_back(std::move(r));

  std::string h;
  h += "// Generated by `attune tune` from " + comment_text(json_name) + "; do not edit: re-run the tuner.\n";
  h += "// command: " + comment_text(str(prov, "command")) + "\n";
  h += "// build:   " + comment_text(str(prov, "signature_text")) + "\n";
  h += "// Keys: d_k, causal, decode (seq_q <= 16), gqa (heads_q != heads_kv), floor(log2) of seq_q\n";
  h += "// and seq_kv, and the storage types measured (dtype: Q/O, kv_dtype: K/V); `auto` uses an entry\n";
  h += "// only for problems of its own types. Build with -DATTUNE_TUNED_CONFIG=<this file>; `attune\n";
  h += "// info` shows it.\n";
  h += "#pragma once\n\n#include <attune/tuned.hpp>\n\n#include <algorithm>\n#include <array>\n\n";
  h += "namespace attune::tuned_data {\n\n";
  h += "constexpr char kSignature[] = " + cpp_string(str(prov, "signature")) + ";\n";
  h += "constexpr char kSignatureText[] = " + cpp_string(str(prov, "signature_text")) + ";\n\n";
  h += "constexpr TunedProvenance kProvenance = {\n";
  for (const char* f : {"cpu", "isas", "cores", "compiler", "flags", "version", "git_revision", "date",
                        "strategy", "budget", "command"}) {
    h += std::string("    /* ") + f + " */ " + cpp_string(str(prov, f)) + ",\n";
  }
  h += "};\n\n";
  h += "constexpr std::array<TunedEntry, " + std::to_string(unique.size()) + "> kEntries = {{\n";
  h += "    // d_k, causal, decode, gqa, log2_seq_q, log2_seq_kv, kernel, isa, block_q, block_kv,\n";
  h += "    // threads, kv_splits, micro, gflops, spread, tie, dtype, kv_dtype\n";
  for (const Row& r : unique) {
    const TunedEntry& e = r.entry;
    h += "    {" + std::to_string(e.d_k) + ", " + (e.causal ? "true" : "false") + ", " +
         (e.decode ? "true" : "false") + ", " + (e.gqa ? "true" : "false") + ", " +
         std::to_string(e.log2_seq_q) + ", " + std::to_string(e.log2_seq_kv) + ", " + cpp_string(e.kernel) +
         ", " + cpp_string(e.isa) + ", " + std::to_string(e.block_q) + ", " + std::to_string(e.block_kv) +
         ", " + std::to_string(e.threads) + ", " + std::to_string(e.kv_splits) + ", " +
         std::to_string(e.micro) + ", " + fmt("%.2f", e.gflops) + ", " + fmt("%.4f", e.spread) + ", " + (e.tie ? "true" : "false") +
         ", Dtype::" + std::string(attune::to_string(e.dtype)) + ", Dtype::" +
         std::string(attune::to_string(e.kv_dtype)) + "},\n";
    h += "    //   from " + comment_text(r.shape) +
         (r.runner_up.empty() ? "" : "; runner-up " + comment_text(r.runner_up)) + "\n";
  }
  h += "}};\n\n";
  h += "static_assert(std::is_sorted(kEntries.begin(), kEntries.end(), tuned_order));\n\n";
  h += "}  // namespace attune::tuned_data\n";
  return h;
}

void write_atomic(const std::string& path, const std::string& text) {
  const std::filesystem::path target(path);
  const auto dir = target.parent_path();
  if (!dir.empty() && !std::filesystem::is_directory(dir))
    throw IoError("cannot write '" + path + "': directory '" + dir.string() + "' does not exist");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError("cannot write '" + tmp + "': " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw IoError("cannot write '" + tmp + "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw IoError("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  }
}

void append_text(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr) throw IoError("cannot append to '" + path + "': " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
  if (std::fclose(f) != 0 || !ok) throw IoError("cannot append to '" + path + "'");
}

}  // namespace attune::tuner
