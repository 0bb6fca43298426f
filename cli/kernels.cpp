// `attune kernels`: every runnable (kernel, isa, dtype) triple, one per line; with --kv, every
// (kernel, isa, dtype, kv dtype) quadruple, the K/V storage types included.
#include "commands.hpp"

#include "common.hpp"

#include <attune/attune.hpp>

#include <cstdio>
#include <string>

namespace attune::cli {

const char* const kKernelsHelp =
    "usage: attune kernels [--kv] [--long]\n\n"
    "Prints '<kernel> <isa> <dtype>' for every kernel and ISA that run on this machine and every\n"
    "storage type (fp32, bf16, fp16) the pair takes for all of Q, K, V and O; each line is accepted\n"
    "verbatim by 'attune run --kernel <kernel> --isa <isa> --dtype <dtype>'.\n"
    "--kv prints '<kernel> <isa> <dtype> <kv-dtype>' instead: every pair of Q/O type and K/V\n"
    "storage type (fp32, bf16, fp16, int8, int8_kc, fp8_e4m3, fp8_e5m2, int4) the kernel takes on\n"
    "that ISA, accepted verbatim by 'attune run ... --dtype <dtype> --kv-dtype <kv-dtype>'.\n"
    "--long adds a description.\n";

int cmd_kernels(const std::vector<std::string>& argv) {
  const Args a(argv, {}, {"--kv", "--long"});
  no_positional(a);
  const bool kv = a.has("--kv");
  for (const Kernel* k : kernels()) {
    for (Isa isa : runnable_isas(*k)) {
      for (Dtype dtype : kAllDtypes) {
        for (Dtype kv_dtype : kAllKvDtypes) {
          if (!kv && kv_dtype != dtype) continue;
          if (!k->supports(typed_probe(dtype, kv_dtype), isa)) continue;
          const std::string name(k->name()), isa_name(to_string(isa)), dtype_name(to_string(dtype));
          std::string kv_name;  // " <kv-dtype>" with --kv
          if (kv) kv_name.append(" ").append(to_string(kv_dtype));
          if (a.has("--long")) {  // columns wide enough for every name
            std::printf("%-8s %-11s %-4s%-9s %s\n", name.c_str(), isa_name.c_str(), dtype_name.c_str(),
                        kv_name.c_str(), std::string(k->description()).c_str());
          } else {
            std::printf("%s %s %s%s\n", name.c_str(), isa_name.c_str(), dtype_name.c_str(), kv_name.c_str());
          }
        }
      }
    }
  }
  return 0;
}

}  // namespace attune::cli
