// attune_bench: every runnable (kernel, isa) pair over a preset grid of shapes, element types and
// thread counts, with FLOP/s, bytes/s and the fraction of the machine's peak measured by probes in
// the same process. All --benchmark_* flags work; attune's own flags are listed by --help.
//
// Names: attention/<kernel>/<isa>/b:B/hq:H/hkv:H/sq:S/skv:S/d:D/causal:C/dt:T[/kv:T][/var:V]/t:T
// (dt: the storage type of Q, K, V and O: fp32, bf16 or fp16; kv: that of K and V where it
// differs, including the quantized types int8, int8_kc, fp8_e4m3, fp8_e5m2, int4).
// A user's own shapes replace the preset grid: --shape b=1,hq=32,hkv=8,sq=4096,d=128[,causal=1]
// (repeatable) and --model NAME (models.hpp); --kernels and --threads narrow any run.
#include <attune/attune.hpp>

#include <sys/mman.h>

#include <benchmark/benchmark.h>

#include "models.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <new>
#include <ctime>
#include <list>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

namespace {

using attune::Dtype;

// An explicit mask in the bench: none, every entry visible (the classification finds no
// hidden tile), or every other 64-key column block hidden (half the tiles skipped).
enum class BenchMask { none, all_visible, half_hidden };

// Paged K/V batches (Problem::paged), each sequence's new tokens and context:
//   one     a single sequence decoding 1 token against the shape's seq_kv
//   mixed   8 sequences, contexts 128..32k, 1 to 512 new tokens (decoding, speculative
//           verification and chunked prefill in one call)
//   prefix  16 sequences decoding 1 token each: a common 4096-key prefix (the same blocks in
//           every table: cascade attention) and 256 keys of their own
enum class PagedBatch { none, one, mixed, prefix };
struct PagedSequences {
  std::vector<std::int64_t> new_tokens, context;
  std::int64_t shared = 0;  // leading keys every sequence shares (prefix batch)
};
PagedSequences paged_sequences(PagedBatch batch, std::int64_t seq_kv) {
  switch (batch) {
    case PagedBatch::one:
      return {{1}, {seq_kv}, 0};
    case PagedBatch::mixed:
      return {{1, 128, 1, 512, 1, 16, 1, 4}, {128, 640, 1024, 2048, 4096, 8192, 16384, 32768}, 0};
    case PagedBatch::prefix:
      return {std::vector<std::int64_t>(16, 1), std::vector<std::int64_t>(16, 4096 + 256), 4096};
    default:
      return {};
  }
}

// The variants of a bench shape (problem.hpp); all off for the plain grid.
struct Variant {
  std::int64_t window = 0;
  float softcap = 0.0f;
  bool alibi = false, sinks = false;
  BenchMask mask = BenchMask::none;
  bool varlen = false;    // the shape's seq is kVarlenLengths packed (seq_q = seq_kv = their sum)
  bool separate = false;  // varlen's sequences as one dense call each, from their own tensors
  bool seq_major = false; // Q, K, V and O as [batch, seq, heads, dim] (strided, no copies)
  bool top_left = false;  // causal alignment of the first query with the first key
  std::int64_t top_k = 0; // hard attention (naive only: the tiled kernels refuse it)
  std::int64_t block_size = 0;              // paged K/V in blocks of this many keys (0: contiguous)
  PagedBatch paged = PagedBatch::none;      // the sequences of a paged row (with `separate`: the
                                            // same work as one contiguous call per sequence)
  bool private_prefix = false;              // prefix batch: every sequence its own copy of the prefix
};

// Tensors of the bench: buffers of 2 MiB and more are 2 MiB-aligned and advised to use
// transparent huge pages (madvise; Debian's default THP mode), as serving engines allocate their
// KV caches (PyTorch: THP_MEM_ALLOC_ENABLE=1). With 4 KiB pages, reading a paged cache's blocks
// in table order costs a TLB miss per block and KV head: paged decoding at block size 16 ran at
// ~0.8x the contiguous cache on the Zen 4 VM, 0.97-1.05x with huge pages (docs/paged-kv.md).
template <class T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr std::size_t kHuge = std::size_t{2} << 20;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHuge) return std::allocator<T>().allocate(n);
    void* p = std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
    if (p == nullptr) throw std::bad_alloc();
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP the pages stay 4 KiB
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) {
    if (n * sizeof(T) < kHuge) {
      std::allocator<T>().deallocate(p, n);
    } else {
      std::free(p);
    }
  }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const {
    return true;
  }
};
using Buffer = std::vector<std::byte, HugePageAllocator<std::byte>>;

// Varlen bench: 8 sequences of mixed lengths (the 64..2048), 6336 tokens in all.
constexpr std::int64_t kVarlenLengths[] = {64, 2048, 256, 1024, 128, 512, 1536, 768};

struct Shape {
  std::int64_t batch, heads_q, heads_kv, seq_q, seq_kv, d;
  bool causal;
  Dtype dtype = Dtype::fp32;  // storage of Q, K, V and O
  Variant var = {};
  std::optional<Dtype> kv_dtype = {};  // K and V when they differ (a 16-bit or quantized cache)
  Dtype kv() const { return kv_dtype.value_or(dtype); }
};

// One row of a preset: a shape, and which kernels and how many of each kernel's ISAs run it.
struct Entry {
  Shape shape;
  std::vector<std::string_view> kernels;  // empty: every kernel
  std::size_t max_isas = 0;               // the best n runnable ISAs that take the dtype; 0: all
};

// What the registry says about a kernel, instead of lists of names: the scalar-only kernels
// (naive, blocked) are the slow readable ones, and a kernel with a `threads` parameter (flash,
// gemm, amx) is the only kind worth timing at more than one thread.
bool scalar_only(const attune::Kernel& k) { return k.isas() == std::vector<attune::Isa>{attune::Isa::scalar}; }

bool threaded(const attune::Kernel& k) {
  const auto params = k.params();
  return std::any_of(params.begin(), params.end(), [](const attune::ParamSpec& p) { return p.name == "threads"; });
}

// 16-bit rows: the kernels with builds beyond scalar (simd, flash, amx, which takes bf16 only,
// and the BLAS baseline) on the best two ISAs that take the type (today avx512 and avx2; amx
// has its one): the scalar-only kernels only widen to float32 copies.
std::vector<std::string_view> typed_kernels() {
  std::vector<std::string_view> out;
  for (const attune::Kernel* k : attune::kernels())
    if (!scalar_only(*k)) out.push_back(k->name());
  return out;
}

