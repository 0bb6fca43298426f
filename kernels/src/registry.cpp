// The kernel registry. Kernels are listed by the build (attune_add_kernel in CMake generates
// kernel_list.inc), so adding a variant is a source file and one CMake line.
#include "kernel_impl.hpp"

#include <attune/kernel.hpp>

#include <algorithm>
#include <array>

namespace attune {
namespace detail {
#define ATTUNE_KERNEL(name) const Kernel& kernel_##name();
#include "kernel_list.inc"
#undef ATTUNE_KERNEL
}  // namespace detail

std::span<const Kernel* const> kernels() {
  static const auto all = std::to_array<const Kernel*>({
#define ATTUNE_KERNEL(name) &detail::kernel_##name(),
#include "kernel_list.inc"
#undef ATTUNE_KERNEL
  });
  return all;
}

const Kernel* find_kernel(std::string_view name) {
  for (const Kernel* k : kernels()) {
    if (k->name() == name) return k;
  }
  return nullptr;
}

std::vector<Isa> runnable_isas(const Kernel& kernel) {
  std::vector<Isa> out;
  for (Isa isa : runnable_isas()) {
    const auto built = kernel.isas();
    if (std::find(built.begin(), built.end(), isa) != built.end()) out.push_back(isa);
  }
  return out;
}

std::vector<Isa> runnable_isas(const Kernel& kernel, const Problem& problem) {
  std::vector<Isa> out = runnable_isas(kernel);
  std::erase_if(out, [&](Isa isa) { return !kernel.supports(problem, isa); });
  kernel.order_isas(problem, out);
  return out;
}

}  // namespace attune
