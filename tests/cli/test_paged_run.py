# `attune run --block-table`: paged K/V from the command line (docs/cli.md, "Paged K/V"). The
# pools are built here from per-sequence contexts through a shuffled block table; the output is
# checked per sequence against the float64 reference on the contexts gathered back from the pool
# (bottom-right causal alignment), and bad tables, pools and flags are refused with one error line
# and nothing written.
import numpy as np
import pytest

from test_cli import TOL, assert_ok, attune, check_refused, rand, reference
from test_dtype import rounded
from test_quant import QUANT, int8_rows

# Pool rows no table entry reaches: NaN in float pools (a kernel reading them would show it).
# Quantized pools must be finite, so they get zeros there (which also leaves the per-head scales of
# fp8 and int8_kc's K what the used rows alone give).
UNUSED_FLOAT = np.nan


class Paged:
    """A paged batch: contexts of `contexts[s]` keys laid out in a pool of `block_size`-row blocks
    through a shuffled table (entries past a context are -1), and `new[s]` packed queries each.
    `shared` leading blocks of sequence 1 are sequence 0's (the same ids in both rows)."""

    def __init__(self, rng, heads_q, heads_kv, d, block_size, new, contexts, shared=0, spare=3, extra_columns=1,
                 unused=UNUSED_FLOAT):
        self.block_size, self.new, self.contexts = block_size, list(new), list(contexts)
        blocks = [-(-c // block_size) for c in contexts]
        self.num_blocks = sum(blocks) - shared + spare
        self.max_blocks = max(blocks) + extra_columns
        self.k_pool = np.full((self.num_blocks, heads_kv, block_size, d), unused, np.float32)
        self.v_pool = np.full((self.num_blocks, heads_kv, block_size, d), unused, np.float32)
        self.table = np.full((len(contexts), self.max_blocks), -1, np.int32)
        ids = iter(rng.permutation(self.num_blocks))
        for s, count in enumerate(blocks):
            for x in range(count):
                self.table[s, x] = self.table[0, x] if s == 1 and x < shared else next(ids)
            for x in range(count):
                if s == 1 and x < shared:
                    continue  # written by sequence 0
                rows = min(block_size, contexts[s] - x * block_size)
                block = self.table[s, x]
                self.k_pool[block, :, :rows] = rand(rng, (heads_kv, rows, d))
                self.v_pool[block, :, :rows] = rand(rng, (heads_kv, rows, d))
        self.q = rand(rng, (heads_q, sum(new), d))
        self.cu_q = np.concatenate([[0], np.cumsum(new)]).astype(int)
        self.cu_kv = np.concatenate([[0], np.cumsum(contexts)]).astype(int)

    def gathered(self, pool, s):
        """Sequence s's context [heads_kv, context, d], read from the pool through its table row."""
        j = np.arange(self.contexts[s])
        return pool[self.table[s, j // self.block_size], :, j % self.block_size].transpose(1, 0, 2)

    def reference(self, causal, k_pool=None, v_pool=None, q=None):
        """[heads_q, total_q, d] float64, sequence by sequence; an empty context gives zeros."""
        k_pool = self.k_pool if k_pool is None else k_pool
        v_pool = self.v_pool if v_pool is None else v_pool
        q = self.q if q is None else q
        out = np.zeros(q.shape, np.float64)
        for s in range(len(self.new)):
            a, b = self.cu_q[s], self.cu_q[s + 1]
            if b > a and self.contexts[s] > 0:
                out[:, a:b] = reference(q[:, a:b], self.gathered(k_pool, s), self.gathered(v_pool, s), causal=causal)
        return out

    def packed(self, pool):
        """The contexts one after another, [heads_kv, seq_kv, d]: the same problem as plain varlen."""
        return np.concatenate([self.gathered(pool, s) for s in range(len(self.new))], axis=1)

    def save(self, tmp_path, table=None, q=None):
        paths = {}
        for name, x in (("q", self.q if q is None else q), ("k", self.k_pool), ("v", self.v_pool),
                        ("t", self.table if table is None else table)):
            paths[name] = tmp_path / (name + ".npy")
            np.save(paths[name], x, allow_pickle=False)
        return paths

    def args(self, paths, out):
        return ["run", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--block-table", paths["t"],
                "--cu-seqlens-q", ",".join(map(str, self.cu_q)), "--cu-seqlens-kv", ",".join(map(str, self.cu_kv)),
                "--out", out]


def run(binary, batch, paths, out, *extra):
    r = attune(binary, *batch.args(paths, out), *extra)
    assert_ok(r)
    assert r.stdout == "" and r.stderr == ""
    return np.load(out, allow_pickle=False)


# --------------------------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("causal", [False, True])
def test_decode_batch_block_16(attune_bin, tmp_path, causal):
    """One new token per sequence, GQA 8/2, contexts off the block size, -1 padding in the table."""
    batch = Paged(np.random.default_rng(1), 8, 2, 64, 16, [1, 1, 1, 1], [100, 37, 16, 250])
    got = run(attune_bin, batch, batch.save(tmp_path), tmp_path / "o.npy", *(["--causal"] if causal else []))
    assert got.shape == batch.q.shape and got.dtype == np.float32
    assert np.abs(got - batch.reference(causal)).max() < TOL


def test_shared_blocks_between_two_sequences(attune_bin, tmp_path):
    """Sequences 0 and 1 name the same first 9 blocks (144 keys: a shared prefix the cascade pass
    reads once), then blocks of their own; decoding and verifying 4 tokens, and a third sequence."""
    batch = Paged(np.random.default_rng(2), 4, 2, 32, 16, [1, 4, 3], [200, 180, 60], shared=9)
    assert (batch.table[0, :9] == batch.table[1, :9]).all() and batch.table[1, 9] != batch.table[0, 9]
    for kernel in ("auto", "flash", "simd"):
        got = run(attune_bin, batch, batch.save(tmp_path), tmp_path / "o.npy", "--causal", "--kernel", kernel)
        assert np.abs(got - batch.reference(True)).max() < TOL, kernel


@pytest.mark.parametrize("causal", [False, True])
def test_empty_context_gives_zeros(attune_bin, tmp_path, causal):
    batch = Paged(np.random.default_rng(3), 2, 1, 16, 16, [2, 1, 3], [50, 0, 30])
    assert (batch.table[1] == -1).all()
    got = run(attune_bin, batch, batch.save(tmp_path), tmp_path / "o.npy", *(["--causal"] if causal else []))
    assert np.all(got[:, 2:3] == 0.0)
    assert np.abs(got - batch.reference(causal)).max() < TOL


def test_block_size_1_and_more_queries_than_keys(attune_bin, tmp_path):
    """Every key its own block; sequence 2 has 9 new tokens on 3 keys (its first 6 rows see none)."""
    batch = Paged(np.random.default_rng(4), 2, 1, 7, 1, [3, 1, 9], [20, 9, 3])
    got = run(attune_bin, batch, batch.save(tmp_path), tmp_path / "o.npy", "--causal")
    assert np.all(got[:, 4:10] == 0.0)
    assert np.abs(got - batch.reference(True)).max() < TOL


def test_mixed_batch_gqa_causal_with_4d_query(attune_bin, tmp_path):
    """Decoding, verifying 5 speculative tokens and prefilling 70 on a cached prefix, GQA 6/2, Q
    given as [1, heads_q, total_q, d]: O comes back 4-D too."""
    batch = Paged(np.random.default_rng(5), 6, 2, 40, 32, [1, 5, 70], [300, 45, 200])
    paths = batch.save(tmp_path, q=batch.q[None])
    got = run(attune_bin, batch, paths, tmp_path / "o.npy", "--causal")
    assert got.shape == (1,) + batch.q.shape
    assert np.abs(got[0] - batch.reference(True)).max() < TOL


def test_int64_table_is_converted(attune_bin, tmp_path):
    batch = Paged(np.random.default_rng(6), 4, 2, 16, 16, [1, 2], [70, 33])
    want = run(attune_bin, batch, batch.save(tmp_path), tmp_path / "a.npy", "--causal")
    got = run(attune_bin, batch, batch.save(tmp_path, table=batch.table.astype(np.int64)), tmp_path / "b.npy",
              "--causal")
    assert got.tobytes() == want.tobytes()


def test_16_bit_pools(attune_bin, tmp_path):
    """float16 pool files are read as they are; --kv-dtype bf16 rounds float32 pools on load."""
    batch = Paged(np.random.default_rng(7), 4, 2, 32, 16, [1, 3], [90, 41])
    paths = batch.save(tmp_path)
    got = run(attune_bin, batch, paths, tmp_path / "o.npy", "--causal", "--kv-dtype", "bf16")
    want = batch.reference(True, rounded(batch.k_pool, "bf16"), rounded(batch.v_pool, "bf16"))
    assert np.abs(got - want).max() < TOL
    assert np.abs(got - batch.reference(True)).max() > TOL  # the rounding shows
    for name, pool in (("k", batch.k_pool), ("v", batch.v_pool)):
        np.save(paths[name], pool.astype(np.float16), allow_pickle=False)
    got = run(attune_bin, batch, paths, tmp_path / "o.npy", "--causal")
    want = batch.reference(True, batch.k_pool.astype(np.float16), batch.v_pool.astype(np.float16))
    assert np.abs(got - want).max() < TOL


@pytest.mark.parametrize("kv", QUANT)
def test_quantized_pools_match_the_packed_varlen_run(attune_bin, tmp_path, kv):
    """A quantized --kv-dtype quantizes the pools on load: with the unused rows zero, each KV
    head's scales are those of its packed contexts, so the paged run agrees with the plain varlen
    run on the gathered K/V (quantized the same way), shared blocks included."""
    batch = Paged(np.random.default_rng(8), 4, 2, 64, 16, [1, 4, 2], [150, 140, 70], shared=8, unused=0.0)
    paths = batch.save(tmp_path)
    got = run(attune_bin, batch, paths, tmp_path / "o.npy", "--causal", "--kv-dtype", kv)
    for name, pool in (("kp", batch.k_pool), ("vp", batch.v_pool)):
        np.save(tmp_path / (name + ".npy"), batch.packed(pool), allow_pickle=False)
    r = attune(attune_bin, "run", "--q", paths["q"], "--k", tmp_path / "kp.npy", "--v", tmp_path / "vp.npy",
               "--out", tmp_path / "packed.npy", "--causal", "--kv-dtype", kv,
               "--cu-seqlens-q", ",".join(map(str, batch.cu_q)), "--cu-seqlens-kv", ",".join(map(str, batch.cu_kv)))
    assert_ok(r)
    assert np.abs(got - np.load(tmp_path / "packed.npy")).max() < TOL, kv
    exact = batch.reference(True)
    assert 0 < np.abs(got - exact).max() < 0.5, kv  # really quantized, and near the float result
    if kv == "int8":  # per-row scales: the documented rounding rebuilt in numpy
        want = batch.reference(True, int8_rows(batch.k_pool), int8_rows(batch.v_pool))
        assert np.abs(got - want).max() < TOL


# --------------------------------------------------------------------------------------------
# Refused inputs: one error line, the documented exit status, no output (and an existing output
# file untouched: check_refused runs each case with and without one)


def small_batch(tmp_path, seed=9):
    batch = Paged(np.random.default_rng(seed), 4, 2, 16, 16, [1, 2], [40, 20], extra_columns=0)
    return batch, batch.save(tmp_path)


def test_block_id_outside_the_pool(attune_bin, tmp_path):
    batch, paths = small_batch(tmp_path)
    table = batch.table.copy()
    table[1, 1] = batch.num_blocks  # sequence 1 reads 2 blocks: this entry is used
    np.save(paths["t"], table)
    out = tmp_path / "o.npy"
    r = check_refused(attune_bin, tmp_path, batch.args(paths, out), 1, out)
    assert "block_table[1][1]" in r.stderr and str(batch.num_blocks) in r.stderr


def test_refused_run_leaves_an_existing_output_untouched(attune_bin, tmp_path):
    """What check_refused does for every case above, spelled out once: an earlier result stays."""
    batch, paths = small_batch(tmp_path)
    out = tmp_path / "o.npy"
    earlier = run(attune_bin, batch, paths, out, "--causal")
    before = out.read_bytes()
    table = batch.table.copy()
    table[0, 0] = -5
    np.save(paths["t"], table)
    r = attune(attune_bin, *batch.args(paths, out), "--causal")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ")
    assert "block_table[0][0] = -5" in r.stderr
    assert out.read_bytes() == before
    assert np.array_equal(np.load(out), earlier)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npy", "o.npy", "q.npy", "t.npy", "v.npy"]


def test_unread_entries_may_hold_anything(attune_bin, tmp_path):
    """Only the first ceil(context / block_size) entries of a row are read (vLLM pads with -1 or 0)."""
    batch, paths = small_batch(tmp_path)
    table = batch.table.copy()
    table[1, 2] = 10 ** 6  # sequence 1 (20 keys) reads two entries
    np.save(paths["t"], table)
    got = run(attune_bin, batch, paths, tmp_path / "o.npy", "--causal")
    assert np.abs(got - batch.reference(True)).max() < TOL


def test_context_longer_than_its_row(attune_bin, tmp_path):
    batch, paths = small_batch(tmp_path)
    cu_kv = "0,40,%d" % (40 + 16 * batch.max_blocks + 1)  # sequence 1 outgrows its table row
    args = batch.args(paths, tmp_path / "o.npy")
    args[args.index("--cu-seqlens-kv") + 1] = cu_kv
    r = check_refused(attune_bin, tmp_path, args, 1, tmp_path / "o.npy")
    assert "sequence 1" in r.stderr and "table entries" in r.stderr


@pytest.mark.parametrize("table", ["float32", "int16", "uint32", "int64_too_big"])
def test_table_of_the_wrong_type(attune_bin, tmp_path, table):
    batch, paths = small_batch(tmp_path)
    if table == "int64_too_big":
        t = batch.table.astype(np.int64)
        t[1, 2] = 2 ** 40  # an unread entry, but the file must convert as a whole
    else:
        t = batch.table.astype(table)
    np.save(paths["t"], t)
    out = tmp_path / "o.npy"
    r = check_refused(attune_bin, tmp_path, batch.args(paths, out), 1, out)
    assert "--block-table" in r.stderr or "t.npy" in r.stderr


@pytest.mark.parametrize("shape", ["one_row_too_few", "1d", "3d", "no_columns"])
def test_table_of_the_wrong_shape(attune_bin, tmp_path, shape):
    batch, paths = small_batch(tmp_path)
    t = {"one_row_too_few": batch.table[:1], "1d": batch.table.ravel(), "3d": batch.table[None],
         "no_columns": batch.table[:, :0]}[shape]
    np.save(paths["t"], np.ascontiguousarray(t))
    out = tmp_path / "o.npy"
    r = check_refused(attune_bin, tmp_path, batch.args(paths, out), 2, out)
    assert "--block-table" in r.stderr and "[sequences, max_blocks]" in r.stderr


@pytest.mark.parametrize("case", ["block_counts", "block_sizes", "heads", "3d_pool"])
def test_pools_that_do_not_match(attune_bin, tmp_path, case):
    batch, paths = small_batch(tmp_path)
    v = {"block_counts": batch.v_pool[:-1], "block_sizes": batch.v_pool[:, :, :8], "heads": batch.v_pool[:, :1],
         "3d_pool": batch.v_pool[0]}[case]
    np.save(paths["v"], np.ascontiguousarray(v))
    out = tmp_path / "o.npy"
    r = check_refused(attune_bin, tmp_path, batch.args(paths, out), 1, out)
    if case == "block_counts":
        assert "num_blocks" in r.stderr


@pytest.mark.parametrize("case", ["no_offsets", "bshd", "weights", "k_scales", "naive", "empty_contexts",
                                  "q_total", "empty_value"])
def test_usage_errors(attune_bin, tmp_path, case):
    batch, paths = small_batch(tmp_path)
    out = tmp_path / "o.npy"
    args = batch.args(paths, out)
    if case == "no_offsets":
        i = args.index("--cu-seqlens-q")
        del args[i:i + 4]
    elif case == "empty_contexts":
        args[args.index("--cu-seqlens-kv") + 1] = "0,0,0"
    elif case == "q_total":
        args[args.index("--cu-seqlens-q") + 1] = "0,1,2"  # Q holds 3 tokens
    elif case == "empty_value":
        args[args.index("--block-table") + 1] = ""
    else:
        args += {"bshd": ["--layout", "bshd"], "weights": ["--weights", tmp_path / "w.npy"],
                 "k_scales": ["--kv-dtype", "int8", "--k-scales", paths["k"], "--v-scales", paths["v"]],
                 "naive": ["--kernel", "naive"]}[case]
    check_refused(attune_bin, tmp_path, args, 2, out)


def test_quantized_pool_with_a_non_finite_value(attune_bin, tmp_path):
    """Quantizing on load needs finite values everywhere in the pool (unused blocks included)."""
    batch, paths = small_batch(tmp_path)
    np.save(paths["k"], batch.k_pool)  # NaN in the unused blocks
    out = tmp_path / "o.npy"
    r = check_refused(attune_bin, tmp_path, batch.args(paths, out) + ["--kv-dtype", "int8"], 1, out)
    assert "finite" in r.stderr
    # The float pool itself runs: its unused rows are never read.
    run(attune_bin, batch, paths, out)


def test_varlen_with_quantized_kv(attune_bin, tmp_path):
    """Plain varlen (no table) with a quantized --kv-dtype: the offsets are checked without the
    scales, which are made later from the K/V files."""
    rng = np.random.default_rng(10)
    q, k, v = rand(rng, (4, 5, 32)), rand(rng, (2, 90, 32)), rand(rng, (2, 90, 32))
    for name, x in zip("qkv", (q, k, v)):
        np.save(tmp_path / (name + ".npy"), x)
    r = attune(attune_bin, "run", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "v.npy",
               "--out", tmp_path / "o.npy", "--kv-dtype", "int8", "--causal", "--cu-seqlens-q", "0,1,5",
               "--cu-seqlens-kv", "0,60,90")
    assert_ok(r)
    got = np.load(tmp_path / "o.npy")
    kq, vq = int8_rows(k), int8_rows(v)
    want = np.concatenate([reference(q[:, :1], kq[:, :60], vq[:, :60], causal=True),
                           reference(q[:, 1:], kq[:, 60:], vq[:, 60:], causal=True)], axis=1)
    assert np.abs(got - want).max() < TOL
