// Fuzz target: the run-time tuning-file reader (ATTUNE_TUNING, attune::load_tuning, tune-merge).
// Malformed or hostile text must be an attune::Error naming the line, never a crash or an
// unbounded allocation; what it accepts must be written back and read again to the same table,
// and the machine selection must pick a valid index.
#include "tuning_file.hpp"

#include <attune/error.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<attune::detail::MachineTable> machines;
  try {
    machines = attune::detail::parse_tuning(text, "fuzz");
  } catch (const attune::Error&) {
    return 0;
  }
  std::vector<attune::MachineSignature> signatures;
  for (const auto& m : machines) signatures.push_back(m.machine);
  const auto match = attune::detail::select_machine(signatures, attune::machine_signature());
  if (match.index < -1 || match.index >= static_cast<int>(machines.size())) std::abort();
  // Round trip: the writer's text reads back to the same entries.
  const auto again = attune::detail::parse_tuning(attune::detail::tuning_text(machines), "round trip");
  if (again.size() != machines.size()) std::abort();
  for (std::size_t i = 0; i < machines.size(); ++i) {
    if (again[i].entries.size() != machines[i].entries.size()) std::abort();
    for (std::size_t j = 0; j < machines[i].entries.size(); ++j) {
      const auto &a = machines[i].entries[j], &b = again[i].entries[j];
      if (a.block_q != b.block_q || a.block_kv != b.block_kv || a.threads != b.threads || a.d_k != b.d_k ||
          a.log2_seq_q != b.log2_seq_q || a.kernel != b.kernel || a.isa != b.isa || a.dtype != b.dtype)
        std::abort();
    }
  }
  return 0;
}