// Presets: quick ~2.5 min, standard ~20 min, full: the whole grid of the bench issue.
std::vector<Entry> preset_entries(const std::string& preset) {
  std::vector<Entry> out;
  const std::vector<std::string_view> typed = typed_kernels();
  auto square = [&](std::vector<std::int64_t> seqs, std::vector<std::int64_t> heads, std::vector<std::int64_t> dks,
                    std::vector<bool> causals, Dtype dt = Dtype::fp32, std::vector<std::string_view> kernels = {},
                    std::size_t max_isas = 0) {
    for (bool c : causals)
      for (auto d : dks)
        for (auto h : heads)
          for (auto s : seqs) out.push_back({{1, h, h, s, s, d, c, dt}, kernels, max_isas});
  };
  auto decode = [&](std::int64_t hkv, std::int64_t kv, Dtype dt = Dtype::fp32,
                    std::vector<std::string_view> kernels = {}, std::size_t max_isas = 0) {
    out.push_back({{1, 32, hkv, 1, kv, 128, false, dt}, kernels, max_isas});  // decode, 32 query heads
  };
  // A KV cache in `kv` (16-bit or quantized) with fp32 Q/O: the decoding rows of each K/V type.
  auto decode_kv = [&](std::int64_t hkv, std::int64_t kv, Dtype kv_type, std::vector<std::string_view> kernels,
                       std::size_t max_isas) {
    Shape sh{1, 32, hkv, 1, kv, 128, false, Dtype::fp32};
    sh.kv_dtype = kv_type;
    out.push_back({sh, kernels, max_isas});
  };
  const Dtype cache_types[] = {Dtype::bf16,     Dtype::int8,     Dtype::int8_kc,
                               Dtype::fp8_e4m3, Dtype::fp8_e5m2, Dtype::int4};
  const std::vector<std::string_view> flash = {"flash"};
  // Paged K/V (fp32 Q/O, bf16 cache, 32/8 heads, d 128), flash on the best ISA, each beside the
  // contiguous work it is measured against: decoding one 32k context at block sizes 16 and 128
  // (against decode_kv(8, 32768, bf16)), the mixed batch (against one contiguous call per
  // sequence) and the shared-prefix batch (against private copies of the prefix).
  auto paged_rows = [&] {
    auto row = [&](PagedBatch batch, std::int64_t block_size, bool separate = false, bool private_prefix = false) {
      const PagedSequences seqs = paged_sequences(batch, 32768);
      std::int64_t nq = 0, ctx = 0;
      for (std::size_t i = 0; i < seqs.context.size(); ++i) {
        nq += seqs.new_tokens[i];
        ctx += seqs.context[i];
      }
      Shape sh{1, 32, 8, nq, ctx, 128, true, Dtype::fp32};
      sh.kv_dtype = Dtype::bf16;
      sh.var.block_size = block_size;
      sh.var.paged = batch;
      sh.var.separate = separate;
      sh.var.private_prefix = private_prefix;
      out.push_back({sh, flash, 1});
    };
    row(PagedBatch::one, 16);
    row(PagedBatch::one, 128);
    row(PagedBatch::mixed, 16);
    row(PagedBatch::mixed, 16, true);
    row(PagedBatch::prefix, 16);
    row(PagedBatch::prefix, 16, false, true);
  };
  if (preset == "quick") {
    square({128, 512, 2048}, {8}, {64, 128}, {false, true});
    decode(8, 8192);
    out.push_back({{1, 8, 2, 512, 512, 128, true}, {}, 0});  // grouped-query prefill
    square({512, 2048}, {8}, {128}, {false, true}, Dtype::bf16, typed, 2);
    decode(8, 8192, Dtype::bf16, typed, 2);
    square({2048}, {8}, {128}, {false}, Dtype::fp16, flash, 2);
    decode(8, 8192, Dtype::fp16, flash, 2);
    // Quantized caches beside bf16 K/V (fp32 Q/O), flash on the best ISA.
    for (std::int64_t kv : {8192, 32768})
      for (Dtype t : cache_types) decode_kv(8, kv, t, flash, 1);
  } else if (preset == "standard") {
    square({128, 256, 512, 1024, 2048, 4096}, {8}, {64, 128}, {false, true});
    square({512, 2048}, {1, 32}, {32, 256}, {false, true});
    for (std::int64_t kv : {1024, 8192, 32768}) decode(8, kv);
    decode(32, 8192);
    out.push_back({{1, 32, 8, 2048, 2048, 128, true}, {}, 0});
    square({128, 256, 512, 1024, 2048, 4096}, {8}, {64, 128}, {false, true}, Dtype::bf16, typed, 2);
    for (std::int64_t kv : {1024, 8192, 32768}) decode(8, kv, Dtype::bf16, typed, 2);
    square({512, 2048}, {8}, {128}, {false, true}, Dtype::fp16, flash, 2);
    decode(8, 8192, Dtype::fp16, flash, 2);
    for (std::int64_t kv : {8192, 32768})
      for (Dtype t : cache_types) decode_kv(8, kv, t, flash, 1);
    paged_rows();
    // Prefill with a quantized cache against bf16 K/V.
    for (Dtype t : {Dtype::bf16, Dtype::int8, Dtype::int4}) {
      Shape sh{1, 8, 8, 2048, 2048, 128, true, Dtype::fp32};
      sh.kv_dtype = t;
      out.push_back({sh, flash, 1});
    }
  } else if (preset == "full") {
    square({128, 256, 512, 1024, 2048, 4096, 8192}, {1, 8, 32}, {32, 64, 128, 256}, {false, true});
    for (std::int64_t kv : {1024, 4096, 8192, 16384, 32768})
      for (std::int64_t hkv : {32, 8}) decode(hkv, kv);
    for (std::int64_t s : {512, 2048}) out.push_back({{1, 32, 8, s, s, 128, true}, {}, 0});
    square({128, 256, 512, 1024, 2048, 4096, 8192}, {1, 8, 32}, {32, 64, 128, 256}, {false, true}, Dtype::bf16,
           typed);
    for (std::int64_t kv : {1024, 4096, 8192, 16384, 32768})
      for (std::int64_t hkv : {32, 8}) decode(hkv, kv, Dtype::bf16, typed);
    square({128, 512, 2048, 8192}, {8}, {64, 128}, {false, true}, Dtype::fp16, flash);
    for (std::int64_t kv : {8192, 32768}) decode(8, kv, Dtype::fp16, flash);
  } else if (preset == "paged") {
    decode_kv(8, 32768, Dtype::bf16, flash, 1);
    paged_rows();
  } else if (preset == "variants") {
    // The variants' speed targets, each next to its plain shape (flash and simd): a sliding
    // window of 512 at seq 8192 against full causal, a mask hiding half the tiles against an
    // all-visible one, soft-cap / ALiBi / sinks against plain at seq 2048, d_k 128.
    const std::vector<std::string_view> tiled = {"flash", "simd"};
    auto add = [&](Shape sh, Variant v) {
      sh.var = v;
      out.push_back({sh, tiled, 1});
    };
    const Shape long_causal{1, 2, 2, 8192, 8192, 128, true};
    add(long_causal, {});
    add(long_causal, {.window = 512});
    const Shape mid{1, 8, 8, 2048, 2048, 128, false};
    add(mid, {});
    add(mid, {.mask = BenchMask::all_visible});
    add(mid, {.mask = BenchMask::half_hidden});
    add(mid, {.softcap = 30.0f});
    add(mid, {.alibi = true});
    add(mid, {.sinks = true});
    add(mid, {.seq_major = true});
    Shape mid_causal = mid;
    mid_causal.causal = true;
    add(mid_causal, {});
    add(mid_causal, {.softcap = 30.0f});
    add(mid_causal, {.alibi = true});
    add(mid_causal, {.sinks = true});
    add(mid_causal, {.softcap = 30.0f, .alibi = true, .sinks = true});
    // Varlen: 8 mixed-length causal sequences packed, against the same sequences as 8 dense calls.
    const Shape packed{1, 8, 8, 6336, 6336, 128, true};
    add(packed, {.varlen = true});
    add(packed, {.varlen = true, .separate = true});
    add(packed, {.mask = BenchMask::half_hidden, .varlen = true});  // the mask over the packed tokens
    // Causal alignment: 512 queries against 2048 keys, bottom-right (plain) and top-left.
    const Shape chunk{1, 8, 8, 512, 2048, 128, true};
    add(chunk, {});
    add(chunk, {.top_left = true});
    // Top-k (hard attention) runs on naive only: a small shape, beside its plain self.
    const Shape small_shape{1, 2, 2, 256, 256, 64, true};
    out.push_back({small_shape, {"naive"}, 1});
    Shape top = small_shape;
    top.var = {.top_k = 8};
    out.push_back({top, {"naive"}, 1});
  }
  return out;
}

