// The tiled-attention driver shared by `simd` and `flash`.
#include "simd/driver.hpp"

#include "detail/online_softmax.hpp"
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

// The sizes one plan implies: shared by run_tiled and workspace_bytes, so the memory check
// always describes what the driver allocates. Task counts saturate (an absurd kv_splits reads
// as "too much memory" and is refused before run_tiled ever sees it).
struct Layout {
  std::int64_t hpt, positions, q_tiles, row_sets, splits, rows, block_kv;
  std::size_t tasks;
  int threads;
  const TileFn* fn;
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
  return saturating_add(bytes, l.block_class_bytes);
}

void run_tiled(const Problem& p, const Tensors& t, const Plan& plan, const IsaOps& ops) {
  const Layout lay = layout_of(p, plan, ops);
  const std::int64_t group = p.group_size();
  const std::int64_t hpt = lay.hpt, positions = lay.positions, splits = lay.splits, rows = lay.rows;
  const std::int64_t block_kv = lay.block_kv;
  const VariantData& var = t.variant;

  // Varlen: the query tiles of every sequence, costliest first (rows x keys they visit), so
  // work is balanced by cost, not by sequence count; empty sequences have none.
  struct Segment {
    std::int64_t seq, i0, n;
  };
  std::vector<Segment> segments;
  if (p.sequences > 0) {
    std::vector<std::pair<std::int64_t, Segment>> costed;
    for (std::int64_t seq = 0; seq < p.sequences; ++seq) {
      const Problem f = p.sequence(seq, var);
      for (std::int64_t i0 = 0; i0 < f.seq_q; i0 += positions) {
        const std::int64_t n = std::min(positions, f.seq_q - i0);
        const std::int64_t keys = std::max<std::int64_t>(f.key_end(i0 + n - 1) - f.key_begin(i0), 0);
        costed.push_back({n * (keys + 16), {seq, i0, n}});  // + 16: a tile costs something even without keys
      }
    }
    std::stable_sort(costed.begin(), costed.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
    for (const auto& c : costed) segments.push_back(c.second);
  }
  const std::int64_t q_tiles = p.sequences > 0 ? static_cast<std::int64_t>(segments.size()) : lay.q_tiles;
  const std::int64_t row_sets = p.sequences > 0 ? p.heads_kv * (group / hpt) * q_tiles : lay.row_sets;
  // Bounded by the layout's counts: the memory check passed.
  const std::int64_t tasks = p.sequences > 0 ? row_sets * splits : static_cast<std::int64_t>(lay.tasks);
  const int threads = lay.threads;
  const TileFn& fn = *lay.fn;
  const std::int64_t scratch_floats = lay.scratch_floats;
  std::vector<detail::AlignedArray<float>> scratch;
  for (int i = 0; i < threads; ++i) scratch.push_back(detail::aligned_array<float>(static_cast<std::size_t>(scratch_floats)));
  // Partial results of key-range splits: [task][row][d_v] plus max and sum per row.
  std::vector<float> part_o, part_m, part_l;
  if (splits > 1) {
    part_o.resize(static_cast<std::size_t>(tasks * rows * p.d_v));
    part_m.resize(static_cast<std::size_t>(tasks * rows));
    part_l.resize(static_cast<std::size_t>(tasks * rows));
  }

  const float qk_scale = p.effective_scale() * detail::online::kLog2e;  // the softmax runs in base 2
  const std::int64_t offset = p.align_offset();
  const Dtype kv = p.kv_type();

  // The tensors' layouts: the caller's strides, or [batch, heads, seq, dim].
  const Strides qs = p.strided ? var.q_strides : Strides::contiguous(p.heads_q, p.seq_q, p.d_k);
  const Strides ks = p.strided ? var.k_strides : Strides::contiguous(p.heads_kv, p.seq_kv, p.d_k);
  const Strides vs = p.strided ? var.v_strides : Strides::contiguous(p.heads_kv, p.seq_kv, p.d_v);
  const Strides os = p.strided ? var.out_strides : Strides::contiguous(p.heads_q, p.seq_q, p.d_v);

  // A row set: query heads h0.. of KV head hk, positions [i0, i0 + n) of its frame (the
  // problem, or a varlen sequence starting at token q_off, its keys at token kv_off), the key
  // range it visits and the frame's alignment offset.
  // `tile` indexes the query tile's mask block classes (its segment, when varlen).
  struct RowSet {
    std::int64_t b, hk, h0, i0, n, kv_begin, kv_end, q_off, kv_off, offset, tile;
  };
  auto row_set = [&](std::int64_t s) {
    const std::int64_t hs = s / q_tiles;
    RowSet r;
    r.b = hs / (p.heads_kv * (group / hpt));
    const std::int64_t within = hs % (p.heads_kv * (group / hpt));
    r.hk = within / (group / hpt);
    r.h0 = r.hk * group + (within % (group / hpt)) * hpt;
    if (p.sequences > 0) {
      const Segment& seg = segments[static_cast<std::size_t>(s % q_tiles)];
      const Problem f = p.sequence(seg.seq, var);
      r.i0 = seg.i0;
      r.n = seg.n;
      r.tile = s % q_tiles;
      r.q_off = var.cu_seqlens_q[seg.seq];
      r.kv_off = var.cu_seqlens_kv[seg.seq];
      r.offset = f.align_offset();
      r.kv_begin = f.key_begin(r.i0);
      r.kv_end = std::max(r.kv_begin, f.key_end(r.i0 + r.n - 1));
      return r;
    }
    // Causal: later query tiles see more keys; run them first (s = 0 is the last tile).
    const std::int64_t qt = q_tiles - 1 - s % q_tiles;
    r.i0 = qt * positions;
    r.n = std::min(positions, p.seq_q - r.i0);
    r.tile = qt;
    r.q_off = r.kv_off = 0;
    r.offset = offset;
    r.kv_begin = p.key_begin(r.i0);  // 0 without a window
    r.kv_end = std::max(r.kv_begin, p.key_end(r.i0 + r.n - 1));
    return r;
  };

  // Mask block classes, once per call: per (plane, query tile, 16 keys) whether every entry is
  // hidden (0), neutral (1: true, or +0 when additive) or mixed (2). Varlen: per segment, in its
  // sequence's frame (the diagonal block of the packed mask; nothing else is read).
  std::vector<std::uint8_t> classes(lay.block_class_bytes);
  const std::int64_t key_blocks = lay.key_blocks, plane_size = p.seq_q * p.seq_kv;
  const std::size_t mask_elem = p.mask == MaskKind::boolean ? 1 : sizeof(float);
  if (!classes.empty()) {
    const std::int64_t planes = p.mask_elements() / plane_size;
    parallel(planes * q_tiles, threads, [&](std::int64_t pt, int) {
      const std::int64_t plane = pt / q_tiles, tile = pt % q_tiles;
      std::int64_t i0 = tile * positions, n = std::min(positions, p.seq_q - i0), q_off = 0, kv_off = 0, keys = p.seq_kv;
      if (p.sequences > 0) {
        const Segment& seg = segments[static_cast<std::size_t>(tile)];
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
  }

  parallel(tasks, threads, [&](std::int64_t task, int slot) {
    const RowSet rs = row_set(task / splits);
    const std::int64_t split = task % splits;
    // Splits cover [kv_begin, kv_end) in equal parts rounded to 16 keys; some may be empty.
    const std::int64_t chunk = ((rs.kv_end - rs.kv_begin + splits - 1) / splits + 15) / 16 * 16;
    TileArgs a;
    a.q = at(t.q, p.dtype, rs.b * qs.batch + rs.h0 * qs.head + rs.q_off * qs.row);
    a.k = at(t.k, kv, rs.b * ks.batch + rs.hk * ks.head + rs.kv_off * ks.row);
    a.v = at(t.v, kv, rs.b * vs.batch + rs.hk * vs.head + rs.kv_off * vs.row);
    a.out = at(t.out, p.dtype, rs.b * os.batch + rs.h0 * os.head + rs.q_off * os.row);
    a.q_head = qs.head;
    a.q_row = qs.row;
    a.o_head = os.head;
    a.o_row = os.row;
    a.k_row = ks.row;
    a.v_row = vs.row;
    a.dtype = p.dtype;
    a.heads = hpt;
    a.positions = rs.n;
    a.i0 = rs.i0;
    a.j_begin = std::min(rs.kv_begin + split * chunk, rs.kv_end);
    a.j_end = std::min(rs.kv_begin + (split + 1) * chunk, rs.kv_end);
    a.seq_q = p.seq_q;  // the head stride of Q and O (all tokens, when varlen)
    a.d_k = p.d_k;
    a.d_v = p.d_v;
    a.causal = p.causal;
    a.causal_offset = rs.offset;  // also places the window
    a.qk_scale = qk_scale;
    a.block_kv = block_kv;
    a.scratch = scratch[static_cast<std::size_t>(slot)].get();
    TileVariant tv;
    if (lay.variant) {
      tv.window = effective_window(p);
      tv.softcap = p.softcap * detail::online::kLog2e;
      if (p.alibi) tv.slopes = var.alibi_slopes + rs.h0;
      if (p.sinks && split == 0) tv.sinks = var.sinks + rs.h0;  // the sink joins each row once
      float* extra = a.scratch + lay.tile_floats;
      tv.row_scratch = extra;
      if (p.mask != MaskKind::none) {
        tv.mask = p.mask;
        const std::int64_t plane0 = p.mask_plane(rs.b, rs.h0);
        // The frame's corner of the plane (varlen: its sequence's diagonal block); rows keep the
        // packed stride seq_kv.
        const std::int64_t corner = plane0 * plane_size + rs.q_off * p.seq_kv + rs.kv_off;
        tv.mask_plane = static_cast<const char*>(var.mask) + static_cast<std::size_t>(corner) * mask_elem;
        tv.mask_head_stride = p.mask_plane(rs.b, rs.h0 + hpt - 1) != plane0 ? plane_size : 0;
        tv.seq_kv = p.seq_kv;
        tv.mask_tile = extra + lay.row_floats;
        const std::uint8_t* own = classes.data() + (plane0 * q_tiles + rs.tile) * key_blocks;
        if (tv.mask_head_stride == 0) {
          tv.blocks = own;
        } else {  // the heads' planes differ: a block is hidden (neutral) only if it is in all
          auto* combined = reinterpret_cast<std::uint8_t*>(tv.mask_tile + lay.mask_tile_floats);
          std::copy(own, own + key_blocks, combined);
          for (std::int64_t h = 1; h < hpt; ++h) {
            const std::uint8_t* other = own + h * q_tiles * key_blocks;
            for (std::int64_t kb = 0; kb < key_blocks; ++kb)
              combined[kb] = combined[kb] == other[kb] ? combined[kb] : 2;
          }
          tv.blocks = combined;
        }
      }
      a.var = &tv;
    }
    if (splits > 1) {
      a.part_o = part_o.data() + task * rows * p.d_v;
      a.part_m = part_m.data() + task * rows;
      a.part_l = part_l.data() + task * rows;
    }
    fn.run(a);
  });
  if (splits == 1) return;

  // Merge the splits of each row (online::merge_splits: fixed order, so deterministic), in
  // float32, rounded once to the output type.
  parallel(row_sets, threads, [&](std::int64_t s, int) {
    const RowSet rs = row_set(s);
    std::vector<float> row(static_cast<std::size_t>(p.d_v));
    for (std::int64_t r = 0; r < hpt * rs.n; ++r) {
      const std::int64_t head = r / rs.n, pos = rs.i0 + r % rs.n;
      void* out_row = at(t.out, p.dtype, rs.b * os.batch + (rs.h0 + head) * os.head + (rs.q_off + pos) * os.row);
      float* o = p.dtype == Dtype::fp32 ? static_cast<float*>(out_row) : row.data();
      const std::size_t first = static_cast<std::size_t>(s * splits * rows + r);  // split 0 of this row
      detail::online::merge_splits(splits, part_m.data() + first, part_l.data() + first, rows,
                                   part_o.data() + first * static_cast<std::size_t>(p.d_v), rows * p.d_v, p.d_v, o);
      if (o != out_row) convert_from_float(p.dtype, o, out_row, static_cast<std::size_t>(p.d_v));
    }
  });
}

}  // namespace attune::simd
