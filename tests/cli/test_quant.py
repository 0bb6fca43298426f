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


def test_kernels_kv_lists_every_storage_pair_and_each_runs_verbatim(attune_bin, tmp_path):
    """`attune kernels --kv`: '<kernel> <isa> <dtype> <kv-dtype>' lines; the same-type lines are
    exactly the triples of `attune kernels`; the vector kernels list every quantized type under
    fp32 Q/O; each quantized line runs verbatim through `attune run` and agrees with naive's
    output for the same types (every kernel dequantizes the same codes)."""
    r = attune(attune_bin, "kernels", "--kv")
    assert_ok(r)
    assert r.stderr == ""
    quads = [tuple(line.split()) for line in r.stdout.splitlines()]
    assert quads and all(len(t) == 4 for t in quads)
    assert len(set(quads)) == len(quads)
    plain = attune(attune_bin, "kernels")
    assert_ok(plain)
    triples = [tuple(line.split()) for line in plain.stdout.splitlines()]
    assert [t[:3] for t in quads if t[2] == t[3]] == triples
    assert {t[3] for t in quads} <= {"fp32", "bf16", "fp16", *QUANT}
    for kernel in ("simd", "flash"):
        isas = {t[1] for t in triples if t[0] == kernel}
        for isa in isas:
            for kv in QUANT:
                assert (kernel, isa, "fp32", kv) in quads, (kernel, isa, kv)
    long = attune(attune_bin, "kernels", "--kv", "--long")
    assert_ok(long)
    assert [tuple(l.split()[:4]) for l in long.stdout.splitlines()] == quads
    assert all(len(l.split()) > 4 for l in long.stdout.splitlines())
    q, k, v, paths = inputs(tmp_path)
    base = {}
    for kernel, isa, dtype, kv in quads:
        if kv not in QUANT or dtype != "fp32":
            continue
        got = run(attune_bin, paths, tmp_path / "o.npy", "--kernel", kernel, "--isa", isa, "--kv-dtype", kv)
        if kv not in base:
            base[kv] = run(attune_bin, paths, tmp_path / "n.npy", "--kernel", "naive", "--kv-dtype", kv)
        assert np.abs(got - base[kv]).max() < 1e-4, (kernel, isa, kv)


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


# --------------------------------------------------------------------------------------------
# Pre-quantized K/V: code files plus scales files (--k-scales / --v-scales)

