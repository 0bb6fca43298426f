// `attune run`: attention on .npy tensors, with every storage type, variant and layout the
// library takes; the variants' flags and files are checked before any work.
#include "commands.hpp"

#include "common.hpp"
#include "npy.hpp"
#include "reference.hpp"

#include <attune/attune.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

namespace attune::cli {

const char* const kRunHelp =
    "usage: attune run --q Q.npy --k K.npy --v V.npy --out O.npy [--causal] [--scale S] [--weights W.npy]\n"
    "                  [--dtype fp32|bf16|fp16] [--kv-dtype T] [--out-dtype fp32|bf16|fp16]\n"
    "                  [--kernel NAME] [--isa ISA] [--threads N] [--block-q N] [--block-kv N]\n"
    "                  [--kv-splits N] [--micro auto|narrow|wide] [--max-memory SIZE]\n"
    "                  [--causal [top-left|bottom-right]] [--window N] [--softcap C] [--alibi | --alibi-slopes S.npy]\n"
    "                  [--sinks S.npy] [--mask M.npy] [--top-k K] [--cu-seqlens-q 0,A,.. --cu-seqlens-kv 0,B,..]\n"
    "                  [--layout bhsd|bshd] [--block-table T.npy]\n\n"
    "Inputs: little-endian C-order .npy of float32 ('<f4'), float16 ('<f2') or bfloat16 ('<V2', as\n"
    "np.save writes an ml_dtypes.bfloat16 array), shape [batch, heads, seq, dim] (or 3-D\n"
    "[heads, seq, dim]); K/V may have fewer heads than Q (grouped-query). Output:\n"
    "[batch, heads_q, seq_q, d_v], written atomically. Default kernel: auto (the best).\n"
    "--dtype is the storage type of Q and O, --kv-dtype that of K and V (default: --dtype;\n"
    "fp32 Q/O with a 16-bit K/V is the decoding mix; --kv-dtype int8|int8_kc|fp8_e4m3|fp8_e5m2|int4\n"
    "quantizes the float K/V files on load with attune::quantize_kv_tensor, scales computed from\n"
    "them, see docs/quantized-kv.md; int4 needs d_k and d_v multiples of 32; --layout bhsd only;\n"
    "non-finite K/V values are refused; or, with --k-scales KS.npy --v-scales VS.npy, K and V are\n"
    "already quantized: int8/uint8 .npy codes [batch, heads, seq, row bytes] and the scales in the\n"
    "documented shapes, float32 (int4: float16 pairs)). Each input is converted to its storage type\n"
    "on load (rounded to nearest even when narrowing; a file already of that type is used as is).\n"
    "Arithmetic is float32; O is rounded once to --dtype, then written as --out-dtype (default\n"
    "fp32: '<f4'; fp16: '<f2'; bf16: '<V2', read back with np.load(...).view(ml_dtypes.bfloat16)).\n"
    "--weights W.npy also writes the softmax weights [batch, heads_q, seq_q, seq_kv] as float32\n"
    "(computed in float64 from Q and K as stored; at most 2^24 weights) for inspection, e.g. with\n"
    "scripts/report.sh weights.\n"
    "--max-memory SIZE caps the kernel's working memory (bytes, or with a K, M, G or T suffix:\n"
    "powers of 1024); a problem needing more is refused before anything is allocated. Default:\n"
    "ATTUNE_MAX_MEMORY, else half the physical memory. The tensors themselves are not counted.\n"
    "Variants (README, 'Attention variants'): --causal top-left aligns the first query with the first\n"
    "key (default bottom-right: the last with the last; also places the window); --window N keeps keys\n"
    "(i'-N, i'] when causal, else (i'-N, i'+N); --softcap C caps logits at C*tanh(s/C); --alibi adds\n"
    "-slope_h*|i'-j| with slopes 2^(-8h/heads_q) (--alibi-slopes: [heads_q] float32 of your own);\n"
    "--sinks S.npy: [heads_q] float32 logits joining each softmax denominator; --mask M.npy: bool/uint8\n"
    "(0 hides) or float32 (added; -inf hides), [seq_q, seq_kv], [batch, 1, seq_q, seq_kv] or\n"
    "[batch, heads_q, seq_q, seq_kv]; --top-k K keeps each query's K largest logits (ties: lower key).\n"
    "--cu-seqlens-q/--cu-seqlens-kv 0,a,b,..,total: varlen, Q/K/V (batch 1) hold packed sequences, each\n"
    "its own causal frame (sequence s: query tokens [a_s, a_s+1), keys [b_s, b_s+1)); a --mask then\n"
    "spans the packed tokens [seq_q, seq_kv] and sequence s reads its diagonal block in its own frame.\n"
    "--layout bshd: Q, K, V and the output are [batch, seq, heads, dim] (3-D: [seq, heads, dim]), read\n"
    "and written in place through strides (default bhsd: [batch, heads, seq, dim]).\n"
    "--block-table T.npy (with --cu-seqlens-q/--cu-seqlens-kv): paged K/V, docs/paged-kv.md. K and V are\n"
    "block pools [num_blocks, heads_kv, block_size, d] (sizes from their shapes); T is int32\n"
    "[sequences, max_blocks] (int64 is converted when every entry fits int32): key j of sequence s is\n"
    "row j % block_size of block T[s][j / block_size]. --cu-seqlens-kv gives the context lengths,\n"
    "--cu-seqlens-q the packed new tokens of Q [heads_q, total_q, d] (or [1, heads_q, total_q, d]),\n"
    "which are the last positions of their contexts (--causal: bottom-right). A quantized --kv-dtype\n"
    "quantizes the whole pools on load (fp8 and int8_kc's K: scales per KV head over the pool).\n"
    "Not with --layout bshd, --weights or --k-scales. A table of the wrong shape is a usage error (2);\n"
    "a block id outside the pool or a context longer than its row holds is an input error (1).\n"
    "A variant the chosen kernel does not implement, or a variant file of the wrong shape, is a usage\n"
    "error (2); an unreadable or mistyped file is an input error (1).\n"
    "Exit status: 0 success, 1 data/input error, 2 usage error.\n";

namespace {

// The kernel's runnable ISAs that take these storage types, best first.
std::vector<Isa> isas_for(const Kernel& k, const Problem& probe) {
  std::vector<Isa> isas = runnable_isas(k);
  std::erase_if(isas, [&](Isa isa) { return !k.supports(probe, isa); });
  return isas;
}

struct Tensor4 {
  std::int64_t batch, heads, seq, dim;
};

Tensor4 as_bhsd(const std::vector<std::int64_t>& s, const char* name, bool seq_major = false) {
  if (s.size() == 4) return seq_major ? Tensor4{s[0], s[2], s[1], s[3]} : Tensor4{s[0], s[1], s[2], s[3]};
  if (s.size() == 3) return seq_major ? Tensor4{1, s[1], s[0], s[2]} : Tensor4{1, s[0], s[1], s[2]};
  throw IoError(std::string(name) + " must be 3-D [heads, seq, dim] or 4-D [batch, heads, seq, dim], got " +
                std::to_string(s.size()) + "-D");
}

// A shape as NumPy prints it: "(2, 3)", "(4,)".
std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string t = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) t += (i ? ", " : "") + std::to_string(shape[i]);
  return t + (shape.size() == 1 ? ",)" : ")");
}

