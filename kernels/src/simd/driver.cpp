// The tiled-attention driver shared by `simd` and `flash`.
#include "simd/driver.hpp"

#include "detail/online_softmax.hpp"
#include "isa_order.hpp"
#include "kernel_impl.hpp"
#include "parallel.hpp"

#include <attune/error.hpp>
#include <attune/probes.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>


namespace attune::detail {
#ifdef ATTUNE_WITH_TBB
tbb::task_arena& arena_for(int threads) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<tbb::task_arena>> arenas;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = arenas[threads];
  if (!slot) slot = std::make_unique<tbb::task_arena>(threads);
  return *slot;
}
#endif
}  // namespace attune::detail

namespace attune::simd {

int default_threads() {
#ifdef ATTUNE_WITH_TBB
  return tbb::this_task_arena::max_concurrency();
#else
  return 1;
#endif
}

namespace {

using detail::parallel;
using detail::saturating_add;
using detail::saturating_mul;

// Element `index` of a tensor stored as `type`, as a pointer (tensors are untyped here).
const void* at(const void* base, Dtype type, std::int64_t index) {
  return static_cast<const char*>(base) + index * static_cast<std::int64_t>(size_of(type));
}
void* at(void* base, Dtype type, std::int64_t index) {
  return static_cast<char*>(base) + index * static_cast<std::int64_t>(size_of(type));
}
// The same for K/V, whose int4 elements take half a byte (int4 indices are even).
const void* kv_at(const void* base, Dtype type, std::int64_t index) {
  return type == Dtype::int4 ? static_cast<const char*>(base) + index / 2 : at(base, type, index);
}

// How the tile kernels decode a quantized K (is_k) or V of KV head hk of batch b, from token
// `token` on (KvDequant; the scale layouts of attune/kv_quant.hpp). Paged K/V: of block 0, row 0
// (b = token = 0), with the records' stride between blocks in KvDequant::page.
KvDequant kv_dequant(const Problem& p, const KvScales& sc, bool is_k, std::int64_t b, std::int64_t hk, std::int64_t token) {
  KvDequant q;
  const Dtype kv = p.kv_type();
  const void* scales = is_k ? sc.k : sc.v;
  const KvScales::RecordStrides& rs = is_k ? sc.k_strides : sc.v_strides;
  const bool dense = rs.contiguous_default();
  // Dense records are [batch, heads_kv, tokens]; paged ones [num_blocks, heads_kv, block_size].
  const std::int64_t tokens = p.paged() ? p.block_size : p.seq_kv;
  const std::int64_t record = dense ? (b * p.heads_kv + hk) * tokens + token : b * rs.batch + hk * rs.head + token * rs.token;
  const std::int64_t step = dense ? 1 : rs.token;
  const std::int64_t page = dense ? p.heads_kv * tokens : rs.batch;  // records between blocks
  switch (kv) {
    case Dtype::int8:
      q.tok = static_cast<const float*>(scales) + record;
      q.tok_row = step;
      q.page = page;
      break;
    case Dtype::int8_kc:
      if (is_k) {
        q.chan = static_cast<const float*>(scales) + (b * p.heads_kv + hk) * p.d_k;
      } else {
        q.tok = static_cast<const float*>(scales) + record;
        q.tok_row = step;
        q.page = page;
      }
      break;
    case Dtype::fp8_e4m3:
    case Dtype::fp8_e5m2:
      // e4m3 codes are read as value / 256 (simd/vec.hpp): the exact power of two goes here.
      q.head = static_cast<const float*>(scales)[hk] * (kv == Dtype::fp8_e4m3 ? 256.0f : 1.0f);
      break;
    case Dtype::int4: {
      const std::int64_t pairs = (is_k ? p.d_k : p.d_v) / 32 * 2;
      q.groups = static_cast<const std::uint16_t*>(scales) + record * pairs;
      q.groups_row = step * pairs;
      q.page = page * pairs;
      break;
    }
    default:
      break;
  }
  return q;
}

// The sizes one plan implies: shared by run_tiled and workspace_bytes, so the memory check
// always describes what the driver allocates. Task counts saturate (an absurd kv_splits reads
// as "too much memory" and is refused before run_tiled ever sees it).
struct Layout {
  std::int64_t hpt, positions, q_tiles, row_sets, splits, rows, block_kv;
  std::size_t tasks;
  int threads;
  const TileFn* fn;
  const TileFn* per_task_fn;  // varlen: the instantiations each task picks from by its rows (else nullptr: fn)
  std::int64_t scratch_floats;
  // Variant problems: the tile kernel's own scratch, then per-row parameters, the mask tile and
  // a task's combined mask blocks (in floats) in each thread's scratch; the mask's block classes.
  bool variant;
  std::int64_t tile_floats, row_floats, mask_tile_floats, key_blocks;
  std::size_t block_class_bytes;
};

// The sliding window as the tile kernels take it: 0 when it keeps every key anyway (so a
// window of 2^62 cannot overflow their index arithmetic).
std::int64_t effective_window(const Problem& p) { return p.window > p.seq_q + p.seq_kv ? 0 : p.window; }

// Whether a problem needs the variant instantiations: the causal alignment and varlen alone
// do not (they are the plain kernels' offsets).
// Strided tensors do: the variant kernels prefetch K/V row by row (rows need not be adjacent).
bool needs_variant_tiles(const Problem& p) {
  return effective_window(p) > 0 || p.softcap > 0.0f || p.alibi || p.sinks || p.mask != MaskKind::none || p.strided;
}

Layout layout_of(const Problem& p, const Plan& plan, const IsaOps& ops) {
  Layout l;
  l.hpt = plan.heads_per_task;
  l.positions = std::clamp<std::int64_t>(plan.positions, 1, p.seq_q);
  l.q_tiles = (p.seq_q + l.positions - 1) / l.positions;
  if (p.sequences > 0) l.q_tiles += p.sequences;  // varlen: each sequence's last tile may be partial (a bound)
  l.row_sets = p.batch * p.heads_kv * (p.group_size() / l.hpt) * l.q_tiles;  // <= Q's element count
  l.splits = std::max<std::int64_t>(plan.splits, 1);
  l.tasks = saturating_mul(static_cast<std::size_t>(l.row_sets), static_cast<std::size_t>(l.splits));
  l.rows = l.hpt * l.positions;
  l.block_kv = std::clamp<std::int64_t>(plan.block_kv, 1, p.seq_kv);
  // More threads than cores or tasks only adds scratch: oneTBB would not run them anyway.
  // Read once: glibc's hardware_concurrency() opens and parses /sys/devices/system/cpu/online on
  // every call, ~5 us that dominated small calls (1 head, seq 16: ~6.7 -> ~1.7 us a call).
  static const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  l.threads = static_cast<int>(
      std::clamp<std::size_t>(std::min<std::size_t>(static_cast<std::size_t>(std::max(plan.threads, 1)), l.tasks), 1, cores));
  // Config::micro 1 and 2 name the tile instantiations 2 and 3 (after the two dot forms).
  l.variant = needs_variant_tiles(p);
  const TileFn* set = ops.set_for(p.dtype, p.kv_type(), l.variant);
  l.fn = plan.micro > 0 ? &set[std::min(plan.micro, 2) + 1] : &IsaOps::tile_for(set, l.rows);
  l.tile_floats = tile_scratch_floats(*l.fn, l.rows, p.d_k, p.d_v, l.block_kv);
  // Varlen with the automatic tile: a task whose sequence has fewer query rows than the plan's
  // (a 1-token decode beside a prefill chunk) runs the smallest instantiation holding them (the
  // decoding form for a few rows), as the same sequence on its own would.
  l.per_task_fn = p.sequences > 0 && plan.micro <= 0 ? set : nullptr;
  for (int i = 0; l.per_task_fn != nullptr && i < 4; ++i)
    l.tile_floats = std::max(l.tile_floats, tile_scratch_floats(set[i], std::min<std::int64_t>(set[i].lanes, l.rows), p.d_k,
                                                                p.d_v, l.block_kv));
  l.row_floats = l.mask_tile_floats = l.key_blocks = 0;
  l.block_class_bytes = 0;
  if (l.variant) {
    l.row_floats = 3 * (l.rows + 64);  // rows padded to a vector: at most 63 more
    if (p.mask != MaskKind::none) {
      l.mask_tile_floats = l.block_kv * (l.rows + 64);
      l.key_blocks = (p.seq_kv + 15) / 16;
      const std::int64_t planes = p.mask_elements() / (p.seq_q * p.seq_kv);
      l.block_class_bytes = saturating_mul(static_cast<std::size_t>(planes * l.q_tiles), static_cast<std::size_t>(l.key_blocks));
    }
  }
  l.scratch_floats = std::max<std::int64_t>(l.tile_floats + l.row_floats + l.mask_tile_floats + (l.key_blocks + 3) / 4, 1);
  return l;
}

// Cascade attention (paged problems, docs/paged-kv.md): consecutive sequences whose block tables
// start with the same blocks, which every one of their queries sees whole, have that shared
// prefix attended once for all their queries (one pass whose rows are every query of the group)
// and merged with each sequence's own pass over the rest of its keys through the log-sum-exp.
// Only for paged problems with no variant besides the causal mask (bottom-right): a window,
// ALiBi, soft-cap, sinks or a mask would each need per-row handling in the shared pass.
constexpr std::int64_t kMinCascadeKeys = 128;  // a shorter shared prefix is not worth a pass
constexpr std::int64_t kCascadeRows = 64;     // query rows (heads x tokens) per prefix task

bool cascade_eligible(const Problem& p) {
  const bool aligned = p.causal_align == CausalAlign::bottom_right || !p.causal;
  return p.paged() && aligned && p.window == 0 && p.softcap == 0.0f && !p.alibi && !p.sinks &&
         p.mask == MaskKind::none && p.top_k == 0;
}

// Query rows of one prefix task: whole heads of a task (Plan::heads_per_task), kCascadeRows or more.
std::int64_t cascade_rows(std::int64_t hpt) { return hpt * std::max<std::int64_t>(1, kCascadeRows / hpt); }

// Bytes the cascade may add for a problem (bounded without reading its table): the prefix pass's
// partial rows (at most every query row once) and the other pass's, each d_v + 2 floats.
std::size_t cascade_bytes(const Problem& p, const Layout& l, const IsaOps& ops) {
  if (!cascade_eligible(p)) return 0;
  const std::size_t rows = saturating_add(static_cast<std::size_t>(p.heads_q * p.seq_q),
                                          saturating_mul(l.tasks, static_cast<std::size_t>(l.rows)));
  const std::int64_t rows_per_task = cascade_rows(l.hpt);
  const std::int64_t scratch = tile_scratch_floats(IsaOps::tile_for(ops.set_for(p.dtype, p.kv_type()), rows_per_task),
                                                   rows_per_task, p.d_k, p.d_v, l.block_kv);
  return saturating_add(saturating_mul(detail::float_bytes({p.d_v + 2}), rows),
                        saturating_mul(static_cast<std::size_t>(l.threads), detail::float_bytes({scratch + 16})));
}

}  // namespace

bool supports(const Problem& p) { return p.top_k == 0; }

void order_isas(const Problem& p, std::vector<Isa>& isas) {
  const auto dot = std::find(isas.begin(), isas.end(), Isa::avx512_bf16);
  const auto vec = std::find(isas.begin(), isas.end(), Isa::avx512);
  if (dot == isas.end() || vec == isas.end() || dot < vec) return;
  if (pv_dtype(p, isa_ops(Isa::avx512_bf16)) != Dtype::bf16) return;  // not the dot tiles: the same code
  if (bf16_dot_speedup() < kBf16DotPreferred) return;
  std::rotate(vec, dot, dot + 1);  // avx512_bf16 moves to avx512's place, the rest keep their order
}

Dtype pv_dtype(const Problem& p, const IsaOps& ops) {
  // The variant tiles are the conversion path on every ISA (P stays float32).
  return ops.bf16_dot != nullptr && ops.set_for(p.dtype, p.kv_type(), needs_variant_tiles(p)) == ops.bf16_dot ? Dtype::bf16
                                                                                                            : Dtype::fp32;
}

std::size_t workspace_bytes(const Problem& p, const Plan& plan, const IsaOps& ops) {
  const Layout l = layout_of(p, plan, ops);
  const std::size_t scratch = (detail::float_bytes({l.scratch_floats}) + 63) / 64 * 64;
  std::size_t bytes = saturating_mul(static_cast<std::size_t>(l.threads), scratch);
  if (l.splits > 1) {  // [task][row][d_v] partial rows, and a max and a sum per task row
    const std::size_t task_rows = saturating_mul(l.tasks, static_cast<std::size_t>(l.rows));
    bytes = saturating_add(bytes, saturating_mul(detail::float_bytes({p.d_v + 2}), task_rows));
  }
  bytes = saturating_add(bytes, cascade_bytes(p, l, ops));
  return saturating_add(bytes, l.block_class_bytes);
}

namespace {

// The steps of run_tiled, in the order it takes them:
//   1. row sets: which query rows each task computes (varlen: per sequence, costliest first);
//   2. mask classification: per 16 keys of each row set, hidden, neutral or mixed;
//   3. tasks: a row set x a key split, each one call of the ISA's tile kernel (task_args);
//   4. the merge of the key splits of each row through their log-sum-exp.

// A row set: query heads h0.. of KV head hk, positions [i0, i0 + n) of its frame (the problem,
// or a varlen sequence starting at token q_off, its keys at token kv_off), the key range it
// visits and the frame's alignment offset. `tile` indexes its query tile's mask block classes
// (its segment, when varlen).
struct RowSet {
  std::int64_t b, hk, h0, i0, n, kv_begin, kv_end, q_off, kv_off, offset, tile;
  std::int64_t seq = -1;  // varlen: the sequence (paged: its block table row)
};

// Every row set of a call, by index. Without varlen, s % q_tiles counts the query tiles from
// the last: causal tiles later in the sequence see more keys and run first. Varlen: the query
// tiles of every sequence (segments), costliest first (rows x keys they visit), so threads are
// balanced by cost, not by sequence count; empty sequences have none.
class RowSets {
 public:
  struct Segment {
    std::int64_t seq, i0, n;
  };