double g_budget_seconds = 0.0;  // 0: unlimited
// --block-q / --block-kv: run every kernel with these tiles instead of its defaults (0 = default),
// e.g. to measure what a tile choice costs, or as a known slowdown for the regression gate's A/B proof.
attune::Config g_tiles;
// --inject-slowdown PCT (test-only: the regression gate's proofs): after each timed call, spin
// for PCT% of that call's own duration. A code change's cost depends on the CPU (--block-q 120
// costs 6% on an Intel Xeon and nothing on an AMD Zen 3); this one costs the same fraction on
// every machine, so a proof can say "5% injected, caught in y of z".
double g_inject_slowdown = 0.0;
const auto g_start = std::chrono::steady_clock::now();
std::map<std::pair<attune::Isa, int>, double> g_peak;  // fp32 FMA GFLOP/s per (isa, threads)
std::map<int, double> g_bf16_dot_peak;                    // vdpbf16ps GFLOP/s per thread count
std::map<int, double> g_amx_peak;                         // TDPBF16PS GFLOP/s per thread count

// The ceiling of the instruction a benchmark's inner loop runs: TDPBF16PS on amx, vdpbf16ps for bf16 on the ISA
// built around it, else the fp32 FMA of the benchmark's ISA (16-bit K/V are widened and
// multiplied in fp32 there; gemm's multiply-adds are the BLAS's sgemm on float32 copies).
double peak_gflops(const attune::Kernel& kernel, attune::Isa isa, Dtype dtype, int threads) {
  if (isa == attune::Isa::amx) return g_amx_peak[threads];
  if (dtype == Dtype::bf16 && attune::to_string(isa) == "avx512_bf16" && kernel.name() != "gemm")
    return g_bf16_dot_peak[threads];
  return g_peak[{isa, threads}];
}

attune::Problem to_problem(const Shape& s) {
  attune::Problem p;
  p.batch = s.batch;
  p.heads_q = s.heads_q;
  p.heads_kv = s.heads_kv;
  p.seq_q = s.seq_q;
  p.seq_kv = s.seq_kv;
  p.d_k = p.d_v = s.d;
  p.causal = s.causal;
  p.dtype = s.dtype;
  p.kv_dtype = s.kv_dtype;
  p.window = s.var.window;
  p.softcap = s.var.softcap;
  p.alibi = s.var.alibi;
  p.sinks = s.var.sinks;
  if (s.var.mask != BenchMask::none) p.mask = attune::MaskKind::boolean;
  if (s.var.varlen) p.sequences = static_cast<std::int64_t>(std::size(kVarlenLengths));
  if (s.var.paged != PagedBatch::none) {
    const PagedSequences seqs = paged_sequences(s.var.paged, 32768);
    p.sequences = static_cast<std::int64_t>(seqs.context.size());
    p.block_size = s.var.block_size;
    std::int64_t blocks = 0, widest = 0;
    for (std::int64_t ctx : seqs.context) {
      blocks += (ctx + p.block_size - 1) / p.block_size;
      widest = std::max(widest, (ctx + p.block_size - 1) / p.block_size);
    }
    p.num_blocks = blocks;
    p.max_blocks = widest;
  }
  p.strided = s.var.seq_major;
  if (s.var.top_left) p.causal_align = attune::CausalAlign::top_left;
  p.top_k = s.var.top_k;
  return p;
}

// The variants' arrays of a shape: ALiBi slopes 2^(-8 h / heads_q), sinks of 0, the mask.
struct VariantArrays {
  std::vector<float> slopes, sinks;
  std::vector<std::uint8_t> mask;
  std::vector<std::int64_t> cu;  // varlen: the same offsets for queries and keys
  attune::VariantData data;
};

