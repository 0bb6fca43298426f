// Fuzz target: the validation of paged problems (block tables, context and query offsets) and the
// kernels behind it. The input chooses a small paged problem, its offsets and its table; every
// tensor is allocated at exactly the size the problem says (the pool: num_blocks blocks), so
// AddressSanitizer fails any read outside it. A call must either be refused with an
// attune::InvalidArgument before anything is read or run to the end.
#include <attune/attune.hpp>

#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

// The input as a stream of small integers (0 once it runs out).
struct Bytes {
  const std::uint8_t* data;
  std::size_t size, at = 0;
  int next() { return at < size ? data[at++] : 0; }
  // A value in [lo, hi].
  int in(int lo, int hi) { return lo + next() % (hi - lo + 1); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes in{data, size};
  attune::Problem p;
  p.heads_kv = in.in(1, 2);
  p.heads_q = p.heads_kv * in.in(1, 3);
  p.d_k = p.d_v = in.in(1, 9);
  p.causal = in.next() % 2 == 0;
  p.sequences = in.in(1, 4);
  p.block_size = in.in(1, 9);
  p.num_blocks = in.in(1, 12);
  p.max_blocks = in.in(1, 6);
  // Offsets: mostly non-decreasing, sometimes not (the validation's job).
  std::vector<std::int64_t> cu_q{0}, cu_kv{0};
  for (std::int64_t s = 0; s < p.sequences; ++s) {
    cu_q.push_back(cu_q.back() + in.in(-1, 5));
    cu_kv.push_back(cu_kv.back() + in.in(-2, 40));
  }
  p.seq_q = cu_q.back() > 0 ? cu_q.back() : 1;
  p.seq_kv = cu_kv.back() > 0 ? cu_kv.back() : 1;
  if (in.next() % 8 == 0) p.seq_kv += 1;  // totals that disagree with the offsets
  // The table: block ids from -2 to num_blocks + 1.
  std::vector<std::int32_t> table(static_cast<std::size_t>(p.sequences * p.max_blocks));
  for (auto& id : table) id = in.in(-2, static_cast<int>(p.num_blocks) + 1);
  const bool quantized = in.next() % 4 == 0;
  if (quantized) p.kv_dtype = attune::Dtype::int8;
  attune::VariantData var;
  var.cu_seqlens_q = cu_q.data();
  var.cu_seqlens_kv = cu_kv.data();
  var.block_table = table.data();
  try {
    p.validate();
  } catch (const attune::InvalidArgument&) {
    return 0;
  }
  std::vector<float> q(static_cast<std::size_t>(p.q_elements()), 0.5f), out(static_cast<std::size_t>(p.out_elements()));
  std::vector<std::uint8_t> k(static_cast<std::size_t>(p.k_elements()) * (quantized ? 1 : 4), 1),
      v(static_cast<std::size_t>(p.v_elements()) * (quantized ? 1 : 4), 1);
  std::vector<float> k_scales, v_scales;
  if (quantized) {  // token records [num_blocks, heads_kv, block_size]
    k_scales.assign(static_cast<std::size_t>(attune::scale_elements(p, true)), 0.01f);
    v_scales.assign(static_cast<std::size_t>(attune::scale_elements(p, false)), 0.01f);
    var.kv_scales.k = k_scales.data();
    var.kv_scales.v = v_scales.data();
  }
  attune::Options o;
  o.kernel = "flash";
  o.config.threads = 1;
  o.config.block_kv = in.in(1, 20);
  o.config.kv_splits = in.in(0, 3);
  try {
    attune::attention(p, q.data(), k.data(), v.data(), out.data(), var, o);
  } catch (const attune::InvalidArgument&) {
    return 0;
  }
  // It ran: every output is finite (keys of value 1/255 scale, or zeros for rows that see no key).
  for (float x : out)
    if (!(x == x)) std::abort();
  return 0;
}
