// amx: flash attention on the AMX matrix unit for problems stored in bf16 (amx/amx.hpp has the
// algorithm). A kernel of its own rather than a micro-kernel under `flash`: flash's tile
// contract is "queries in vector lanes, K/V read in place", while the tile unit wants K and V
// repacked into VNNI pairs once per (batch, KV head) and shared by every query block, with
// wide key panels and fp32 accumulators in memory; forcing both through one driver would make
// each worse. Its online softmax follows the same numeric policy (detail/online_softmax.hpp);
// its exp2 is its own degree-3 polynomial, fine enough for weights rounded to bf16 (isa/amx.cpp).
//
// Decoding shapes with fewer than kMinTileRows query rows per KV head (seq_q x the GQA group:
// one token of a 4-head group) run flash's AVX-512 path instead: there the tiles would be
// mostly empty and reading K/V once is the whole cost. From 8 rows on (speculative decoding,
// wider groups) the tiles win; when a KV head has a single query block, its K/V are packed
// panel by panel inside the block (read once, no packed copy of the head). Config::micro 1 / 2
// force the vector / tile path.
//
// Scheduling on oneTBB, two modes:
//   shared:  per (batch, KV head) in turn, all threads pack its K/V (key chunks), then all
//            threads run its query blocks (costly causal blocks first): the prefill case.
//   private: each (batch, KV head) is one task that packs into its thread's buffer and runs its
//            blocks: many small heads, too few blocks per head to share; a head with a single
//            block packs panel by panel inside it instead (decoding).
// Config: block_q (query rows per task, heads x positions for GQA groups), block_kv (keys per
// panel, rounded up to 32), threads, micro (0 auto, 1 vector path, 2 tiles).
#include "detail/online_softmax.hpp"
#include "kernel_impl.hpp"
#include "parallel.hpp"
#include "simd/driver.hpp"
#include "stages_impl.hpp"

#if defined(ATTUNE_HAVE_AMX)
#include "amx/amx.hpp"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace attune::detail {
namespace {

constexpr std::int64_t kDefaultBlockQ = 64;
constexpr std::int64_t kDefaultBlockKv = 256;
constexpr std::int64_t kMinTileRows = 8;  // query rows per KV head below which decoding uses vectors
constexpr std::int64_t kPackKeysPerTask = 512;

#if defined(ATTUNE_HAVE_AMX)

struct Plan {
  bool tiles;
  std::int64_t hpt, positions, q_tiles, block_kv;
  int threads;
  bool shared;
  bool per_panel;            // private heads of one block each: pack panel by panel in the block
  std::size_t packed_elems;  // one KV head's packed K + V (0 when packed per panel)
  std::size_t block_bytes;   // one task's scratch
};

Plan plan_for(const Problem& p, const Config& c) {
  Plan plan;
  plan.tiles = c.micro == 2 || (c.micro == 0 && p.seq_q * p.group_size() >= kMinTileRows);
  const std::int64_t block_q = c.block_q > 0 ? c.block_q : kDefaultBlockQ;
  const std::int64_t group = p.group_size();
  // GQA: the group's heads share a task when a head has fewer positions than a block.
  plan.hpt = 1;
  if (group > 1 && p.seq_q < block_q) {
    plan.hpt = std::clamp<std::int64_t>(block_q / p.seq_q, 1, group);
    while (group % plan.hpt != 0) --plan.hpt;
  }
  plan.positions = std::clamp<std::int64_t>(block_q / plan.hpt, 1, p.seq_q);
  plan.q_tiles = (p.seq_q + plan.positions - 1) / plan.positions;
  plan.block_kv = amx::round_up(std::clamp<std::int64_t>(c.block_kv > 0 ? c.block_kv : kDefaultBlockKv, 1, 4096),
                                amx::kTileKeys);
  plan.block_kv = std::min(plan.block_kv, amx::round_up(p.seq_kv, amx::kTileKeys));
  static const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));  // read once (parses /sys)
  const int wanted = std::min(c.threads > 0 ? c.threads : simd::default_threads(), cores);
  const std::int64_t per_group = group / plan.hpt * plan.q_tiles;  // tasks of one (batch, KV head)
  const std::int64_t groups = p.batch * p.heads_kv;
  plan.shared = per_group >= 2 * wanted || groups < wanted;
  plan.threads = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(wanted, plan.shared ? per_group : groups)));
  plan.per_panel = !plan.shared && per_group == 1;
  plan.packed_elems = plan.per_panel ? 0
                                     : static_cast<std::size_t>(amx::packed_k_elements(p.seq_kv, p.d_k) +
                                                                amx::packed_v_elements(p.seq_kv, p.d_v));
  plan.block_bytes = amx::block_scratch_bytes(plan.hpt * plan.positions, p.d_k, p.d_v, plan.block_kv, plan.per_panel);
  return plan;
}

