# `attune mha`: agreement with a numpy float64 multi-head attention, and the exit-code contract
# (0 success, 1 data/input error, 2 usage error) on bad weights and head counts. Skipped when
# the binary was built without BLAS (no `mha` command).
import subprocess
import zlib

import numpy as np
import pytest

from test_cli import assert_ok, attune, check_refused, clean_env, load_output, rand, reference, write


@pytest.fixture(autouse=True)
def _needs_mha(attune_bin):
    r = subprocess.run([attune_bin, "--help"], capture_output=True, text=True, env=clean_env(), timeout=30)
    if "\n  mha " not in r.stdout:
        pytest.skip("attune was built without BLAS: no mha command")


def mha_reference(x, wq, wk, wv, wo, heads_q, heads_kv, causal=False, scale=None):
    """y = concat_h(attention(x wq_h, x wk_g, x wv_g)) wo in float64, g = h / (heads_q / heads_kv)."""
    x = np.asarray(x, dtype=np.float64)
    two_d = x.ndim == 2
    if two_d:
        x = x[None]
    b, s, _ = x.shape
    d_k, d_v = wq.shape[1] // heads_q, wv.shape[1] // heads_kv

    def heads(w, h, d):  # [b, s, h * d] -> [b, h, s, d]
        return (x @ np.asarray(w, dtype=np.float64)).reshape(b, s, h, d).transpose(0, 2, 1, 3)

    o = reference(heads(wq, heads_q, d_k), heads(wk, heads_kv, d_k), heads(wv, heads_kv, d_v), causal, scale)
    y = o.transpose(0, 2, 1, 3).reshape(b, s, heads_q * d_v) @ np.asarray(wo, dtype=np.float64)
    return y[0] if two_d else y


def make_inputs(rng, x_shape, heads_q, heads_kv, d_k, d_v):
    d_model = x_shape[-1]
    x = rand(rng, x_shape)
    wq, wk, wv = (rand(rng, (d_model, h * d)) / np.float32(np.sqrt(d_model))
                  for h, d in ((heads_q, d_k), (heads_kv, d_k), (heads_kv, d_v)))
    wo = rand(rng, (heads_q * d_v, d_model)) / np.float32(np.sqrt(heads_q * d_v))
    return x, wq, wk, wv, wo


def mha_args(tmp_path, out, heads_q, heads_kv=None):
    args = ["mha"]
    for name in ("x", "wq", "wk", "wv", "wo"):
        args += ["--" + name, tmp_path / (name + ".npy")]
    args += ["--heads-q", heads_q, "--out", out]
    if heads_kv is not None:
        args += ["--heads-kv", heads_kv]
    return args


