// Paged K/V (Problem::paged, attune/paged.hpp): the validation of block tables and lengths (one
// clear error, nothing written, nothing read outside the pool), and paged_append: its layout is the
// one the kernels read (a cache filled by it and attended matches the reference on the same rows),
// quantizing exactly as quantize_kv does, with bad slots refused before anything is written.
#include "reference.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using attune::Dtype;
using attune::InvalidArgument;
using attune::Problem;

// Two sequences (1 and 3 queries; 20 and 7 keys) over a pool of 6 blocks of 8 keys, fp32.
struct Small {
  Problem p;
  std::vector<std::int64_t> cu_q{0, 1, 4}, cu_kv{0, 20, 27};
  std::vector<std::int32_t> table{4, 0, 2, -1, 5, -1, -1, -1};  // [2, 4]
  std::vector<float> q, pool_k, pool_v, out;
  Small() {
    p.heads_q = 2;
    p.heads_kv = 1;
    p.d_k = p.d_v = 4;
    p.causal = true;
    p.sequences = 2;
    p.seq_q = 4;
    p.seq_kv = 27;
    p.block_size = 8;
    p.num_blocks = 6;
    p.max_blocks = 4;
    q.assign(static_cast<std::size_t>(p.q_elements()), 0.5f);
    pool_k.assign(static_cast<std::size_t>(p.k_elements()), 0.25f);
    pool_v.assign(static_cast<std::size_t>(p.v_elements()), 1.0f);
    out.assign(static_cast<std::size_t>(p.out_elements()), -7.0f);
  }
  attune::VariantData data() const {
    attune::VariantData d;
    d.cu_seqlens_q = cu_q.data();
    d.cu_seqlens_kv = cu_kv.data();
    d.block_table = table.data();
    return d;
  }
  // Runs flash; returns the error message ("" when it ran).
  std::string run(const attune::VariantData& d) {
    attune::Options o;
    o.kernel = "flash";
    try {
      attune::attention(p, q.data(), pool_k.data(), pool_v.data(), out.data(), d, o);
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  }
  bool untouched() const {
    return std::all_of(out.begin(), out.end(), [](float x) { return x == -7.0f; });
  }
};

TEST(Paged, ValidSmallProblemRuns) {
  Small s;
  EXPECT_EQ(s.run(s.data()), "");
  // Every key is 0.25 and every value 1: each visible row averages to 1.
  for (float x : s.out) EXPECT_FLOAT_EQ(x, 1.0f);
}

TEST(Paged, BadTablesAndLengthsAreCleanErrors) {
  struct Bad {
    const char* what;
    void (*spoil)(Small&);
    const char* message;
  };
  const Bad bad[] = {
      {"block id past the pool", [](Small& s) { s.table[1] = 6; }, "block_table[0][1] = 6 is not a block of the pool [0, 6)"},
      {"negative block id", [](Small& s) { s.table[4] = -1; }, "block_table[1][0] = -1"},
      {"context longer than its row", [](Small& s) { s.cu_kv = {0, 33, 40}; s.p.seq_kv = 40; }, "sequence 0 has 33 keys, more than its 4 table entries"},
      {"negative length", [](Small& s) { s.cu_kv = {0, 28, 27}; }, "cu_seqlens_kv[1] = 28 must be in [0, 27]"},
      {"unsorted cu_seqlens_q", [](Small& s) { s.cu_q = {0, 3, 1}; }, "cu_seqlens_q[2]"},
      {"totals that disagree", [](Small& s) { s.p.seq_kv = 30; }, "must equal the total 30"},
      {"no block table", [](Small& s) { s.table.clear(); }, "block_table is null"},
      {"paged without sequences", [](Small& s) { s.p.sequences = 0; s.cu_q.clear(); s.cu_kv.clear(); }, "must be > 0 with paged K/V"},
      {"zero blocks", [](Small& s) { s.p.num_blocks = 0; }, "num_blocks = 0 must be positive"},
  };
  for (const Bad& b : bad) {
    Small s;
    b.spoil(s);
    attune::VariantData d = s.data();
    if (s.table.empty()) d.block_table = nullptr;
    if (s.cu_q.empty()) d.cu_seqlens_q = d.cu_seqlens_kv = nullptr;
    const std::string error = s.run(d);
    EXPECT_NE(error.find(b.message), std::string::npos) << b.what << ": got '" << error << "'";
    EXPECT_EQ(error.find('\n'), std::string::npos) << b.what;
    EXPECT_TRUE(s.untouched()) << b.what << ": the output was written";
  }
}

TEST(Paged, OverlappingOutputRowsAreRefused) {
  Small s;
  s.p.strided = true;
  attune::VariantData d = s.data();
  d.q_strides = attune::Strides::contiguous(s.p.heads_q, s.p.seq_q, s.p.d_k);
  d.k_strides = attune::Strides::seq_major(s.p.heads_kv, s.p.block_size, s.p.d_k);  // the pool: (block, head, row)
  d.v_strides = d.k_strides;
  d.out_strides = {0, 4, 2};  // rows 2 elements apart, 4 wide
  const std::string error = s.run(d);
  EXPECT_NE(error.find("make output rows overlap"), std::string::npos) << error;
  EXPECT_TRUE(s.untouched());
  d.out_strides = attune::Strides::contiguous(s.p.heads_q, s.p.seq_q, s.p.d_v);
  EXPECT_EQ(s.run(d), "");
}

// Naive computes from packed K/V only: paged problems are not offered to it, and `auto` takes
// a kernel that reads the pool.
TEST(Paged, AutoPicksAKernelThatReadsThePool) {
  Small s;
  const attune::Kernel* naive = attune::find_kernel("naive");
  EXPECT_FALSE(naive->supports(s.p, attune::Isa::scalar));
  const attune::Choice c = attune::resolve(s.p);
  EXPECT_TRUE(c.kernel->name() == "flash" || c.kernel->name() == "simd") << c.kernel->name();
}

// A cache filled token by token with paged_append (slots in shuffled blocks, padding tokens with
// slot -1), then attended: the result matches the reference computed on the rows as the cache
// decodes them, for every K/V type.
TEST(Paged, AppendThenAttendMatchesTheReference) {
  for (const Dtype kv : {Dtype::fp32, Dtype::bf16, Dtype::fp16, Dtype::int8, Dtype::int8_kc, Dtype::fp8_e4m3,
                         Dtype::fp8_e5m2, Dtype::int4}) {
    SCOPED_TRACE(attune::to_string(kv));
    Problem p;
    p.heads_q = 4;
    p.heads_kv = 2;
    p.d_k = p.d_v = 64;
    p.causal = true;
    p.kv_dtype = kv;
    p.sequences = 2;
    p.block_size = 16;
    p.num_blocks = 12;
    p.max_blocks = 6;
    const std::vector<std::int64_t> ctx{70, 33}, nq{1, 5};
    p.seq_q = nq[0] + nq[1];
    p.seq_kv = ctx[0] + ctx[1];
    std::vector<std::int64_t> cu_q{0, nq[0], nq[0] + nq[1]}, cu_kv{0, ctx[0], ctx[0] + ctx[1]};
    // Block table: shuffled blocks.
    std::vector<std::int32_t> ids(12);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(7));
    std::vector<std::int32_t> table(static_cast<std::size_t>(p.sequences * p.max_blocks), -1);
    std::size_t next = 0;
    for (std::int64_t s = 0; s < 2; ++s)
      for (std::int64_t x = 0; x < (ctx[static_cast<std::size_t>(s)] + 15) / 16; ++x) table[static_cast<std::size_t>(s * 6 + x)] = ids[next++];
    // New rows [tokens, heads_kv, d] in fp32, every sequence's context, with a padding token.
    std::mt19937_64 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const std::int64_t tokens = p.seq_kv + 1;
    std::vector<float> k_rows(static_cast<std::size_t>(tokens * 2 * 64)), v_rows(k_rows.size());
    for (float& x : k_rows) x = normal(rng);
    for (float& x : v_rows) x = normal(rng);
    std::vector<std::int64_t> slots;
    for (std::int64_t s = 0; s < 2; ++s)
      for (std::int64_t j = 0; j < ctx[static_cast<std::size_t>(s)]; ++j)
        slots.push_back(table[static_cast<std::size_t>(s * 6 + j / 16)] * 16 + j % 16);
    slots.push_back(-1);
    // The cache, with its fixed scales (fp8 per head, int8_kc's K per channel) set up front.
    attune::PagedCache cache;
    cache.dtype = kv;
    cache.num_blocks = 12;
    cache.block_size = 16;
    cache.heads_kv = 2;
    cache.d_k = cache.d_v = 64;
    std::vector<unsigned char> pool_k(static_cast<std::size_t>(12 * 16 * 2) * attune::row_bytes(kv, 64), 0xff), pool_v(pool_k.size(), 0xff);
    cache.k = pool_k.data();
    cache.v = pool_v.data();
    std::vector<float> k_scales, v_scales;
    const std::int64_t tok_records = 12 * 2 * 16;
    auto scales_for = [&](bool is_k, std::vector<float>& out) {
      const std::int64_t rec = attune::scale_record_elements(kv, 64, is_k);
      if (rec > 0) {
        out.assign(static_cast<std::size_t>((tok_records * rec * static_cast<std::int64_t>(attune::scale_element_bytes(kv)) + 3) / 4), 0.0f);
      } else if (kv == Dtype::int8_kc) {
        out.assign(2 * 64, 0.05f);
      } else if (attune::is_quantized(kv)) {
        out.assign(2, kv == Dtype::fp8_e4m3 ? 4.0f / 448.0f : 4.0f / 57344.0f);
      }
    };
    scales_for(true, k_scales);
    scales_for(false, v_scales);
    if (attune::is_quantized(kv)) {
      cache.k_scales = k_scales.data();
      cache.v_scales = v_scales.data();
    }
    attune::paged_append(cache, k_rows.data(), v_rows.data(), Dtype::fp32, tokens, slots.data());
    // What the cache holds, decoded row by row: the reference's packed K/V [heads_kv, seq_kv, d].
    std::vector<float> k_packed(static_cast<std::size_t>(2 * p.seq_kv * 64)), v_packed(k_packed.size());
    for (std::int64_t t = 0; t < p.seq_kv; ++t) {
      const std::int64_t block = slots[static_cast<std::size_t>(t)] / 16, row = slots[static_cast<std::size_t>(t)] % 16;
      for (std::int64_t h = 0; h < 2; ++h) {
        for (const bool is_k : {true, false}) {
          const auto& pool = is_k ? pool_k : pool_v;
          const std::size_t rb = attune::row_bytes(kv, 64);
          const unsigned char* code = pool.data() + static_cast<std::size_t>((block * 2 + h) * 16 + row) * rb;
          float* dst = (is_k ? k_packed : v_packed).data() + (h * p.seq_kv + t) * 64;
          if (!attune::is_quantized(kv)) {
            attune::convert_to_float(kv, code, dst, 64);
            continue;
          }
          const std::vector<float>& sc = is_k ? k_scales : v_scales;
          const std::int64_t rec = attune::scale_record_elements(kv, 64, is_k);
          const void* record = rec > 0 ? reinterpret_cast<const unsigned char*>(sc.data()) +
                                             static_cast<std::size_t>(((block * 2 + h) * 16 + row) * rec) * attune::scale_element_bytes(kv)
                                       : nullptr;
          const float* fixed = rec > 0 ? nullptr : sc.data() + (kv == Dtype::int8_kc ? h * 64 : h);
          attune::dequantize_kv(kv, is_k, code, record, 1, 64, dst, fixed);
          // The codes are exactly quantize_kv's of the row appended.
          std::vector<unsigned char> want(rb);
          std::vector<unsigned char> want_record(static_cast<std::size_t>(std::max<std::int64_t>(rec, 1)) * 4);
          const float* src = (is_k ? k_rows : v_rows).data() + (t * 2 + h) * 64;
          attune::quantize_kv(kv, is_k, src, 1, 64, want.data(), rec > 0 ? want_record.data() : nullptr, fixed);
          EXPECT_EQ(0, std::memcmp(want.data(), code, rb)) << "token " << t << " head " << h;
        }
      }
    }
    std::vector<float> q(static_cast<std::size_t>(p.q_elements()));
    for (float& x : q) x = normal(rng);
    attune::VariantData d;
    d.cu_seqlens_q = cu_q.data();
    d.cu_seqlens_kv = cu_kv.data();
    d.block_table = table.data();
    if (attune::is_quantized(kv)) {
      d.kv_scales.k = k_scales.data();
      d.kv_scales.v = v_scales.data();
    }
    std::vector<float> out(static_cast<std::size_t>(p.out_elements()));
    attune::attention(p, q.data(), pool_k.data(), pool_v.data(), out.data(), d);
    attune::VariantData packed;
    packed.cu_seqlens_q = cu_q.data();
    packed.cu_seqlens_kv = cu_kv.data();
    const std::vector<double> ref = attune::reference::attention(attune::reference::unpaged(p), q.data(), k_packed.data(), v_packed.data(), packed);
    for (std::size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-4) << "output " << i;
  }
}

