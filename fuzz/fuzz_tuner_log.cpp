// Fuzz target: the tuner's JSON-lines log reader (`attune tune --resume`). Malformed text must be
// an attune::Error naming the line, never a crash or an unbounded allocation.
#include "records.hpp"

#include <attune/error.hpp>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    attune::tuner::parse_log(text, "fuzz");
  } catch (const attune::Error&) {
  }
  return 0;
}
