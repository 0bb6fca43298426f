// `attune info`: the CPU, its ISAs, the build, and what `auto` picks here.
#include "commands.hpp"

#include "common.hpp"
#include "isa_order.hpp"

#include <attune/attune.hpp>

#include <cstdio>
#include <string>
#include <thread>

namespace attune::cli {

const char* const kInfoHelp =
    "usage: attune info\n\nPrints the CPU model, detected/compiled/runnable ISAs, core count,\n"
    "version, git revision, compiler and flags, the machine signature tuning files are keyed by,\n"
    "and which tuned table `auto` reads (run-time file and machine, compiled header, or none).\n";

int cmd_info(const std::vector<std::string>& argv) {
  const Args a(argv, {}, {});
  no_positional(a);
  auto list = [](const std::vector<Isa>& isas) {
    std::string s;
    for (Isa i : isas) {
      if (!s.empty()) s += ' ';
      s += to_string(i);
    }
    return s;
  };
  // What the CPU reports of each ISA this target has a build for, best first (no ATTUNE_ISA cap).
  std::vector<Isa> detected;
  for (Isa i : compiled_isas())
    if (cpu_supports(i)) detected.push_back(i);
  std::printf("attune %s\n", version().data());
  std::printf("git revision:   %s\n", git_revision().data());
  std::printf("compiler:       %s\n", compiler().data());
  std::printf("build type:     %s\n", build_type().data());
  std::printf("flags:          %s\n", compile_flags().data());
  std::printf("cpu:            %s\n", cpu_model().data());
  std::printf("cores:          %u\n", std::thread::hardware_concurrency());
  std::printf("isa detected:   %s\n", list(detected).c_str());
  std::printf("isa compiled:   %s\n", list(compiled_isas()).c_str());
  std::printf("isa runnable:   %s\n", list(runnable_isas()).c_str());
  std::printf("isa default:    %s\n", std::string(to_string(default_isa())).c_str());
  const Choice c = resolve(Problem{});
  std::printf("auto kernel:    %s %s\n", std::string(c.kernel->name()).c_str(),
              std::string(to_string(c.isa)).c_str());
  Problem b;
  b.dtype = Dtype::bf16;
  const Choice cb = resolve(b);
  std::printf("auto bf16:      %s %s\n", std::string(cb.kernel->name()).c_str(),
              std::string(to_string(cb.isa)).c_str());
  if (const double dot = bf16_dot_speedup(); dot > 0.0)
    std::printf("bf16 dot rate:  %.2fx the fp32 FMA rate (vdpbf16ps, measured; avx512_bf16 goes first for bf16 from %.1fx)\n", dot,
                kBf16DotPreferred);
  std::printf("machine:        %s\n", to_string(machine_signature()).c_str());
  std::printf("tuned table:    %s\n", tuned_table_summary().c_str());
  return 0;
}

}  // namespace attune::cli