TEST(Paged, AppendRefusesBadSlotsBeforeWriting) {
  attune::PagedCache cache;
  cache.num_blocks = 2;
  cache.block_size = 4;
  cache.heads_kv = 1;
  cache.d_k = cache.d_v = 2;
  std::vector<float> k(16, 3.0f), v(16, 3.0f), rows(6, 1.0f);
  cache.k = k.data();
  cache.v = v.data();
  const std::int64_t past[] = {0, 8, 1}, twice[] = {5, 2, 5}, fine[] = {7, -1, 0};
  EXPECT_THROW(attune::paged_append(cache, rows.data(), rows.data(), Dtype::fp32, 3, past), InvalidArgument);
  EXPECT_THROW(attune::paged_append(cache, rows.data(), rows.data(), Dtype::fp32, 3, twice), InvalidArgument);
  EXPECT_TRUE(std::all_of(k.begin(), k.end(), [](float x) { return x == 3.0f; }));
  attune::paged_append(cache, rows.data(), rows.data(), Dtype::fp32, 3, fine);
  EXPECT_EQ(std::count(k.begin(), k.end(), 1.0f), 4);  // slots 7 and 0, two elements each
  cache.dtype = Dtype::int8;  // no scales
  EXPECT_THROW(attune::paged_append(cache, rows.data(), rows.data(), Dtype::fp32, 3, fine), InvalidArgument);
}

}  // namespace