// The vector path: flash's plan with its own register-tile choice (micro means the path here).
simd::Plan vector_plan(const Problem& p, Config c) {
  c.micro = 0;
  return flash_plan(p, c);
}

const std::uint16_t* bits(const void* p, std::int64_t offset) { return static_cast<const std::uint16_t*>(p) + offset; }
std::uint16_t* bits(void* p, std::int64_t offset) { return static_cast<std::uint16_t*>(p) + offset; }

// Packs one KV head's K and V into `dst` (K first), keys split into chunks run by `threads`.
void pack_group(const Problem& p, const std::uint16_t* k, const std::uint16_t* v, std::uint16_t* dst, int threads,
                bool timed) {
  const std::int64_t k_elems = amx::packed_k_elements(p.seq_kv, p.d_k);
  const std::int64_t chunks = (p.seq_kv + kPackKeysPerTask - 1) / kPackKeysPerTask;
  parallel(2 * chunks, threads, [&](std::int64_t t, int) {
    const std::uint64_t start = timed ? amx::ticks() : 0;
    const std::int64_t c = t / 2;
    amx::PackArgs a;
    a.keys = p.seq_kv;
    a.key_begin = c * kPackKeysPerTask;
    a.key_end = std::min(p.seq_kv, a.key_begin + kPackKeysPerTask);
    if (t % 2 == 0) {
      a.src = k, a.d = p.d_k, a.dst = dst;
      amx::pack_k(a);
    } else {
      a.src = v, a.d = p.d_v, a.dst = dst + k_elems;
      amx::pack_v(a);
    }
    if (timed) {
      StageTicks s;
      s.pack = amx::ticks() - start;
      stages_add(s);
    }
  });
}

void run_tiles(const Problem& p, const Tensors& t, const Plan& plan) {
  const std::int64_t group = p.group_size(), sets = group / plan.hpt, per_group = sets * plan.q_tiles;
  const std::int64_t groups = p.batch * p.heads_kv;
  const std::int64_t k_elems = amx::packed_k_elements(p.seq_kv, p.d_k);
  const bool timed = stage_timing_enabled();
  const float qk_scale = p.effective_scale() * detail::online::kLog2e;  // the softmax runs in base 2
  const int buffers = plan.per_panel ? 0 : plan.shared ? 1 : plan.threads;
  std::vector<AlignedArray<std::uint16_t>> packed;
  for (int i = 0; i < buffers; ++i) packed.push_back(aligned_array<std::uint16_t>(plan.packed_elems));
  std::vector<AlignedArray<unsigned char>> scratch;
  for (int i = 0; i < plan.threads; ++i) scratch.push_back(aligned_array<unsigned char>(plan.block_bytes));

  // Block `task` of group g (batch b, KV head hk): later (costlier causal) query tiles first.
  auto run_one = [&](std::int64_t g, std::int64_t task, const std::uint16_t* kvp, int slot) {
    const std::int64_t b = g / p.heads_kv, hk = g % p.heads_kv;
    const std::int64_t qt = plan.q_tiles - 1 - task % plan.q_tiles, set = task / plan.q_tiles;
    const std::int64_t h0 = hk * group + set * plan.hpt;
    amx::BlockArgs a;
    a.q = bits(t.q, (b * p.heads_q + h0) * p.seq_q * p.d_k);
    a.out = bits(t.out, (b * p.heads_q + h0) * p.seq_q * p.d_v);
    if (kvp != nullptr) {
      a.kp = kvp;
      a.vp = kvp + k_elems;
    } else {  // per-panel packing inside the block
      a.k_raw = bits(t.k, g * p.seq_kv * p.d_k);
      a.v_raw = bits(t.v, g * p.seq_kv * p.d_v);
      a.seq_kv = p.seq_kv;
    }
    a.q_head_stride = p.seq_q * p.d_k;
    a.out_head_stride = p.seq_q * p.d_v;
    a.heads = plan.hpt;
    a.i0 = qt * plan.positions;
    a.positions = std::min(plan.positions, p.seq_q - a.i0);
    a.d_k = p.d_k;
    a.d_v = p.d_v;
    a.kv_end = p.visible_keys(a.i0 + a.positions - 1);
    a.causal = p.causal;
    a.causal_offset = p.seq_kv - p.seq_q;
    a.qk_scale = qk_scale;
    a.block_kv = plan.block_kv;
    a.scratch = scratch[static_cast<std::size_t>(slot)].get();
    std::uint64_t ticks[amx::kStageCount] = {};
    if (timed) a.stages = ticks;
    amx::run_block(a);
    if (timed) {
      StageTicks s;
      s.pack = ticks[amx::kPack];
      s.qk = ticks[amx::kQk];
      s.softmax = ticks[amx::kSoftmax];
      s.pv = ticks[amx::kPv];
      s.other = ticks[amx::kOther];
      stages_add(s);
    }
  };
  auto k_of = [&](std::int64_t g) { return bits(t.k, g * p.seq_kv * p.d_k); };
  auto v_of = [&](std::int64_t g) { return bits(t.v, g * p.seq_kv * p.d_v); };

  if (plan.shared) {
    std::uint16_t* kvp = packed[0].get();
    for (std::int64_t g = 0; g < groups; ++g) {
      pack_group(p, k_of(g), v_of(g), kvp, plan.threads, timed);
      parallel(per_group, plan.threads, [&](std::int64_t task, int slot) { run_one(g, task, kvp, slot); });
    }
  } else {
    parallel(groups, plan.threads, [&](std::int64_t g, int slot) {
      std::uint16_t* kvp = plan.per_panel ? nullptr : packed[static_cast<std::size_t>(slot)].get();
      if (kvp != nullptr) pack_group(p, k_of(g), v_of(g), kvp, 1, timed);
      for (std::int64_t task = 0; task < per_group; ++task) run_one(g, task, kvp, slot);
    });
  }
  // The caller's thread gives its tile state back; oneTBB's workers keep theirs configured
  // until their next block (each block loads its configuration first).
  amx::release_tiles();
}