// A paged K or V pool, [num_blocks, heads_kv, block_size, d], as a Tensor4 whose batch is the
// blocks and whose seq is the rows of a block.
Tensor4 as_pool(const std::vector<std::int64_t>& s, const char* name) {
  if (s.size() != 4)
    throw IoError(std::string(name) + " must be a 4-D pool [num_blocks, heads_kv, block_size, d] with --block-table, got " +
                  std::to_string(s.size()) + "-D");
  if (s[0] == 0 || s[2] == 0)
    throw IoError(std::string(name) + " pool " + shape_text(s) + " has no keys: num_blocks and block_size must be positive");
  return {s[0], s[1], s[2], s[3]};
}

// [outer, inner, rest] -> [inner, outer, rest] (`rest` the remaining elements): a paged pool
// [num_blocks, heads_kv, block_size, ...] as one cache per KV head, and back.
template <typename T>
std::vector<T> swap_outer(const std::vector<T>& x, std::int64_t outer, std::int64_t inner) {
  const auto n_outer = static_cast<std::size_t>(outer), n_inner = static_cast<std::size_t>(inner);
  const std::size_t rest = x.size() / (n_outer * n_inner);
  std::vector<T> out(x.size());
  for (std::size_t o = 0; o < n_outer; ++o)
    for (std::size_t i = 0; i < n_inner; ++i)
      std::copy_n(x.data() + (o * n_inner + i) * rest, rest, out.data() + (i * n_outer + o) * rest);
  return out;
}

// The K/V of a paged problem's pools as one contiguous cache per KV head (batch 1, seq_kv
// num_blocks * block_size): what quantize_kv_tensor quantizes them as.
Problem pool_as_cache(const Problem& p) {
  Problem cache;
  cache.heads_q = cache.heads_kv = p.heads_kv;
  cache.seq_kv = p.num_blocks * p.block_size;
  cache.d_k = p.d_k;
  cache.d_v = p.d_v;
  cache.dtype = p.dtype;
  cache.kv_dtype = p.kv_dtype;
  return cache;
}