VariantArrays variant_arrays(const Shape& s) {
  const attune::Problem p = to_problem(s);
  VariantArrays a;
  for (std::int64_t h = 1; p.alibi && h <= p.heads_q; ++h)
    a.slopes.push_back(static_cast<float>(std::exp2(-8.0 * static_cast<double>(h) / static_cast<double>(p.heads_q))));
  if (p.sinks) a.sinks.assign(static_cast<std::size_t>(p.heads_q), 0.0f);
  if (s.var.mask != BenchMask::none) {
    // Varlen: the pattern in each sequence's frame, on its diagonal block of the packed mask.
    std::vector<std::int64_t> frames = {0, p.seq_q};
    if (s.var.varlen) {
      frames = {0};
      for (std::int64_t n : kVarlenLengths) frames.push_back(frames.back() + n);
    }
    a.mask.resize(static_cast<std::size_t>(p.mask_elements()));
    for (std::size_t f = 0; f + 1 < frames.size(); ++f)
      for (std::int64_t i = frames[f]; i < frames[f + 1]; ++i)
        for (std::int64_t j = 0; j < (s.var.varlen ? frames[f + 1] - frames[f] : p.seq_kv); ++j)
          a.mask[static_cast<std::size_t>(i * p.seq_kv + frames[f] + j)] =
              s.var.mask == BenchMask::all_visible || (j / 64) % 2 == 0;
  }
  if (!a.slopes.empty()) a.data.alibi_slopes = a.slopes.data();
  if (!a.sinks.empty()) a.data.sinks = a.sinks.data();
  if (!a.mask.empty()) a.data.mask = a.mask.data();
  if (s.var.varlen) {
    a.cu.push_back(0);
    for (std::int64_t n : kVarlenLengths) a.cu.push_back(a.cu.back() + n);
    a.data.cu_seqlens_q = a.data.cu_seqlens_kv = a.cu.data();
  }
  if (s.var.seq_major) {  // the same buffers, read as [batch, seq, heads, dim]
    a.data.q_strides = attune::Strides::seq_major(p.heads_q, p.seq_q, p.d_k);
    a.data.k_strides = attune::Strides::seq_major(p.heads_kv, p.seq_kv, p.d_k);
    a.data.v_strides = attune::Strides::seq_major(p.heads_kv, p.seq_kv, p.d_v);
    a.data.out_strides = attune::Strides::seq_major(p.heads_q, p.seq_q, p.d_v);
  }
  return a;
}

// Varlen's sequences as separate dense problems with their own contiguous tensors (what a
// caller without varlen runs): built once per benchmark, outside the timed loop.
struct Separate {
  std::vector<attune::Problem> problems;
  std::vector<Buffer> q, k, v, out;
};

Separate separate_of(const Shape& s, const attune::Problem& p, const VariantArrays& var, const Buffer& q,
                     const Buffer& k, const Buffer& v) {
  Separate sep;
  const std::size_t size = attune::size_of(s.dtype);  // varlen bench rows keep K/V in dtype
  auto slice = [&](const Buffer& x, std::int64_t heads, std::int64_t total, std::int64_t t0, std::int64_t n) {
    Buffer out(static_cast<std::size_t>(heads * n * p.d_k) * size);
    for (std::int64_t h = 0; h < heads; ++h)
      std::memcpy(out.data() + static_cast<std::size_t>(h * n * p.d_k) * size,
                  x.data() + static_cast<std::size_t>((h * total + t0) * p.d_k) * size, static_cast<std::size_t>(n * p.d_k) * size);
    return out;
  };
  for (std::int64_t i = 0; i < p.sequences; ++i) {
    attune::Problem sub = p.sequence(i, var.data);
    sep.problems.push_back(sub);
    sep.q.push_back(slice(q, p.heads_q, p.seq_q, var.cu[static_cast<std::size_t>(i)], sub.seq_q));
    sep.k.push_back(slice(k, p.heads_kv, p.seq_kv, var.cu[static_cast<std::size_t>(i)], sub.seq_kv));
    sep.v.push_back(slice(v, p.heads_kv, p.seq_kv, var.cu[static_cast<std::size_t>(i)], sub.seq_kv));
    sep.out.emplace_back(static_cast<std::size_t>(sub.out_elements()) * size);
  }
  return sep;
}

// Google Benchmark calls a benchmark once per iteration-count probe and once per repetition
// (and random interleaving alternates shapes): drawing fresh normals every time cost more than
// the timed loops for decode shapes. Inputs are kept per shape and dtype (drawn in float32 from
// the same seed, so the same values, and converted once to the storage type), the least recently
// used dropped beyond kInputCacheBytes.
struct Inputs {
  Buffer q, k, v, out;
  Buffer k_scales, v_scales;  // quantized K/V (kv_quant.hpp layouts)
  std::size_t bytes() const { return q.size() + k.size() + v.size() + out.size() + k_scales.size() + v_scales.size(); }
};
constexpr std::size_t kInputCacheBytes = std::size_t{512} << 20;

Inputs& inputs_for(const Shape& s) {
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, Dtype, Dtype>;
  static std::list<std::pair<Key, Inputs>> cache;  // most recently used first
  const Key key{s.batch, s.heads_q, s.heads_kv, s.seq_q, s.seq_kv, s.d, s.dtype, s.kv()};
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->first == key) {
      cache.splice(cache.begin(), cache, it);
      return cache.front().second;
    }
  }
  const attune::Problem p = to_problem(s);
  Inputs in;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  const std::size_t size = attune::size_of(s.dtype);
  std::vector<float> values;
  for (auto [x, n] : {std::pair{&in.q, p.q_elements()}, {&in.k, p.k_elements()}, {&in.v, p.v_elements()}}) {
    values.resize(n);
    for (float& e : values) e = normal(rng);
    const Dtype type = x == &in.q ? s.dtype : s.kv();
    if (attune::is_quantized(type)) {  // quantize_kv_tensor: codes and the scales beside them
      const bool is_k = x == &in.k;
      x->resize(attune::row_bytes(type, n));
      auto& scales = is_k ? in.k_scales : in.v_scales;
      scales.resize(static_cast<std::size_t>(attune::scale_elements(p, is_k)) * attune::scale_element_bytes(type));
      attune::quantize_kv_tensor(p, is_k, values.data(), x->data(), scales.data());
      continue;
    }
    x->resize(n * attune::size_of(type));
    attune::convert_from_float(type, values.data(), x->data(), n);
  }
  in.out.resize(p.out_elements() * size);
  std::size_t total = in.bytes();
  for (const auto& entry : cache) total += entry.second.bytes();
  while (!cache.empty() && total > kInputCacheBytes) {
    total -= cache.back().second.bytes();
    cache.pop_back();
  }
  cache.emplace_front(key, std::move(in));
  return cache.front().second;
}

// A paged row's tensors (built once per row, the last kept; a 32k context is ~130 MB of bf16
// K/V): the pool with every sequence's blocks at shuffled places, so no two of a sequence's blocks
// are adjacent, the table and offsets; the prefix batch's tables share their first blocks unless
// private_prefix. With `separate`: one contiguous problem per sequence with its own tensors.
struct PagedInputs {
  std::string key;
  std::vector<std::int64_t> cu_q, cu_kv;
  std::vector<std::int32_t> table;
  Buffer q, k, v, out;
  std::vector<attune::Problem> problems;
  std::vector<Buffer> sq, sk, sv, so;
};

