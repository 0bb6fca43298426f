// The CBLAS calls shared by the `gemm` kernel and attune::mha: a row-major sgemm that checks
// BLAS's 32-bit dimensions, and OpenBLAS's thread count from Config::threads. Built only with
// ATTUNE_WITH_BLAS; compiled without ISA flags (see kernel_impl.hpp).
#pragma once

#include <attune/error.hpp>

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>

#ifdef ATTUNE_HAVE_OPENBLAS_THREADS
// Declared here as well: a netlib-style cblas.h picked up instead of OpenBLAS's lacks them.
extern "C" void openblas_set_num_threads(int num_threads);
extern "C" int openblas_get_num_threads(void);
#endif

namespace attune::detail {

// CBLAS takes dimensions and leading dimensions as (32-bit) int. Callers check every value
// they will pass before allocating anything, so a refusal costs nothing.
inline void require_blas_int(std::int64_t value, const char* field) {
  if (value > std::numeric_limits<int>::max()) {
    throw InvalidArgument("invalid problem: " + std::string(field) + " = " + std::to_string(value) +
                          " exceeds BLAS's 32-bit dimension limit (" +
                          std::to_string(std::numeric_limits<int>::max()) + ")");
  }
}

// C[m x n] = alpha * op(A) op(B) + beta * C, all row-major; op(B) = B^T when trans_b.
// Dimensions were checked with require_blas_int.
inline void sgemm(bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                  std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                  std::int64_t ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// OpenBLAS's worker count for the next calls: Config::threads, or every core when it is 0.
// The setting is process-wide in OpenBLAS; it is only written when it changes.
inline void set_blas_threads([[maybe_unused]] int threads) {  // unused without OpenBLAS's setter
#ifdef ATTUNE_HAVE_OPENBLAS_THREADS
  const int wanted =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (openblas_get_num_threads() != wanted) openblas_set_num_threads(wanted);
#endif
}

}  // namespace attune::detail