// Upper bound of `attune run --weights` (16 Mi floats): the weights are for looking at.
constexpr std::int64_t kMaxWeightElements = std::int64_t{1} << 24;

// Storage types of `attune run`: Q and O (--dtype), K and V (--kv-dtype, default --dtype) and
// the written file (--out-dtype, default fp32).
struct RunTypes {
  Dtype dtype = Dtype::fp32;
  Dtype kv_dtype = Dtype::fp32;
  Dtype out_dtype = Dtype::fp32;
};

// Parses the type flags and refuses, as usage errors, a --kernel/--isa that does not take these
// types (Kernel::supports on a small problem): checked before any file is read.
RunTypes parse_types(const Args& a, const Options& options) {
  RunTypes t;
  t.dtype = a.get_dtype("--dtype").value_or(Dtype::fp32);
  t.kv_dtype = a.get_dtype("--kv-dtype", true).value_or(t.dtype);
  t.out_dtype = a.get_dtype("--out-dtype").value_or(Dtype::fp32);
  const Problem probe = typed_probe(t.dtype, t.kv_dtype);
  std::string types(to_string(t.dtype));
  if (t.kv_dtype != t.dtype) types += " Q/O with " + std::string(to_string(t.kv_dtype)) + " K/V";
  if (options.kernel != "auto") {
    const auto isas = isas_for(*find_kernel(options.kernel), probe);
    if (isas.empty())
      throw UsageError("kernel '" + options.kernel + "' has no build that runs " + types +
                       " here (see attune kernels)");
    if (options.isa && std::find(isas.begin(), isas.end(), *options.isa) == isas.end())
      throw UsageError("kernel '" + options.kernel + "' on '" + std::string(to_string(*options.isa)) +
                       "' does not run " + types + " (see attune kernels)");
  } else if (options.isa) {
    const bool any = std::any_of(kernels().begin(), kernels().end(), [&](const Kernel* k) {
      const auto isas = isas_for(*k, probe);
      return std::find(isas.begin(), isas.end(), *options.isa) != isas.end();
    });
    if (!any)
      throw UsageError("no kernel on '" + std::string(to_string(*options.isa)) + "' runs " + types +
                       " (see attune kernels)");
  }
  return t;
}

// Elements stored as `from`, re-stored as `to`: the same bytes when the types agree, else
// widened to float32 and, for a 16-bit `to`, rounded to nearest even (one rounding at most).
std::vector<std::byte> stored_as(std::vector<std::byte> bytes, Dtype from, Dtype to) {
  if (from == to) return bytes;
  const std::size_t n = bytes.size() / size_of(from);
  std::vector<float> wide(n);
  convert_to_float(from, bytes.data(), wide.data(), n);
  std::vector<std::byte> out(n * size_of(to));
  convert_from_float(to, wide.data(), out.data(), n);
  return out;
}

// The stored values widened to float32 (exactly).
std::vector<float> widened(const std::vector<std::byte>& stored, Dtype dtype) {
  std::vector<float> out(stored.size() / size_of(dtype));
  convert_to_float(dtype, stored.data(), out.data(), out.size());
  return out;
}

// `--causal top-left` / `--causal=bottom-right`: the alignment rides on the switch; rewritten
// to `--causal --causal-align=X` before parsing (a plain `--causal` keeps the default).
std::vector<std::string> split_causal(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--causal" && i + 1 < argv.size() && argv[i + 1].rfind("--", 0) != 0) {  // run takes no positional
      out.push_back("--causal");
      out.push_back("--causal-align=" + argv[++i]);
    } else if (argv[i].rfind("--causal=", 0) == 0) {
      out.push_back("--causal");
      out.push_back("--causal-align=" + argv[i].substr(9));
    } else {
      out.push_back(argv[i]);
    }
  }
  return out;
}

// The variant flags of `attune run`: --causal-align, --window, --softcap, --alibi,
// --alibi-slopes, --sinks, --mask, --top-k, varlen, --layout and paged K/V (--block-table).
const std::set<std::string> kVariantFlags = {"--causal-align", "--window", "--softcap", "--alibi-slopes", "--sinks",
                                             "--mask", "--top-k", "--cu-seqlens-q", "--cu-seqlens-kv", "--layout",
                                             "--block-table"};

// "0,17,40": cumulative sequence lengths for varlen; usage errors name the flag.
std::vector<std::int64_t> parse_offsets(const std::string& flag, const std::string& text) {
  std::vector<std::int64_t> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE || n < 0)
      throw UsageError(flag + " = '" + text + "': expected non-negative integers separated by commas, e.g. 0,17,40");
    out.push_back(n);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.size() < 2) throw UsageError(flag + " = '" + text + "': needs at least two offsets (0 and the total)");
  return out;
}