// `n` elements of `type` with unit-normal values (a 64k-value table repeated at varying offsets:
// drawing hundreds of millions of normals would take longer than the benchmark).
Buffer normal_bytes(Dtype type, std::int64_t n, std::uint32_t seed) {
  static const std::vector<float> table = [] {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    std::vector<float> t(65536 + 4096);
    for (float& x : t) x = normal(rng);
    return t;
  }();
  Buffer out(static_cast<std::size_t>(n) * attune::size_of(type));
  for (std::int64_t i = 0, chunk = 0; i < n; i += 65536, ++chunk) {
    const std::int64_t m = std::min<std::int64_t>(65536, n - i);
    const std::size_t offset = (chunk * 977 + seed) % 4096;
    attune::convert_from_float(type, table.data() + offset, out.data() + static_cast<std::size_t>(i) * attune::size_of(type),
                               static_cast<std::size_t>(m));
  }
  return out;
}

PagedInputs& paged_inputs_for(const Shape& s, const attune::Problem& p) {
  static PagedInputs in;
  const std::string key = p.to_string() + (s.var.separate ? "_sep" : "") + (s.var.private_prefix ? "_private" : "");
  if (in.key == key) return in;
  in = PagedInputs{};
  in.key = key;
  const PagedSequences seqs = paged_sequences(s.var.paged, 32768);
  const Dtype kv = s.kv();
  // The offsets (also what the separate calls' FLOPs are counted from).
  in.cu_q = {0};
  in.cu_kv = {0};
  for (std::size_t i = 0; i < seqs.context.size(); ++i) {
    in.cu_q.push_back(in.cu_q.back() + seqs.new_tokens[i]);
    in.cu_kv.push_back(in.cu_kv.back() + seqs.context[i]);
  }
  if (s.var.separate) {
    for (std::size_t i = 0; i < seqs.context.size(); ++i) {
      attune::Problem sub = p;  // sequence i as a dense problem of its own
      sub.sequences = sub.block_size = sub.num_blocks = sub.max_blocks = 0;
      sub.seq_q = seqs.new_tokens[i];
      sub.seq_kv = seqs.context[i];
      in.problems.push_back(sub);
      in.sq.push_back(normal_bytes(s.dtype, sub.q_elements(), 1));
      in.sk.push_back(normal_bytes(kv, sub.k_elements(), 2));
      in.sv.push_back(normal_bytes(kv, sub.v_elements(), 3));
      in.so.emplace_back(static_cast<std::size_t>(sub.out_elements()) * attune::size_of(s.dtype));
    }
    return in;
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(p.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(11));
  in.table.assign(static_cast<std::size_t>(p.sequences * p.max_blocks), 0);
  std::size_t next = 0;
  const std::int64_t shared_blocks = s.var.private_prefix ? 0 : seqs.shared / p.block_size;
  for (std::int64_t seq = 0; seq < p.sequences; ++seq) {
    const std::int64_t blocks = (seqs.context[static_cast<std::size_t>(seq)] + p.block_size - 1) / p.block_size;
    for (std::int64_t x = 0; x < blocks; ++x)
      in.table[static_cast<std::size_t>(seq * p.max_blocks + x)] =
          seq > 0 && x < shared_blocks ? in.table[static_cast<std::size_t>(x)] : ids[next++];
  }
  in.q = normal_bytes(s.dtype, p.q_elements(), 1);
  in.k = normal_bytes(kv, p.k_elements(), 2);
  in.v = normal_bytes(kv, p.v_elements(), 3);
  in.out.resize(static_cast<std::size_t>(p.out_elements()) * attune::size_of(s.dtype));
  return in;
}

// One more call with the stage counters on (outside the timed loop): the share of the task time
// in packing K/V, QK^T, softmax, PV and the rest, as stage_<name>_frac counters (attune/stages.hpp).
// Nothing is recorded when the call ran no tiles (amx's vector path for decoding).
template <class Buffer>
void record_stages(const attune::Problem& p, const Buffer& q, const Buffer& k, const Buffer& v, Buffer& out,
                   const attune::Options& o, benchmark::State& state) {
  attune::reset_stage_ticks();
  attune::enable_stage_timing(true);
  attune::attention(p, q.data(), k.data(), v.data(), out.data(), o);
  attune::enable_stage_timing(false);
  const attune::StageTicks t = attune::stage_ticks();
  const double total = static_cast<double>(t.total());
  if (total <= 0) return;
  for (auto [name, ticks] : {std::pair{"stage_pack_frac", t.pack}, {"stage_qk_frac", t.qk},
                             {"stage_softmax_frac", t.softmax}, {"stage_pv_frac", t.pv}, {"stage_other_frac", t.other}})
    state.counters[name] = static_cast<double>(ticks) / total;
}

void run_attention(benchmark::State& state, const attune::Kernel* kernel, attune::Isa isa, Shape s, int threads) {
  if (g_budget_seconds > 0 &&
      std::chrono::duration<double>(std::chrono::steady_clock::now() - g_start).count() > g_budget_seconds) {
    state.SkipWithError("time budget exhausted");
    return;
  }
  const attune::Problem p = to_problem(s);
  Inputs& in = inputs_for(s);
  auto& q = in.q;
  auto& k = in.k;
  auto& v = in.v;
  auto& out = in.out;
  VariantArrays var = variant_arrays(s);
  if (!in.k_scales.empty()) {
    var.data.kv_scales.k = in.k_scales.data();
    var.data.kv_scales.v = in.v_scales.data();
  }
  attune::Options o;
  o.kernel = std::string(kernel->name());
  o.isa = isa;
  o.config.threads = threads;
  o.config.block_q = g_tiles.block_q;
  o.config.block_kv = g_tiles.block_kv;
  Separate sep;
  if (s.var.separate && s.var.paged == PagedBatch::none) sep = separate_of(s, p, var, q, k, v);
  PagedInputs* paged = nullptr;
  if (s.var.paged != PagedBatch::none) {
    paged = &paged_inputs_for(s, p);
    var.data.cu_seqlens_q = paged->cu_q.data();
    var.data.cu_seqlens_kv = paged->cu_kv.data();
    var.data.block_table = paged->table.data();
  }
  auto call = [&] {
    if (paged != nullptr && s.var.separate) {
      for (std::size_t i = 0; i < paged->problems.size(); ++i)
        attune::attention(paged->problems[i], paged->sq[i].data(), paged->sk[i].data(), paged->sv[i].data(),
                          paged->so[i].data(), o);
      return;
    }
    if (paged != nullptr) {
      attune::attention(p, paged->q.data(), paged->k.data(), paged->v.data(), paged->out.data(), var.data, o);
      return;
    }
    if (!s.var.separate) {
      attune::attention(p, q.data(), k.data(), v.data(), out.data(), var.data, o);
      return;
    }
    for (std::size_t i = 0; i < sep.problems.size(); ++i)
      attune::attention(sep.problems[i], sep.q[i].data(), sep.k[i].data(), sep.v[i].data(), sep.out[i].data(), o);
  };
  try {
    call();  // warm-up and validation
  } catch (const attune::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  for (auto _ : state) {
    if (g_inject_slowdown > 0.0) {
      const auto begin = std::chrono::steady_clock::now();
      call();
      const auto end = std::chrono::steady_clock::now();
      const auto until = end + std::chrono::duration_cast<std::chrono::steady_clock::duration>((end - begin) * g_inject_slowdown);
      while (std::chrono::steady_clock::now() < until) {
      }
    } else {
      call();
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // Varlen counts the pairs of its sequences (the same for the separate calls).
  const double flops = p.sequences == 0 ? p.flops()
                                        : p.flops() * static_cast<double>(p.visible_pairs(var.data)) /
                                              static_cast<double>(std::max<std::int64_t>(p.visible_pairs(), 1));
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  // Compulsory traffic in the storage types: Q, K, V read and O written once (a quantized cache:
  // its codes and every scale).
  state.counters["bytes_per_second"] = benchmark::Counter(p.min_bytes(), benchmark::Counter::kIsIterationInvariantRate);
  const double peak = peak_gflops(*kernel, isa, s.dtype, threads) * 1e9;
  if (peak > 0) state.counters["peak_frac"] = benchmark::Counter(flops / peak, benchmark::Counter::kIsIterationInvariantRate);
  if (isa == attune::Isa::amx) record_stages(p, q, k, v, out, o, state);
}

// Variant shapes gain /var:<segments> before /t: (Problem::variant_string without its leading
// '_', plus the bench mask's pattern), e.g. var:w512, var:maskbool_half, var:cap30_alibi_sinks.
std::string name_of(const attune::Kernel* k, attune::Isa isa, const Shape& s, int t) {
  std::string var = to_problem(s).variant_string();
  if (s.var.mask == BenchMask::all_visible) var += "_allvis";
  if (s.var.mask == BenchMask::half_hidden) var += "_half";
  if (s.var.paged == PagedBatch::mixed) var += "_mixed";
  if (s.var.paged == PagedBatch::prefix) var += s.var.private_prefix ? "_prefix_private" : "_prefix_shared";
  if (s.var.separate) var += "_separate";
  if (!var.empty()) var = "/var:" + var.substr(1);
  const std::string kv = s.kv() != s.dtype ? "/kv:" + std::string(attune::to_string(s.kv())) : "";
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "attention/%s/%s/b:%lld/hq:%lld/hkv:%lld/sq:%lld/skv:%lld/d:%lld/causal:%d/dt:%s%s%s/t:%d",
                std::string(k->name()).c_str(), std::string(attune::to_string(isa)).c_str(), (long long)s.batch,
                (long long)s.heads_q, (long long)s.heads_kv, (long long)s.seq_q, (long long)s.seq_kv, (long long)s.d,
                s.causal ? 1 : 0, std::string(attune::to_string(s.dtype)).c_str(), kv.c_str(), var.c_str(), t);
  return buf;
}

std::string now_utc() {
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::exit(2);
}

// "a,b,c": the names of `items`.
template <class Items, class Name>
std::string join_names(const Items& items, Name name) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ',';
    out += name(item);
  }
  return out;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, sep);) out.push_back(item);
  if (!text.empty() && text.back() == sep) out.emplace_back();
  return out;
}

