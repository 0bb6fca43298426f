# The `attune` command-line contract: exit codes (0 success, 1 data/input error, 2 usage
# error), one-line "error: ..." messages, no partial output on failure, and numerical agreement
# of `attune run` with a float64 numpy reference.
import io
import os
import platform
import re
import struct
import subprocess
import time
import zlib

import numpy as np
import pytest

TOL = 1e-4
# Kernels that take only problems stored entirely in bf16 (their pairs list no other dtype).
BF16_ONLY_KERNELS = {"amx"}
KNOWN_DTYPES = ["fp32", "bf16", "fp16"]


def compiled_isas(binary):
    """The ISAs this build has (`attune info`), best first: what `kernels` may list."""
    r = subprocess.run([binary, "info"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("isa compiled:"))
    return line.split(":", 1)[1].split()
SUBCOMMANDS = ["kernels", "run", "verify", "info"]


# --------------------------------------------------------------------------------------------
# Helpers


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "ATTUNE_ISA"}
    env["ATTUNE_TUNING"] = ""  # no run-time tuning file (not even the user's own) unless a test sets one
    env.update(extra)
    return env


def attune(binary, *args, env=None, timeout=60):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                          errors="replace", env=env if env is not None else clean_env(),
                          timeout=timeout)


def assert_ok(r):
    assert r.returncode == 0, "exit %d, stderr: %r" % (r.returncode, r.stderr)


def assert_error(r, codes):
    """A clean failure: an allowed exit code (never a signal) and exactly one 'error:' line."""
    codes = (codes,) if isinstance(codes, int) else tuple(codes)
    assert r.returncode >= 0, "killed by signal %d; stderr: %r" % (-r.returncode, r.stderr)
    assert r.returncode in codes, "exit %d, expected %s; stderr: %r" % (r.returncode, codes, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, "expected one stderr line, got %r" % r.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert len(lines[0]) > len("error: ") + 3
    assert "Traceback" not in r.stderr and "terminate called" not in r.stderr


def reference(q, k, v, causal=False, scale=None):
    """Attention in float64: softmax(scale Q K^T + mask) V with max subtraction, grouped-query
    heads, causal alignment j <= i + seq_kv - seq_q, and zero rows where no key is visible."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    three_d = q.ndim == 3
    if three_d:
        q, k, v = q[None], k[None], v[None]
    _, hq, sq, dk = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    k = np.repeat(k, hq // hkv, axis=1)
    v = np.repeat(v, hq // hkv, axis=1)
    if scale is None:
        scale = 1.0 / np.sqrt(dk)
    s = scale * np.einsum("bhqd,bhkd->bhqk", q, k)
    visible = np.ones((sq, skv), dtype=bool)
    if causal:
        visible = np.arange(skv)[None, :] <= np.arange(sq)[:, None] + skv - sq
    s = np.where(visible, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)  # masked entries give exp(-inf) = 0
    denom = p.sum(axis=-1, keepdims=True)
    out = np.einsum("bhqk,bhkd->bhqd", p, v) / np.where(denom > 0, denom, 1.0)
    return out[0] if three_d else out


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def npy_image(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def raw_npy(header, payload=b"", version=1, magic=b"\x93NUMPY"):
    """A hand-made .npy image: header text padded like numpy's (total a multiple of 64)."""
    h = header.encode("latin-1")
    prefix_len = len(magic) + 2 + (2 if version == 1 else 4)
    h += b" " * ((64 - (prefix_len + len(h) + 1) % 64) % 64) + b"\n"
    length = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return magic + bytes([version, 0]) + length + h + payload


def f4_header(shape, descr="<f4", fortran="False"):
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


def write(path, content):
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=False)
    else:
        path.write_bytes(content)
    return path


def load_output(path):
    out = np.load(path, allow_pickle=False)
    assert out.dtype == np.dtype("<f4")
    with open(path, "rb") as f:
        assert f.read(6) == b"\x93NUMPY"
    return out


def cpu_flags():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return flags


def absent_isa():
    """An ISA name attune knows that this CPU cannot run: neon on x86, avx2 on Arm."""
    flags = cpu_flags()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686") or "sse2" in flags:
        return "neon"
    for isa, flag in (("avx2", "avx2"), ("avx512", "avx512f"), ("sse4_2", "sse4_2")):
        if flag not in flags:
            return isa
    pytest.skip("every ISA attune knows looks supported here")


def listed_triples(binary):
    """The (kernel, isa, dtype) lines of `attune kernels`."""
    r = attune(binary, "kernels")
    assert_ok(r)
    return [tuple(line.split()) for line in r.stdout.splitlines()]


def listed_pairs(binary):
    """The (kernel, isa) pairs of `attune kernels`, in order of first appearance."""
    return list(dict.fromkeys(t[:2] for t in listed_triples(binary)))


# --------------------------------------------------------------------------------------------
# 1. attune kernels: every listed pair runs verbatim and matches the reference


