// The amx kernel beyond the equivalence grid: what it takes, how auto dispatch and the ISA list
// treat it, its stage counters, its peak probe, and that the caller's floating-point state
// survives a call. Skipped (with the reason) where the CPU or the OS has no AMX-BF16.
#include "reference.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {

using attune::Dtype;
using attune::reference::shape;

#define SKIP_WITHOUT_AMX()                                                                   \
  if (!attune::cpu_supports(attune::Isa::amx)) GTEST_SKIP() << "this CPU or kernel has no AMX-BF16 (amx not runnable)"

const attune::Kernel& amx() { return *attune::find_kernel("amx"); }

attune::Problem bf16(attune::Problem p) {
  p.dtype = Dtype::bf16;
  return p;
}

TEST(Amx, TakesOnlyProblemsStoredEntirelyInBf16) {
  ASSERT_NE(attune::find_kernel("amx"), nullptr);
  const attune::Problem p = shape(4, 4, 64, 64, 64);
  EXPECT_TRUE(amx().supports(bf16(p), attune::Isa::amx));
  EXPECT_FALSE(amx().supports(p, attune::Isa::amx));
  attune::Problem mixed = bf16(p);
  mixed.kv_dtype = Dtype::fp32;
  EXPECT_FALSE(amx().supports(mixed, attune::Isa::amx));
  attune::Problem half = p;
  half.dtype = Dtype::fp16;
  EXPECT_FALSE(amx().supports(half, attune::Isa::amx));
  EXPECT_FALSE(amx().supports(bf16(p), attune::Isa::avx512));
}

TEST(Amx, AutoPicksItForBf16AndNeverForOtherTypes) {
  SKIP_WITHOUT_AMX();
  const attune::Problem p = shape(8, 2, 256, 256, 128, true);
  const attune::Choice c = attune::resolve(bf16(p));
  EXPECT_EQ(c.kernel->name(), "amx");
  EXPECT_EQ(c.isa, attune::Isa::amx);
  EXPECT_NE(attune::resolve(p).kernel->name(), "amx");
  EXPECT_NE(attune::resolve(p).isa, attune::Isa::amx);
  // Asking for fp32 on amx is refused with the types named, not run.
  attune::Options o;
  o.kernel = "amx";
  try {
    attune::resolve(p, o);
    ADD_FAILURE() << "fp32 on amx was accepted";
  } catch (const attune::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("fp32"), std::string::npos) << e.what();
  }
}

TEST(Amx, VectorKernelsHaveNoAmxBuild) {
  for (const char* name : {"simd", "flash"}) {
    const auto isas = attune::find_kernel(name)->isas();
    EXPECT_EQ(std::find(isas.begin(), isas.end(), attune::Isa::amx), isas.end()) << name;
  }
}

// Rows that see no key (causal with seq_q > seq_kv) are zeros, on the tile path and the vector
// path; the other rows match the reference.
TEST(Amx, RowsWithoutKeysAreZeroOnBothPaths) {
  SKIP_WITHOUT_AMX();
  const attune::Problem p = bf16(shape(4, 2, 80, 40, 64, true));  // rows 0..39 see nothing
  const auto in = attune::reference::make_inputs(p, 1.0f, 3);
  const auto ref = attune::reference::attention(p, in.q.data(), in.k.data(), in.v.data());
  const auto abs_v = attune::reference::attention_abs_v(p, in.q.data(), in.k.data(), in.v.data());
  const auto s = attune::reference::store(p, in);
  for (int micro : {1, 2}) {
    attune::Options o;
    o.kernel = "amx";
    o.config.micro = micro;
    std::vector<std::uint16_t> out(static_cast<std::size_t>(p.out_elements()), 0x7fc0);  // NaN
    attune::attention(p, s.q_data(), s.k_data(), s.v_data(), out.data(), o);
    const auto f = attune::reference::load_output(p, out.data());
    for (std::int64_t h = 0; h < p.heads_q; ++h)
      for (std::int64_t i = 0; i < 40; ++i)
        for (std::int64_t d = 0; d < p.d_v; ++d)
          ASSERT_EQ(f[static_cast<std::size_t>((h * p.seq_q + i) * p.d_v + d)], 0.0f) << "micro " << micro;
    const auto check = attune::reference::compare(p, in, f.data(), ref, Dtype::bf16, &abs_v);
    EXPECT_TRUE(check.ok()) << "micro " << micro << ": " << check.max_abs_error << " > " << check.tolerance;
  }
}

#if defined(__x86_64__)
// Flush-to-zero is the kernel's business: the caller's MXCSR is the same after the call.
TEST(Amx, LeavesTheCallersFloatingPointStateAlone) {
  SKIP_WITHOUT_AMX();
  const attune::Problem p = bf16(shape(2, 2, 96, 300, 64));
  const auto in = attune::reference::make_inputs(p, 1.0f, 9);
  const auto s = attune::reference::store(p, in);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(p.out_elements()));
  attune::Options o;
  o.kernel = "amx";
  o.config.threads = 1;
  const unsigned before = _mm_getcsr();
  attune::attention(p, s.q_data(), s.k_data(), s.v_data(), out.data(), o);
  EXPECT_EQ(_mm_getcsr(), before);
}
#endif

TEST(Amx, StageCountersRecordOnlyWhenEnabled) {
  SKIP_WITHOUT_AMX();
  const attune::Problem p = bf16(shape(4, 4, 256, 512, 64));
  const auto in = attune::reference::make_inputs(p, 1.0f, 4);
  const auto s = attune::reference::store(p, in);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(p.out_elements()));
  attune::Options o;
  o.kernel = "amx";
  attune::reset_stage_ticks();
  attune::attention(p, s.q_data(), s.k_data(), s.v_data(), out.data(), o);
  EXPECT_EQ(attune::stage_ticks().total(), 0u);
  attune::enable_stage_timing(true);
  attune::attention(p, s.q_data(), s.k_data(), s.v_data(), out.data(), o);
  attune::enable_stage_timing(false);
  const attune::StageTicks t = attune::stage_ticks();
  EXPECT_GT(t.pack, 0u);
  EXPECT_GT(t.qk, 0u);
  EXPECT_GT(t.softmax, 0u);
  EXPECT_GT(t.pv, 0u);
  EXPECT_GT(t.other, 0u);
  // The serialized (timed) schedule computes the same result as the pipelined one.
  std::vector<std::uint16_t> again(out.size());
  attune::attention(p, s.q_data(), s.k_data(), s.v_data(), again.data(), o);
  EXPECT_EQ(out, again);
  attune::reset_stage_ticks();
  EXPECT_EQ(attune::stage_ticks().total(), 0u);
}

TEST(Amx, PeakProbeIsPresentExactlyWhereAmxRuns) {
  const auto r = attune::probe_amx_peak(1, 1);
  if (!attune::cpu_supports(attune::Isa::amx)) {
    EXPECT_FALSE(r.has_value());
    GTEST_SKIP() << "this CPU or kernel has no AMX-BF16";
  }
  ASSERT_TRUE(r.has_value());
  // One TDPBF16PS is 16384 FLOP; any AMX core does far more than the fp32 FMA peak.
  EXPECT_GT(r->median, attune::probe_fma_peak(attune::default_isa(), 1, 1).median);
}

}  // namespace