  // floors (cascade): per sequence, the first key its own row sets visit (the shared prefix
  // before it is attended by the cascade's prefix pass).
  RowSets(const Problem& p, const VariantData& var, const Layout& lay, const std::vector<std::int64_t>* floors = nullptr)
      : p_(p), var_(var), lay_(lay), floors_(floors) {
    if (p.sequences > 0) {
      std::vector<std::pair<std::int64_t, Segment>> costed;
      for (std::int64_t seq = 0; seq < p.sequences; ++seq) {
        const Problem f = p.sequence(seq, var);
        const std::int64_t floor = floors != nullptr ? (*floors)[static_cast<std::size_t>(seq)] : 0;
        for (std::int64_t i0 = 0; i0 < f.seq_q; i0 += lay.positions) {
          const std::int64_t n = std::min(lay.positions, f.seq_q - i0);
          const std::int64_t keys = std::max<std::int64_t>(f.key_end(i0 + n - 1) - std::max(f.key_begin(i0), floor), 0);
          costed.push_back({n * (keys + 16), {seq, i0, n}});  // + 16: a tile costs something even without keys
        }
      }
      std::stable_sort(costed.begin(), costed.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
      for (const auto& c : costed) segments_.push_back(c.second);
    }
    per_group_ = p.heads_kv * (p.group_size() / lay.hpt);
    // Bounded by the layout's counts: the memory check passed.
    q_tiles_ = p.sequences > 0 ? static_cast<std::int64_t>(segments_.size()) : lay.q_tiles;
    count_ = p.sequences > 0 ? per_group_ * q_tiles_ : lay.row_sets;
  }

  std::int64_t count() const { return count_; }
  std::int64_t q_tiles() const { return q_tiles_; }
  const std::vector<Segment>& segments() const { return segments_; }

  RowSet operator()(std::int64_t s) const {
    const std::int64_t group = p_.group_size(), hpt = lay_.hpt;
    const std::int64_t hs = s / q_tiles_;
    RowSet r;
    r.b = hs / per_group_;
    const std::int64_t within = hs % per_group_;
    r.hk = within / (group / hpt);
    r.h0 = r.hk * group + (within % (group / hpt)) * hpt;
    if (p_.sequences > 0) {
      const Segment& seg = segments_[static_cast<std::size_t>(s % q_tiles_)];
      const Problem f = p_.sequence(seg.seq, var_);
      r.i0 = seg.i0;
      r.n = seg.n;
      r.tile = s % q_tiles_;
      r.seq = seg.seq;
      r.q_off = var_.cu_seqlens_q[seg.seq];
      r.kv_off = var_.cu_seqlens_kv[seg.seq];
      r.offset = f.align_offset();
      r.kv_begin = f.key_begin(r.i0);
      if (floors_ != nullptr) r.kv_begin = std::max(r.kv_begin, (*floors_)[static_cast<std::size_t>(seg.seq)]);
      r.kv_end = std::max(r.kv_begin, f.key_end(r.i0 + r.n - 1));
      return r;
    }
    const std::int64_t qt = q_tiles_ - 1 - s % q_tiles_;  // s = 0 is the last tile
    r.i0 = qt * lay_.positions;
    r.n = std::min(lay_.positions, p_.seq_q - r.i0);
    r.tile = qt;
    r.q_off = r.kv_off = 0;
    r.offset = p_.align_offset();
    r.kv_begin = p_.key_begin(r.i0);  // 0 without a window
    r.kv_end = std::max(r.kv_begin, p_.key_end(r.i0 + r.n - 1));
    return r;
  }

 private:
  const Problem& p_;
  const VariantData& var_;
  const Layout& lay_;
  const std::vector<std::int64_t>* floors_;
  std::vector<Segment> segments_;
  std::int64_t per_group_, q_tiles_, count_;
};

// Mask block classes, once per call: per (plane, query tile, 16 keys) whether every entry is
// hidden (0), neutral (1: true, or +0 when additive) or mixed (2). Varlen: per segment, in its
// sequence's frame (the diagonal block of the packed mask; nothing else is read). Empty
// without a mask.
std::vector<std::uint8_t> classify_mask_blocks(const Problem& p, const VariantData& var, const Layout& lay,
                                               const RowSets& sets) {
  std::vector<std::uint8_t> classes(lay.block_class_bytes);
  if (classes.empty()) return classes;
  const std::int64_t q_tiles = sets.q_tiles(), key_blocks = lay.key_blocks, plane_size = p.seq_q * p.seq_kv;
  const std::int64_t planes = p.mask_elements() / plane_size;
  parallel(planes * q_tiles, lay.threads, [&](std::int64_t pt, int) {
    const std::int64_t plane = pt / q_tiles, tile = pt % q_tiles;
    std::int64_t i0 = tile * lay.positions, n = std::min(lay.positions, p.seq_q - i0), q_off = 0, kv_off = 0,
                 keys = p.seq_kv;
    if (p.sequences > 0) {
      const RowSets::Segment& seg = sets.segments()[static_cast<std::size_t>(tile)];
      i0 = seg.i0;
      n = seg.n;
      q_off = var.cu_seqlens_q[seg.seq];
      kv_off = var.cu_seqlens_kv[seg.seq];
      keys = var.cu_seqlens_kv[seg.seq + 1] - kv_off;
    }
    std::uint8_t* out = classes.data() + pt * key_blocks;
    for (std::int64_t kb = 0; kb < (keys + 15) / 16; ++kb) {
      bool hidden = true, neutral = true;
      for (std::int64_t i = i0; i < i0 + n; ++i) {
        const std::int64_t row = plane * plane_size + (q_off + i) * p.seq_kv + kv_off;
        for (std::int64_t j = kb * 16; j < std::min(kb * 16 + 16, keys); ++j) {
          bool h, z;
          if (p.mask == MaskKind::boolean) {
            h = static_cast<const std::uint8_t*>(var.mask)[row + j] == 0;
            z = !h;
          } else {
            const float x = static_cast<const float*>(var.mask)[row + j];
            h = x == -std::numeric_limits<float>::infinity();
            z = x == 0.0f;
          }
          hidden = hidden && h;
          neutral = neutral && z;
        }
      }
      out[kb] = hidden ? 0 : (neutral ? 1 : 2);
    }
  });
  return classes;
}

// A run of consecutive sequences [first, last] whose block tables start with the same blocks,
// holding keys [0, keys) that every query of theirs sees (whole blocks).
struct PrefixGroup {
  std::int64_t first, last, keys;
};

// The cascade of one call: the groups found in the block table, each sequence's first key of its
// own pass (floors), and the prefix pass's tasks: a group's KV head, query heads [h0, h0 + hpt)
// and packed query tokens [t0, t0 + n), with their partial rows ([task][rows][d_v], m, l).
struct Cascade {
  struct Task {
    std::int64_t group, hk, h0, t0, n;
  };
  std::vector<PrefixGroup> groups;
  std::vector<std::int64_t> floors, group_of, first_task, chunks;  // per sequence / per group
  std::vector<Task> tasks;
  std::int64_t positions = 1, rows = 1;  // tokens and rows (heads x tokens) per task
  const TileFn* fn = nullptr;
  std::int64_t scratch_floats = 0;
  std::vector<float> part_o, part_m, part_l;