def test_kernels_lists_triples(attune_bin):
    r = attune(attune_bin, "kernels")
    assert_ok(r)
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines
    triples = [tuple(line.split()) for line in lines]
    compiled = compiled_isas(attune_bin)
    for line, triple in zip(lines, triples):
        assert len(triple) == 3 and line == "%s %s %s" % triple, repr(line)
        assert triple[1] in compiled
        assert triple[2] in KNOWN_DTYPES
    assert len(set(triples)) == len(triples)
    # Grouped by (kernel, isa), dtypes in the fixed order fp32, bf16, fp16.
    pairs = list(dict.fromkeys(t[:2] for t in triples))
    assert [t[:2] for t in triples] == [p for p in pairs for t in triples if t[:2] == p]
    for pair in pairs:
        dtypes = [t[2] for t in triples if t[:2] == pair]
        assert dtypes == [d for d in KNOWN_DTYPES if d in dtypes]
    # Every pair takes float32 but the bf16-only kernels' (which take bf16 and nothing else);
    # the default kernel runs both 16-bit types on some ISA.
    for k, i in pairs:
        if k in BF16_ONLY_KERNELS:
            assert [t[2] for t in triples if t[:2] == (k, i)] == ["bf16"], (k, i)
        else:
            assert (k, i, "fp32") in triples, (k, i)
    for dtype in ("bf16", "fp16"):
        assert any(t[0] == "flash" and t[2] == dtype for t in triples), dtype
    # --long keeps the same triples, in the same order, and adds a description.
    long = attune(attune_bin, "kernels", "--long")
    assert_ok(long)
    long_lines = long.stdout.splitlines()
    assert [tuple(l.split()[:3]) for l in long_lines] == triples
    assert all(len(l.split()) > 3 for l in long_lines)


KERNEL_PROBLEMS = [
    # (q shape, k shape, v shape, causal)
    ((1, 2, 7, 8), (1, 2, 9, 8), (1, 2, 9, 8), False),
    ((2, 4, 13, 16), (2, 2, 13, 16), (2, 2, 13, 5), True),
    ((3, 10, 7), (1, 6, 7), (1, 6, 3), True),  # 3-D, heads 3:1, seq_q > seq_kv
]


def test_every_listed_pair_runs(attune_bin, tmp_path, kernel_isa):
    assert len(kernel_isa) == 2, kernel_isa
    kernel, isa = kernel_isa
    if kernel in BF16_ONLY_KERNELS:
        pytest.skip("%s takes bf16 only: its triples run in test_dtype.py" % kernel)
    rng = np.random.default_rng(1)
    for n, (qs, ks, vs, causal) in enumerate(KERNEL_PROBLEMS):
        q, k, v = rand(rng, qs), rand(rng, ks), rand(rng, vs)
        paths = [write(tmp_path / ("%s%d.npy" % (name, n)), x) for name, x in zip("qkv", (q, k, v))]
        out = tmp_path / ("o%d.npy" % n)
        args = ["run", "--q", paths[0], "--k", paths[1], "--v", paths[2], "--out", out,
                "--kernel", kernel, "--isa", isa]
        r = attune(attune_bin, *args, *(["--causal"] if causal else []))
        assert_ok(r)
        assert r.stdout == "" and r.stderr == ""
        got = load_output(out)
        want = reference(q, k, v, causal)
        assert got.shape == want.shape
        err = np.abs(got - want).max()
        assert err < TOL, "%s %s on %s: max abs error %g" % (kernel, isa, qs, err)


# --------------------------------------------------------------------------------------------
# 2. attune run on assorted shapes against the float64 reference

RUN_CASES = {
    # id: (q shape, k shape, v shape, causal, extra args, scale used by the reference)
    "3d": ((2, 5, 8), (2, 7, 8), (2, 7, 8), False, [], None),
    "3d_causal_gqa": ((4, 6, 8), (2, 6, 8), (2, 6, 8), True, [], None),
    "4d": ((2, 3, 9, 16), (2, 3, 9, 16), (2, 3, 9, 16), False, [], None),
    "4d_causal_square": ((2, 2, 17, 8), (2, 2, 17, 8), (2, 2, 17, 8), True, [], None),
    "gqa_4_to_1": ((1, 8, 6, 12), (1, 2, 11, 12), (1, 2, 11, 12), False, [], None),
    "mqa": ((2, 4, 5, 8), (2, 1, 5, 8), (2, 1, 5, 8), True, [], None),
    "dv_ne_dk": ((1, 2, 9, 7), (1, 2, 13, 7), (1, 2, 13, 5), False, [], None),
    "dv_gt_dk_causal": ((1, 2, 9, 3), (1, 2, 13, 3), (1, 2, 13, 19), True, [], None),
    "seq_q_lt_seq_kv_causal": ((1, 2, 3, 8), (1, 2, 17, 8), (1, 2, 17, 8), True, [], None),
    # rows 0..5 see no key at all and must be exactly zero
    "seq_q_gt_seq_kv_causal": ((1, 2, 10, 8), (1, 2, 4, 8), (1, 2, 4, 8), True, [], None),
    "seq_q_gt_seq_kv": ((1, 1, 10, 8), (1, 1, 4, 8), (1, 1, 4, 8), False, [], None),
    "decode_row": ((1, 4, 1, 32), (1, 4, 33, 32), (1, 4, 33, 32), True, [], None),
    "single_key": ((1, 1, 3, 4), (1, 1, 1, 4), (1, 1, 1, 4), False, [], None),
    "scale": ((1, 2, 7, 8), (1, 2, 7, 8), (1, 2, 7, 8), False, ["--scale", "0.37"], 0.37),
    "scale_eq_negative": ((1, 2, 7, 8), (1, 2, 7, 8), (1, 2, 7, 8), True, ["--scale=-0.5"], -0.5),
    "scale_zero": ((1, 1, 4, 8), (1, 1, 6, 8), (1, 1, 6, 8), False, ["--scale", "0"], 0.0),
    "threads_2": ((2, 4, 33, 16), (2, 2, 47, 16), (2, 2, 47, 16), True, ["--threads", "2"], None),
    "kernel_auto": ((1, 2, 5, 8), (1, 2, 5, 8), (1, 2, 5, 8), False, ["--kernel", "auto"], None),
    "larger": ((1, 2, 65, 64), (1, 1, 129, 64), (1, 1, 129, 64), True, ["--threads", "2"], None),
}


