import numpy as np, attune
q = np.random.default_rng(0).standard_normal((8, 128, 64), dtype=np.float32)  # [heads, seq, d]
k, v = q[:2], q[2:4]                                   # 2 K/V heads: grouped-query attention
out = attune.attention(q, k, v, causal=True)           # float32 [8, 128, 64], GIL released
print(out.shape, attune.info()["isa_default"], [kern["name"] for kern in attune.kernels()])