std::optional<std::int64_t> positive(const std::string& text) {
  char* end = nullptr;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < 1) return std::nullopt;
  return n;
}

Dtype dtype_arg(const std::string& text, const char* flag) {
  const auto dt = attune::parse_dtype(text);
  if (!dt) usage_error(std::string(flag) + " '" + text + "' is not an element type (fp32, bf16, fp16)");
  return *dt;
}

// --shape b=1,hq=32,hkv=8,sq=4096,d=128[,skv=N][,causal=0|1][,dt=fp32|bf16|fp16][,kv=T]: hkv defaults
// to hq, skv to sq, causal to 0, dt to --dtype's value, kv (K/V, e.g. int8) to dt. Validated as a Problem, so a bad shape is
// a usage error here and not a skipped benchmark later.
Shape parse_shape(const std::string& spec, Dtype default_dtype) {
  std::map<std::string, std::string> fields;
  for (const std::string& item : split(spec, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) usage_error("--shape '" + spec + "': '" + item + "' is not key=value");
    if (!fields.emplace(item.substr(0, eq), item.substr(eq + 1)).second)
      usage_error("--shape '" + spec + "': '" + item.substr(0, eq) + "' given twice");
  }
  auto number = [&](const char* key, std::optional<std::int64_t> fallback) -> std::int64_t {
    const auto it = fields.find(key);
    if (it == fields.end()) {
      if (!fallback) usage_error("--shape '" + spec + "': '" + key + "=' is required (b, hq, sq, d)");
      return *fallback;
    }
    const auto n = positive(it->second);
    if (!n) usage_error("--shape '" + spec + "': " + key + "='" + it->second + "' is not a positive integer");
    return *n;
  };
  Shape s{};
  s.batch = number("b", 1);
  s.heads_q = number("hq", std::nullopt);
  s.heads_kv = number("hkv", s.heads_q);
  s.seq_q = number("sq", std::nullopt);
  s.seq_kv = number("skv", s.seq_q);
  s.d = number("d", std::nullopt);
  s.dtype = default_dtype;
  if (const auto it = fields.find("causal"); it != fields.end()) {
    if (it->second != "0" && it->second != "1") usage_error("--shape '" + spec + "': causal= must be 0 or 1");
    s.causal = it->second == "1";
  }
  if (const auto it = fields.find("dt"); it != fields.end()) s.dtype = dtype_arg(it->second, "--shape dt=");
  if (const auto it = fields.find("kv"); it != fields.end()) {
    const auto kv = attune::parse_dtype(it->second);
    if (!kv)
      usage_error("--shape kv= '" + it->second + "' is not a K/V type (fp32, bf16, fp16, int8, int8_kc, fp8_e4m3, fp8_e5m2, int4)");
    s.kv_dtype = *kv;
  }
  for (const auto& [key, value] : fields)
    if (!std::set<std::string>{"b", "hq", "hkv", "sq", "skv", "d", "causal", "dt", "kv"}.count(key))
      usage_error("--shape '" + spec + "': unknown key '" + key + "' (b, hq, hkv, sq, skv, d, causal, dt, kv)");
  try {
    to_problem(s).validate();
  } catch (const attune::InvalidArgument& e) {
    usage_error("--shape '" + spec + "': " + e.what());
  }
  return s;
}

std::string model_names() {
  std::string out;
  for (const auto& m : attune_bench::kModels) out += (out.empty() ? "" : ", ") + std::string(m.name);
  return out;
}