#endif  // ATTUNE_HAVE_AMX

class Amx final : public Kernel {
 public:
  std::string_view name() const noexcept override { return "amx"; }
  std::string_view description() const noexcept override {
    return "AMX-BF16 tiles for bf16: K/V packed once per KV head, wide key panels, oneTBB threads";
  }
  std::vector<Isa> isas() const override {
#if defined(ATTUNE_HAVE_AMX)
    return {Isa::amx};
#else
    return {};
#endif
  }
  int rank() const noexcept override { return 40; }
  std::vector<ParamSpec> params() const override {
    return {{"block_q", {32, 64, 128, 256}},
            {"block_kv", {64, 128, 256, 512}},
            {"threads", {1, 2, 4, 8, 16, 32, 64}},
            {"micro", {1, 2}}};
  }
  // Q, K, V and O all in bf16 (the tiles multiply the values as stored), and no variant yet
  // (Problem::plain(): dense or bottom-right causal).
  bool supports(const Problem& p, Isa isa) const override {
    return isa == Isa::amx && p.dtype == Dtype::bf16 && p.kv_type() == Dtype::bf16 && p.plain();
  }
  // bf16 on the tile path; the vector path for decoding keeps P in fp32, so the bound this
  // implies there is conservative (the contract takes no config).
  Dtype pv_dtype(const Problem&, Isa) const override { return Dtype::bf16; }

  std::size_t workspace_bytes(const Problem& p, const Config& config, Isa isa) const override {
    (void)isa;
#if defined(ATTUNE_HAVE_AMX)
    const Plan plan = plan_for(p, config);
    if (!plan.tiles) return simd::workspace_bytes(p, vector_plan(p, config), simd::isa_ops(Isa::avx512));
    const std::size_t packed = saturating_mul(plan.packed_elems, 2);
    const std::size_t per_thread = saturating_add(plan.block_bytes, plan.shared ? 0 : packed);
    return saturating_add(plan.shared ? packed : 0, saturating_mul(per_thread, static_cast<std::size_t>(plan.threads)));
#else
    (void)p;
    (void)config;
    return 0;
#endif
  }

  void run(const Problem& p, const Tensors& t, const Config& config, Isa isa) const override {
    (void)isa;
#if defined(ATTUNE_HAVE_AMX)
    const Plan plan = plan_for(p, config);
    if (plan.tiles) {
      run_tiles(p, t, plan);
    } else {
      simd::run_tiled(p, t, vector_plan(p, config), simd::isa_ops(Isa::avx512));
    }
#else
    (void)p;
    (void)t;
    (void)config;
#endif
  }
};

}  // namespace

const Kernel& kernel_amx() {
  static const Amx kernel;
  return kernel;
}

}  // namespace attune::detail
