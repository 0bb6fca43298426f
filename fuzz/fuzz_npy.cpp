// Fuzz target: the .npy parser behind `attune run` and `attune mha` (float tensors, and index files
// such as block tables). Any input must either parse (and then describe exactly the data it holds)
// or throw attune::IoError.
#include "npy.hpp"

#include <attune/error.hpp>

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto a = attune::npy::parse(data, size);
    std::int64_t elements = 1;
    for (auto d : a.shape) elements *= d;
    if (static_cast<std::size_t>(elements) != a.data.size()) std::abort();  // shape and data disagree
  } catch (const attune::IoError&) {
  }
  try {  // the same header through the index reader (block tables)
    const auto t = attune::npy::parse_indices(data, size);
    std::int64_t elements = 1;
    for (auto d : t.shape) elements *= d;
    if (static_cast<std::size_t>(elements) != t.values.size() || (t.bits != 32 && t.bits != 64)) std::abort();
  } catch (const attune::IoError&) {
  }
  return 0;
}
