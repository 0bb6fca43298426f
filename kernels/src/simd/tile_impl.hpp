// The tiled online-softmax attention step, written once against Vec<Arch> and compiled once
// per ISA (include only from kernels/src/isa/*.cpp). See tile.hpp for the task contract.
//
// Layout: the task's query rows live in vector lanes. Per key tile [j0, j1):
//   S^T[j][r] = sum_d K[j][d] * Q^T[d][r]          (Q^T packed once, scaled by scale*log2 e)
//   m'[r] = max(m[r], max_j S^T[j][r]);  alpha[r] = 2^(m[r] - m'[r])
//   P^T[j][r] = 2^(S^T[j][r] - m'[r]);   l[r] <- l[r] * alpha[r] + sum_j P^T[j][r]
//   O^T[d][r] <- O^T[d][r] * alpha[r] + sum_j V[j][d] * P^T[j][r]
// Register tiles: MR keys x NV vectors of rows for S^T (K scalars broadcast from their natural
// layout), MR value columns x NV vectors of rows for O^T (V scalars broadcast likewise).
// Scratch: Q^T d_k x R, S^T block_kv x R, O^T d_v x R, and m, l, alpha, limit (R each),
// R = rows rounded up to NV * width.
#pragma once

#include "simd/tile.hpp"
#include "simd/vec.hpp"

#include <limits>

