// JSON for the tuner's files and the run-time tuning file: a reader for the flat objects their
// lines hold, typed access to their fields, and the one quoting routine for strings (JSON here,
// C++ literals in the header). In the library (not the tuner) because the loader needs it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
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

// A field of `o` of the given kind; IoError naming the field when it is missing or of another
// kind (json_integer: also when it is not a whole number).
const JsonValue& json_field(const JsonObject& o, const char* name, JsonValue::Kind kind);
const std::string& json_str(const JsonObject& o, const char* name);
double json_number(const JsonObject& o, const char* name);
std::int64_t json_integer(const JsonObject& o, const char* name);
bool json_bool(const JsonObject& o, const char* name);

// `s` as a quoted string literal of `syntax`: `"` and `\` take a backslash, control characters a
// numeric escape (JSON: \u00XX; C++: octal \ooo, for DEL too, as \x would swallow hex digits
// that follow). Every string the tuner and `attune tune` write goes through here.
enum class Syntax { json, cpp };
std::string quoted(std::string_view s, Syntax syntax);
inline std::string json_string(std::string_view s) { return quoted(s, Syntax::json); }
// `x` printed with a printf `format` ("%.3f"): the numbers of the log and the header.
std::string number_text(const char* format, double x);

}  // namespace attune::tuner
