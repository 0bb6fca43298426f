import numpy as np, attune
rng = np.random.default_rng(0)
q = rng.standard_normal((8, 30, 64), dtype=np.float32)       # [heads_q, total tokens, d]: 3 packed sequences
k, v = (rng.standard_normal((2, 30, 64), dtype=np.float32) for _ in range(2))
slopes = 2.0 ** (-np.arange(1, 9) / 1.0)                      # ALiBi: one slope per query head
out = attune.attention(q, k, v, causal=True, alibi_slopes=slopes, sinks=[0.5] * 8,
                       cu_seqlens_q=[0, 7, 20, 30], cu_seqlens_kv=[0, 7, 20, 30])
kc, ks = attune.quantize_kv(k, "int8_kc", is_k=True)          # codes int8 [2, 30, 64], K scales per channel [2, 64]
vc, vs = attune.quantize_kv(v, "int8_kc", is_k=False)         # V scales per token [2, 30]
out8 = attune.attention(q, kc, vc, causal=True, kv_dtype="int8_kc", k_scales=ks, v_scales=vs)
deq = attune.dequantize_kv(kc, ks, "int8_kc", is_k=True)      # the values the kernels read
print(out.shape, out8.shape, float(np.abs(deq - k).max()))
