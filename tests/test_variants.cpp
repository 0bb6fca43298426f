// The attention variants' contract beyond the equivalence matrix: the Problem fields and band
// arithmetic, VariantData validation, dispatch (plain() and supports()), and properties that
// hold whatever the reference says (a window of 1 is V at the aligned key, a hidden mask gives
// zeros, top-1 is the argmax row, a -inf sink is no sink, ALiBi slopes of 0 are plain,
// subnormal-prone sinks stay exact).
#include "reference.hpp"

#include <attune/attune.hpp>
#include <attune/tuned.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using attune::reference::shape;

attune::Problem small(std::int64_t sq, std::int64_t skv, bool causal) {
  attune::Problem p = shape(2, 1, sq, skv, 16, causal);
  return p;
}

TEST(VariantProblem, DefaultsArePlain) {
  attune::Problem p = small(5, 9, true);
  EXPECT_TRUE(p.plain());
  EXPECT_EQ(p.variant_string(), "");
  p.causal_align = attune::CausalAlign::top_left;
  EXPECT_FALSE(p.plain());  // causal with seq_q != seq_kv: the alignment matters
  p.seq_kv = 5;
  EXPECT_TRUE(p.plain());   // square: both alignments agree
  p.causal = false;
  p.seq_kv = 9;
  EXPECT_TRUE(p.plain());   // no causal mask, no window: nothing is aligned
  for (auto mod : {+[](attune::Problem& q) { q.window = 3; }, +[](attune::Problem& q) { q.softcap = 1.0f; },
                   +[](attune::Problem& q) { q.alibi = true; }, +[](attune::Problem& q) { q.sinks = true; },
                   +[](attune::Problem& q) { q.mask = attune::MaskKind::boolean; },
                   +[](attune::Problem& q) { q.top_k = 2; }}) {
    attune::Problem v = small(5, 9, false);
    mod(v);
    EXPECT_FALSE(v.plain()) << v.to_string();
    EXPECT_NE(v.variant_string(), "");
  }
}

TEST(VariantProblem, BandEdges) {
  attune::Problem p = small(4, 10, true);  // bottom-right: i' = i + 6
  EXPECT_EQ(p.key_begin(0), 0);
  EXPECT_EQ(p.key_end(0), 7);
  p.causal_align = attune::CausalAlign::top_left;  // i' = i
  EXPECT_EQ(p.key_end(0), 1);
  EXPECT_EQ(p.key_end(3), 4);
  p.window = 2;  // (i' - 2, i']
  EXPECT_EQ(p.key_begin(3), 2);
  EXPECT_EQ(p.key_end(3), 4);
  EXPECT_EQ(p.visible_keys(0), 1);
  EXPECT_EQ(p.visible_pairs(), 1 + 2 + 2 + 2);
  p.causal = false;  // symmetric (i' - 2, i' + 2)
  EXPECT_EQ(p.key_begin(3), 2);
  EXPECT_EQ(p.key_end(3), 5);
  p.window = std::numeric_limits<std::int64_t>::max();  // wider than anything: every key, no overflow
  EXPECT_EQ(p.key_begin(3), 0);
  EXPECT_EQ(p.key_end(3), 10);
  EXPECT_EQ(p.visible_pairs(), 40);
}

