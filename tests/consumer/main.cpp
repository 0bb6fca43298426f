// The README's API example: one attention call through the installed package.
#include <attune/attune.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  attune::Problem p;
  p.heads_q = 4;
  p.heads_kv = 2;  // grouped-query: two query heads per K/V head
  p.seq_q = p.seq_kv = 16;
  p.d_k = p.d_v = 8;
  p.causal = true;
  std::vector<float> q(p.q_elements(), 0.1f), k(p.k_elements(), 0.2f), v(p.v_elements(), 1.0f);
  std::vector<float> out(p.out_elements());
  attune::attention(p, q.data(), k.data(), v.data(), out.data());  // kernel "auto"
  // An explicit kernel, ISA and config: block_q 64, block_kv 128, 2 threads.
  attune::attention(p, q.data(), k.data(), v.data(), out.data(),
                    {"flash", attune::default_isa(), {64, 128, 2}});
  // Equal keys give uniform weights; each output is then the mean of V rows = 1.
  for (float x : out) {
    if (std::abs(x - 1.0f) > 1e-5f) {
      std::printf("wrong output %f\n", x);
      return 1;
    }
  }
  // Variants: a causal sliding window of 4 keys, a soft-cap and ALiBi, with the per-head
  // slopes passed per call (attune::VariantData). V is all ones, so every output stays 1.
  attune::Problem local = p;
  local.window = 4;
  local.softcap = 30.0f;
  local.alibi = true;
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f};  // one per query head
  attune::VariantData data;
  data.alibi_slopes = slopes.data();
  attune::attention(local, q.data(), k.data(), v.data(), out.data(), data);
  for (float x : out) {
    if (std::abs(x - 1.0f) > 1e-5f) {
      std::printf("wrong variant output %f\n", x);
      return 1;
    }
  }
  // A quantized KV cache: int8 codes with a float scale per (KV head, token), Q and O fp32
  // (docs/quantized-kv.md). V is all ones, which int8 stores exactly: every output stays 1.
  attune::Problem cached = p;
  cached.kv_dtype = attune::Dtype::int8;
  std::vector<std::int8_t> kq(cached.k_elements()), vq(cached.v_elements());
  std::vector<float> ks(attune::scale_elements(cached, true)), vs(attune::scale_elements(cached, false));
  attune::quantize_kv_tensor(cached, true, k.data(), kq.data(), ks.data());  // round to nearest even
  attune::quantize_kv_tensor(cached, false, v.data(), vq.data(), vs.data());
  attune::VariantData scales;
  scales.kv_scales.k = ks.data();
  scales.kv_scales.v = vs.data();
  attune::attention(cached, q.data(), kq.data(), vq.data(), out.data(), scales);
  for (float x : out) {
    if (std::abs(x - 1.0f) > 1e-5f) {
      std::printf("wrong quantized-cache output %f\n", x);
      return 1;
    }
  }
#ifdef ATTUNE_WITH_BLAS  // built with BLAS: multi-head attention with projections (attune/mha.hpp)
  attune::MhaProblem m;    // one token, d_model 1, one head of d_k = d_v = 1, identity weights
  const float x = 2.0f, w = 1.0f;
  float y = 0.0f;
  attune::mha(m, &x, &w, &w, &w, &w, &y);  // the token attends to itself: y = x
  if (std::abs(y - 2.0f) > 1e-5f) {
    std::printf("wrong mha output %f\n", y);
    return 1;
  }
#endif
  std::printf("consumer ok: attune %s\n", attune::version().data());
  return 0;
}
