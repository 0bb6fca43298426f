// Helpers shared by kernel implementations compiled without ISA flags (never include this from
// a per-ISA translation unit: its inline functions would be compiled with that ISA's flags).
#pragma once

#include <attune/kernel.hpp>
#include <attune/problem.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <new>

namespace attune::detail {

// Float32 tensors: what naive, blocked and gemm compute on.
struct FloatTensors {
  const float* q;
  const float* k;
  const float* v;
  float* out;
};

// The float32 view of a call's tensors, for kernels that compute in float32 from float32
// buffers ("by converting": naive, blocked, gemm). An all-fp32 problem is passed through
// untouched; otherwise each 16-bit tensor is widened into a copy before the kernel runs and the
// float32 output is rounded into the caller's when finish() is called (dtype.cpp's rounding).
class Float32Copies {
 public:
  Float32Copies(const Problem& p, const Tensors& t);
  const FloatTensors& tensors() const { return view_; }
  void finish();  // writes the output in the problem's dtype (nothing to do for fp32)
  // Bytes the copies of this problem take (0 when everything is fp32).
  static std::size_t bytes(const Problem& p);

 private:
  const Problem& p_;
  void* out_;
  std::unique_ptr<float[]> q_, k_, v_, o_;
  FloatTensors view_;
};

// Contiguous [batch, heads, seq, dim] copies of strided tensors (Problem::strided), for the
// kernel that defines attention on that layout (naive): Q, K and V gathered in their storage
// type, O written to a copy and scattered back by finish(). A non-strided call is passed
// through untouched.
class ContiguousCopies {
 public:
  ContiguousCopies(const Problem& p, const Tensors& t);
  const Tensors& tensors() const { return view_; }
  void finish();  // scatters the output into the caller's strided O (nothing when not strided)
  static std::size_t bytes(const Problem& p);

 private:
  const Problem& p_;
  Tensors caller_, view_;
  std::unique_ptr<unsigned char[]> q_, k_, v_, o_;
};

// Pointers to the rows of one (batch, query head): its Q and O slices and the K/V slices of
// the KV head it reads (grouped-query: kv head = h / group_size).
using HeadView = FloatTensors;

inline HeadView head_view(const Problem& p, const FloatTensors& t, std::int64_t b, std::int64_t h) {
  const std::int64_t hk = h / p.group_size();
  return {t.q + ((b * p.heads_q + h) * p.seq_q) * p.d_k,
          t.k + ((b * p.heads_kv + hk) * p.seq_kv) * p.d_k,
          t.v + ((b * p.heads_kv + hk) * p.seq_kv) * p.d_v,
          t.out + ((b * p.heads_q + h) * p.seq_q) * p.d_v};
}

// A tile size from the config, or the kernel's default, clamped to [1, extent].
inline std::int64_t tile_size(std::int64_t configured, std::int64_t fallback, std::int64_t extent) {
  const std::int64_t size = configured > 0 ? configured : fallback;
  return std::clamp<std::int64_t>(size, 1, std::max<std::int64_t>(extent, 1));
}

// Working-memory arithmetic (Kernel::workspace_bytes): sizes saturate at SIZE_MAX instead of
// wrapping, so an absurd shape or config reads as "too much" and is refused, never as a small
// number. Factors are non-negative counts.
inline std::size_t saturating_add(std::size_t a, std::size_t b) {
  std::size_t sum;
  return __builtin_add_overflow(a, b, &sum) ? std::numeric_limits<std::size_t>::max() : sum;
}

inline std::size_t saturating_mul(std::size_t a, std::size_t b) {
  std::size_t product;
  return __builtin_mul_overflow(a, b, &product) ? std::numeric_limits<std::size_t>::max() : product;
}

// Bytes of a float buffer whose element count is the product of `factors`.
inline std::size_t float_bytes(std::initializer_list<std::int64_t> factors) {
  std::size_t bytes = sizeof(float);
  for (std::int64_t f : factors) bytes = saturating_mul(bytes, static_cast<std::size_t>(std::max<std::int64_t>(f, 0)));
  return bytes;
}

// 64-byte aligned scratch arrays (tile rows, cache lines), freed with std::free.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
using AlignedArray = std::unique_ptr<T[], FreeDeleter>;

// n elements (at least one), 64-byte aligned; throws std::bad_alloc when the memory is not there.
template <class T>
AlignedArray<T> aligned_array(std::size_t n) {
  const std::size_t bytes = (std::max<std::size_t>(n, 1) * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return AlignedArray<T>(static_cast<T*>(p));
}

}  // namespace attune::detail
