// The table of attune subcommands; each lives in its own file.
#include "commands.hpp"

namespace attune::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"kernels", "list every runnable (kernel, isa, dtype) triple, one per line", kKernelsHelp, cmd_kernels},
      {"run", "compute attention on .npy tensors", kRunHelp, cmd_run},
#ifdef ATTUNE_WITH_BLAS
      {"mha", "multi-head attention with projections on .npy tensors", kMhaHelp, cmd_mha},
#endif
      {"verify", "check every kernel/ISA against the float64 reference", kVerifyHelp, cmd_verify},
      {"tune", "search kernels, tiles and threads per shape; write attune_tuned.h", kTuneHelp, cmd_tune},
      {"tune-check", "re-measure tuned choices against the defaults and auto, interleaved", kTuneCheckHelp,
       cmd_tune_check},
      {"tune-merge", "join the tuning files of several machines into one fleet file", kTuneMergeHelp,
       cmd_tune_merge},
      {"info", "show the CPU, ISAs, version and build", kInfoHelp, cmd_info},
  };
  return all;
}

}  // namespace attune::cli