@pytest.mark.parametrize("case", list(RUN_CASES), ids=list(RUN_CASES))
def test_run_matches_reference(attune_bin, tmp_path, case):
    qs, ks, vs, causal, extra, scale = RUN_CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    q, k, v = rand(rng, qs), rand(rng, ks), rand(rng, vs)
    for name, x in zip("qkv", (q, k, v)):
        write(tmp_path / (name + ".npy"), x)
    out = tmp_path / "out.npy"
    args = ["run", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy", "--v", tmp_path / "v.npy",
            "--out", out, *extra]
    if causal:
        args.append("--causal")
    r = attune(attune_bin, *args)
    assert_ok(r)
    assert r.stdout == "" and r.stderr == ""
    got = load_output(out)
    want = reference(q, k, v, causal, scale)
    expected_shape = qs[:-1] + (vs[-1],)
    assert got.shape == expected_shape == want.shape
    err = np.abs(got - want).max()
    assert err < TOL, "max abs error %g" % err
    if causal:
        sq, skv = qs[-2], ks[-2]
        blind = max(0, sq - skv)  # rows i with i + skv - sq < 0
        assert not got[..., :blind, :].any(), "rows that see no key must be zero"
    # Nothing but the inputs and the output is left in the directory (no temporaries).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npy", "out.npy", "q.npy", "v.npy"]


def test_run_overwrites_existing_output(attune_bin, tmp_path):
    rng = np.random.default_rng(5)
    q, k, v = rand(rng, (1, 2, 4, 8)), rand(rng, (1, 2, 6, 8)), rand(rng, (1, 2, 6, 8))
    paths = [write(tmp_path / (n + ".npy"), x) for n, x in zip("qkv", (q, k, v))]
    out = tmp_path / "out.npy"
    out.write_bytes(b"old contents")
    assert_ok(attune(attune_bin, "run", "--q", paths[0], "--k", paths[1], "--v", paths[2], "--out", out))
    assert np.abs(load_output(out) - reference(q, k, v)).max() < TOL


def test_run_reads_format_versions_2_and_3(attune_bin, tmp_path):
    # numpy writes format 2.0/3.0 for huge headers; attune accepts them as well.
    rng = np.random.default_rng(6)
    q = rand(rng, (1, 1, 3, 4))
    header = f4_header((1, 1, 3, 4))
    for version in (2, 3):
        path = write(tmp_path / ("q%d.npy" % version), raw_npy(header, q.tobytes(), version=version))
        out = tmp_path / ("o%d.npy" % version)
        assert_ok(attune(attune_bin, "run", "--q", path, "--k", path, "--v", path, "--out", out))
        assert np.abs(load_output(out) - reference(q, q, q)).max() < TOL


def test_nan_and_inf_inputs_do_not_crash(attune_bin, tmp_path):
    rng = np.random.default_rng(7)
    q, k, v = rand(rng, (1, 2, 5, 8)), rand(rng, (1, 2, 5, 8)), rand(rng, (1, 2, 5, 8))
    q[0, 0, 1, 3] = np.nan
    k[0, 1, 2, 0] = np.inf
    v[0, 0, 4, 4] = -np.inf
    paths = [write(tmp_path / (n + ".npy"), x) for n, x in zip("qkv", (q, k, v))]
    out = tmp_path / "out.npy"
    for causal in ([], ["--causal"]):
        r = attune(attune_bin, "run", "--q", paths[0], "--k", paths[1], "--v", paths[2], "--out", out,
                   *causal)
        assert r.returncode >= 0, "killed by signal %d" % -r.returncode
        if r.returncode == 0:
            assert load_output(out).shape == (1, 2, 5, 8)
        else:
            assert_error(r, 1)


# --------------------------------------------------------------------------------------------
# 3. Bad inputs: a one-line error, exit 1 or 2, and --out neither created nor touched