  // The partial row of query head h at packed token t of sequence seq (in a group).
  std::size_t row_of(std::int64_t seq, std::int64_t h, std::int64_t t, std::int64_t group_size, std::int64_t hpt,
                     const std::int64_t* cu_q) const {
    const std::int64_t g = group_of[static_cast<std::size_t>(seq)];
    const std::int64_t q0 = cu_q[groups[static_cast<std::size_t>(g)].first];
    const std::int64_t hk = h / group_size, hc = (h % group_size) / hpt, chunk = (t - q0) / positions;
    const std::int64_t index =
        first_task[static_cast<std::size_t>(g)] + (hk * (group_size / hpt) + hc) * chunks[static_cast<std::size_t>(g)] + chunk;
    const Task& k = tasks[static_cast<std::size_t>(index)];
    return static_cast<std::size_t>(index * rows + (h - k.h0) * k.n + (t - k.t0));
  }
};

// Finds the groups of a paged problem (cascade_eligible) and lays out the prefix pass; false
// when no group shares at least kMinCascadeKeys keys.
bool plan_cascade(const Problem& p, const VariantData& var, const Layout& lay, const IsaOps& ops, Cascade& c) {
  const std::int64_t bs = p.block_size, mb = p.max_blocks;
  const std::int32_t* table = var.block_table;
  // Whole blocks every query of sequence s sees (bottom-right causal: the first query sees
  // context - queries + 1 keys).
  auto seen_blocks = [&](std::int64_t s) {
    const std::int64_t ctx = var.cu_seqlens_kv[s + 1] - var.cu_seqlens_kv[s], nq = var.cu_seqlens_q[s + 1] - var.cu_seqlens_q[s];
    const std::int64_t seen = p.causal && nq > 0 ? std::clamp<std::int64_t>(ctx - nq + 1, 0, ctx) : ctx;
    return seen / bs;
  };
  for (std::int64_t s = 0; s < p.sequences;) {
    std::int64_t shared = seen_blocks(s), e = s;
    while (e + 1 < p.sequences) {
      const std::int64_t limit = std::min(shared, seen_blocks(e + 1));
      std::int64_t common = 0;
      while (common < limit && table[s * mb + common] == table[(e + 1) * mb + common]) ++common;
      if (common * bs < kMinCascadeKeys) break;
      shared = common;
      ++e;
    }
    if (e > s && shared * bs >= kMinCascadeKeys) c.groups.push_back({s, e, shared * bs});
    s = e + 1;
  }
  if (c.groups.empty()) return false;
  c.floors.assign(static_cast<std::size_t>(p.sequences), 0);
  c.group_of.assign(static_cast<std::size_t>(p.sequences), -1);
  const std::int64_t group = p.group_size(), hpt = lay.hpt;
  c.rows = cascade_rows(hpt);
  c.positions = c.rows / hpt;
  for (std::size_t g = 0; g < c.groups.size(); ++g) {
    const PrefixGroup& pg = c.groups[g];
    for (std::int64_t s = pg.first; s <= pg.last; ++s) {
      c.floors[static_cast<std::size_t>(s)] = pg.keys;
      c.group_of[static_cast<std::size_t>(s)] = static_cast<std::int64_t>(g);
    }
    const std::int64_t q0 = var.cu_seqlens_q[pg.first], q1 = var.cu_seqlens_q[pg.last + 1];
    c.first_task.push_back(static_cast<std::int64_t>(c.tasks.size()));
    c.chunks.push_back((q1 - q0 + c.positions - 1) / c.positions);
    for (std::int64_t hk = 0; hk < p.heads_kv; ++hk)
      for (std::int64_t h0 = hk * group; h0 < (hk + 1) * group; h0 += hpt)
        for (std::int64_t t0 = q0; t0 < q1; t0 += c.positions)
          c.tasks.push_back({static_cast<std::int64_t>(g), hk, h0, t0, std::min(c.positions, q1 - t0)});
  }
  c.fn = &IsaOps::tile_for(ops.set_for(p.dtype, p.kv_type()), c.rows);
  c.scratch_floats = tile_scratch_floats(*c.fn, c.rows, p.d_k, p.d_v, lay.block_kv);
  const std::size_t rows = c.tasks.size() * static_cast<std::size_t>(c.rows);
  c.part_o.resize(rows * static_cast<std::size_t>(p.d_v));
  c.part_m.resize(rows);
  c.part_l.resize(rows);
  return true;
}

// What every task of one call shares: the problem, the caller's tensors and their layouts, the
// plan's sizes, the row sets and mask classes, and the split partials ([task][row][d_v] rows,
// and a max and a sum per task row).
struct Call {
  const Problem& p;
  const Tensors& t;
  const Layout& lay;
  const RowSets& sets;
  const std::vector<std::uint8_t>& classes;
  Strides qs, ks, vs, os;  // the caller's strides, or [batch, heads, seq, dim]
  float qk_scale;          // scale x log2 e: the softmax runs in base 2
  Cascade* cascade;        // a paged call's shared prefixes (every task then writes partials), or nullptr
  std::vector<float> part_o, part_m, part_l;

