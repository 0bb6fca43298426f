"""The paged-attention peer (docs/paged-kv.md): PyTorch SDPA on K/V gathered from the blocks
(transformers' CPU path for its paged cache: index_select of every context row, then sdpa per
sequence, here in bf16 like the cache) against attune.paged_attention reading the same bf16 pool
([num_blocks, heads_kv, block_size, d], blocks shuffled) in place with fp32 queries. Prints the
median (ms) and range of 15 attune and 7 torch calls after warm-up, and the largest difference.
Usage: build-py/venv/bin/python scripts/paged_torch_peer.py [THREADS]"""
import statistics, sys, time
import numpy as np
import torch
import attune

torch.manual_seed(0)
threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
torch.set_num_threads(threads)
HQ, HKV, D, BS = 32, 8, 128, 16


def bench(fn, n=15):
    for _ in range(3):
        fn()
    t = []
    for _ in range(n):
        a = time.perf_counter(); fn(); t.append((time.perf_counter() - a) * 1e3)
    return statistics.median(t), min(t), max(t)


def case(name, new_tokens, contexts, shared=0):
    blocks = [(c + BS - 1) // BS for c in contexts]
    nb = sum(blocks)
    ids = torch.randperm(nb, dtype=torch.int32)
    table = torch.full((len(contexts), max(blocks)), -1, dtype=torch.int32)
    nxt = 0
    for s, b in enumerate(blocks):
        for x in range(b):
            if s > 0 and x < shared // BS:
                table[s, x] = table[0, x]
            else:
                table[s, x] = ids[nxt]; nxt += 1
    k_pool = torch.randn(nb, HKV, BS, D).to(torch.bfloat16)
    v_pool = torch.randn(nb, HKV, BS, D).to(torch.bfloat16)
    total_q = sum(new_tokens)
    q = torch.randn(total_q, HQ, D)
    seq_lens = torch.tensor(contexts, dtype=torch.int64)
    cu_q = torch.tensor(np.cumsum([0] + new_tokens), dtype=torch.int64)

    def run_attune():
        return attune.paged_attention(q, k_pool, v_pool, table, seq_lens, cu_q, threads=threads)

    # transformers' CPU path: gather every context row (index_select over the flattened pool),
    # then one sdpa per sequence (bottom-right causal: the queries are the context's last positions).
    k_flat = k_pool.permute(0, 2, 1, 3).reshape(nb * BS, HKV, D)
    v_flat = v_pool.permute(0, 2, 1, 3).reshape(nb * BS, HKV, D)
    rows = []
    for s, c in enumerate(contexts):
        j = torch.arange(c)
        rows.append((table[s, j // BS].long() * BS + j % BS))

    def run_torch():
        outs = []
        for s, c in enumerate(contexts):
            k = k_flat.index_select(0, rows[s]).transpose(0, 1).unsqueeze(0)
            v = v_flat.index_select(0, rows[s]).transpose(0, 1).unsqueeze(0)
            qs = q[cu_q[s]:cu_q[s + 1]].transpose(0, 1).unsqueeze(0).to(torch.bfloat16)
            n = qs.shape[2]
            mask = None
            if n > 1:
                i = torch.arange(n).unsqueeze(1) + (c - n)
                mask = torch.arange(c).unsqueeze(0) <= i
            outs.append(torch.nn.functional.scaled_dot_product_attention(qs, k, v, attn_mask=mask, enable_gqa=True))
        return outs

    a = run_attune()
    t = run_torch()
    err = max(float((a[cu_q[s]:cu_q[s + 1]].transpose(0, 1) - t[s][0].float()).abs().max()) for s in range(len(contexts)))
    ma, mina, maxa = bench(run_attune)
    mt, mint, maxt = bench(run_torch, 7)
    print(f"{name:34s} threads {threads}: attune {ma:8.2f} ms [{mina:.2f}, {maxa:.2f}]  torch gather+sdpa {mt:8.2f} ms "
          f"[{mint:.2f}, {maxt:.2f}]  ratio {mt / ma:5.2f}x  max |diff| {err:.1e}")


print(f"torch {torch.__version__}, attune {attune.__version__}, {attune.info()['machine'] if 'machine' in attune.info() else ''}")
case("decode 32k, block 16", [1], [32768])
case("mixed batch (8 seqs, 128..32k)", [1, 128, 1, 512, 1, 16, 1, 4], [128, 640, 1024, 2048, 4096, 8192, 16384, 32768])
case("shared prefix (16 x 4096+256)", [1] * 16, [4352] * 16, shared=4096)