GOOD_Q, GOOD_K, GOOD_V = (1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)
_GOOD = np.arange(24, dtype=np.float32).reshape(GOOD_Q) / 24
_GOOD_IMAGE = npy_image(_GOOD)
_PAYLOAD = _GOOD.tobytes()

# id: (which input, its content: bytes or an array)
BAD_FILES = {
    "truncated_data": ("q", _GOOD_IMAGE[:-7]),
    "truncated_header": ("q", _GOOD_IMAGE[:30]),
    "magic_only": ("q", b"\x93NUMPY"),
    "empty_file": ("q", b""),
    "bad_magic": ("q", b"\x93NUMPZ" + _GOOD_IMAGE[6:]),
    "text_file": ("k", b"this is not a numpy file at all\n" * 4),
    "header_len_past_eof": ("q", _GOOD_IMAGE[:8] + struct.pack("<H", 60000) + _GOOD_IMAGE[10:]),
    "header_len_past_eof_v2": ("v", raw_npy(f4_header(GOOD_V), _PAYLOAD, version=2)[:8]
                               + struct.pack("<I", 0xFFFFFFF0)
                               + raw_npy(f4_header(GOOD_V), _PAYLOAD, version=2)[12:]),
    "unsupported_version": ("q", raw_npy(f4_header(GOOD_Q), _PAYLOAD, version=9)),
    "header_no_dict": ("q", raw_npy("hello, world", _PAYLOAD)),
    "header_no_shape": ("q", raw_npy("{'descr': '<f4', 'fortran_order': False, }", _PAYLOAD)),
    "header_no_descr": ("q", raw_npy("{'fortran_order': False, 'shape': (1, 2, 3, 4), }", _PAYLOAD)),
    "header_shape_list": ("q", raw_npy(f4_header("[1, 2, 3, 4]"), _PAYLOAD)),
    "header_shape_garbage": ("q", raw_npy(f4_header("(1, two, 3, 4)"), _PAYLOAD)),
    "header_shape_unterminated": ("q", raw_npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3, 4 }", _PAYLOAD)),
    "header_fortran_garbage": ("q", raw_npy(f4_header(GOOD_Q, fortran="Maybe"), _PAYLOAD)),
    # control characters from the file must not break the one-line error
    "header_newline_in_shape": ("q", raw_npy(f4_header("(1,\n2, 3, 4)"), _PAYLOAD)),
    "header_control_bytes": ("q", raw_npy(f4_header("(1, \x01\x1b[2J\r, 3, 4)"), _PAYLOAD)),
    "float64": ("q", _GOOD.astype(np.float64)),
    "int32": ("k", np.ones(GOOD_K, dtype=np.int32)),
    "void_V1": ("v", raw_npy(f4_header(GOOD_V, descr="|V1"), b"\0" * 40)),
    "void_V4": ("k", raw_npy(f4_header(GOOD_K, descr="<V4"), b"\0" * 160)),
    "plain_void_V2": ("k", raw_npy(f4_header(GOOD_K, descr="|V2"), b"\0" * 80)),
    "uint16": ("k", np.ones(GOOD_K, dtype=np.uint16)),
    "big_endian_f4": ("q", _GOOD.astype(">f4")),
    "big_endian_f2": ("q", _GOOD.astype(">f2")),
    "truncated_f2": ("q", npy_image(_GOOD.astype(np.float16))[:-1]),
    "f4_payload_under_f2_header": ("q", raw_npy(f4_header(GOOD_Q, descr="<f2"), _PAYLOAD)),
    "fortran_order": ("q", np.asfortranarray(_GOOD)),
    "ndim_1": ("q", _GOOD.reshape(-1)),
    "ndim_2": ("q", _GOOD.reshape(6, 4)),
    "ndim_5": ("k", np.zeros((1, 1, 2, 5, 4), dtype=np.float32)),
    "scalar_0d": ("q", np.array(1.0, dtype=np.float32)),
    "negative_dim": ("q", raw_npy(f4_header("(1, -2, 3, 4)"), _PAYLOAD)),
    "negative_last_dim": ("k", raw_npy(f4_header("(1, 2, 5, -4)"), _PAYLOAD)),
    "trailing_bytes": ("q", _GOOD_IMAGE + b"\0" * 8),
    "batch_mismatch": ("q", np.zeros((2, 2, 3, 4), dtype=np.float32)),
    "dk_mismatch": ("k", np.zeros((1, 2, 5, 6), dtype=np.float32)),
    "kv_seq_mismatch": ("v", np.zeros((1, 2, 6, 4), dtype=np.float32)),
    "kv_heads_mismatch": ("v", np.zeros((1, 1, 5, 4), dtype=np.float32)),
    "kv_batch_mismatch": ("v", np.zeros((2, 2, 5, 4), dtype=np.float32)),
    "ndim_mismatch": ("k", np.zeros((2, 5, 4), dtype=np.float32)),
    "heads_not_divisible": ("q", np.zeros((1, 3, 3, 4), dtype=np.float32)),
    "heads_kv_gt_heads_q": ("q", np.zeros((1, 1, 3, 4), dtype=np.float32)),
}

