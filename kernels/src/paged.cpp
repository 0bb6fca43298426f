// attune::paged_append: new K/V rows into their slots of a paged cache, quantized on the way.
#include "parallel.hpp"
#include "simd/driver.hpp"

#include <attune/error.hpp>
#include <attune/kv_quant.hpp>
#include <attune/paged.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace attune {

namespace {

void check_cache(const PagedCache& c, Dtype src) {
  for (const auto& [name, x] : {std::pair{"num_blocks", c.num_blocks}, std::pair{"block_size", c.block_size},
                                std::pair{"heads_kv", c.heads_kv}, std::pair{"d_k", c.d_k}, std::pair{"d_v", c.d_v}}) {
    if (x <= 0) throw InvalidArgument("paged_append: " + std::string(name) + " = " + std::to_string(x) + " must be positive");
  }
  std::int64_t slots;
  if (__builtin_mul_overflow(c.num_blocks, c.block_size, &slots) || slots > (std::int64_t{1} << 48))
    throw InvalidArgument("paged_append: num_blocks x block_size overflows");
  if (to_string(c.dtype) == "unknown") throw InvalidArgument("paged_append: the cache's dtype is not a storage type");
  if (is_quantized(src) || to_string(src) == "unknown")
    throw InvalidArgument("paged_append: new rows must be fp32, bf16 or fp16, not " + std::string(to_string(src)));
  if (c.k == nullptr || c.v == nullptr) throw InvalidArgument("paged_append: the cache's K or V is null");
  if (is_quantized(c.dtype) && (c.k_scales == nullptr || c.v_scales == nullptr))
    throw InvalidArgument("paged_append: a " + std::string(to_string(c.dtype)) + " cache needs its k_scales and v_scales");
  if (c.dtype == Dtype::int4 && (c.d_k % 32 != 0 || c.d_v % 32 != 0))
    throw InvalidArgument("paged_append: int4 needs d_k and d_v multiples of 32");
}

}  // namespace

void paged_append(const PagedCache& cache, const void* key, const void* value, Dtype src, std::int64_t tokens,
                  const std::int64_t* slot_mapping, int threads) {
  check_cache(cache, src);
  if (tokens < 0) throw InvalidArgument("paged_append: tokens = " + std::to_string(tokens) + " must be >= 0");
  if (tokens == 0) return;
  if (key == nullptr || value == nullptr || slot_mapping == nullptr)
    throw InvalidArgument("paged_append: key, value and slot_mapping must not be null");
  const std::int64_t slots = cache.num_blocks * cache.block_size;
  std::vector<std::int64_t> used;
  for (std::int64_t t = 0; t < tokens; ++t) {
    const std::int64_t s = slot_mapping[t];
    if (s >= slots)
      throw InvalidArgument("paged_append: slot_mapping[" + std::to_string(t) + "] = " + std::to_string(s) +
                            " is outside the pool's " + std::to_string(slots) + " slots");
    if (s >= 0) used.push_back(s);
  }
  std::sort(used.begin(), used.end());
  if (const auto dup = std::adjacent_find(used.begin(), used.end()); dup != used.end())
    throw InvalidArgument("paged_append: two tokens write slot " + std::to_string(*dup));

  const Dtype kv = cache.dtype;
  const std::int64_t hkv = cache.heads_kv, bs = cache.block_size;
  const std::size_t src_bytes = size_of(src);
  const int workers = threads > 0 ? threads : simd::default_threads();
  detail::parallel(tokens, workers, [&](std::int64_t t, int) {
    const std::int64_t slot = slot_mapping[t];
    if (slot < 0) return;
    const std::int64_t block = slot / bs, row = slot % bs;
    std::vector<float> x;
    for (const bool is_k : {true, false}) {
      const std::int64_t d = is_k ? cache.d_k : cache.d_v;
      const auto* from = static_cast<const unsigned char*>(is_k ? key : value) + static_cast<std::size_t>(t * hkv * d) * src_bytes;
      x.resize(static_cast<std::size_t>(hkv * d));
      convert_to_float(src, from, x.data(), x.size());
      const std::size_t rb = row_bytes(kv, d);
      // Row `row` of each KV head's part of the block: [num_blocks, heads_kv, block_size] rows.
      auto* base = static_cast<unsigned char*>(is_k ? cache.k : cache.v);
      auto dst = [&](std::int64_t h) { return base + static_cast<std::size_t>((block * hkv + h) * bs + row) * rb; };
      if (!is_quantized(kv)) {
        for (std::int64_t h = 0; h < hkv; ++h) convert_from_float(kv, x.data() + h * d, dst(h), static_cast<std::size_t>(d));
        continue;
      }
      void* scales = is_k ? cache.k_scales : cache.v_scales;
      const std::int64_t rec = scale_record_elements(kv, d, is_k);
      for (std::int64_t h = 0; h < hkv; ++h) {
        // Token records [num_blocks, heads_kv, block_size]; fixed scales per head (fp8) or per
        // (head, channel) (int8_kc's K).
        void* record = rec > 0 ? static_cast<unsigned char*>(scales) +
                                     static_cast<std::size_t>(((block * hkv + h) * bs + row) * rec) * scale_element_bytes(kv)
                               : nullptr;
        const float* fixed = nullptr;
        if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) fixed = static_cast<const float*>(scales) + h;
        if (kv == Dtype::int8_kc && is_k) fixed = static_cast<const float*>(scales) + h * d;
        quantize_kv(kv, is_k, x.data() + h * d, 1, d, dst(h), record, fixed);
      }
    }
  });
}

}  // namespace attune