  Call(const Problem& p_, const Tensors& t_, const Layout& lay_, const RowSets& sets_,
       const std::vector<std::uint8_t>& classes_, Cascade* cascade_ = nullptr)
      : p(p_), t(t_), lay(lay_), sets(sets_), classes(classes_), cascade(cascade_) {
    const VariantData& var = t.variant;
    qs = p.strided ? var.q_strides : Strides::contiguous(p.heads_q, p.seq_q, p.d_k);
    // Paged pools [num_blocks, heads_kv, block_size, d]: the batch stride steps between blocks.
    const std::int64_t kv_seq = p.paged() ? p.block_size : p.seq_kv;
    ks = p.strided ? var.k_strides : Strides::contiguous(p.heads_kv, kv_seq, p.d_k);
    vs = p.strided ? var.v_strides : Strides::contiguous(p.heads_kv, kv_seq, p.d_v);
    os = p.strided ? var.out_strides : Strides::contiguous(p.heads_q, p.seq_q, p.d_v);
    qk_scale = p.effective_scale() * detail::online::kLog2e;
    if (partial()) {
      const std::size_t task_rows = static_cast<std::size_t>(tasks() * lay.rows);
      part_o.resize(task_rows * static_cast<std::size_t>(p.d_v));
      part_m.resize(task_rows);
      part_l.resize(task_rows);
    }
  }
  std::int64_t tasks() const { return sets.count() * lay.splits; }
  // Whether tasks write partial rows, merged afterwards (merge_split_rows).
  bool partial() const { return lay.splits > 1 || cascade != nullptr; }
};

// The variants of a task (TileVariant) in its thread's scratch past the tile kernel's own:
// per-row parameters, the mask tile, and the task's mask blocks (combined over its heads when
// their planes differ: a block is hidden, or neutral, only if it is in every plane).
void task_variant(const Call& call, const RowSet& rs, std::int64_t split, float* scratch, TileVariant& tv) {
  const Problem& p = call.p;
  const VariantData& var = call.t.variant;
  const Layout& lay = call.lay;
  tv.window = effective_window(p);
  tv.softcap = p.softcap * detail::online::kLog2e;
  if (p.alibi) tv.slopes = var.alibi_slopes + rs.h0;
  if (p.sinks && split == 0) tv.sinks = var.sinks + rs.h0;  // the sink joins each row once
  float* extra = scratch + lay.tile_floats;
  tv.row_scratch = extra;
  if (p.mask == MaskKind::none) return;
  const std::int64_t plane_size = p.seq_q * p.seq_kv, key_blocks = lay.key_blocks, q_tiles = call.sets.q_tiles();
  const std::size_t mask_elem = p.mask == MaskKind::boolean ? 1 : sizeof(float);
  tv.mask = p.mask;
  const std::int64_t plane0 = p.mask_plane(rs.b, rs.h0);
  // The frame's corner of the plane (varlen: its sequence's diagonal block); rows keep the
  // packed stride seq_kv.
  const std::int64_t corner = plane0 * plane_size + rs.q_off * p.seq_kv + rs.kv_off;
  tv.mask_plane = static_cast<const char*>(var.mask) + static_cast<std::size_t>(corner) * mask_elem;
  tv.mask_head_stride = p.mask_plane(rs.b, rs.h0 + lay.hpt - 1) != plane0 ? plane_size : 0;
  tv.seq_kv = p.seq_kv;
  tv.mask_tile = extra + lay.row_floats;
  const std::uint8_t* own = call.classes.data() + (plane0 * q_tiles + rs.tile) * key_blocks;
  if (tv.mask_head_stride == 0) {
    tv.blocks = own;
    return;
  }
  auto* combined = reinterpret_cast<std::uint8_t*>(tv.mask_tile + lay.mask_tile_floats);
  std::copy(own, own + key_blocks, combined);
  for (std::int64_t h = 1; h < lay.hpt; ++h) {
    const std::uint8_t* other = own + h * q_tiles * key_blocks;
    for (std::int64_t kb = 0; kb < key_blocks; ++kb) combined[kb] = combined[kb] == other[kb] ? combined[kb] : 2;
  }
  tv.blocks = combined;
}

// The tile kernel's arguments for one task: row set task / splits, key split task % splits
// (splits cover [kv_begin, kv_end) in equal parts rounded to 16 keys; some may be empty).
TileArgs task_args(Call& call, std::int64_t task, float* scratch, TileVariant& tv) {
  const Problem& p = call.p;
  const Tensors& t = call.t;
  const Layout& lay = call.lay;
  const std::int64_t splits = lay.splits, split = task % splits;
  const RowSet rs = call.sets(task / splits);
  const std::int64_t chunk = ((rs.kv_end - rs.kv_begin + splits - 1) / splits + 15) / 16 * 16;
  const Dtype kv = p.kv_type();
  TileArgs a;
  a.q = at(t.q, p.dtype, rs.b * call.qs.batch + rs.h0 * call.qs.head + rs.q_off * call.qs.row);
  // Paged: the KV head's rows in block 0; the tile kernels add each block's offset (page_view).
  const std::int64_t kv_off = p.paged() ? 0 : rs.kv_off;
  a.k = kv_at(t.k, kv, rs.b * call.ks.batch + rs.hk * call.ks.head + kv_off * call.ks.row);
  a.v = kv_at(t.v, kv, rs.b * call.vs.batch + rs.hk * call.vs.head + kv_off * call.vs.row);
  a.out = at(t.out, p.dtype, rs.b * call.os.batch + rs.h0 * call.os.head + rs.q_off * call.os.row);
  a.q_head = call.qs.head;
  a.q_row = call.qs.row;
  a.o_head = call.os.head;
  a.o_row = call.os.row;
  a.k_row = kv == Dtype::int4 ? call.ks.row / 2 : call.ks.row;  // int4: in bytes
  a.v_row = kv == Dtype::int4 ? call.vs.row / 2 : call.vs.row;
  if (is_quantized(kv)) {
    a.kq = kv_dequant(p, t.variant.kv_scales, true, rs.b, rs.hk, kv_off);
    a.vq = kv_dequant(p, t.variant.kv_scales, false, rs.b, rs.hk, kv_off);
  }
  if (p.paged()) {
    a.pages = t.variant.block_table + rs.seq * p.max_blocks;
    a.page_size = p.block_size;
    a.k_page = kv == Dtype::int4 ? call.ks.batch / 2 : call.ks.batch;
    a.v_page = kv == Dtype::int4 ? call.vs.batch / 2 : call.vs.batch;
  }
  a.dtype = p.dtype;
  a.heads = lay.hpt;
  a.positions = rs.n;
  a.i0 = rs.i0;
  a.j_begin = std::min(rs.kv_begin + split * chunk, rs.kv_end);
  a.j_end = std::min(rs.kv_begin + (split + 1) * chunk, rs.kv_end);
  a.seq_q = p.seq_q;  // the head stride of Q and O (all tokens, when varlen)
  a.d_k = p.d_k;
  a.d_v = p.d_v;
  a.causal = p.causal;
  a.causal_offset = rs.offset;  // also places the window
  a.qk_scale = call.qk_scale;
  a.block_kv = lay.block_kv;
  a.scratch = scratch;
  if (lay.variant) {
    task_variant(call, rs, split, scratch, tv);
    a.var = &tv;
  }
  if (call.partial()) {
    const std::size_t first_row = static_cast<std::size_t>(task * lay.rows);
    a.part_o = call.part_o.data() + first_row * static_cast<std::size_t>(p.d_v);
    a.part_m = call.part_m.data() + first_row;
    a.part_l = call.part_l.data() + first_row;
  }
  return a;
}

// The tile kernel's arguments for prefix task `index` of the cascade: every query of the
// group's rows against the shared keys [0, keys), read through the first sequence's table row;
// no causal mask (every one of these queries sees the whole prefix), partial rows.
TileArgs prefix_args(const Call& call, std::int64_t index, float* scratch) {
  const Problem& p = call.p;
  const Tensors& t = call.t;
  const Cascade& c = *call.cascade;
  const Cascade::Task& k = c.tasks[static_cast<std::size_t>(index)];
  const PrefixGroup& g = c.groups[static_cast<std::size_t>(k.group)];
  const Dtype kv = p.kv_type();
  TileArgs a;
  a.q = at(t.q, p.dtype, k.h0 * call.qs.head + k.t0 * call.qs.row);
  a.out = at(t.out, p.dtype, k.h0 * call.os.head + k.t0 * call.os.row);  // never written: partial rows
  a.k = kv_at(t.k, kv, k.hk * call.ks.head);
  a.v = kv_at(t.v, kv, k.hk * call.vs.head);
  a.q_head = call.qs.head;
  a.q_row = call.qs.row;
  a.o_head = call.os.head;
  a.o_row = call.os.row;
  a.k_row = kv == Dtype::int4 ? call.ks.row / 2 : call.ks.row;
  a.v_row = kv == Dtype::int4 ? call.vs.row / 2 : call.vs.row;
  if (is_quantized(kv)) {
    a.kq = kv_dequant(p, t.variant.kv_scales, true, 0, k.hk, 0);
    a.vq = kv_dequant(p, t.variant.kv_scales, false, 0, k.hk, 0);
  }
  a.pages = t.variant.block_table + g.first * p.max_blocks;
  a.page_size = p.block_size;
  a.k_page = kv == Dtype::int4 ? call.ks.batch / 2 : call.ks.batch;
  a.v_page = kv == Dtype::int4 ? call.vs.batch / 2 : call.vs.batch;
  a.dtype = p.dtype;
  a.heads = call.lay.hpt;
  a.positions = k.n;
  a.i0 = 0;
  a.j_begin = 0;
  a.j_end = g.keys;
  a.seq_q = p.seq_q;
  a.d_k = p.d_k;
  a.d_v = p.d_v;
  a.causal = false;
  a.causal_offset = 0;
  a.qk_scale = call.qk_scale;
  a.block_kv = call.lay.block_kv;
  a.scratch = scratch;
  const std::size_t first_row = static_cast<std::size_t>(index * c.rows);
  a.part_o = call.cascade->part_o.data() + first_row * static_cast<std::size_t>(p.d_v);
  a.part_m = call.cascade->part_m.data() + first_row;
  a.part_l = call.cascade->part_l.data() + first_row;
  return a;
}

// Each row's partial results merged (online::merge_parts: the key splits in order, then a
// cascade's shared prefix, so deterministic) in float32, rounded once to the output type.
void merge_split_rows(const Call& call) {
  const Problem& p = call.p;
  const std::int64_t splits = call.lay.splits, rows = call.lay.rows, d_v = p.d_v;
  const Cascade* c = call.cascade;
  parallel(call.sets.count(), call.lay.threads, [&](std::int64_t s, int) {
    const RowSet rs = call.sets(s);
    const bool shared = c != nullptr && rs.seq >= 0 && c->group_of[static_cast<std::size_t>(rs.seq)] >= 0;
    std::vector<float> row(static_cast<std::size_t>(d_v));
    for (std::int64_t r = 0; r < call.lay.hpt * rs.n; ++r) {
      const std::int64_t head = r / rs.n, pos = rs.i0 + r % rs.n;
      void* out_row =
          at(call.t.out, p.dtype, rs.b * call.os.batch + (rs.h0 + head) * call.os.head + (rs.q_off + pos) * call.os.row);
      float* o = p.dtype == Dtype::fp32 ? static_cast<float*>(out_row) : row.data();
      const std::size_t first = static_cast<std::size_t>(s * splits * rows + r);  // split 0 of this row
      const std::size_t prefix =
          shared ? c->row_of(rs.seq, rs.h0 + head, rs.q_off + pos, p.group_size(), call.lay.hpt, call.t.variant.cu_seqlens_q) : 0;
      detail::online::merge_parts(
          splits + (shared ? 1 : 0),
          [&](std::int64_t x) {
            if (x < splits) {
              const std::size_t i = first + static_cast<std::size_t>(x * rows);
              return detail::online::Part{call.part_m[i], call.part_l[i], call.part_o.data() + i * static_cast<std::size_t>(d_v)};
            }
            return detail::online::Part{c->part_m[prefix], c->part_l[prefix], c->part_o.data() + prefix * static_cast<std::size_t>(d_v)};
          },
          d_v, o);
      if (o != out_row) convert_from_float(p.dtype, o, out_row, static_cast<std::size_t>(d_v));
    }
  });
}

}  // namespace

void run_tiled(const Problem& p, const Tensors& t, const Plan& plan, const IsaOps& ops) {
  const Layout lay = layout_of(p, plan, ops);
  Cascade cascade;
  const bool cascading = cascade_eligible(p) && plan_cascade(p, t.variant, lay, ops, cascade);
  const RowSets sets(p, t.variant, lay, cascading ? &cascade.floors : nullptr);
  const std::vector<std::uint8_t> classes = classify_mask_blocks(p, t.variant, lay, sets);
  Call call(p, t, lay, sets, classes, cascading ? &cascade : nullptr);
  // One tile scratch per thread (the slot parallel() passes), sized by layout_of (and the
  // cascade's prefix pass).
  const std::int64_t scratch_floats = std::max(lay.scratch_floats, cascade.scratch_floats);
  std::vector<detail::AlignedArray<float>> scratch;
  for (int i = 0; i < lay.threads; ++i)
    scratch.push_back(detail::aligned_array<float>(static_cast<std::size_t>(scratch_floats)));
  // The cascade's prefix tasks first: each is a group's whole prefix, the costliest.
  const std::int64_t prefix_tasks = static_cast<std::int64_t>(cascade.tasks.size());
  parallel(prefix_tasks + call.tasks(), lay.threads, [&](std::int64_t task, int slot) {
    float* own = scratch[static_cast<std::size_t>(slot)].get();
    if (task < prefix_tasks) {
      cascade.fn->run(prefix_args(call, task, own));
      return;
    }
    TileVariant tv;
    const TileArgs a = task_args(call, task - prefix_tasks, own, tv);
    const TileFn& fn = lay.per_task_fn != nullptr ? IsaOps::tile_for(lay.per_task_fn, a.heads * a.positions) : *lay.fn;
    fn.run(a);
  });
  if (call.partial()) merge_split_rows(call);
}

}  // namespace attune::simd
