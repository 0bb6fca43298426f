// Reading and writing float32 .npy files (NumPy's format 1.0-3.0), with strict validation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace attune::npy {

struct Array {
  std::vector<std::int64_t> shape;
  std::vector<float> data;  // C order
};

// Reads a little-endian float32 C-order array. Throws IoError with a one-line reason for
// anything else: missing file, truncated data, bad magic or header, other dtypes, Fortran
// order, negative or overflowing dimensions (checked before any allocation).
Array read(const std::string& path);
// Parses an in-memory .npy image (the fuzz target and read() share it).
Array parse(const unsigned char* bytes, std::size_t size);

// Writes atomically: a temporary file in the same directory, then rename. On failure the
// destination is untouched and no temporary is left. Throws IoError.
void write(const std::string& path, const std::vector<std::int64_t>& shape, const float* data);

}  // namespace attune::npy
