# `attune run` with the attention variants (masks, causal alignment, sliding window, soft-cap,
# ALiBi, sinks, top-k) against a numpy float64 definition written here independently of the
# C++ reference, on every kernel that takes them; and the flags' usage errors (exit 2, one
# line, nothing written).
import subprocess
import zlib

import numpy as np
import pytest

from conftest import clean_env

TOL = 1e-4


def attune(binary, *args):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, env=clean_env(), timeout=120)


def variants_reference(q, k, v, causal=False, align="bottom-right", window=0, softcap=0.0, slopes=None,
                       sinks=None, mask=None, top_k=0):
    """[batch, heads, seq, dim] float64; mask broadcast to [batch, heads_q, seq_q, seq_kv]."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, hq, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    k = np.repeat(k, hq // hkv, axis=1)
    v = np.repeat(v, hq // hkv, axis=1)
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(d)
    i = np.arange(sq)[:, None] + (skv - sq if align == "bottom-right" else 0)  # aligned position
    j = np.arange(skv)[None, :]
    visible = np.ones((sq, skv), bool)
    if causal:
        visible &= j <= i
    if window:
        visible &= j > i - window
        if not causal:
            visible &= j < i + window
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if slopes is not None:
        s = s - np.asarray(slopes, np.float64)[None, :, None, None] * np.abs(i - j)[None, None]
    s = np.where(visible[None, None], s, -np.inf)
    if mask is not None:
        m = np.broadcast_to(mask, (b, hq, sq, skv)) if mask.ndim == 4 else np.broadcast_to(mask, (b, hq, sq, skv))
        s = np.where(m, s, -np.inf) if m.dtype == bool else s + m
    if top_k:
        order = np.argsort(-s, axis=-1, kind="stable")  # ties: the lower key first
        keep = np.zeros_like(s, bool)
        np.put_along_axis(keep, order[..., :top_k], True, axis=-1)
        s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    sink = np.full((1, hq, 1, 1), -np.inf) if sinks is None else np.asarray(sinks, np.float64)[None, :, None, None]
    live = np.isfinite(mx)
    m_all = np.where(live, np.maximum(mx, sink), 0.0)
    e = np.where(np.isfinite(s), np.exp(s - m_all), 0.0)
    den = e.sum(axis=-1, keepdims=True) + np.exp(sink - m_all)
    w = np.where(live, e / np.where(den > 0, den, 1.0), 0.0)
    return np.einsum("bhij,bhjd->bhid", w, v)


def write_inputs(tmp_path, q_shape, kv_shape, seed):
    rng = np.random.default_rng(seed)
    arrays = {"q": rng.standard_normal(q_shape), "k": rng.standard_normal(kv_shape), "v": rng.standard_normal(kv_shape)}
    for name, x in arrays.items():
        np.save(tmp_path / (name + ".npy"), x.astype("<f4"))
    return [arrays[n].astype(np.float32) for n in "qkv"]


def io_args(tmp_path):
    return ["--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "v.npy", "--out", tmp_path / "o.npy"]


def block_mask(rng, shape):
    """16 x 16 blocks hidden, visible or mixed, and one fully hidden row."""
    blocks = rng.integers(0, 3, size=shape[:-2] + ((shape[-2] + 15) // 16, (shape[-1] + 15) // 16))
    kind = np.repeat(np.repeat(blocks, 16, axis=-2), 16, axis=-1)[..., : shape[-2], : shape[-1]]
    m = np.where(kind == 0, False, np.where(kind == 1, True, rng.random(shape) < 0.5))
    m[..., 3, :] = False
    return m


CASES = {
    # name: (q shape, kv shape, flags for attune, kwargs for the reference)
    "top_left_causal": ((1, 2, 40, 16), (1, 1, 70, 16), ["--causal", "top-left"], dict(causal=True, align="top-left")),
    "window_causal": ((1, 2, 90, 16), (1, 2, 90, 16), ["--causal", "--window", "17"], dict(causal=True, window=17)),
    "window_symmetric": ((1, 1, 50, 8), (1, 1, 80, 8), ["--window", "9"], dict(window=9)),
    "softcap": ((1, 2, 33, 32), (1, 2, 33, 32), ["--softcap", "2.5"], dict(softcap=2.5)),
    "alibi": ((1, 4, 33, 16), (1, 2, 45, 16), ["--alibi", "--causal"], dict(causal=True, slopes=2.0 ** (-8 * np.arange(1, 5) / 4))),
    "everything": ((2, 4, 70, 16), (2, 2, 100, 16), ["--causal=top-left", "--window", "40", "--softcap", "3", "--alibi"],
                   dict(causal=True, align="top-left", window=40, softcap=3.0, slopes=2.0 ** (-8 * np.arange(1, 5) / 4))),
    "decode_window": ((1, 8, 1, 64), (1, 2, 300, 64), ["--causal", "--window", "100"], dict(causal=True, window=100)),
}


def kernels_taking(binary, tmp_path, flags):
    """Kernels that take fp32 (these cases' type); of those, the ones that do not implement the
    variants must refuse with exit 2."""
    triples = [line.split() for line in attune(binary, "kernels").stdout.splitlines()]
    return sorted({t[0] for t in triples if t[2] == "fp32"})


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_variants_match_numpy(attune_bin, tmp_path, case):
    qs, kvs, flags, ref_kw = CASES[case]
    q, k, v = write_inputs(tmp_path, qs, kvs, zlib.crc32(case.encode()))
    want = variants_reference(q, k, v, **ref_kw)
    ran = 0
    for kernel in kernels_taking(attune_bin, tmp_path, flags):
        r = attune(attune_bin, "run", *io_args(tmp_path), *flags, "--kernel", kernel)
        if r.returncode == 2 and "does not implement the variants" in r.stderr:
            assert not (tmp_path / "o.npy").exists()
            continue
        assert r.returncode == 0, (kernel, r.stderr)
        got = np.load(tmp_path / "o.npy")
        err = np.abs(got - want).max()
        assert err < TOL, "%s: max abs error %g" % (kernel, err)
        (tmp_path / "o.npy").unlink()
        ran += 1
    assert ran >= 2, "naive and at least one tiled kernel take these variants"


@pytest.mark.parametrize("kind", ["bool", "uint8", "additive", "per_head", "per_batch"])
def test_mask_matches_numpy(attune_bin, tmp_path, kind):
    qs, kvs = (2, 2, 50, 16), (2, 1, 70, 16)
    q, k, v = write_inputs(tmp_path, qs, kvs, 7)
    rng = np.random.default_rng(11)
    shape = {"per_head": (2, 2, 50, 70), "per_batch": (2, 1, 50, 70)}.get(kind, (50, 70))
    m = block_mask(rng, shape)
    if kind == "additive":
        m = np.where(m, rng.standard_normal(shape), -np.inf).astype("<f4")
    elif kind == "uint8":
        m = m.astype(np.uint8) * 7  # any non-zero byte is visible
    np.save(tmp_path / "m.npy", m)
    want = variants_reference(q, k, v, mask=m.astype(bool) if kind == "uint8" else m)
    for kernel in ["naive", "simd", "flash"]:
        r = attune(attune_bin, "run", *io_args(tmp_path), "--mask", tmp_path / "m.npy", "--kernel", kernel)
        assert r.returncode == 0, (kernel, r.stderr)
        got = np.load(tmp_path / "o.npy")
        assert not np.isnan(got).any()
        assert not got[..., 3, :].any(), "a row with no visible key is zeros"
        assert np.abs(got - want).max() < TOL, kernel


def test_sinks_and_top_k(attune_bin, tmp_path):
    qs, kvs = (1, 2, 20, 8), (1, 2, 30, 8)
    q, k, v = write_inputs(tmp_path, qs, kvs, 3)
    np.save(tmp_path / "s.npy", np.array([0.5, -1.0], "<f4"))
    r = attune(attune_bin, "run", *io_args(tmp_path), "--sinks", tmp_path / "s.npy", "--kernel", "flash")
    assert r.returncode == 0, r.stderr
    want = variants_reference(q, k, v, sinks=[0.5, -1.0])
    assert np.abs(np.load(tmp_path / "o.npy") - want).max() < TOL
    r = attune(attune_bin, "run", *io_args(tmp_path), "--top-k", "4")  # auto picks a kernel that implements it
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(tmp_path / "o.npy") - variants_reference(q, k, v, top_k=4)).max() < TOL


def test_top_k_ties_go_to_the_lower_key(attune_bin, tmp_path):
    """Keys 0..4 identical: top-1 keeps key 0, so the output is exactly v[0] (never an average)."""
    rng = np.random.default_rng(5)
    q = rng.standard_normal((1, 1, 3, 8)).astype("<f4")
    k = np.repeat(rng.standard_normal((1, 1, 1, 8)), 5, axis=2).astype("<f4")
    v = rng.standard_normal((1, 1, 5, 8)).astype("<f4")
    for name, x in zip("qkv", (q, k, v)):
        np.save(tmp_path / (name + ".npy"), x)
    r = attune(attune_bin, "run", *io_args(tmp_path), "--top-k", "1", "--kernel", "naive")
    assert r.returncode == 0, r.stderr
    assert np.allclose(np.load(tmp_path / "o.npy")[0, 0], v[0, 0, 0][None, :], atol=1e-6)


BAD = {
    "window_zero": (["--window", "0"], "--window"),
    "window_text": (["--window", "wide"], "--window"),
    "softcap_negative": (["--softcap", "-1"], "--softcap"),
    "softcap_nan": (["--softcap", "nan"], "--softcap"),
    "causal_bad": (["--causal", "sideways"], "--causal"),
    "causal_eq_bad": (["--causal=left"], "--causal"),
    "top_k_zero": (["--top-k", "0"], "--top-k"),
    "alibi_both": (["--alibi", "--alibi-slopes", "x.npy"], "--alibi"),
    "top_k_on_flash": (["--top-k", "2", "--kernel", "flash"], "flash"),
    "window_on_gemm": (["--window", "2", "--kernel", "blocked"], "blocked"),
    "mask_shape": (["--mask", "MASK_BAD"], "--mask"),
    "sinks_shape": (["--sinks", "SINKS_BAD"], "--sinks"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_variant_usage_errors(attune_bin, tmp_path, case):
    write_inputs(tmp_path, (1, 2, 6, 4), (1, 1, 9, 4), 1)
    np.save(tmp_path / "mask_bad.npy", np.ones((9, 6), bool))  # transposed
    np.save(tmp_path / "sinks_bad.npy", np.zeros(3, "<f4"))     # heads_q is 2
    flags, word = BAD[case]
    flags = [str(tmp_path / "mask_bad.npy") if f == "MASK_BAD" else str(tmp_path / "sinks_bad.npy") if f == "SINKS_BAD" else f
             for f in flags]
    r = attune(attune_bin, "run", *io_args(tmp_path), *flags)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], r.stderr
    assert not (tmp_path / "o.npy").exists()


def test_mask_of_the_wrong_type_is_an_input_error(attune_bin, tmp_path):
    write_inputs(tmp_path, (1, 1, 6, 4), (1, 1, 9, 4), 1)
    np.save(tmp_path / "m.npy", np.ones((6, 9), np.int32))
    r = attune(attune_bin, "run", *io_args(tmp_path), "--mask", tmp_path / "m.npy")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "mask" in r.stderr
    assert not (tmp_path / "o.npy").exists()


def test_varlen_matches_numpy_per_sequence(attune_bin, tmp_path):
    """Packed sequences (one empty, seq_q != seq_kv inside) are each their own causal frame."""
    cu_q, cu_kv = [0, 30, 30, 75, 80], [0, 40, 52, 90, 150]
    q, k, v = write_inputs(tmp_path, (1, 4, 80, 16), (1, 2, 150, 16), 21)
    want = np.zeros((1, 4, 80, 16))
    for s in range(4):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_kv[s], cu_kv[s + 1]
        if b > a and d > c:
            want[:, :, a:b] = variants_reference(q[:, :, a:b], k[:, :, c:d], v[:, :, c:d], causal=True, window=9)
    for kernel in ["naive", "simd", "flash"]:
        r = attune(attune_bin, "run", *io_args(tmp_path), "--causal", "--window", "9", "--kernel", kernel,
                   "--cu-seqlens-q", ",".join(map(str, cu_q)), "--cu-seqlens-kv", ",".join(map(str, cu_kv)))
        assert r.returncode == 0, (kernel, r.stderr)
        assert np.abs(np.load(tmp_path / "o.npy") - want).max() < TOL, kernel


@pytest.mark.parametrize("kind", ["bool", "float32_per_head"])
def test_mask_with_varlen_uses_each_sequences_diagonal_block(attune_bin, tmp_path, kind):
    """--mask over the packed tokens [total_q, total_kv]: sequence s reads its diagonal block in its
    own frame (one sequence empty, one wholly hidden: zeros); entries outside every block are junk
    that would show if read."""
    cu_q, cu_kv = [0, 30, 30, 75, 80], [0, 40, 52, 90, 150]
    q, k, v = write_inputs(tmp_path, (1, 4, 80, 16), (1, 2, 150, 16), 23)
    rng = np.random.default_rng(5)
    shape = (80, 150) if kind == "bool" else (1, 4, 80, 150)
    full = block_mask(rng, shape)
    m = np.ones(shape, bool) if kind == "bool" else np.full(shape, 100.0, np.float32)  # junk off the blocks
    for s in range(4):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_kv[s], cu_kv[s + 1]
        block = full[..., a:b, c:d]
        if kind == "bool":
            m[a:b, c:d] = block.astype(bool) if s != 2 else False  # sequence 2: everything hidden
        else:
            m[..., a:b, c:d] = np.where(block.astype(bool), rng.standard_normal(block.shape), -np.inf) if s != 2 else -np.inf
    np.save(tmp_path / "m.npy", m if kind == "bool" else m.astype("<f4"))
    want = np.zeros((1, 4, 80, 16))
    for s in range(4):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_kv[s], cu_kv[s + 1]
        if b > a and d > c:
            want[:, :, a:b] = variants_reference(q[:, :, a:b], k[:, :, c:d], v[:, :, c:d], causal=True,
                                                 mask=m[..., a:b, c:d])
    assert np.all(want[:, :, 30:75] == 0.0)
    for kernel in ["naive", "simd", "flash"]:
        r = attune(attune_bin, "run", *io_args(tmp_path), "--causal", "--mask", tmp_path / "m.npy", "--kernel", kernel,
                   "--cu-seqlens-q", ",".join(map(str, cu_q)), "--cu-seqlens-kv", ",".join(map(str, cu_kv)))
        assert r.returncode == 0, (kernel, r.stderr)
        got = np.load(tmp_path / "o.npy")
        assert not np.isnan(got).any(), kernel
        assert np.abs(got - want).max() < TOL, kernel
        assert np.all(got[:, :, 30:75] == 0.0), kernel


def test_mask_with_varlen_of_the_wrong_shape_is_a_usage_error(attune_bin, tmp_path):
    """The mask of a packed batch spans the packed tokens, not one sequence."""
    write_inputs(tmp_path, (1, 2, 80, 8), (1, 2, 150, 8), 2)
    np.save(tmp_path / "m.npy", np.ones((30, 40), bool))
    r = attune(attune_bin, "run", *io_args(tmp_path), "--mask", tmp_path / "m.npy",
               "--cu-seqlens-q", "0,30,80", "--cu-seqlens-kv", "0,40,150")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--mask" in r.stderr, r.stderr
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("flags", [["--cu-seqlens-q", "0,80"], ["--cu-seqlens-q", "0,90", "--cu-seqlens-kv", "0,150"],
                                   ["--cu-seqlens-q", "0,40,80", "--cu-seqlens-kv", "0,150"],
                                   ["--cu-seqlens-q", "0,-1,80", "--cu-seqlens-kv", "0,5,150"],
                                   ["--cu-seqlens-q", "0,80", "--cu-seqlens-kv", "0,150", "--kernel", "blocked"]],
                         ids=["one_side", "past_total", "counts_differ", "negative", "kernel_without"])
def test_varlen_usage_errors(attune_bin, tmp_path, flags):
    write_inputs(tmp_path, (1, 2, 80, 8), (1, 2, 150, 8), 2)
    r = attune(attune_bin, "run", *io_args(tmp_path), *flags)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert not (tmp_path / "o.npy").exists()


def test_layout_bshd_is_read_in_place(attune_bin, tmp_path):
    """[batch, seq, heads, dim] files give the transposed result of the bhsd ones (GQA, causal, window)."""
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal(s).astype("<f4") for s in [(2, 33, 4, 16), (2, 47, 2, 16), (2, 47, 2, 16)])
    for name, x in zip("qkv", (q, k, v)):
        np.save(tmp_path / (name + ".npy"), x)
    want = variants_reference(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), causal=True,
                              window=10).transpose(0, 2, 1, 3)
    for kernel in ["naive", "simd", "flash"]:
        r = attune(attune_bin, "run", *io_args(tmp_path), "--layout", "bshd", "--causal", "--window", "10", "--kernel", kernel)
        assert r.returncode == 0, (kernel, r.stderr)
        got = np.load(tmp_path / "o.npy")
        assert got.shape == (2, 33, 4, 16)
        assert np.abs(got - want).max() < TOL, kernel
    r = attune(attune_bin, "run", *io_args(tmp_path), "--layout", "bshd", "--kernel", "gemm")
    assert r.returncode == 2 and "strided" in r.stderr, r.stderr
    r = attune(attune_bin, "run", *io_args(tmp_path), "--layout", "hsbd")
    assert r.returncode == 2 and "--layout" in r.stderr, r.stderr