CASES = {
    # id: (x shape, heads_q, heads_kv (None: the default, = heads_q), d_k, d_v, causal, extra, scale)
    "3d": ((2, 9, 16), 4, 4, 4, 4, False, [], None),
    "heads_kv_default": ((1, 5, 12), 3, None, 4, 4, True, [], None),
    "gqa_causal": ((1, 13, 24), 6, 2, 8, 5, True, [], None),
    "mqa_2d_gemm": ((11, 8), 2, 1, 3, 6, False, ["--kernel", "gemm", "--threads", "1"], None),
    "naive_scale": ((2, 7, 10), 2, 2, 5, 5, True, ["--kernel", "naive", "--scale", "0.5"], 0.5),
    "flash_threads": ((3, 40, 32), 8, 2, 8, 8, True, ["--kernel", "flash", "--threads", "2"], None),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_mha_matches_reference(attune_bin, tmp_path, case):
    x_shape, hq, hkv, d_k, d_v, causal, extra, scale = CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    arrays = make_inputs(rng, x_shape, hq, hkv or hq, d_k, d_v)
    for name, a in zip(("x", "wq", "wk", "wv", "wo"), arrays):
        write(tmp_path / (name + ".npy"), a)
    out = tmp_path / "y.npy"
    r = attune(attune_bin, *mha_args(tmp_path, out, hq, hkv), *extra, *(["--causal"] if causal else []))
    assert_ok(r)
    assert r.stdout == "" and r.stderr == ""
    got = load_output(out)
    want = mha_reference(*arrays, hq, hkv or hq, causal, scale)
    assert got.shape == want.shape == x_shape
    # 1e-4 relative to the output's magnitude (derivation in tests/test_mha.cpp).
    tol = 1e-4 * max(1.0, np.abs(want).max())
    err = np.abs(got - want).max()
    assert err < tol, "max abs error %g (tolerance %g)" % (err, tol)


GOOD = ((2, 6, 8), 4, 2, 4, 3)  # x shape, heads_q, heads_kv, d_k, d_v


def _write_good(tmp_path):
    arrays = make_inputs(np.random.default_rng(4), *GOOD)
    for name, a in zip(("x", "wq", "wk", "wv", "wo"), arrays):
        write(tmp_path / (name + ".npy"), a)
    return dict(zip(("x", "wq", "wk", "wv", "wo"), arrays))


BAD_WEIGHTS = {
    # id: (file, replacement array shape, text the error names)
    "wk_rows_not_d_model": ("wk", (7, 8), "WK"),
    "wk_width_not_heads_kv_d_k": ("wk", (8, 6), "WK"),
    "wq_width_not_multiple_of_heads_q": ("wq", (8, 18), "--heads-q"),
    "wv_width_not_multiple_of_heads_kv": ("wv", (8, 5), "--heads-kv"),
    "wo_shape": ("wo", (12, 7), "WO"),
    "wq_3d": ("wq", (1, 8, 16), "WQ"),
    "x_4d": ("x", (1, 2, 6, 8), "X"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS), ids=list(BAD_WEIGHTS))
def test_mha_bad_weights(attune_bin, tmp_path, case):
    which, shape, named = BAD_WEIGHTS[case]
    _write_good(tmp_path)
    write(tmp_path / (which + ".npy"), np.zeros(shape, dtype=np.float32))
    out = tmp_path / "y.npy"
    r = check_refused(attune_bin, tmp_path, mha_args(tmp_path, out, GOOD[1], GOOD[2]), 1, out)
    assert named in r.stderr


@pytest.mark.parametrize("heads", [("3", "2"), ("4", "3"), ("0", "1"), ("4", "0"), ("x", "1")],
                         ids=["3_over_2", "4_over_3", "heads_q_0", "heads_kv_0", "heads_q_not_int"])
def test_mha_heads_usage_errors(attune_bin, tmp_path, heads):
    _write_good(tmp_path)
    out = tmp_path / "y.npy"
    r = check_refused(attune_bin, tmp_path, mha_args(tmp_path, out, *heads), 2, out)
    assert "--heads-" in r.stderr


def test_mha_missing_heads_q(attune_bin, tmp_path):
    _write_good(tmp_path)
    out = tmp_path / "y.npy"
    args = [a for a in mha_args(tmp_path, out, GOOD[1]) if a not in ("--heads-q", GOOD[1])]
    r = check_refused(attune_bin, tmp_path, args, 2, out)
    assert "--heads-q" in r.stderr


def test_mha_seq_zero(attune_bin, tmp_path):
    _write_good(tmp_path)
    write(tmp_path / "x.npy", np.zeros((2, 0, 8), dtype=np.float32))
    out = tmp_path / "y.npy"
    r = check_refused(attune_bin, tmp_path, mha_args(tmp_path, out, GOOD[1], GOOD[2]), 1, out)
    assert "seq" in r.stderr


def test_mha_help(attune_bin):
    r = attune(attune_bin, "mha", "--help")
    assert_ok(r)
    assert r.stdout.startswith("usage: attune mha")
    assert r.stderr == ""


def test_mha_unknown_kernel(attune_bin, tmp_path):
    _write_good(tmp_path)
    out = tmp_path / "y.npy"
    check_refused(attune_bin, tmp_path, mha_args(tmp_path, out, GOOD[1], GOOD[2]) + ["--kernel", "nosuch"], 2, out)


def test_mha_max_memory(attune_bin, tmp_path):
    """The projections count towards the limit too: refused before any work, no output."""
    _write_good(tmp_path)
    out = tmp_path / "y.npy"
    r = check_refused(attune_bin, tmp_path, mha_args(tmp_path, out, GOOD[1], GOOD[2]) + ["--max-memory", "1K"], 1, out)
    assert "error: mha needs " in r.stderr and "above the limit of 1.0 KiB" in r.stderr
    r = check_refused(attune_bin, tmp_path, mha_args(tmp_path, out, GOOD[1], GOOD[2]) + ["--max-memory", "1x"], 2, out)
    assert "--max-memory" in r.stderr
    assert_ok(attune(attune_bin, *mha_args(tmp_path, out, GOOD[1], GOOD[2]), "--max-memory", "1M"))