namespace attune::simd {
namespace {

inline std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
inline std::int64_t imax(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

template <class Arch, int MR, int NV>
struct TileKernel {
  using V = Vec<Arch>;
  using B = typename V::B;
  static constexpr int W = V::width;
  static constexpr std::int64_t L = NV * W;  // rows per register tile
  static constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  struct Ctx {
    const TileArgs* a;
    std::int64_t rp;  // padded row count
    float *qt, *st, *ot, *m, *l, *alpha, *limit;
  };

  // S^T rows [jj, jj + MK) of the tile for lane chunk c0; masked lanes get -inf. Returns the
  // running vertical max through tmax.
  template <int MK>
  static void qk(const Ctx& c, std::int64_t j0, std::int64_t jj, std::int64_t c0, bool masked, B* tmax) {
    const TileArgs& a = *c.a;
    B acc[MK][NV];
    for (int mr = 0; mr < MK; ++mr)
      for (int nv = 0; nv < NV; ++nv) acc[mr][nv] = V::set1(0.0f);
    const float* krow = a.k + (j0 + jj) * a.d_k;
    const float* qcol = c.qt + c0;
    // Few rows (decoding) read each K/V row once, straight from memory, in an order the hardware
    // prefetchers miss (MK rows in parallel): prefetch the next K rows and this block's V rows.
    const float* k_next = krow + MK * a.d_k;
    const float* v_rows = a.v + (j0 + jj) * a.d_v;
    for (std::int64_t d = 0; d < a.d_k; ++d) {
      if constexpr (NV == 1) {
        __builtin_prefetch(k_next + d * 16);
        __builtin_prefetch(v_rows + d * 16);
      }
      B qv[NV];
      for (int nv = 0; nv < NV; ++nv) qv[nv] = V::load(qcol + d * c.rp + nv * W);
      for (int mr = 0; mr < MK; ++mr) {
        const B kb = V::set1(krow[mr * a.d_k + d]);
        for (int nv = 0; nv < NV; ++nv) acc[mr][nv] = V::fma(kb, qv[nv], acc[mr][nv]);
      }
    }
    for (int mr = 0; mr < MK; ++mr) {
      float* srow = c.st + (jj + mr) * c.rp + c0;
      const B key = V::set1(static_cast<float>(j0 + jj + mr));
      for (int nv = 0; nv < NV; ++nv) {
        B s = acc[mr][nv];
        if (masked) s = V::keep_le(key, V::load(c.limit + c0 + nv * W), s, V::set1(kNegInf));
        V::store(srow + nv * W, s);
        tmax[nv] = V::max(tmax[nv], s);
      }
    }
  }

  // O^T columns [d0, d0 + MK) for lane chunk c0: rescale by alpha, add V^T P^T over the tile.
  template <int MK>
  static void pv(const Ctx& c, std::int64_t j0, std::int64_t cols, std::int64_t d0, std::int64_t c0) {
    const TileArgs& a = *c.a;
    B acc[MK][NV];
    B al[NV];
    for (int nv = 0; nv < NV; ++nv) al[nv] = V::load(c.alpha + c0 + nv * W);
    for (int md = 0; md < MK; ++md)
      for (int nv = 0; nv < NV; ++nv) acc[md][nv] = V::load(c.ot + (d0 + md) * c.rp + c0 + nv * W) * al[nv];
    const float* vcol = a.v + j0 * a.d_v + d0;
    for (std::int64_t j = 0; j < cols; ++j) {
      B pv[NV];
      for (int nv = 0; nv < NV; ++nv) pv[nv] = V::load(c.st + j * c.rp + c0 + nv * W);
      for (int md = 0; md < MK; ++md) {
        const B vb = V::set1(vcol[j * a.d_v + md]);
        for (int nv = 0; nv < NV; ++nv) acc[md][nv] = V::fma(vb, pv[nv], acc[md][nv]);
      }
    }
    for (int md = 0; md < MK; ++md)
      for (int nv = 0; nv < NV; ++nv) V::store(c.ot + (d0 + md) * c.rp + c0 + nv * W, acc[md][nv]);
  }

  // The fused softmax pass for one lane chunk: new max, alpha, P = 2^(S - m'), running sum.
  static void softmax(const Ctx& c, std::int64_t cols, std::int64_t c0, const B* tmax) {
    for (int nv = 0; nv < NV; ++nv) {
      const std::int64_t off = c0 + nv * W;
      const B m_old = V::load(c.m + off);
      const B m_new = V::max(m_old, tmax[nv]);
      // Rows that have seen no key yet keep m = -inf; subtract 0 instead so 2^(-inf) = 0.
      const B m_use = V::keep_le(V::set1(std::numeric_limits<float>::lowest()), m_new, m_new, V::set1(0.0f));
      V::store(c.alpha + off, V::exp2(m_old - m_use));
      V::store(c.m + off, m_new);
      B sum = V::set1(0.0f);
      for (std::int64_t j = 0; j < cols; ++j) {
        float* s = c.st + j * c.rp + off;
        const B p = V::exp2(V::load(s) - m_use);
        V::store(s, p);
        sum = sum + p;
      }
      V::store(c.l + off, V::load(c.l + off) * V::load(c.alpha + off) + sum);
    }
  }

  static void run(const TileArgs& a) {
    const std::int64_t rows = a.heads * a.positions;
    Ctx c;
    c.a = &a;
    c.rp = (rows + L - 1) / L * L;
    c.qt = a.scratch;
    c.st = c.qt + a.d_k * c.rp;
    c.ot = c.st + a.block_kv * c.rp;
    c.m = c.ot + a.d_v * c.rp;
    c.l = c.m + c.rp;
    c.alpha = c.l + c.rp;
    c.limit = c.alpha + c.rp;

    // Pack Q^T (scaled into the base-2 domain); padded rows are zero and fully masked.
    for (std::int64_t r = 0; r < c.rp; ++r) {
      const bool real = r < rows;
      const std::int64_t head = real ? r / a.positions : 0, pos = real ? a.i0 + r % a.positions : 0;
      const float* qrow = a.q + (head * a.seq_q + pos) * a.d_k;
      for (std::int64_t d = 0; d < a.d_k; ++d) c.qt[d * c.rp + r] = real ? qrow[d] * a.qk_scale : 0.0f;
      c.limit[r] = real ? static_cast<float>(a.causal ? pos + a.causal_offset : a.j_end) : -1.0f;
      c.m[r] = kNegInf;
      c.l[r] = 0.0f;
    }
    for (std::int64_t i = 0; i < a.d_v * c.rp; ++i) c.ot[i] = 0.0f;

    // Keys past the last one the last position can see are never visited.
    std::int64_t j_end = a.j_end;
    if (a.causal) j_end = imin(j_end, a.i0 + a.positions - 1 + a.causal_offset + 1);
    const std::int64_t first_full_limit = a.causal ? a.i0 + a.causal_offset : a.j_end;  // min limit over rows

    for (std::int64_t j0 = a.j_begin; j0 < j_end; j0 += a.block_kv) {
      const std::int64_t cols = imin(a.block_kv, j_end - j0);
      // Only tiles crossing the diagonal apply the mask (padded rows compute harmless zeros).
      const bool masked = j0 + cols - 1 > first_full_limit;
      for (std::int64_t c0 = 0; c0 < c.rp; c0 += L) {
        B tmax[NV];
        for (int nv = 0; nv < NV; ++nv) tmax[nv] = V::set1(kNegInf);
        std::int64_t jj = 0;
        for (; jj + MR <= cols; jj += MR) qk<MR>(c, j0, jj, c0, masked, tmax);
        for (; jj < cols; ++jj) qk<1>(c, j0, jj, c0, masked, tmax);
        softmax(c, cols, c0, tmax);
        std::int64_t d0 = 0;
        for (; d0 + MR <= a.d_v; d0 += MR) pv<MR>(c, j0, cols, d0, c0);
        for (; d0 < a.d_v; ++d0) pv<1>(c, j0, cols, d0, c0);
      }
    }

    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t head = r / a.positions, pos = a.i0 + r % a.positions;
      if (a.part_o != nullptr) {
        for (std::int64_t d = 0; d < a.d_v; ++d) a.part_o[r * a.d_v + d] = c.ot[d * c.rp + r];
        a.part_m[r] = c.m[r];
        a.part_l[r] = c.l[r];
      } else {
        const float inv = c.l[r] > 0.0f ? 1.0f / c.l[r] : 0.0f;  // no visible key: zeros
        float* orow = a.out + (head * a.seq_q + pos) * a.d_v;
        for (std::int64_t d = 0; d < a.d_v; ++d) orow[d] = c.ot[d * c.rp + r] * inv;
      }
    }
  }
};

template <class Arch>
void exp2_array(const float* x, float* y, std::int64_t n) {
  using V = Vec<Arch>;
  std::int64_t i = 0;
  for (; i + V::width <= n; i += V::width) V::store(y + i, V::exp2(V::load(x + i)));
  for (; i < n; ++i) y[i] = Vec<scalar_arch>::exp2(x[i]);
}

template <class Arch>
double fma_probe(std::int64_t iterations) {
  using V = Vec<Arch>;
  // 12 independent accumulators cover the FMA latency x throughput of current cores.
  constexpr int kChains = 12;
  typename V::B acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = V::set1(static_cast<float>(i) * 1e-3f);
  const auto a = V::set1(0.999999f), b = V::set1(1e-7f);
  for (std::int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kChains; ++i) acc[i] = V::fma(acc[i], a, b);
  }
  float sink[V::width];
  auto total = acc[0];
  for (int i = 1; i < kChains; ++i) total = total + acc[i];
  V::store(sink, total);
  volatile float keep = sink[0];  // the result must look used
  (void)keep;
  return 2.0 * kChains * V::width * static_cast<double>(iterations);
}

}  // namespace
}  // namespace attune::simd

// Defines attune::simd::isa_ops_<name>() for one ISA: its tag type and register tile (MR keys
// or value columns x NV vectors of query rows; the narrow form uses 8 x one vector of rows,
// 8 dividing the usual head dims so no scalar tail runs there).
#define ATTUNE_DEFINE_ISA_OPS(name, arch, mr, nv)                                        \
  namespace attune::simd {                                                               \
  const IsaOps& isa_ops_##name() {                                                       \
    static const IsaOps ops{Isa::name,                                                   \
                            {static_cast<int>(TileKernel<arch, mr, nv>::L),              \
                             &TileKernel<arch, mr, nv>::run},                            \
                            {static_cast<int>(TileKernel<arch, 8, 1>::L),           \
                             &TileKernel<arch, 8, 1>::run},                         \
                            &exp2_array<arch>, &fma_probe<arch>};                        \
    return ops;                                                                          \
  }                                                                                      \
  }
