// The attune subcommands. Each returns the process exit code: 0 success, 1 data/input
// error, 2 usage error (errors are thrown and mapped in main.cpp).
#pragma once

#include <string>
#include <vector>

namespace attune::cli {

struct Command {
  const char* name;
  const char* summary;
  const char* help;  // full --help text
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<Command>& commands();

}  // namespace attune::cli
