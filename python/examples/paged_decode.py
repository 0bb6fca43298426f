import numpy as np, attune
rng = np.random.default_rng(0)
heads_q, heads_kv, d, block_size, num_blocks = 8, 2, 64, 16, 32
k_cache = np.zeros((num_blocks, block_size, heads_kv, d), np.float32)   # vLLM's layout, written in place
v_cache = np.zeros_like(k_cache)
free, tables, lens = list(range(num_blocks)), [[], []], [0, 0]          # block allocator, per-sequence state

def step(new):  # new[s]: tokens sequence s adds (a prompt chunk, or 1 when decoding)
    slots = []
    for s, n in enumerate(new):
        for j in range(lens[s], lens[s] + n):
            if j % block_size == 0:
                tables[s].append(free.pop())                            # a new block when the last is full
            slots.append(tables[s][j // block_size] * block_size + j % block_size)
        lens[s] += n
    q, key, value = (rng.standard_normal((sum(new), h, d), dtype=np.float32) for h in (heads_q, heads_kv, heads_kv))
    attune.paged_append(k_cache, v_cache, key, value, slots, layout="vllm")  # the model's new K/V rows
    table = np.full((2, max(map(len, tables))), -1, np.int32)
    for s, t in enumerate(tables):
        table[s, :len(t)] = t
    return q, attune.paged_attention(q, k_cache, v_cache, table, lens, np.cumsum([0] + new), layout="vllm")

step([20, 35])                                   # prefill both prompts (one packed call)
for _ in range(5):
    q, out = step([1, 1])                        # decode: one query per sequence, [2, heads_q, d]
k0 = k_cache[tables[0]].reshape(-1, heads_kv, d)[:lens[0]].transpose(1, 0, 2)  # sequence 0, gathered
v0 = v_cache[tables[0]].reshape(-1, heads_kv, d)[:lens[0]].transpose(1, 0, 2)
err = np.abs(out[0] - attune.attention(q[:1].transpose(1, 0, 2), k0, v0)[:, 0]).max()  # the same attention
assert err < 1e-5
print(lens, out.shape, err)
