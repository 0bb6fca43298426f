# `attune run` with 16-bit storage: --dtype (Q and O), --kv-dtype (K and V), --out-dtype (the
# written file), .npy files of float32 ('<f4'), float16 ('<f2') and bfloat16 ('<V2', as
# ml_dtypes saves it; written by hand here so numpy alone suffices), and the rounding on load.
import numpy as np
import pytest

from test_cli import (assert_ok, attune, check_refused, listed_triples, rand, raw_npy, reference,
                      _run_args, _write_good_inputs)
from test_weights import softmax_weights

# Relative half-ulp of each storage type: a value rounded once to it moves at most this much.
HALF_ULP = {"fp32": 0.0, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
# What float32 arithmetic (reordered sums, exp2 polynomial) adds, as for the float32 tests.
ARITH_TOL = 1e-4


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns, rounded to nearest even (no NaNs in these tests)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_values(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def rounded(x, dtype):
    """x as `dtype` stores it, widened to float32 again."""
    if dtype == "bf16":
        return bf16_values(bf16_bits(x))
    if dtype == "fp16":
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)
    return np.asarray(x, dtype=np.float32)


def v2_image(bits, shape):
    """A .npy image as np.save writes an ml_dtypes.bfloat16 array: descr '<V2', raw bits."""
    header = "{'descr': '<V2', 'fortran_order': False, 'shape': %s, }" % (tuple(shape),)
    return raw_npy(header, np.asarray(bits, dtype="<u2").tobytes())


def save(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array, allow_pickle=False)
    return path


def run(binary, q, k, v, out, *extra):
    r = attune(binary, "run", "--q", q, "--k", k, "--v", v, "--out", out, *extra)
    assert_ok(r)
    assert r.stdout == "" and r.stderr == ""
    return np.load(out, allow_pickle=False)


def assert_within_rounding(got, want, dtype, what, extra=0.0):
    """Each output element within one rounding to `dtype` (plus float32 arithmetic, plus `extra`)
    of `want`."""
    want = np.asarray(want, dtype=np.float64)
    bound = HALF_ULP[dtype] * np.abs(want) + ARITH_TOL + extra
    excess = np.abs(got.astype(np.float64) - want) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess.max() <= 0, "%s: element %s is %r, want %r +- %g" % (
        what, worst, got[worst], want[worst], bound[worst])


def float32_pv(binary):
    """`--kernel flash --isa` of the default vector ISA: flash multiplying P V in float32 (auto
    may pick amx, and flash on bf16 may pick avx512_bf16; both round P to bf16 too, and their
    bound is checked per triple below)."""
    r = attune(binary, "info")
    assert_ok(r)
    isa = next(line.split(":", 1)[1].strip() for line in r.stdout.splitlines() if line.startswith("isa default:"))
    return ("--kernel", "flash", "--isa", isa)


def unit_normal_inputs(tmp_path, seed=11, shape=(1, 2, 64, 32)):
    rng = np.random.default_rng(seed)
    q, k, v = rand(rng, shape), rand(rng, shape), rand(rng, shape)
    paths = [save(tmp_path, n + ".npy", x) for n, x in zip("qkv", (q, k, v))]
    return (q, k, v), paths


# --------------------------------------------------------------------------------------------
# --dtype bf16 rounds on load and on output


def test_bf16_close_to_fp32_but_rounded(attune_bin, tmp_path):
    (q, k, v), (qp, kp, vp) = unit_normal_inputs(tmp_path)
    o32 = run(attune_bin, qp, kp, vp, tmp_path / "o32.npy")
    # A kernel that multiplies in float32, so the output rounding is the whole error.
    o16 = run(attune_bin, qp, kp, vp, tmp_path / "o16.npy", "--dtype", "bf16", *float32_pv(attune_bin))
    assert o16.dtype == np.float32 and o16.shape == o32.shape  # --out-dtype defaults to fp32
    assert np.abs(o16 - o32).max() < 3e-2
    assert not np.array_equal(o16, o32), "bf16 storage must round Q, K, V and O"
    # O was rounded to bf16 and widened exactly: every value is a bf16 value.
    assert not (o16.view(np.uint32) & 0xFFFF).any()
    # The kernel saw Q, K, V rounded to nearest even (not truncated): the output is the exact
    # attention of those values, rounded once.
    qr, kr, vr = (rounded(x, "bf16") for x in (q, k, v))
    assert_within_rounding(o16, reference(qr, kr, vr), "bf16", "bf16 run")


def test_weights_come_from_the_stored_values(attune_bin, tmp_path):
    (q, k, _), (qp, kp, vp) = unit_normal_inputs(tmp_path, seed=12, shape=(1, 2, 16, 8))
    for dtype, kv_dtype in (("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "bf16")):
        w = tmp_path / ("w_%s_%s.npy" % (dtype, kv_dtype))
        run(attune_bin, qp, kp, vp, tmp_path / "o.npy", "--dtype", dtype, "--kv-dtype", kv_dtype,
            "--weights", w, "--causal")
        got = np.load(w)
        assert got.dtype == np.float32 and got.shape == (1, 2, 16, 16)
        want = softmax_weights(rounded(q, dtype), rounded(k, kv_dtype), True)
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg="%s/%s" % (dtype, kv_dtype))
        # ... and not from the float32 files (the rounding is visible in the weights).
        assert np.abs(got - softmax_weights(q, k, True)).max() > 1e-4


def test_kv_dtype_rounds_only_k_and_v(attune_bin, tmp_path):
    # Decoding: one query row per head over 16-bit K/V; 4 query heads over 2 K/V heads.
    rng = np.random.default_rng(13)
    q, k, v = rand(rng, (1, 4, 1, 32)), rand(rng, (1, 2, 200, 32)), rand(rng, (1, 2, 200, 32))
    qp, kp, vp = (save(tmp_path, n + ".npy", x) for n, x in zip("qkv", (q, k, v)))
    for kv_dtype in ("bf16", "fp16"):
        got = run(attune_bin, qp, kp, vp, tmp_path / "o.npy", "--kv-dtype", kv_dtype)
        # Q and O stay float32: only the K/V rounding shows, and no output rounding.
        want = reference(q, rounded(k, kv_dtype), rounded(v, kv_dtype))
        assert np.abs(got - want).max() < ARITH_TOL, kv_dtype
        assert np.abs(got - reference(q, k, v)).max() > ARITH_TOL, kv_dtype


# --------------------------------------------------------------------------------------------
# 16-bit input files


def test_float16_files_are_read_as_they_are(attune_bin, tmp_path):
    rng = np.random.default_rng(14)
    q, k, v = (rand(rng, (2, 33, 16)).astype(np.float16) for _ in range(3))
    p16 = [save(tmp_path, n + "16.npy", x) for n, x in zip("qkv", (q, k, v))]
    p32 = [save(tmp_path, n + "32.npy", x.astype(np.float32)) for n, x in zip("qkv", (q, k, v))]
    want = reference(q, k, v)
    # Widened exactly under --dtype fp32: the float32 result of the float16 values.
    o = run(attune_bin, *p16, tmp_path / "o.npy")
    assert np.abs(o - want).max() < ARITH_TOL
    # Under --dtype fp16 the file is used as is: the same output as float32 files holding the
    # same values (which round to themselves), bit for bit, written as '<f2'.
    a = run(attune_bin, *p16, tmp_path / "a.npy", "--dtype", "fp16", "--out-dtype", "fp16")
    b = run(attune_bin, *p32, tmp_path / "b.npy", "--dtype", "fp16", "--out-dtype", "fp16")
    assert a.dtype == np.float16 and b.dtype == np.float16
    assert a.tobytes() == b.tobytes()
    assert_within_rounding(a.astype(np.float32), want, "fp16", "fp16 run")


def test_bfloat16_v2_files(attune_bin, tmp_path):
    rng = np.random.default_rng(15)
    shapes = ((1, 2, 9, 16), (1, 1, 40, 16), (1, 1, 40, 8))  # grouped-query, d_v != d_k
    bits = [bf16_bits(rand(rng, s)) for s in shapes]
    values = [bf16_values(b) for b in bits]
    pv2 = [tmp_path / (n + "_v2.npy") for n in "qkv"]
    for path, b, s in zip(pv2, bits, shapes):
        path.write_bytes(v2_image(b, s))
    p32 = [save(tmp_path, n + "32.npy", x) for n, x in zip("qkv", values)]
    want = reference(*values, causal=True)
    o = run(attune_bin, *pv2, tmp_path / "o.npy", "--causal")  # --dtype fp32: widened exactly
    assert np.abs(o - want).max() < ARITH_TOL
    # As bf16 storage the '<V2' bits are used as they are: bit-identical to float32 files of the
    # same values, and written back as '<V2' (ml_dtypes' form) with --out-dtype bf16.
    # Float32 PV, so one output rounding is the whole error.
    pin = float32_pv(attune_bin)
    a = run(attune_bin, *pv2, tmp_path / "a.npy", "--causal", "--dtype", "bf16", *pin)
    b = run(attune_bin, *p32, tmp_path / "b.npy", "--causal", "--dtype", "bf16", *pin)
    assert a.tobytes() == b.tobytes()
    assert_within_rounding(a, want, "bf16", "bf16 run")
    c = run(attune_bin, *pv2, tmp_path / "c.npy", "--causal", "--dtype", "bf16", "--out-dtype", "bf16", *pin)
    assert c.dtype == np.dtype("V2") and c.shape == a.shape
    assert np.array_equal(c.view("<u2"), a.view(np.uint32) >> 16)
    assert (tmp_path / "c.npy").read_bytes()[10:].startswith(b"{'descr': '<V2'")


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_out_dtype_rounds_the_output_once(attune_bin, tmp_path, dtype):
    _, (qp, kp, vp) = unit_normal_inputs(tmp_path, seed=16, shape=(1, 2, 20, 16))
    # Pinned: each run is a process of its own, and auto's bf16 order follows a probe of the CPU
    # (bf16_dot_speedup) that a loaded core can move across its threshold between processes.
    pin = float32_pv(attune_bin)
    wide = run(attune_bin, qp, kp, vp, tmp_path / "wide.npy", "--dtype", dtype, *pin)
    f2 = run(attune_bin, qp, kp, vp, tmp_path / "f2.npy", "--dtype", dtype, "--out-dtype", "fp16", *pin)
    assert f2.dtype == np.dtype("<f2")
    assert (tmp_path / "f2.npy").read_bytes()[10:].startswith(b"{'descr': '<f2'")
    # The output computed in `dtype`, converted to fp16 with one rounding to nearest even
    # (numpy's astype rounds the same way).
    assert f2.tobytes() == wide.astype(np.float16).tobytes()
    v2 = run(attune_bin, qp, kp, vp, tmp_path / "v2.npy", "--dtype", dtype, "--out-dtype", "bf16", *pin)
    assert v2.dtype == np.dtype("V2")
    assert np.array_equal(v2.view("<u2"), bf16_bits(wide))
    f4 = run(attune_bin, qp, kp, vp, tmp_path / "f4.npy", "--dtype", dtype, "--out-dtype", "fp32", *pin)
    assert f4.dtype == np.dtype("<f4") and f4.tobytes() == wide.tobytes()


def test_every_listed_triple_runs(attune_bin, tmp_path, kernel_isa_dtype):
    kernel, isa, dtype = kernel_isa_dtype
    rng = np.random.default_rng(17)
    q, k, v = rand(rng, (2, 4, 13, 16)), rand(rng, (2, 2, 21, 16)), rand(rng, (2, 2, 21, 5))
    paths = [save(tmp_path, n + ".npy", x) for n, x in zip("qkv", (q, k, v))]
    got = run(attune_bin, *paths, tmp_path / "o.npy", "--kernel", kernel, "--isa", isa,
              "--dtype", dtype, "--causal")
    assert np.array_equal(rounded(got, dtype), got), "the output must be %s values" % dtype
    qr, kr, vr = (rounded(x, dtype) for x in (q, k, v))
    want = reference(qr, kr, vr, causal=True)
    # The bf16 dot-product kernels round P to bf16 for the PV product: at most 2 u sum_j w_j |v_j|
    # more (the derivation is in reference/reference.cpp).
    extra = 0.0
    if dtype == "bf16" and ((isa == "avx512_bf16" and kernel in ("simd", "flash")) or kernel == "amx"):
        extra = 2 * HALF_ULP["bf16"] * reference(qr, kr, np.abs(vr), causal=True)
    assert_within_rounding(got, want, dtype, "%s %s %s" % kernel_isa_dtype, extra)


def test_ml_dtypes_reads_and_writes_the_same_files(attune_bin, tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(18)
    arrays = [rand(rng, (2, 7, 8)).astype(ml_dtypes.bfloat16) for _ in range(3)]
    paths = [save(tmp_path, n + ".npy", x) for n, x in zip("qkv", arrays)]
    out = run(attune_bin, *paths, tmp_path / "o.npy", "--dtype", "bf16", "--out-dtype", "bf16")
    got = out.view(ml_dtypes.bfloat16).astype(np.float32)
    want = reference(*(a.astype(np.float32) for a in arrays))
    assert_within_rounding(got, want, "bf16", "ml_dtypes round trip")


# --------------------------------------------------------------------------------------------
# Bad values and combinations: exit 2, one error line, no file written or touched

BAD_TYPE_ARGS = {
    "dtype_upper": ["--dtype", "FP16"],
    "dtype_numpy_name": ["--dtype", "float16"],
    "dtype_bfloat16": ["--dtype", "bfloat16"],
    "dtype_unknown": ["--dtype", "fp8"],
    "dtype_empty": ["--dtype="],
    "dtype_no_value": ["--dtype"],
    "dtype_twice": ["--dtype", "bf16", "--dtype", "bf16"],
    "kv_dtype_unknown": ["--kv-dtype", "int9"],
    "dtype_quantized": ["--dtype", "int8"],
    "kv_dtype_twice": ["--kv-dtype", "bf16", "--kv-dtype=fp16"],
    "out_dtype_numpy_name": ["--out-dtype", "float32"],
    "out_dtype_empty": ["--out-dtype="],
    "dtype_two_values": ["--dtype=bf16=fp16"],
}


@pytest.mark.parametrize("case", list(BAD_TYPE_ARGS), ids=list(BAD_TYPE_ARGS))
def test_bad_type_flags(attune_bin, tmp_path, case):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out) + BAD_TYPE_ARGS[case], 2, out)
    assert "dtype" in r.stderr


def test_bad_type_flag_wins_over_bad_file(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    (tmp_path / "q.npy").write_bytes(b"garbage")
    out = tmp_path / "out.npy"
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out) + ["--dtype", "fp8"], 2, out)


def test_unlisted_triple_is_a_usage_error(attune_bin, tmp_path):
    triples = listed_triples(attune_bin)
    pairs = list(dict.fromkeys(t[:2] for t in triples))
    missing = [(k, i, d) for k, i in pairs for d in ("fp32", "bf16", "fp16") if (k, i, d) not in triples]
    if not missing:
        pytest.skip("every runnable (kernel, isa) pair takes every dtype here")
    kernel, isa, dtype = missing[0]
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    check_refused(attune_bin, tmp_path,
                  _run_args(tmp_path, out) + ["--kernel", kernel, "--isa", isa, "--dtype", dtype], 2, out)


@pytest.mark.parametrize("flag", ["--dtype", "--kv-dtype", "--out-dtype"])
def test_type_flags_only_where_they_apply(attune_bin, flag):
    r = attune(attune_bin, "kernels", flag, "bf16")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