// The variants' arrays as `run` read them (VariantData points into these).
struct VariantFiles {
  std::vector<float> slopes, sinks;
  std::vector<std::byte> mask;
  std::vector<std::int64_t> cu_q, cu_kv;
  std::vector<std::int32_t> block_table;
  VariantData data() const {
    VariantData d;
    if (!cu_q.empty()) d.cu_seqlens_q = cu_q.data();
    if (!cu_kv.empty()) d.cu_seqlens_kv = cu_kv.data();
    if (!block_table.empty()) d.block_table = block_table.data();
    if (!slopes.empty()) d.alibi_slopes = slopes.data();
    if (!sinks.empty()) d.sinks = sinks.data();
    if (!mask.empty()) d.mask = mask.data();
    return d;
  }
};

// Flag values only (no file is read): usage errors, before any input is loaded.
void parse_variant_flags(const Args& a, Problem& p) {
  if (auto align = a.get("--causal-align")) {
    if (*align == "top-left") p.causal_align = CausalAlign::top_left;
    else if (*align == "bottom-right") p.causal_align = CausalAlign::bottom_right;
    else throw UsageError("--causal = '" + *align + "': expected top-left or bottom-right");
  }
  if (auto w = a.get_int("--window", 1)) p.window = *w;
  if (auto cap = a.get_float("--softcap")) {
    if (*cap <= 0.0f) throw UsageError("--softcap = " + *a.get("--softcap") + " must be > 0");
    p.softcap = *cap;
  }
  if (a.has("--alibi") && a.has("--alibi-slopes")) throw UsageError("--alibi and --alibi-slopes exclude each other");
  p.alibi = a.has("--alibi") || a.has("--alibi-slopes");
  p.sinks = a.has("--sinks");
  if (auto k = a.get_int("--top-k", 1)) p.top_k = *k;
  if (a.has("--cu-seqlens-q") != a.has("--cu-seqlens-kv"))
    throw UsageError("--cu-seqlens-q and --cu-seqlens-kv go together (varlen)");
  if (a.has("--block-table") && !a.has("--cu-seqlens-q"))
    throw UsageError("--block-table needs --cu-seqlens-q and --cu-seqlens-kv (the new tokens and the contexts)");
  for (const char* flag : {"--alibi-slopes", "--sinks", "--mask", "--block-table"})
    if (a.has(flag) && a.get(flag)->empty()) throw UsageError(std::string(flag) + " needs a non-empty value");
}

// A per-head vector file ([heads_q] float32) for --alibi-slopes / --sinks.
std::vector<float> read_per_head(const std::string& path, const char* flag, std::int64_t heads_q) {
  const npy::Array x = npy::read(path);
  if (x.shape.size() != 1 || x.shape[0] != heads_q)
    throw UsageError(std::string(flag) + ": " + path + " must hold one float32 per query head, shape [" +
                     std::to_string(heads_q) + "]");
  return x.data;
}

// `p` without the arrays that are read later or not at all (variant files, K/V scales), for
// VariantData::validate of the offsets and the block table alone.
Problem without_arrays(Problem p) {
  p.alibi = p.sinks = false;
  p.mask = MaskKind::none;
  p.kv_dtype.reset();
  return p;
}

// --block-table: int32 [sequences, max_blocks] (int64 converted when every entry fits int32),
// checked by the library's validation against the pools (p.num_blocks, p.block_size, set from
// the K/V shapes) and the contexts (f.cu_kv); sets p.max_blocks. A table of another shape is a
// usage error, an unreadable or mistyped file or one whose entries do not fit the pool and the
// contexts an input error.
std::vector<std::int32_t> read_block_table(const std::string& path, const VariantFiles& f, Problem& p) {
  const npy::IndexArray t = npy::read_indices(path);
  if (t.shape.size() != 2 || t.shape[0] != p.sequences || t.shape[1] == 0)
    throw UsageError("--block-table: " + path + " has shape " + shape_text(t.shape) +
                     ", not [sequences, max_blocks] = [" + std::to_string(p.sequences) + ", >= 1]");
  std::vector<std::int32_t> table(t.values.size());
  const auto columns = static_cast<std::size_t>(t.shape[1]);
  for (std::size_t i = 0; i < table.size(); ++i) {
    const std::int64_t id = t.values[i];
    if (id < std::numeric_limits<std::int32_t>::min() || id > std::numeric_limits<std::int32_t>::max())
      throw IoError("--block-table: " + path + ": entry [" + std::to_string(i / columns) + "][" +
                    std::to_string(i % columns) + "] = " + std::to_string(id) + " does not fit int32");
    table[i] = static_cast<std::int32_t>(id);
  }
  p.max_blocks = t.shape[1];
  try {
    p.validate();  // the pool's and the table's sizes
    VariantData check;
    check.cu_seqlens_q = f.cu_q.data();
    check.cu_seqlens_kv = f.cu_kv.data();
    check.block_table = table.data();
    check.validate(without_arrays(p));  // every id a context reads, every context against its row
  } catch (const InvalidArgument& e) {
    throw IoError("--block-table: " + path + ": " + e.what());
  }
  return table;
}

