// Fuzz target: the command-line parser. The input is split at NUL bytes into arguments and
// parsed with `attune run`'s flags; anything unparseable must be a UsageError.
#include "args.hpp"

#include <attune/error.hpp>

#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> argv(1);
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      argv.emplace_back();
    } else {
      argv.back().push_back(static_cast<char>(data[i]));
    }
  }
  try {
    const attune::cli::Args a(argv, {"--q", "--out", "--threads", "--scale", "--block-q"}, {"--causal"});
    (void)a.get_int("--threads", 1);
    (void)a.get_int("--block-q", 1);
    (void)a.get_float("--scale");
    if (a.has("--q")) (void)a.required("--q");
    if (auto out = a.get("--out")) attune::cli::check_output_dir(*out);
  } catch (const attune::cli::UsageError&) {
  } catch (const attune::IoError&) {
  }
  return 0;
}