// A model's prefill (causal, seq_q = seq_kv) and decoding (seq_q 1) shapes, batch 1.
std::vector<Shape> model_shapes(const std::string& name, Dtype dtype) {
  const attune_bench::ModelShape* m = attune_bench::find_model(name);
  if (!m) usage_error("--model '" + name + "' is not in bench/models.hpp (" + model_names() + ")");
  std::vector<Shape> out;
  for (std::int64_t s : m->prefill_seq)
    if (s > 0) out.push_back({1, m->heads_q, m->heads_kv, s, s, m->d, true, dtype});
  for (std::int64_t kv : m->decode_kv)
    if (kv > 0) out.push_back({1, m->heads_q, m->heads_kv, 1, kv, m->d, false, dtype});
  return out;
}

void usage() {
  std::printf(
      "usage: attune_bench [--preset quick|standard|full|variants|paged] [--shape SPEC]... [--model NAME]... [--dtype T]\n"
      "                    [--kernels K1,K2] [--threads N1,N2] [--all-isas] [--budget SECONDS] [--no-probes]\n"
      "                    [--block-q N] [--block-kv N] [--inject-slowdown PCT] [--benchmark_*...]\n"
      "  --preset   shape grid (default quick: ~2.5 min on 2 cores; standard ~20 min; variants: the\n"
      "             attention variants next to their plain shapes, flash and simd, ~2 min; paged: paged\n"
      "             K/V decode, mixed and shared-prefix batches next to their contiguous work, ~2 min)\n"
      "  --shape    b=1,hq=32,hkv=8,sq=4096,d=128[,skv=N][,causal=0|1][,dt=fp32|bf16|fp16][,kv=T] (repeatable;\n"
      "             hkv defaults to hq, skv to sq); replaces the preset grid unless --preset is given\n"
      "  --model    a model's prefill and decode shapes (repeatable): %s\n"
      "  --dtype    storage type of --model shapes and of --shape specs without dt= (default fp32)\n"
      "  --kernels  only these kernels (names from `attune kernels`)\n"
      "  --threads  thread counts (default: 1 and all cores); unthreaded kernels run only at 1\n"
      "  --all-isas --shape/--model rows on every runnable ISA (default: each kernel's best ISA)\n"
      "  --budget   skip the remaining benchmarks after this many seconds\n"
      "  --block-q, --block-kv  tiles for every kernel that reads them (default 0: the kernel's own)\n"
      "  --inject-slowdown PCT  test-only: after each timed call, spin for PCT%% of its own duration\n"
      "             (a slowdown of the same size on every CPU, for the regression gate's proofs)\n"
      "  Names: attention/<kernel>/<isa>/b:/hq:/hkv:/sq:/skv:/d:/causal:/dt:[/kv:][/var:]/t:\n",
      model_names().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "quick";
  bool preset_given = false, all_isas = false;
  bool probes = true;
  Dtype custom_dtype = Dtype::fp32;
  std::vector<std::string> shape_specs, models, kernel_filter;
  std::vector<int> thread_arg;
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> std::string {
      const std::string f = flag;
      if (a.rfind(f + "=", 0) == 0) return a.substr(f.size() + 1);
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else if (a.rfind("--preset", 0) == 0) {
      preset = value("--preset");
      preset_given = true;
    } else if (a == "--shape" || a.rfind("--shape=", 0) == 0) {
      shape_specs.push_back(value("--shape"));
    } else if (a == "--model" || a.rfind("--model=", 0) == 0) {
      models.push_back(value("--model"));
    } else if (a == "--dtype" || a.rfind("--dtype=", 0) == 0) {
      custom_dtype = dtype_arg(value("--dtype"), "--dtype");
    } else if (a == "--kernels" || a.rfind("--kernels=", 0) == 0) {
      for (const std::string& k : split(value("--kernels"), ',')) {
        if (!attune::find_kernel(k)) {
          std::string known;
          for (const attune::Kernel* kern : attune::kernels()) known += (known.empty() ? "" : ", ") + std::string(kern->name());
          usage_error("--kernels: unknown kernel '" + k + "' (" + known + ")");
        }
        kernel_filter.push_back(k);
      }
    } else if (a == "--threads" || a.rfind("--threads=", 0) == 0) {
      for (const std::string& t : split(value("--threads"), ',')) {
        const auto n = positive(t);
        if (!n || *n > 4096) usage_error("--threads: '" + t + "' is not a thread count (1 to 4096)");
        thread_arg.push_back(static_cast<int>(*n));
      }
    } else if (a == "--all-isas") {
      all_isas = true;
    } else if (a.rfind("--budget", 0) == 0) {
      const std::string v = value("--budget");
      char* end = nullptr;
      g_budget_seconds = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || g_budget_seconds <= 0) {
        std::fprintf(stderr, "error: --budget '%s' is not a positive number of seconds\n", v.c_str());
        return 2;
      }
    } else if (a.rfind("--block-q", 0) == 0 || a.rfind("--block-kv", 0) == 0) {
      const bool kv = a.rfind("--block-kv", 0) == 0;
      const char* flag = kv ? "--block-kv" : "--block-q";
      const std::string v = value(flag);
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 0) {
        std::fprintf(stderr, "error: %s '%s' is not a tile size (>= 0; 0 = the kernel's default)\n", flag, v.c_str());
        return 2;
      }
      (kv ? g_tiles.block_kv : g_tiles.block_q) = n;
    } else if (a == "--inject-slowdown") {
      const std::string v = value("--inject-slowdown");
      char* end = nullptr;
      const double pct = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(pct > 0.0 && pct <= 100.0)) {
        std::fprintf(stderr, "error: --inject-slowdown '%s' is not a percentage in (0, 100]\n", v.c_str());
        return 2;
      }
      g_inject_slowdown = pct / 100.0;
    } else if (a == "--no-probes") {
      probes = false;
    } else {
      rest.push_back(argv[i]);
    }
  }
  const bool custom = !shape_specs.empty() || !models.empty();
  std::vector<Entry> entries;
  if (!custom || preset_given) {
    entries = preset_entries(preset);
    if (entries.empty()) usage_error("unknown preset '" + preset + "' (quick, standard, full, variants, paged)");
  }
  // A user's shapes: every kernel (or --kernels) on its best ISA taking the type (--all-isas: all).
  const std::size_t custom_isas = all_isas ? 0 : 1;
  std::vector<std::string> sources;  // "shape:<spec>", "model:<name>", for the JSON context
  for (const std::string& spec : shape_specs) {
    entries.push_back({parse_shape(spec, custom_dtype), {}, custom_isas});
    sources.push_back("shape:" + spec);
  }
  for (const std::string& m : models) {
    for (const Shape& s : model_shapes(m, custom_dtype)) entries.push_back({s, {}, custom_isas});
    sources.push_back("model:" + m);
  }
  std::string custom_context;
  for (const std::string& src : sources) {
    if (!custom_context.empty()) custom_context.push_back(' ');
    custom_context.append(src);
  }
  if (custom) preset = preset_given ? preset + "+custom" : "custom";
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> thread_counts = {1};
  if (cores > 1) thread_counts.push_back(cores);
  if (!thread_arg.empty()) {
    std::sort(thread_arg.begin(), thread_arg.end());
    thread_arg.erase(std::unique(thread_arg.begin(), thread_arg.end()), thread_arg.end());
    thread_counts = thread_arg;
  }

  // The quick preset trades a little precision for its ~2 minute budget, unless told otherwise.
  bool has_min_time = false;
  for (char* a : rest) has_min_time |= std::strncmp(a, "--benchmark_min_time", 20) == 0;
  static char quick_min_time[] = "--benchmark_min_time=0.2";
  if (preset == "quick" && !has_min_time) rest.push_back(quick_min_time);
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 2;

  benchmark::AddCustomContext("attune_version", std::string(attune::version()));
  benchmark::AddCustomContext("attune_git_revision", std::string(attune::git_revision()));
  benchmark::AddCustomContext("attune_compiler", std::string(attune::compiler()));
  benchmark::AddCustomContext("attune_flags", std::string(attune::compile_flags()));
  benchmark::AddCustomContext("attune_build_type", std::string(attune::build_type()));
  benchmark::AddCustomContext("cpu_model", std::string(attune::cpu_model()));
  benchmark::AddCustomContext("cores", std::to_string(cores));
  const auto isa_name = [](attune::Isa i) { return attune::to_string(i); };
  benchmark::AddCustomContext("isa_runnable", join_names(attune::runnable_isas(), isa_name));
  // The build's ISAs (best first) and kernels (registry order): readers order and style their
  // output by these instead of lists of their own.
  benchmark::AddCustomContext("isa_compiled", join_names(attune::compiled_isas(), isa_name));
  benchmark::AddCustomContext("attune_kernels",
                              join_names(attune::kernels(), [](const attune::Kernel* k) { return k->name(); }));
  benchmark::AddCustomContext("isa_default", std::string(attune::to_string(attune::default_isa())));
  benchmark::AddCustomContext("preset", preset);
  if (custom) benchmark::AddCustomContext("bench_shapes", custom_context);
  // No tuner yet: `auto` and every kernel run their built-in default tiles.
  benchmark::AddCustomContext("tuned_table", "none (built-in defaults)");
  benchmark::AddCustomContext("attune_format", "1");
  benchmark::AddCustomContext("bench_tiles", "block_q=" + std::to_string(g_tiles.block_q) +
                                                 " block_kv=" + std::to_string(g_tiles.block_kv));
  if (g_inject_slowdown > 0.0)
    benchmark::AddCustomContext("bench_injected_slowdown", std::to_string(g_inject_slowdown * 100.0) + "%");
  benchmark::AddCustomContext("date", now_utc());
  benchmark::AddCustomContext("peak_frac_probe",
                              "fp32 FMA peak of the benchmark's ISA (peak_gflops_<isa>_t<threads>); "
                              "bf16_dot_gflops_t<threads> for bf16 on avx512_bf16; amx_gflops_t<threads> on amx");

  if (probes) {
    std::fprintf(stderr, "probes: FMA peak per ISA and thread count, bf16 dot product, AMX, stream triad, 16-bit read ...\n");
    for (attune::Isa isa : attune::runnable_isas()) {
      if (isa == attune::Isa::amx) continue;  // no FMA loop of its own: its probe is amx_gflops
      for (int t : thread_counts) {
        const auto r = attune::probe_fma_peak(isa, t);
        g_peak[{isa, t}] = r.median;
        const std::string key = "peak_gflops_" + std::string(attune::to_string(isa)) + "_t" + std::to_string(t);
        benchmark::AddCustomContext(key, std::to_string(r.median));
        std::fprintf(stderr, "  %-28s %8.1f GFLOP/s (min %.1f, max %.1f)\n", key.c_str(), r.median, r.min, r.max);
      }
    }
    auto record = [](const std::string& key, const attune::ProbeResult& r, const char* unit) {
      benchmark::AddCustomContext(key, std::to_string(r.median));
      std::fprintf(stderr, "  %-28s %8.1f %s (min %.1f, max %.1f)\n", key.c_str(), r.median, unit, r.min, r.max);
    };
    for (int t : thread_counts) {
      if (const auto r = attune::probe_bf16_dot_peak(t)) {  // only on CPUs with AVX512-BF16
        g_bf16_dot_peak[t] = r->median;
        record("bf16_dot_gflops_t" + std::to_string(t), *r, "GFLOP/s");
      }
    }
    for (int t : thread_counts) {
      if (const auto r = attune::probe_amx_peak(t)) {  // only where AMX-BF16 is runnable
        g_amx_peak[t] = r->median;
        record("amx_gflops_t" + std::to_string(t), *r, "GFLOP/s");
      }
    }
    for (int t : thread_counts) record("triad_gbps_t" + std::to_string(t), attune::probe_triad(t), "GB/s");
    for (int t : thread_counts) record("read16_gbps_t" + std::to_string(t), attune::probe_read16(t), "GB/s");
  }

  for (const Entry& e : entries) {
    const Shape& s = e.shape;
    const attune::Problem p = to_problem(s);
    for (const attune::Kernel* k : attune::kernels()) {
      if (!e.kernels.empty() && std::find(e.kernels.begin(), e.kernels.end(), k->name()) == e.kernels.end()) continue;
      if (!kernel_filter.empty() &&
          std::find(kernel_filter.begin(), kernel_filter.end(), k->name()) == kernel_filter.end())
        continue;
      // The scalar-only kernels and the scalar builds only where they finish quickly.
      const bool slow = scalar_only(*k);
      if (slow && p.flops() > 2e9 && kernel_filter.empty()) continue;  // unless asked for by name
      // ISAs that do not take the dtype are left out, not run as errors.
      auto kernel_isas = attune::runnable_isas(*k, p);  // best first for this problem
      if (e.max_isas > 0 && kernel_isas.size() > e.max_isas) kernel_isas.resize(e.max_isas);
      for (attune::Isa isa : kernel_isas) {
        if (isa == attune::Isa::scalar && !slow && p.flops() > 2e9) continue;
        // The BLAS baseline's time is in the BLAS; its own ISA only runs the softmax: best ISA only.
        if (k->name() == "gemm" && isa != kernel_isas.front()) continue;
        for (int t : thread_counts) {
          if (t > 1 && !threaded(*k)) continue;
          benchmark::RegisterBenchmark(name_of(k, isa, s, t).c_str(), run_attention, k, isa, s, t)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
        }
      }
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
