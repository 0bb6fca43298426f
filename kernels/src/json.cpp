// JSON for the tuner's files: a small reader for the flat objects the log holds (strings,
// numbers, booleans, null, arrays of numbers), typed field access, and string quoting.
#include "json.hpp"

#include <attune/error.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace attune::tuner {
namespace {

class Reader {
 public:
  explicit Reader(const std::string& s) : s_(s) {}

  JsonObject object() {
    JsonObject out;
    expect('{');
    items('}', [&] {
      std::string key = string();
      skip();
      expect(':');
      out[key] = value();
    });
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
  // Comma-separated items up to `close`, the opening bracket already read.
  template <class Item>
  void items(char close, Item&& item) {
    skip();
    if (peek() == close) {
      ++i_;
      return;
    }
    for (;;) {
      skip();
      item();
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect(close);
      break;
    }
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
      items(']', [&] { v.array.push_back(number()); });
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

}  // namespace

JsonObject parse_json_object(const std::string& line) { return Reader(line).object(); }

const JsonValue& json_field(const JsonObject& o, const char* name, JsonValue::Kind kind) {
  const auto it = o.find(name);
  if (it == o.end()) throw IoError(std::string("missing field \"") + name + "\"");
  if (it->second.kind != kind) throw IoError(std::string("field \"") + name + "\" has the wrong type");
  return it->second;
}
const std::string& json_str(const JsonObject& o, const char* name) {
  return json_field(o, name, JsonValue::Kind::string).string;
}
double json_number(const JsonObject& o, const char* name) { return json_field(o, name, JsonValue::Kind::number).number; }
std::int64_t json_integer(const JsonObject& o, const char* name) {
  const double x = json_number(o, name);
  if (x != std::floor(x) || std::abs(x) > 9.0e15) throw IoError(std::string("field \"") + name + "\" is not an integer");
  return static_cast<std::int64_t>(x);
}
bool json_bool(const JsonObject& o, const char* name) { return json_field(o, name, JsonValue::Kind::boolean).boolean; }

std::string quoted(std::string_view s, Syntax syntax) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || (syntax == Syntax::cpp && u == 0x7f)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, syntax == Syntax::json ? "\\u%04x" : "\\%03o", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}


std::string number_text(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, x);
  return buf;
}

}  // namespace attune::tuner
