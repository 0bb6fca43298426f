"""`attune run --weights`: the softmax weights for inspection, and its size limit."""
import os

import numpy as np

from test_cli import assert_error, assert_ok, attune


def softmax_weights(q, k, causal):
    hq, hkv = q.shape[1], k.shape[1]
    k = np.repeat(k.astype(np.float64), hq // hkv, axis=1)
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k) / np.sqrt(q.shape[-1])
    sq, skv = q.shape[2], k.shape[2]
    if causal:
        mask = np.arange(skv)[None, :] <= np.arange(sq)[:, None] + (skv - sq)
        s = np.where(mask, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    sums = e.sum(-1, keepdims=True)
    return np.divide(e, sums, out=np.zeros_like(e), where=sums > 0)


def test_weights_match_numpy_and_rows_sum_to_one(attune_bin, tmp_path):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 4, 9, 16)).astype(np.float32)
    k = rng.standard_normal((2, 2, 6, 16)).astype(np.float32)  # grouped-query; seq_q > seq_kv
    v = rng.standard_normal((2, 2, 6, 8)).astype(np.float32)
    for name, a in (("q", q), ("k", k), ("v", v)):
        np.save(tmp_path / f"{name}.npy", a)
    r = attune(attune_bin, "run", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "v.npy",
               "--out", tmp_path / "o.npy", "--weights", tmp_path / "w.npy", "--causal")
    assert_ok(r)
    w = np.load(tmp_path / "w.npy")
    assert w.dtype == np.float32 and w.shape == (2, 4, 9, 6)
    np.testing.assert_allclose(w, softmax_weights(q, k, True), atol=1e-6)
    sums = w.sum(-1)
    assert np.allclose(sums[:, :, 3:], 1.0, atol=1e-5)  # rows 0..2 see no key: all zero
    assert np.all(sums[:, :, :3] == 0.0)


def test_weights_refused_above_the_limit_before_writing(attune_bin, tmp_path):
    q = np.zeros((1, 1, 4097, 1), np.float32)
    k = np.zeros((1, 1, 4097, 1), np.float32)  # 4097^2 > 2^24 weights
    for name, a in (("q", q), ("k", k), ("v", k)):
        np.save(tmp_path / f"{name}.npy", a)
    (tmp_path / "o.npy").write_bytes(b"keep")
    r = attune(attune_bin, "run", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "v.npy",
               "--out", tmp_path / "o.npy", "--weights", tmp_path / "w.npy")
    assert_error(r, (1,))
    assert "limit" in r.stderr
    assert not os.path.exists(tmp_path / "w.npy")
    assert (tmp_path / "o.npy").read_bytes() == b"keep"


def test_unusable_output_paths_are_clean_errors(attune_bin, tmp_path):
    # A name longer than the OS allows once made std::filesystem throw (found by fuzz_args).
    for out in ("x" * 5000 + ".npy", str(tmp_path / ("y" * 300)) + "/o.npy"):
        r = attune(attune_bin, "run", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--out", out)
        assert_error(r, (1,))
        assert "cannot write" in r.stderr
