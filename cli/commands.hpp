// The attune subcommands, one file each (kernels.cpp, run.cpp, mha.cpp, verify.cpp, tune.cpp,
// info.cpp), and the table main.cpp dispatches through. Each returns the process exit code:
// 0 success, 1 data/input error, 2 usage error (errors are thrown and mapped in main.cpp).
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

// Every command, in the order `attune --help` lists them.
const std::vector<Command>& commands();

// The commands and their --help texts.
extern const char* const kKernelsHelp;
int cmd_kernels(const std::vector<std::string>& argv);
extern const char* const kRunHelp;
int cmd_run(const std::vector<std::string>& argv);
#ifdef ATTUNE_WITH_BLAS
extern const char* const kMhaHelp;
int cmd_mha(const std::vector<std::string>& argv);
#endif
extern const char* const kVerifyHelp;
int cmd_verify(const std::vector<std::string>& argv);
// `attune tune`: searches kernel variants, tiles and threads per shape and writes the tuned
// table header (attune_tuned.h) and the JSON lines log it was generated from.
extern const char* const kTuneHelp;
int cmd_tune(const std::vector<std::string>& argv);
extern const char* const kTuneCheckHelp;
int cmd_tune_check(const std::vector<std::string>& argv);
// `attune tune-merge`: the tuning files of several machines as one (tune_merge.cpp).
extern const char* const kTuneMergeHelp;
int cmd_tune_merge(const std::vector<std::string>& argv);
extern const char* const kInfoHelp;
int cmd_info(const std::vector<std::string>& argv);

}  // namespace attune::cli