# Headers claiming absurd element counts with a tiny payload: refused from the header alone.
HUGE_SHAPES = {
    "2^62_elements": "(1, 1, 2147483648, 2147483648)",
    "2^62_one_dim": "(4611686018427387904, 1, 1, 1)",
    "overflow_product": "(65536, 65536, 65536, 65536)",
    "int64_max_dim": "(1, 1, 9223372036854775807, 4)",
    "beyond_int64_dim": "(1, 1, 99999999999999999999999, 4)",
}

USAGE_ERRORS = {
    # id: extra args appended to a valid run command (or replacing it when given as a tuple)
    "unknown_kernel": ["--kernel", "nosuchkernel"],
    "unknown_isa": ["--isa", "avx9000"],
    "isa_wrong_case": ["--isa", "SCALAR"],
    "unknown_flag": ["--frobnicate"],
    "unknown_flag_with_value": ["--frobnicate=3"],
    "threads_0": ["--threads", "0"],
    "threads_negative": ["--threads", "-1"],
    "threads_abc": ["--threads", "abc"],
    "threads_fraction": ["--threads", "1.5"],
    "threads_empty": ["--threads="],
    "threads_overflow": ["--threads", "99999999999999999999999"],
    "threads_no_value": ["--threads"],
    "scale_abc": ["--scale", "abc"],
    "scale_nan": ["--scale", "nan"],
    "scale_inf": ["--scale", "inf"],
    "scale_empty": ["--scale="],
    "scale_trailing_junk": ["--scale", "0.5x"],
    "block_q_0": ["--block-q", "0"],
    "causal_with_value": ["--causal=yes"],
    "flag_twice": ["--kernel", "auto", "--kernel", "auto"],
    "positional": ["extra.npy"],
}


def _run_args(tmp_path, out, drop=()):
    args = ["run"]
    for flag in ("q", "k", "v"):
        if flag not in drop:
            args += ["--" + flag, tmp_path / (flag + ".npy")]
    if "out" not in drop:
        args += ["--out", out]
    return args


def _write_good_inputs(tmp_path):
    rng = np.random.default_rng(3)
    for name, shape in zip("qkv", (GOOD_Q, GOOD_K, GOOD_V)):
        write(tmp_path / (name + ".npy"), rand(rng, shape))


def check_refused(binary, tmp_path, args, codes, out, env=None):
    """Runs a failing command twice: with no --out file (it must not appear) and with one
    (it must stay byte-identical). No temporary may be left next to it either."""
    before = sorted(p.name for p in tmp_path.iterdir())
    r = attune(binary, *args, env=env)
    assert_error(r, codes)
    assert r.stdout == ""
    assert not out.exists(), "--out was created by a failing run"
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    sentinel = b"\x93NUMPY precious bytes that must survive\n" + bytes(range(256))
    if out.parent.is_dir():
        out.write_bytes(sentinel)
        r2 = attune(binary, *args, env=env)
        assert_error(r2, codes)
        assert r2.returncode == r.returncode and r2.stderr == r.stderr
        assert out.read_bytes() == sentinel, "--out was modified by a failing run"
        out.unlink()
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    return r


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_input_file(attune_bin, tmp_path, case):
    which, content = BAD_FILES[case]
    _write_good_inputs(tmp_path)
    write(tmp_path / (which + ".npy"), content)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out)
    assert "out of memory" not in r.stderr


@pytest.mark.parametrize("case", list(HUGE_SHAPES), ids=list(HUGE_SHAPES))
def test_huge_shape_refused_quickly(attune_bin, tmp_path, case):
    _write_good_inputs(tmp_path)
    write(tmp_path / "q.npy", raw_npy(f4_header(HUGE_SHAPES[case]), _PAYLOAD))
    out = tmp_path / "out.npy"
    start = time.monotonic()
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out)
    assert time.monotonic() - start < 5.0, "refusing a huge header took too long"
    assert "out of memory" not in r.stderr, "the header's size must be checked before allocating"


def test_huge_shape_in_k_and_v(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    for which in ("k", "v"):
        write(tmp_path / (which + ".npy"), raw_npy(f4_header("(1, 2, 2147483648, 2147483648)"), b"\0" * 64))
        out = tmp_path / "out.npy"
        r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out)
        assert "out of memory" not in r.stderr
        _write_good_inputs(tmp_path)


def test_seq_kv_zero(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    write(tmp_path / "k.npy", np.zeros((1, 2, 0, 4), dtype=np.float32))
    write(tmp_path / "v.npy", np.zeros((1, 2, 0, 4), dtype=np.float32))
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out)
    assert "seq_kv" in r.stderr