namespace {

// Cascade attention: a batch whose sequences share their first blocks gives the same result
// (within the bound) as the same batch with private copies of those blocks, and, with fp32
// outputs, not the same bits: the shared prefix was attended in its own pass and merged (the
// cascade ran).
TEST(Paged, CascadeMatchesPrivateCopiesOfTheSharedBlocks) {
  namespace ref = attune::reference;
  int cases = 0, fp32_cases = 0;
  for (const ref::Case& c : ref::paged_grid()) {
    const Dtype kv = c.problem.kv_type();
    if (!c.name.ends_with("_prefix") || (kv != Dtype::fp32 && kv != Dtype::bf16 && kv != Dtype::int8)) continue;
    SCOPED_TRACE(c.name);
    ++cases;
    const Problem& p = c.problem;
    const ref::Inputs in = ref::make_inputs(c, 42);
    // Private copies: every table entry its own block (the pool grows to hold them).
    Problem own = p;
    own.num_blocks = p.sequences * p.max_blocks;
    ref::Inputs in_own = in;
    std::int32_t next = 0;
    bool shares = false;
    for (std::int64_t s = 0; s < p.sequences; ++s)
      for (std::int64_t x = 0; x < p.max_blocks; ++x) {
        std::int32_t& id = in_own.block_table[static_cast<std::size_t>(s * p.max_blocks + x)];
        if (id < 0) continue;
        shares = shares || (s > 0 && id == in.block_table[static_cast<std::size_t>(x)]);
        id = next++;
      }
    ASSERT_TRUE(shares) << "the case shares no block";
    const ref::Stored packed = ref::store(ref::unpaged(p), in);
    std::vector<std::vector<float>> outs;
    for (const auto& [problem, inputs] : {std::pair<const Problem*, const ref::Inputs*>{&p, &in}, {&own, &in_own}}) {
      const ref::PagedKv pool = ref::page_kv(*problem, *inputs, packed);
      attune::VariantData d = inputs->variant();
      if (!pool.k_scales.empty()) {
        d.kv_scales.k = pool.k_scales.data();
        d.kv_scales.v = pool.v_scales.data();
      }
      std::vector<unsigned char> out(static_cast<std::size_t>(p.out_elements()) * attune::size_of(p.dtype));
      attune::Options o;
      o.kernel = "flash";
      attune::attention(*problem, packed.q_data(), pool.k.data(), pool.v.data(), out.data(), d, o);
      outs.push_back(ref::load_output(p, out.data()));
    }
    const std::vector<double> expect = ref::attention(ref::unpaged(p), in.q.data(), in.k.data(), in.v.data(), in.variant());
    // bf16: the dot tiles round P to bf16, which the bound allows for with sum |V|.
    const std::vector<double> abs_v = ref::attention_abs_v(ref::unpaged(p), in.q.data(), in.k.data(), in.v.data(), in.variant());
    attune::Options o;
    o.kernel = "flash";
    const attune::Choice choice = attune::resolve(p, o);
    const Dtype pv = choice.kernel->pv_dtype(p, choice.isa);
    EXPECT_TRUE(ref::compare(p, in, outs[0].data(), expect, pv, &abs_v).ok());
    EXPECT_TRUE(ref::compare(p, in, outs[1].data(), expect, pv, &abs_v).ok());
    // The bits differ where the output keeps them: fp32 O (16-bit O may round both to the same).
    if (p.dtype == Dtype::fp32) {
      EXPECT_NE(outs[0], outs[1]) << "bit-identical: the shared prefix was not attended on its own";
      ++fp32_cases;
    }
  }
  EXPECT_GE(cases, 6);
  EXPECT_GE(fp32_cases, 4);
}

}  // namespace
