// `attune tune`: searches kernel variants, tiles and threads per shape and writes the tuned
// table header (attune_tuned.h) and the JSON lines log it was generated from.
#pragma once

#include <string>
#include <vector>

namespace attune::cli {

extern const char* const kTuneHelp;
int cmd_tune(const std::vector<std::string>& argv);
extern const char* const kTuneCheckHelp;
int cmd_tune_check(const std::vector<std::string>& argv);

}  // namespace attune::cli