@pytest.mark.parametrize("shapes", [
    ((1, 2, 0, 4), GOOD_K, GOOD_V),           # seq_q = 0
    ((1, 2, 3, 0), (1, 2, 5, 0), GOOD_V),     # d_k = 0
    (GOOD_Q, GOOD_K, (1, 2, 5, 0)),           # d_v = 0
    ((0, 2, 3, 4), (0, 2, 5, 4), (0, 2, 5, 4)),  # batch = 0
], ids=["seq_q", "d_k", "d_v", "batch"])
def test_zero_sizes_do_not_crash(attune_bin, tmp_path, shapes):
    for name, shape in zip("qkv", shapes):
        write(tmp_path / (name + ".npy"), np.zeros(shape, dtype=np.float32))
    out = tmp_path / "out.npy"
    r = attune(attune_bin, *_run_args(tmp_path, out))
    assert r.returncode >= 0, "killed by signal %d" % -r.returncode
    if r.returncode == 0:
        assert load_output(out).size == 0
    else:
        assert_error(r, 1)
        assert not out.exists()


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_missing_input_file(attune_bin, tmp_path, which):
    _write_good_inputs(tmp_path)
    (tmp_path / (which + ".npy")).unlink()
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out)
    assert which + ".npy" in r.stderr


def test_input_is_a_directory(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    (tmp_path / "k.npy").unlink()
    (tmp_path / "k.npy").mkdir()
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out)
    assert "out of memory" not in r.stderr


def test_output_directory_missing(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    out = tmp_path / "no" / "such" / "dir" / "out.npy"
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out)
    assert not (tmp_path / "no").exists()


def test_output_is_a_directory(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    out.mkdir()
    (out / "keep").write_bytes(b"x")
    r = attune(attune_bin, *_run_args(tmp_path, out))
    assert_error(r, 1)
    assert out.is_dir() and (out / "keep").read_bytes() == b"x"


def test_output_directory_not_writable(attune_bin, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    _write_good_inputs(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "out.npy"
    out.write_bytes(b"keep me")
    locked.chmod(0o555)
    try:
        r = attune(attune_bin, *_run_args(tmp_path, out))
        assert_error(r, 1)
        assert out.read_bytes() == b"keep me"
        assert sorted(p.name for p in locked.iterdir()) == ["out.npy"]
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("case", list(USAGE_ERRORS), ids=list(USAGE_ERRORS))
def test_usage_error(attune_bin, tmp_path, case):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out) + USAGE_ERRORS[case], 2, out)


@pytest.mark.parametrize("drop", ["q", "k", "v", "out"])
def test_missing_required_option(attune_bin, tmp_path, drop):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out, drop=(drop,)), 2, out)
    assert "--" + drop in r.stderr


def test_option_without_value(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out, drop=("q",)) + ["--q"], 2, out)
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out, drop=("q",)) + ["--q="], 2, out)


def test_usage_error_wins_over_bad_file(attune_bin, tmp_path):
    # The command line is checked before any file is read.
    _write_good_inputs(tmp_path)
    write(tmp_path / "q.npy", b"garbage")
    out = tmp_path / "out.npy"
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out) + ["--threads", "0"], 2, out)


def test_isa_the_cpu_lacks(attune_bin, tmp_path):
    isa = absent_isa()
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out) + ["--isa", isa], 2, out)
    assert isa in r.stderr
    assert_error(attune(attune_bin, "verify", "--quiet", "--isa", isa), 2)


def test_kernel_isa_pair_not_listed(attune_bin, tmp_path):
    pairs = listed_pairs(attune_bin)
    kernels = sorted({k for k, _ in pairs})
    isas = sorted({i for _, i in pairs})
    missing = [(k, i) for k in kernels for i in isas if (k, i) not in pairs]
    if not missing:
        pytest.skip("every kernel has a build for every runnable ISA here")
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    kernel, isa = missing[0]
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out) + ["--kernel", kernel, "--isa", isa], 2, out)


# --------------------------------------------------------------------------------------------
# 4. ATTUNE_ISA caps the ISAs


def test_attune_isa_scalar(attune_bin, tmp_path):
    env = clean_env(ATTUNE_ISA="scalar")
    r = attune(attune_bin, "info", env=env)
    assert_ok(r)
    lines = r.stdout.splitlines()
    assert "isa default:    scalar" in lines
    assert "isa runnable:   scalar" in lines
    k = attune(attune_bin, "kernels", env=env)
    assert_ok(k)
    assert k.stdout and all(line.split()[1] == "scalar" for line in k.stdout.splitlines())
    # A run under the cap still matches the reference.
    rng = np.random.default_rng(9)
    q, kk, v = rand(rng, GOOD_Q), rand(rng, GOOD_K), rand(rng, GOOD_V)
    for name, x in zip("qkv", (q, kk, v)):
        write(tmp_path / (name + ".npy"), x)
    out = tmp_path / "out.npy"
    assert_ok(attune(attune_bin, *_run_args(tmp_path, out), "--causal", env=env))
    assert np.abs(load_output(out) - reference(q, kk, v, True)).max() < TOL


def test_attune_isa_empty_means_unset(attune_bin):
    plain = attune(attune_bin, "kernels")
    empty = attune(attune_bin, "kernels", env=clean_env(ATTUNE_ISA=""))
    assert_ok(empty)
    assert empty.stdout == plain.stdout


