// `attune kernels`: every runnable (kernel, isa, dtype) triple, one per line.
#include "commands.hpp"

#include "common.hpp"

#include <attune/attune.hpp>

#include <cstdio>
#include <string>

namespace attune::cli {

const char* const kKernelsHelp =
    "usage: attune kernels [--long]\n\n"
    "Prints '<kernel> <isa> <dtype>' for every kernel and ISA that run on this machine and every\n"
    "storage type (fp32, bf16, fp16) the pair takes for all of Q, K, V and O; each line is accepted\n"
    "verbatim by 'attune run --kernel <kernel> --isa <isa> --dtype <dtype>'. --long adds a\n"
    "description.\n";

int cmd_kernels(const std::vector<std::string>& argv) {
  const Args a(argv, {}, {"--long"});
  no_positional(a);
  for (const Kernel* k : kernels()) {
    for (Isa isa : runnable_isas(*k)) {
      for (Dtype dtype : kAllDtypes) {
        if (!k->supports(typed_probe(dtype, dtype), isa)) continue;
        const std::string name(k->name()), isa_name(to_string(isa)), dtype_name(to_string(dtype));
        if (a.has("--long")) {
          std::printf("%-8s %-7s %-4s %s\n", name.c_str(), isa_name.c_str(), dtype_name.c_str(),
                      std::string(k->description()).c_str());
        } else {
          std::printf("%s %s %s\n", name.c_str(), isa_name.c_str(), dtype_name.c_str());
        }
      }
    }
  }
  return 0;
}

}  // namespace attune::cli
