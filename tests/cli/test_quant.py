# `attune run --kv-dtype` with the quantized K/V types (docs/quantized-kv.md): float .npy K/V
# quantized on load, the output against the float64 reference on the dequantized values (int8's
# rounding rebuilt in numpy), the distance from the float K/V output per type, and bad input.
import numpy as np
import pytest

from test_cli import assert_ok, attune, check_refused, rand, reference

QUANT = ["int8", "int8_kc", "fp8_e4m3", "fp8_e5m2", "int4"]


def write(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array, allow_pickle=False)
    return path


def inputs(tmp_path, d=64, seed=5):
    rng = np.random.default_rng(seed)
    q, k, v = rand(rng, (1, 8, 3, d)), rand(rng, (1, 2, 300, d)), rand(rng, (1, 2, 300, d))
    return q, k, v, [write(tmp_path, n + ".npy", x) for n, x in zip("qkv", (q, k, v))]


def run(binary, paths, out, *extra):
    q, k, v = paths
    r = attune(binary, "run", "--q", q, "--k", k, "--v", v, "--out", out, *extra)
    assert_ok(r)
    assert r.stdout == "" and r.stderr == ""
    return np.load(out, allow_pickle=False)


def int8_rows(x):
    """int8 per-row symmetric quantization as documented: scale = max|x| / 127 (float32), codes
    round(x / scale) to nearest even, clamped to +-127; returns the dequantized values."""
    amax = np.abs(x).max(axis=-1, keepdims=True)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(x / scale), -127, 127).astype(np.float32)
    return codes * scale


@pytest.mark.parametrize("causal", [False, True])
def test_int8_matches_the_reference_on_dequantized_values(attune_bin, tmp_path, causal):
    q, k, v, paths = inputs(tmp_path)
    extra = ["--kv-dtype", "int8"] + (["--causal"] if causal else [])
    got = run(attune_bin, paths, tmp_path / "o.npy", *extra)
    want = reference(q, int8_rows(k), int8_rows(v), causal=causal)
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("kv", QUANT)
def test_each_type_stays_near_float_kv(attune_bin, tmp_path, kv):
    """The quantization error of unit-normal K/V: well below the output scale, above zero (the
    cache really is quantized), and ordered as the formats' precision."""
    q, k, v, paths = inputs(tmp_path)
    exact = reference(q, k, v, causal=True)
    got = run(attune_bin, paths, tmp_path / "o.npy", "--kv-dtype", kv, "--causal")
    err = np.abs(got - exact).max()
    bound = {"int8": 0.02, "int8_kc": 0.02, "fp8_e4m3": 0.08, "fp8_e5m2": 0.15, "int4": 0.2}[kv]
    assert 0 < err < bound, (kv, err)


def test_every_kernel_that_lists_it_agrees(attune_bin, tmp_path):
    q, k, v, paths = inputs(tmp_path)
    base = run(attune_bin, paths, tmp_path / "o.npy", "--kv-dtype", "fp8_e4m3", "--kernel", "naive")
    for kernel in ("simd", "flash"):
        got = run(attune_bin, paths, tmp_path / ("o_%s.npy" % kernel), "--kv-dtype", "fp8_e4m3", "--kernel", kernel)
        assert np.abs(got - base).max() < 1e-4


def test_int4_needs_whole_groups(attune_bin, tmp_path):
    _, _, _, paths = inputs(tmp_path, d=48)
    out = tmp_path / "out.npy"
    args = ["run", "--q", paths[0], "--k", paths[1], "--v", paths[2], "--out", out, "--kv-dtype", "int4"]
    r = check_refused(attune_bin, tmp_path, args, 1, out)
    assert "multiple of 32" in r.stderr


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_kv_is_refused(attune_bin, tmp_path, bad):
    q, k, v, paths = inputs(tmp_path)
    k[0, 1, 7, 3] = bad
    write(tmp_path, "k.npy", k)
    out = tmp_path / "out.npy"
    args = ["run", "--q", paths[0], "--k", paths[1], "--v", paths[2], "--out", out, "--kv-dtype", "int8"]
    r = check_refused(attune_bin, tmp_path, args, 1, out)
    assert "--k" in r.stderr and "finite" in r.stderr


@pytest.mark.parametrize("extra", [["--dtype", "int8"], ["--out-dtype", "fp8_e4m3"], ["--kv-dtype", "int3"],
                                   ["--kv-dtype", "int8", "--layout", "bshd"]],
                         ids=["quantized-q", "quantized-out", "unknown", "bshd"])
def test_usage_errors(attune_bin, tmp_path, extra):
    _, _, _, paths = inputs(tmp_path)
    if "bshd" in extra:  # shapes that read the same either way
        rng = np.random.default_rng(1)
        paths = [write(tmp_path, n + ".npy", rand(rng, (1, 8, 8, 64))) for n in "qkv"]
    out = tmp_path / "out.npy"
    args = ["run", "--q", paths[0], "--k", paths[1], "--v", paths[2], "--out", out] + extra
    check_refused(attune_bin, tmp_path, args, 2, out)