def prequantized(tmp_path, kv, d=64, seed=9):
    """Q (float32), K/V codes and scales built in numpy as docs/quantized-kv.md lays them out, and
    the dequantized K/V they stand for."""
    rng = np.random.default_rng(seed)
    q = rand(rng, (1, 8, 3, d))
    files, values = {}, {}
    for name in "kv":
        if kv == "int8":
            codes = rng.integers(-127, 128, (1, 2, 300, d), dtype=np.int8)
            scales = rng.uniform(0.001, 0.02, (1, 2, 300)).astype(np.float32)
            values[name] = codes.astype(np.float32) * scales[..., None]
        elif kv == "fp8_e5m2":
            # Finite E5M2 bytes of moderate magnitude: the upper byte of an fp16.
            x = rng.standard_normal((1, 2, 300, d)).astype(np.float16)
            codes = (x.view(np.uint16) >> 8).astype(np.uint8)
            scales = np.array([0.5, 2.0], dtype=np.float32)
            values[name] = (codes.astype(np.uint16) << 8).view(np.float16).astype(np.float32) * scales[None, :, None, None]
        else:  # int4
            nib = rng.integers(0, 16, (1, 2, 300, d), dtype=np.uint8)
            g = nib.reshape(1, 2, 300, d // 32, 32)
            codes = (g[..., :16] | (g[..., 16:] << 4)).reshape(1, 2, 300, d // 2).astype(np.uint8)
            scales = np.stack([rng.uniform(0.01, 0.2, (1, 2, 300, d // 32)),
                               rng.uniform(-1.0, 0.0, (1, 2, 300, d // 32))], axis=-1).astype(np.float16)
            s = scales.astype(np.float32)
            values[name] = (g.astype(np.float32) * s[..., 0:1] + s[..., 1:2]).reshape(1, 2, 300, d)
        files[name] = write(tmp_path, name + ".npy", codes)
        files[name + "s"] = write(tmp_path, name + "s.npy", scales)
    files["q"] = write(tmp_path, "q.npy", q)
    return q, values, files


def prequantized_args(files, out, kv):
    return ["run", "--q", files["q"], "--k", files["k"], "--v", files["v"], "--out", out, "--kv-dtype", kv,
            "--k-scales", files["ks"], "--v-scales", files["vs"]]


@pytest.mark.parametrize("kv", ["int8", "fp8_e5m2", "int4"])
def test_prequantized_inputs_match_the_reference(attune_bin, tmp_path, kv):
    q, values, files = prequantized(tmp_path, kv)
    out = tmp_path / "o.npy"
    r = attune(attune_bin, *prequantized_args(files, out, kv), "--causal")
    assert_ok(r)
    want = reference(q, values["k"], values["v"], causal=True)
    assert np.abs(np.load(out) - want).max() < 1e-4


def _bad_scales(tmp_path, files, change):
    scales = np.load(files["ks"])
    scales = change(scales)
    write(tmp_path, "ks.npy", scales)


BAD_SCALES = {
    "wrong_shape": (lambda s: s[:, :, :-1], "shape"),
    "transposed": (lambda s: np.ascontiguousarray(s.reshape(1, 300, 2)), "shape"),
    "float64": (lambda s: s.astype(np.float64), ".npy dtype"),
    "float16": (lambda s: s.astype(np.float16), "float32"),
    "nan": (lambda s: np.where(np.arange(s.size).reshape(s.shape) == 17, np.float32(np.nan), s), "finite"),
    "inf": (lambda s: np.where(np.arange(s.size).reshape(s.shape) == 3, np.float32(np.inf), s), "finite"),
    "zero": (lambda s: np.where(np.arange(s.size).reshape(s.shape) == 0, np.float32(0), s), "non-zero"),
}


@pytest.mark.parametrize("case", list(BAD_SCALES), ids=list(BAD_SCALES))
def test_bad_scales_are_refused(attune_bin, tmp_path, case):
    _, _, files = prequantized(tmp_path, "int8")
    change, words = BAD_SCALES[case]
    _bad_scales(tmp_path, files, change)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, prequantized_args(files, out, "int8"), 1, out)
    assert words in r.stderr, r.stderr


def test_bad_int4_min_and_codes_file(attune_bin, tmp_path):
    _, _, files = prequantized(tmp_path, "int4")
    out = tmp_path / "out.npy"
    scales = np.load(files["vs"])
    scales[0, 1, 5, 1, 1] = np.inf  # a min
    write(tmp_path, "vs.npy", scales)
    r = check_refused(attune_bin, tmp_path, prequantized_args(files, out, "int4"), 1, out)
    assert "min" in r.stderr
    _, _, files = prequantized(tmp_path, "int4")
    write(tmp_path, "k.npy", np.zeros((1, 2, 300, 32), dtype=np.float32))  # floats where codes belong
    r = check_refused(attune_bin, tmp_path, prequantized_args(files, out, "int4"), 1, out)
    assert "codes" in r.stderr


@pytest.mark.parametrize("extra", [["--kv-dtype", "bf16"], ["--kv-dtype", "int8", "--drop-v-scales"]],
                         ids=["float-kv", "k-without-v"])
def test_scales_flag_usage_errors(attune_bin, tmp_path, extra):
    _, _, files = prequantized(tmp_path, "int8")
    out = tmp_path / "out.npy"
    args = ["run", "--q", files["q"], "--k", files["k"], "--v", files["v"], "--out", out, "--k-scales", files["ks"]]
    if "--drop-v-scales" not in extra:
        args += ["--v-scales", files["vs"]]
    args += [x for x in extra if x != "--drop-v-scales"]
    r = check_refused(attune_bin, tmp_path, args, 2, out)
    assert "--k-scales" in r.stderr