TEST(VariantProblem, InvalidFieldsAreNamed) {
  auto expect_invalid = [](attune::Problem p, const char* field) {
    try {
      p.validate();
      ADD_FAILURE() << "accepted " << field;
    } catch (const attune::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  attune::Problem p = small(4, 4, false);
  p.window = -1;
  expect_invalid(p, "window");
  p = small(4, 4, false);
  p.softcap = -2.0f;
  expect_invalid(p, "softcap");
  p.softcap = std::numeric_limits<float>::infinity();
  expect_invalid(p, "softcap");
  p = small(4, 4, false);
  p.top_k = -3;
  expect_invalid(p, "top_k");
  p = small(4, 4, false);
  p.mask = static_cast<attune::MaskKind>(9);
  expect_invalid(p, "mask");
  p = small(4, 4, false);
  p.causal_align = static_cast<attune::CausalAlign>(7);
  expect_invalid(p, "causal_align");
}

TEST(VariantData, PresenceAndValuesChecked) {
  attune::Problem p = small(4, 4, false);
  std::vector<float> q(p.q_elements()), k(p.k_elements()), v(p.v_elements()), o(p.out_elements());
  p.alibi = true;
  EXPECT_THROW(attune::attention(p, q.data(), k.data(), v.data(), o.data()), attune::InvalidArgument);
  std::vector<float> slopes = {0.5f, std::nanf("")};
  attune::VariantData d;
  d.alibi_slopes = slopes.data();
  EXPECT_THROW(attune::attention(p, q.data(), k.data(), v.data(), o.data(), d), attune::InvalidArgument);
  slopes[1] = 0.25f;
  EXPECT_NO_THROW(attune::attention(p, q.data(), k.data(), v.data(), o.data(), d));
  std::vector<float> sinks = {0.0f, std::numeric_limits<float>::infinity()};
  d.sinks = sinks.data();  // given, but the problem has no sinks
  EXPECT_THROW(attune::attention(p, q.data(), k.data(), v.data(), o.data(), d), attune::InvalidArgument);
  p.sinks = true;  // +inf is refused, -inf accepted (no sink)
  EXPECT_THROW(attune::attention(p, q.data(), k.data(), v.data(), o.data(), d), attune::InvalidArgument);
  sinks[1] = -std::numeric_limits<float>::infinity();
  EXPECT_NO_THROW(attune::attention(p, q.data(), k.data(), v.data(), o.data(), d));
}

TEST(VariantDispatch, KernelsWithoutVariantsRefuseThem) {
  attune::Problem p = small(8, 8, true);
  p.window = 3;
  for (const char* name : {"blocked", "gemm"}) {
    const attune::Kernel* k = attune::find_kernel(name);
    if (k == nullptr) continue;
    for (attune::Isa isa : attune::runnable_isas(*k)) EXPECT_FALSE(k->supports(p, isa)) << name;
    attune::Options o;
    o.kernel = name;
    EXPECT_THROW(attune::resolve(p, o), attune::InvalidArgument) << name;
  }
  EXPECT_EQ(attune::resolve(p).kernel->name(), "flash");  // auto takes the best kernel that implements it
  p.window = 0;
  p.top_k = 2;
  EXPECT_EQ(attune::resolve(p).kernel->name(), "naive");  // top-k: only the definition
}

TEST(VariantDispatch, TunedKeyOfAWindowIsItsBand) {
  attune::Problem p = small(8192, 8192, true);
  p.window = 512;
  EXPECT_EQ(attune::tuned_key(p).log2_seq_kv, 9);
  p.window = 0;
  EXPECT_EQ(attune::tuned_key(p).log2_seq_kv, 13);
}

// Runs every kernel/ISA that takes p; returns the outputs (as floats) per run.
std::vector<std::vector<float>> run_all(const attune::Problem& p, const attune::reference::Inputs& in) {
  std::vector<std::vector<float>> outs;
  const auto s = attune::reference::store(p, in);
  for (const attune::Kernel* k : attune::kernels()) {
    for (attune::Isa isa : attune::runnable_isas(*k)) {
      if (!k->supports(p, isa)) continue;
      attune::Options o;
      o.kernel = std::string(k->name());
      o.isa = isa;
      std::vector<float> out(static_cast<std::size_t>(p.out_elements()), std::nanf(""));
      attune::attention(p, s.q_data(), s.k_data(), s.v_data(), out.data(), in.variant(), o);
      outs.push_back(out);
    }
  }
  return outs;
}

TEST(VariantProperties, WindowOfOneIsTheAlignedValueRow) {
  attune::Problem p = shape(2, 1, 5, 40, 16, true);
  p.window = 1;
  const auto in = attune::reference::make_inputs(p, 1.0f, 3);
  for (const auto& out : run_all(p, in)) {
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < 5; ++i)
        for (std::int64_t d = 0; d < 16; ++d)  // query i sees key i + 35 only
          EXPECT_NEAR(out[static_cast<std::size_t>((h * 5 + i) * 16 + d)], in.v[static_cast<std::size_t>((i + 35) * 16 + d)], 1e-6);
  }
}

TEST(VariantProperties, HiddenMaskGivesZerosEvenWithASink) {
  for (attune::MaskKind kind : {attune::MaskKind::boolean, attune::MaskKind::additive}) {
    attune::Problem p = shape(2, 2, 33, 70, 16, false);
    p.mask = kind;
    p.sinks = true;
    const auto in = attune::reference::make_inputs(p, 1.0f, 5, attune::reference::MaskPattern::all_hidden);
    for (const auto& out : run_all(p, in))
      for (float x : out) ASSERT_EQ(x, 0.0f);
  }
}

TEST(VariantProperties, NegativeInfinitySinkAndZeroSlopesArePlain) {
  attune::Problem p = shape(4, 2, 40, 50, 16, true);
  const auto in0 = attune::reference::make_inputs(p, 1.0f, 9);
  const auto plain = attune::reference::attention(p, in0.q.data(), in0.k.data(), in0.v.data());
  p.alibi = p.sinks = true;
  auto in = in0;
  in.slopes.assign(4, 0.0f);
  in.sinks.assign(4, -std::numeric_limits<float>::infinity());
  for (const auto& out : run_all(p, in))
    for (std::size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], plain[i], 1e-5);
}