@pytest.mark.parametrize("command", [["kernels"], ["info"], ["verify", "--quiet"]])
def test_attune_isa_bogus(attune_bin, command):
    r = attune(attune_bin, *command, env=clean_env(ATTUNE_ISA="bogus"))
    assert_error(r, (1, 2))
    assert "ATTUNE_ISA" in r.stderr


def test_attune_isa_bogus_run(attune_bin, tmp_path):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), (1, 2), out,
                  env=clean_env(ATTUNE_ISA="bogus"))


def test_attune_isa_the_cpu_lacks(attune_bin):
    r = attune(attune_bin, "kernels", env=clean_env(ATTUNE_ISA=absent_isa()))
    assert_error(r, (1, 2))
    assert "ATTUNE_ISA" in r.stderr


# --------------------------------------------------------------------------------------------
# 5. verify, info, help, dispatch


def test_verify_quiet(attune_bin):
    # The whole grid (quantized K/V included): minutes on a loaded 2-core VM; the timeout only
    # guards against a hang.
    r = attune(attune_bin, "verify", "--quiet", timeout=900)
    assert_ok(r)
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["kernel", "isa", "storage"]
    assert lines[-1].startswith("OK")
    rows = [tuple(line.split()[:3]) for line in lines[1:-1]]
    pairs = list(dict.fromkeys(row[:2] for row in rows))
    assert pairs == listed_pairs(attune_bin)
    # Every pair is checked in every storage of the grid; the kernels that implement the
    # variants also in the variants' matrix (+var rows: fp32, bf16 and fp32 Q/O on bf16 K/V).
    # Quantized K/V: each type under fp32 Q/O, plain and in the variants.
    quantized = ("int8", "int8_kc", "fp8_e4m3", "fp8_e5m2", "int4")
    storages = {"fp32", "bf16", "fp16", "fp32/kvbf16", "fp32/kvfp16"} | {"fp32/kv%s" % t for t in quantized}
    variant_storages = {"fp32+var", "bf16+var", "fp32/kvbf16+var"} | {"fp32/kv%s+var" % t for t in quantized}
    # Paged K/V (+paged rows): every K/V type, on the kernels that read a pool of blocks.
    paged_storages = {"fp32+paged", "bf16+paged", "fp16+paged", "fp32/kvfp16+paged", "bf16/kvfp32+paged"} | {
        "fp32/kv%s+paged" % t for t in quantized}
    for pair in pairs:
        expected = {"bf16"} if pair[0] in BF16_ONLY_KERNELS else storages
        checked = {row[2] for row in rows if row[:2] == pair}
        paged = {s for s in checked if s.endswith("+paged")}
        assert paged == (paged_storages if pair[0] in ("simd", "flash") else set()), pair
        checked -= paged
        assert {s for s in checked if not s.endswith("+var")} == expected, pair
        variants = {s for s in checked if s.endswith("+var")}
        assert variants in (set(), variant_storages), pair
        if pair[0] in ("naive", "simd", "flash"):
            assert variants == variant_storages, pair
    for line in lines[1:-1]:
        assert int(line.split()[3]) > 0  # cases
        assert int(line.split()[4]) == 0  # failed cases


def test_verify_one_pair(attune_bin):
    kernel, isa = listed_pairs(attune_bin)[0]
    r = attune(attune_bin, "verify", "--quiet", "--kernel", kernel, "--isa", isa, timeout=900)
    assert_ok(r)
    lines = r.stdout.splitlines()
    assert {tuple(l.split()[:2]) for l in lines[1:-1]} == {(kernel, isa)}
    assert lines[-1].startswith("OK")


@pytest.mark.parametrize("args", [["--kernel", "nosuch"], ["--isa", "nosuch"], ["--threads", "0"],
                                  ["--bogus"], ["stray"]])
def test_verify_usage_errors(attune_bin, args):
    assert_error(attune(attune_bin, "verify", "--quiet", *args), 2)


def test_info(attune_bin):
    r = attune(attune_bin, "info")
    assert_ok(r)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("attune ") and lines[0].split()[1][0].isdigit()
    keys = {line.split(":", 1)[0].strip() for line in lines if ":" in line}
    for key in ("cpu", "cores", "isa detected", "isa compiled", "isa runnable", "isa default",
                "auto kernel", "git revision", "compiler"):
        assert key in keys, key
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines if ":" in line}
    runnable = fields["isa runnable"].split()
    assert runnable and set(runnable) <= set(fields["isa compiled"].split())
    # The default is the best vector ISA: amx serves only its own kernel.
    assert fields["isa default"] == [i for i in runnable if i != "amx"][0]
    assert fields["auto bf16"].split()[0] in ("amx", "flash")
    assert set(runnable) <= set(fields["isa compiled"].split())
    assert "scalar" in runnable
    # Detected: what the CPU reports of the compiled ISAs (no ATTUNE_ISA cap), in their order.
    compiled = fields["isa compiled"].split()
    detected = fields["isa detected"].split()
    assert set(runnable) <= set(detected)
    assert detected == [i for i in compiled if i in detected]
    # --version agrees with info's version line.
    v = attune(attune_bin, "--version")
    assert_ok(v)
    assert v.stdout.split()[:2] == lines[0].split()[:2]


