// Reading and writing .npy files (NumPy's format 1.0-3.0) of float32, float16 and bfloat16 (and
// reading masks, quantized codes and int32/int64 indices), with strict validation: the tensor
// format of the `attune` command (library attune_npy, also linked by the tests and the fuzz
// target), not part of the attune library.
#pragma once

#include <attune/dtype.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace attune::npy {

// A float32 array: what read() and parse() return.
struct Array {
  std::vector<std::int64_t> shape;
  std::vector<float> data;  // C order
};

// An array of any element type attune stores, as the file holds it (C order, little-endian).
// The .npy type strings: '<f4' is fp32, '<f2' is fp16, and '<V2' (two raw bytes) is bf16.
// NumPy has no bfloat16 of its own: np.save of an ml_dtypes.bfloat16 array writes '<V2', and
// np.load(...).view(ml_dtypes.bfloat16) reads attune's bf16 files back.
struct TypedArray {
  std::vector<std::int64_t> shape;
  Dtype dtype = Dtype::fp32;
  std::vector<std::byte> bytes;  // elements() * size_of(dtype)
  std::int64_t elements() const;
};

// Reads a little-endian float32 C-order array. Throws IoError with a one-line reason for
// anything else: missing file, truncated data, bad magic or header, other dtypes (16-bit ones
// included: use read_typed), Fortran order, negative or overflowing dimensions (checked before
// any allocation).
Array read(const std::string& path);
// Parses an in-memory .npy image (the fuzz target and read() share it).
Array parse(const unsigned char* bytes, std::size_t size);

// As read() and parse(), accepting '<f4', '<f2' and '<V2' (bf16) and keeping the stored bits.
TypedArray read_typed(const std::string& path);
TypedArray parse_typed(const unsigned char* bytes, std::size_t size);

// Pre-quantized K/V codes: int8 ('|i1') or uint8 ('|u1') bytes as stored (dtype reads int8;
// the caller's --kv-dtype says what the bytes are). Same validation as read().
TypedArray read_codes(const std::string& path);
TypedArray parse_codes(const unsigned char* bytes, std::size_t size);

// An attention mask file: bool ('|b1') or uint8 ('|u1') entries (boolean: non-zero = visible,
// stored as 0/1 bytes), or float32 ('<f4', additive). Same validation as read().
struct MaskArray {
  std::vector<std::int64_t> shape;
  bool boolean = false;
  std::vector<std::byte> bytes;  // one byte per entry (boolean) or float32 entries
};
MaskArray read_mask(const std::string& path);
MaskArray parse_mask(const unsigned char* bytes, std::size_t size);

// An index file (a paged problem's block table): int32 ('<i4') or int64 ('<i8') entries, widened
// to int64; `bits` says which the file held. Same validation as read().
struct IndexArray {
  std::vector<std::int64_t> shape;
  int bits = 32;
  std::vector<std::int64_t> values;  // C order
};
IndexArray read_indices(const std::string& path);
IndexArray parse_indices(const unsigned char* bytes, std::size_t size);

// Writes atomically: a temporary file in the same directory, then rename. On failure the
// destination is untouched and no temporary is left. Throws IoError. `data` holds the
// elements stored as `dtype` (float32 for the first overload).
void write(const std::string& path, const std::vector<std::int64_t>& shape, const float* data);
void write(const std::string& path, const std::vector<std::int64_t>& shape, Dtype dtype, const void* data);

}  // namespace attune::npy