TEST(VariantProperties, TopOneIsTheArgmaxValueRow) {
  attune::Problem p = shape(1, 1, 7, 30, 8, false);
  p.top_k = 1;
  const auto in = attune::reference::make_inputs(p, 1.0f, 2);
  const auto w = attune::reference::attention_weights(p, in.q.data(), in.k.data(), in.variant());
  for (const auto& out : run_all(p, in)) {
    for (std::int64_t i = 0; i < 7; ++i) {
      std::int64_t best = -1;
      for (std::int64_t j = 0; j < 30; ++j)
        if (w[static_cast<std::size_t>(i * 30 + j)] == 1.0) best = j;
      ASSERT_GE(best, 0);
      for (std::int64_t d = 0; d < 8; ++d)
        EXPECT_NEAR(out[static_cast<std::size_t>(i * 8 + d)], in.v[static_cast<std::size_t>(best * 8 + d)], 1e-6);
    }
  }
}

// Mask + varlen on hand-made offsets: an empty query sequence, a sequence with no keys, one whose
// mask block hides everything (zeros, never NaN), one fully visible. The packed mask's entries
// outside the diagonal blocks are visible (boolean) / NaN (additive): reading them would show.
TEST(VariantProperties, MaskWithVarlenReadsEachSequencesDiagonalBlock) {
  for (attune::MaskKind kind : {attune::MaskKind::boolean, attune::MaskKind::additive}) {
    for (bool causal : {false, true}) {
      attune::Problem p = shape(4, 2, 41, 70, 16, causal);
      p.sequences = 4;
      p.mask = kind;
      p.mask_broadcast = kind == attune::MaskKind::additive ? attune::MaskBroadcast::per_head : attune::MaskBroadcast::shared;
      auto in = attune::reference::make_inputs(p, 1.0f, 11);
      in.cu_q = {0, 10, 10, 40, 41};
      in.cu_kv = {0, 20, 25, 25, 70};
      const std::int64_t planes = p.mask_elements() / (p.seq_q * p.seq_kv);
      in.mask_bool.clear();
      in.mask_add.clear();
      for (std::int64_t pl = 0; pl < planes; ++pl)
        for (std::int64_t i = 0; i < p.seq_q; ++i)
          for (std::int64_t j = 0; j < p.seq_kv; ++j) {
            const bool hidden_block = i < 10 && j < 20;  // sequence 0: everything hidden
            const bool own = hidden_block || (i == 40 && j >= 25);
            if (kind == attune::MaskKind::boolean) {
              in.mask_bool.push_back(hidden_block ? 0 : 1);
            } else {
              in.mask_add.push_back(hidden_block ? -std::numeric_limits<float>::infinity()
                                    : own         ? 0.25f * static_cast<float>(j % 5)
                                                  : std::nanf(""));
            }
          }
      const auto ref = attune::reference::attention(p, in.q.data(), in.k.data(), in.v.data(), in.variant());
      const auto outs = run_all(p, in);
      ASSERT_GE(outs.size(), 2u) << p.to_string();  // naive and the tiled kernels take it
      for (const auto& out : outs) {
        const auto check = attune::reference::compare(p, in, out.data(), ref);
        EXPECT_TRUE(check.ok()) << p.to_string() << ": error " << check.max_abs_error << " at " << check.worst_index;
        for (std::int64_t h = 0; h < p.heads_q; ++h)
          for (std::int64_t i = 0; i < 40; ++i) {  // sequences 0 (hidden) and 2 (no keys)
            for (std::int64_t d = 0; d < p.d_v; ++d)
              ASSERT_EQ(out[static_cast<std::size_t>((h * p.seq_q + i) * p.d_v + d)], 0.0f) << p.to_string();
          }
      }
    }
  }
}

// A sink far above every logit (and ALiBi pushing far keys lower still): the weights of whole
// tiles fall below 2^-100 of the sink's; results must still match the reference.
TEST(VariantProperties, DominantSinkStaysExact) {
  attune::Problem p = shape(2, 2, 300, 300, 32, true);
  p.sinks = p.alibi = true;
  auto in = attune::reference::make_inputs(p, 1.0f, 4);
  in.sinks = {8.0f, 2.0f};
  const auto ref = attune::reference::attention(p, in.q.data(), in.k.data(), in.v.data(), in.variant());
  for (const auto& out : run_all(p, in))
    for (std::size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-4);
}

}  // namespace