// The variants' files, checked against the problem (shapes as usage errors, exit 2).
VariantFiles read_variant_files(const Args& a, Problem& p) {
  VariantFiles f;
  if (auto cu = a.get("--cu-seqlens-q")) {  // varlen: Q/K/V hold the packed sequences of batch 1
    f.cu_q = parse_offsets("--cu-seqlens-q", *cu);
    f.cu_kv = parse_offsets("--cu-seqlens-kv", *a.get("--cu-seqlens-kv"));
    if (f.cu_q.size() != f.cu_kv.size())
      throw UsageError("--cu-seqlens-q has " + std::to_string(f.cu_q.size()) + " offsets, --cu-seqlens-kv " +
                       std::to_string(f.cu_kv.size()) + ": one per sequence boundary each");
    p.sequences = static_cast<std::int64_t>(f.cu_q.size()) - 1;
    Problem only = without_arrays(p);  // the offsets' checks alone (the table is read below)
    only.block_size = only.num_blocks = only.max_blocks = 0;
    try {
      only.validate();
      VariantData check;
      check.cu_seqlens_q = f.cu_q.data();
      check.cu_seqlens_kv = f.cu_kv.data();
      check.validate(only);
    } catch (const InvalidArgument& e) {
      throw UsageError(std::string("varlen: ") + e.what());
    }
  }
  if (auto path = a.get("--block-table")) f.block_table = read_block_table(*path, f, p);
  if (a.has("--alibi")) {  // the ALiBi paper's geometric slopes 2^(-8 h / heads_q), h = 1 .. heads_q
    for (std::int64_t h = 1; h <= p.heads_q; ++h)
      f.slopes.push_back(static_cast<float>(std::exp2(-8.0 * static_cast<double>(h) / static_cast<double>(p.heads_q))));
  }
  if (auto path = a.get("--alibi-slopes")) f.slopes = read_per_head(*path, "--alibi-slopes", p.heads_q);
  if (auto path = a.get("--sinks")) f.sinks = read_per_head(*path, "--sinks", p.heads_q);
  if (auto path = a.get("--mask")) {
    npy::MaskArray m = npy::read_mask(*path);
    const auto& s = m.shape;
    const bool rows_ok = s.size() >= 2 && s[s.size() - 2] == p.seq_q && s.back() == p.seq_kv;
    std::int64_t lead = 1;
    for (std::size_t i = 0; i + 2 < s.size(); ++i) lead *= s[i];
    if (rows_ok && s.size() == 2) {
      p.mask_broadcast = MaskBroadcast::shared;
    } else if (rows_ok && s.size() == 4 && (s[0] == 1 || s[0] == p.batch) && (s[1] == 1 || s[1] == p.heads_q) && lead > 0) {
      p.mask_broadcast = s[1] == p.heads_q && p.heads_q > 1 ? MaskBroadcast::per_head
                         : s[0] == p.batch && p.batch > 1 ? MaskBroadcast::per_batch : MaskBroadcast::shared;
      if (p.mask_broadcast == MaskBroadcast::per_head && s[0] != p.batch)
        throw UsageError("--mask: " + *path + " has one plane per head but " + std::to_string(s[0]) +
                         " batches; give [batch, heads_q, seq_q, seq_kv] = [" + std::to_string(p.batch) + ", " +
                         std::to_string(p.heads_q) + ", ...]");
    } else {
      throw UsageError("--mask: " + *path + " must be [seq_q, seq_kv] = [" + std::to_string(p.seq_q) + ", " +
                       std::to_string(p.seq_kv) + "], [batch, 1, seq_q, seq_kv] or [batch, heads_q, seq_q, seq_kv]");
    }
    p.mask = m.boolean ? MaskKind::boolean : MaskKind::additive;
    if (!m.boolean) {
      const auto* x = reinterpret_cast<const float*>(m.bytes.data());
      for (std::size_t i = 0; i < m.bytes.size() / sizeof(float); ++i)
        if (std::isnan(x[i]) || x[i] == std::numeric_limits<float>::infinity())
          throw UsageError("--mask: " + *path + " holds NaN or +inf at entry " + std::to_string(i) +
                           " (additive masks take finite values and -inf)");
    }
    f.mask = std::move(m.bytes);  // varlen: over the packed tokens; sequence s reads its diagonal block
  }
  return f;
}

}  // namespace