def test_unknown_isa_names_the_compiled_ones(attune_bin):
    """The list comes from the build (compiled_isas), so a new ISA appears without a CLI edit."""
    compiled = [line.split(":", 1)[1].split() for line in attune(attune_bin, "info").stdout.splitlines()
                if line.startswith("isa compiled:")][0]
    r = attune(attune_bin, "run", "--isa", "avx9000")
    assert_error(r, 2)
    assert "unknown isa 'avx9000' (compiled: " + ", ".join(compiled) + ")" in r.stderr


@pytest.mark.parametrize("command", SUBCOMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_subcommand_help(attune_bin, command, flag):
    r = attune(attune_bin, command, flag)
    assert_ok(r)
    assert r.stdout.startswith("usage: attune " + command)
    assert r.stderr == ""


def test_help_wins_over_bad_options(attune_bin):
    r = attune(attune_bin, "run", "--threads", "0", "--bogus", "--help")
    assert_ok(r)
    assert r.stdout.startswith("usage: attune run")


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_top_level_help(attune_bin, flag):
    r = attune(attune_bin, flag)
    assert_ok(r)
    assert r.stdout.startswith("usage: attune")
    for command in SUBCOMMANDS:
        assert "\n  %s " % command in r.stdout


def test_no_arguments(attune_bin):
    r = attune(attune_bin)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("usage: attune")


@pytest.mark.parametrize("name", ["frobnicate", "--frobnicate", "RUN", "multi\nline"])
def test_unknown_command(attune_bin, name):
    r = attune(attune_bin, name)
    assert_error(r, 2)
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["kernels", "--bogus"], ["kernels", "extra"], ["kernels", "--long=1"],
                                  ["info", "--bogus"], ["info", "extra"]])
def test_subcommand_usage_errors(attune_bin, args):
    r = attune(attune_bin, *args)
    assert_error(r, 2)
    assert r.stdout == ""


# --------------------------------------------------------------------------------------------
# 6. The working-memory limit: --max-memory and ATTUNE_MAX_MEMORY


def _write_long_inputs(tmp_path):
    """2 heads, 256 queries, 2048 keys, d 64: every kernel needs more than 1 KiB of scratch."""
    rng = np.random.default_rng(5)
    arrays = [rand(rng, shape) for shape in ((1, 2, 256, 64), (1, 2, 2048, 64), (1, 2, 2048, 64))]
    for name, a in zip("qkv", arrays):
        write(tmp_path / (name + ".npy"), a)
    return arrays


@pytest.mark.parametrize("kernel", ["auto", "naive", "blocked", "flash"])
def test_max_memory_refuses_before_running(attune_bin, tmp_path, kernel):
    _write_long_inputs(tmp_path)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path,
                      _run_args(tmp_path, out) + ["--kernel", kernel, "--max-memory", "1K"], 1, out)
    assert re.search(r"error: attention: kernel '\w+' needs [0-9.]+ [KM]iB \(\d+ bytes\) of working memory, "
                     r"above the limit of 1\.0 KiB", r.stderr), r.stderr


def test_max_memory_large_enough_runs(attune_bin, tmp_path):
    q, k, v = _write_long_inputs(tmp_path)
    out = tmp_path / "out.npy"
    assert_ok(attune(attune_bin, *_run_args(tmp_path, out), "--causal", "--max-memory", "64M"))
    assert np.abs(load_output(out) - reference(q, k, v, True)).max() < TOL


def test_attune_max_memory(attune_bin, tmp_path):
    _write_long_inputs(tmp_path)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out,
                      env=clean_env(ATTUNE_MAX_MEMORY="1k"))
    assert "(ATTUNE_MAX_MEMORY=1k)" in r.stderr
    # The flag wins over the environment.
    assert_ok(attune(attune_bin, *_run_args(tmp_path, out), "--max-memory", "1G",
                     env=clean_env(ATTUNE_MAX_MEMORY="1k")))


@pytest.mark.parametrize("value", ["lots", "1.5G", "0", "-4K"])
def test_attune_max_memory_malformed(attune_bin, tmp_path, value):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out), 1, out,
                      env=clean_env(ATTUNE_MAX_MEMORY=value))
    assert "ATTUNE_MAX_MEMORY = '%s' is not a size" % value in r.stderr


@pytest.mark.parametrize("value", ["abc", "", "0", "0K", "-1", "1.5G", "12X", "1KB", "1 K", "K",
                                   "99999999999999999999", "17179869184G"])
def test_max_memory_malformed(attune_bin, tmp_path, value):
    _write_good_inputs(tmp_path)
    out = tmp_path / "out.npy"
    r = check_refused(attune_bin, tmp_path, _run_args(tmp_path, out) + ["--max-memory=" + value], 2, out)
    assert "--max-memory = '%s' is not a size" % value in r.stderr


def test_max_memory_only_where_it_applies(attune_bin):
    r = attune(attune_bin, "verify", "--quiet", "--max-memory", "1G")
    assert_error(r, 2)
    assert "--max-memory" in r.stderr

