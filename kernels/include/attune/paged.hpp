// Writing into a paged KV cache (the pools Problem::paged reads; docs/paged-kv.md):
// attune::paged_append, vLLM's reshape_and_cache.
#pragma once

#include <attune/dtype.hpp>

#include <cstdint>

namespace attune {

// A paged K/V cache: K [num_blocks, heads_kv, block_size, d_k] and V [.., d_v], stored as `dtype`
// (a float type, or a quantized one with its scales in the layouts of attune/kv_quant.hpp: token
// records [num_blocks, heads_kv, block_size], fp8's per-head and int8_kc's per-channel K scales
// as for a contiguous cache). The same pointers and sizes a paged Problem and its VariantData take.
struct PagedCache {
  Dtype dtype = Dtype::fp32;
  std::int64_t num_blocks = 0, block_size = 0, heads_kv = 0, d_k = 0, d_v = 0;
  void* k = nullptr;
  void* v = nullptr;
  void* k_scales = nullptr;  // quantized types only
  void* v_scales = nullptr;
};

// Writes `tokens` new K and V rows into their cache slots: token t's rows key[t] [heads_kv, d_k]
// and value[t] [heads_kv, d_v] (contiguous, stored as `src`: fp32, bf16 or fp16) go to slot
// slot_mapping[t] = block * block_size + row; a negative slot skips the token (vLLM's padding).
// A quantized cache gets each row quantized as quantize_kv does: per-token scales (int8, int8_kc's V,
// int4) are computed and written beside the codes, fp8 and int8_kc's K use the cache's fixed scales.
// Threads over the tokens (`threads` 0: all cores). Everything is checked before anything is
// written: InvalidArgument for a bad cache, a slot outside the pool, or two tokens for one slot.
void paged_append(const PagedCache& cache, const void* key, const void* value, Dtype src, std::int64_t tokens,
                  const std::int64_t* slot_mapping, int threads = 0);

}  // namespace attune