int cmd_run(const std::vector<std::string>& argv_in) {
  const std::vector<std::string> argv = split_causal(argv_in);
  const Args a(argv,
               with(with({"--q", "--k", "--v", "--out", "--scale", "--weights", "--max-memory", "--dtype",
                          "--kv-dtype", "--out-dtype", "--k-scales", "--v-scales"},
                         kRunFlags),
                    kVariantFlags),
               {"--causal", "--alibi"});
  no_positional(a);
  const Options options = parse_options(a);
  const RunTypes types = parse_types(a, options);
  const auto q_path = a.required("--q"), k_path = a.required("--k"), v_path = a.required("--v");
  const auto out_path = a.required("--out");
  const auto weights_path = a.get("--weights");
  const auto scale = a.get_float("--scale");
  Problem flags;  // only the variants' fields are set here
  parse_variant_flags(a, flags);
  const std::string layout = a.get("--layout").value_or("bhsd");
  if (layout != "bhsd" && layout != "bshd") throw UsageError("--layout = '" + layout + "': expected bhsd or bshd");
  if (layout == "bshd" && weights_path) throw UsageError("--weights takes --layout bhsd inputs only");
  check_output_dir(out_path);
  if (weights_path) {
    if (weights_path->empty()) throw UsageError("--weights needs a non-empty value");
    check_output_dir(*weights_path);
  }

  // Pre-quantized K/V: code files (int8/uint8 .npy, rows of row_bytes) and their scales files.
  const auto k_scales_path = a.get("--k-scales"), v_scales_path = a.get("--v-scales");
  if (k_scales_path.has_value() != v_scales_path.has_value())
    throw UsageError("--k-scales and --v-scales go together (pre-quantized K and V)");
  const bool prequantized = k_scales_path.has_value();
  if (prequantized && !is_quantized(types.kv_dtype))
    throw UsageError("--k-scales/--v-scales need a quantized --kv-dtype (int8, int8_kc, fp8_e4m3, fp8_e5m2, int4)");
  if (is_quantized(types.kv_dtype) && layout != "bhsd")
    throw UsageError("--kv-dtype " + std::string(to_string(types.kv_dtype)) + " takes --layout bhsd inputs only");
  // Paged K/V (--block-table): pools in the default order, quantized (if at all) on load; the
  // contexts' total is the problem's seq_kv.
  const bool paged = a.has("--block-table");
  std::int64_t contexts = 0;
  if (paged) {
    if (layout != "bhsd") throw UsageError("--block-table takes --layout bhsd pools [num_blocks, heads_kv, block_size, d] only");
    if (weights_path) throw UsageError("--weights does not take paged K/V (--block-table)");
    if (prequantized)
      throw UsageError("--k-scales/--v-scales do not take paged K/V (--block-table): float pools are quantized on load");
    const auto cu_kv = *a.get("--cu-seqlens-kv");
    contexts = parse_offsets("--cu-seqlens-kv", cu_kv).back();
    if (contexts == 0)
      throw UsageError("--cu-seqlens-kv = '" + cu_kv + "': every context is empty (a paged run needs at least one key)");
  }

  npy::TypedArray q = npy::read_typed(q_path);
  npy::TypedArray k = prequantized ? npy::read_codes(k_path) : npy::read_typed(k_path);
  npy::TypedArray v = prequantized ? npy::read_codes(v_path) : npy::read_typed(v_path);
  // --layout bshd: the files are [batch, seq, heads, dim] (as projections write them), read and
  // written in place through strides, never transposed.
  const bool seq_major = layout == "bshd";
  const Tensor4 tq = as_bhsd(q.shape, "Q", seq_major);
  Tensor4 tk = paged ? as_pool(k.shape, "K") : as_bhsd(k.shape, "K", seq_major);
  Tensor4 tv = paged ? as_pool(v.shape, "V") : as_bhsd(v.shape, "V", seq_major);
  if (prequantized && types.kv_dtype == Dtype::int4) {  // two codes a byte: the last axis holds d / 2
    tk.dim *= 2;
    tv.dim *= 2;
  }
  if (paged) {
    if (tk.batch != tv.batch)
      throw IoError("K and V pools differ in num_blocks: " + std::to_string(tk.batch) + " vs " + std::to_string(tv.batch));
    if (tk.seq != tv.seq)
      throw IoError("K and V pools differ in block_size: " + std::to_string(tk.seq) + " vs " + std::to_string(tv.seq));
  } else {
    if (q.shape.size() != k.shape.size() || q.shape.size() != v.shape.size())
      throw IoError("Q, K and V must have the same number of dimensions");
    if (tk.batch != tq.batch || tv.batch != tq.batch)
      throw IoError("batch sizes differ: Q " + std::to_string(tq.batch) + ", K " + std::to_string(tk.batch) +
                    ", V " + std::to_string(tv.batch));
  }
  if (tk.heads != tv.heads)
    throw IoError("K and V head counts differ: " + std::to_string(tk.heads) + " vs " + std::to_string(tv.heads));
  if (!paged && tk.seq != tv.seq)
    throw IoError("K and V sequence lengths differ: " + std::to_string(tk.seq) + " vs " + std::to_string(tv.seq));
  if (tk.dim != tq.dim)
    throw IoError("Q and K head dims differ: d_k " + std::to_string(tq.dim) + " vs " + std::to_string(tk.dim));

  Problem p = flags;  // the variants' fields, from the flags
  p.batch = tq.batch;
  p.heads_q = tq.heads;
  p.heads_kv = tk.heads;
  p.seq_q = tq.seq;
  p.seq_kv = paged ? contexts : tk.seq;
  p.d_k = tq.dim;
  p.d_v = tv.dim;
  p.causal = a.has("--causal");
  p.scale = scale;
  p.dtype = types.dtype;
  if (types.kv_dtype != types.dtype) p.kv_dtype = types.kv_dtype;
  p.validate();
  if (paged) {  // checked with the table, which comes with the other variant files
    p.num_blocks = tk.batch;
    p.block_size = tk.seq;
  }
  const VariantFiles variant_files = read_variant_files(a, p);
  VariantData variant = variant_files.data();
  if (seq_major) {
    p.strided = true;
    variant.q_strides = Strides::seq_major(p.heads_q, p.seq_q, p.d_k);
    variant.k_strides = Strides::seq_major(p.heads_kv, p.seq_kv, p.d_k);
    variant.v_strides = Strides::seq_major(p.heads_kv, p.seq_kv, p.d_v);
    variant.out_strides = Strides::seq_major(p.heads_q, p.seq_q, p.d_v);
  }
  // A kernel or ISA that does not implement the variants is a usage error, before any work.
  if (!p.plain() && options.kernel != "auto") {
    const Kernel& chosen = *find_kernel(options.kernel);
    if (isas_for(chosen, p).empty() || (options.isa && !chosen.supports(p, *options.isa))) {
      std::string takers;
      for (const Kernel* other : kernels())
        if (!isas_for(*other, p).empty()) takers += (takers.empty() ? "" : ", ") + std::string(other->name());
      throw UsageError("kernel '" + options.kernel + "' does not implement the variants of this problem (" +
                       p.variant_string().substr(1) + "); kernels that do: " + takers);
    }
  }

  // The softmax weights are for inspecting small problems: refuse big ones before any work.
  const std::int64_t weight_elements = p.batch * p.heads_q * p.seq_q * p.seq_kv;  // validated above
  if (weights_path && weight_elements > kMaxWeightElements) {
    throw IoError("--weights: " + std::to_string(weight_elements) + " weights (batch * heads_q * seq_q * seq_kv) exceed the limit of " +
                  std::to_string(kMaxWeightElements) + " (64 MiB); use a smaller problem");
  }
  const auto q_stored = stored_as(std::move(q.bytes), q.dtype, p.dtype);
  std::vector<std::byte> k_stored, v_stored, k_scales, v_scales;
  std::vector<float> k_dequantized;  // --weights: the values the kernel reads
  if (prequantized) {
    // The codes as stored; the scales files must have the layout's shape and type exactly.
    k_stored = std::move(k.bytes);
    v_stored = std::move(v.bytes);
    const bool three_d = q.shape.size() == 3;
    for (const bool is_k : {true, false}) {
      const Dtype kv = p.kv_type();
      const std::int64_t d = is_k ? p.d_k : p.d_v;
      std::vector<std::int64_t> want;
      if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) {
        want = {p.heads_kv};
      } else {
        if (!three_d) want.push_back(p.batch);
        want.push_back(p.heads_kv);
        want.push_back(kv == Dtype::int8_kc && is_k ? p.d_k : p.seq_kv);
        if (kv == Dtype::int4) {
          want.push_back(d / 32);
          want.push_back(2);
        }
      }
      const std::string flag = is_k ? "--k-scales" : "--v-scales";
      npy::TypedArray sc = npy::read_typed(is_k ? *k_scales_path : *v_scales_path);
      const Dtype want_type = kv == Dtype::int4 ? Dtype::fp16 : Dtype::fp32;
      if (sc.dtype != want_type)
        throw IoError(flag + ": " + std::string(to_string(kv)) + " scales are " +
                      (want_type == Dtype::fp16 ? "float16 ('<f2')" : "float32 ('<f4')") + ", got " +
                      std::string(to_string(sc.dtype)));
      if (sc.shape != want)
        throw IoError(flag + ": shape " + shape_text(sc.shape) + " does not match the " + std::string(to_string(kv)) +
                      (is_k ? " K" : " V") + " scales of this problem " + shape_text(want) + " (docs/quantized-kv.md)");
      (is_k ? k_scales : v_scales) = std::move(sc.bytes);
    }
    variant.kv_scales.k = k_scales.data();
    variant.kv_scales.v = v_scales.data();
    check_kv_scales(p, variant.kv_scales);  // NaN, inf or zero scales: one error line
    if (weights_path) {
      k_dequantized.resize(static_cast<std::size_t>(p.k_elements()));
      dequantize_kv_tensor(p, true, k_stored.data(), k_scales.data(), k_dequantized.data());
    }
  } else if (is_quantized(p.kv_type())) {
    // Float .npy K/V quantized on load (quantize_kv_tensor: the documented rounding), in the
    // [batch, heads, seq, dim] layout the scales follow. A paged pool is quantized as one cache
    // per KV head, [heads_kv, num_blocks * block_size, d], so its scales are those a paged problem
    // reads: fp8's per head and int8_kc's K per channel over the whole pool, the others per row
    // (codes and row records are put back in pool order).
    const Problem cache = paged ? pool_as_cache(p) : p;
    for (const bool is_k : {true, false}) {
      npy::TypedArray& x = is_k ? k : v;
      std::vector<float> wide = widened(x.bytes, x.dtype);
      for (std::size_t i = 0; i < wide.size(); ++i)
        if (!std::isfinite(wide[i]))
          throw IoError(std::string(is_k ? "--k" : "--v") + ": element " + std::to_string(i) + " is " +
                        std::to_string(wide[i]) + ": only finite values can be quantized to " +
                        std::string(to_string(p.kv_type())));
      if (paged) wide = swap_outer(wide, p.num_blocks, p.heads_kv);
      auto& codes = is_k ? k_stored : v_stored;
      auto& scales = is_k ? k_scales : v_scales;
      codes.resize(row_bytes(p.kv_type(), static_cast<std::int64_t>(wide.size())));
      scales.resize(static_cast<std::size_t>(scale_elements(cache, is_k)) * scale_element_bytes(p.kv_type()));
      quantize_kv_tensor(cache, is_k, wide.data(), codes.data(), scales.data());
      if (paged) {
        codes = swap_outer(codes, p.heads_kv, p.num_blocks);
        if (scale_record_elements(p.kv_type(), is_k ? p.d_k : p.d_v, is_k) > 0)
          scales = swap_outer(scales, p.heads_kv, p.num_blocks);
      }
      if (is_k && weights_path) {
        k_dequantized.resize(wide.size());
        dequantize_kv_tensor(p, true, codes.data(), scales.data(), k_dequantized.data());
      }
    }
    variant.kv_scales.k = k_scales.data();
    variant.kv_scales.v = v_scales.data();
    check_kv_scales(p, variant.kv_scales);
  } else {
    k_stored = stored_as(std::move(k.bytes), k.dtype, p.kv_type());
    v_stored = stored_as(std::move(v.bytes), v.dtype, p.kv_type());
  }
  const auto out_elements = static_cast<std::size_t>(p.out_elements());
  std::vector<std::byte> out(out_elements * size_of(p.dtype));
  attention(p, q_stored.data(), k_stored.data(), v_stored.data(), out.data(), variant, options);
  std::vector<float> weights;
  if (weights_path) {
    // From the values the kernel read: the inputs as stored, widened exactly.
    const auto w = reference::attention_weights(
        p, widened(q_stored, p.dtype).data(),
        is_quantized(p.kv_type()) ? k_dequantized.data() : widened(k_stored, p.kv_type()).data(), variant);
    weights.assign(w.begin(), w.end());
  }
  std::vector<std::int64_t> shape = {p.batch, p.heads_q, p.seq_q, p.d_v};
  if (seq_major) shape = {p.batch, p.seq_q, p.heads_q, p.d_v};
  std::vector<std::int64_t> weight_shape = {p.batch, p.heads_q, p.seq_q, p.seq_kv};
  if (q.shape.size() == 3) {
    shape.erase(shape.begin());
    weight_shape.erase(weight_shape.begin());
  }
  out = stored_as(std::move(out), p.dtype, types.out_dtype);
  if (weights_path) npy::write(*weights_path, weight_shape, weights.data());
  npy::write(out_path, shape, types.out_dtype, out.data());
  return 0;
}

}  // namespace attune::cli
