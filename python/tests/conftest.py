"""Shared helpers of the package tests: the float64 reference and loud handling of optional deps.

torch and transformers are optional for a user running the tests by hand: without them their
tests are skipped, and the run ends with a banner naming what was not tested. With
ATTUNE_REQUIRE_OPTIONAL=1 (scripts/test.sh sets it, so CI always does) a missing one fails instead.
"""

import importlib
import os

# Hermetic: no run-time tuning file (not even the user's per-user one) and no online tuning unless
# a test asks for it; read by the library at the first call, so set before any test runs.
os.environ["ATTUNE_TUNING"] = ""
os.environ.pop("ATTUNE_TUNE", None)

import numpy as np
import pytest

_missing = set()


def require(module: str):
    """Import an optional module, or skip (fail under ATTUNE_REQUIRE_OPTIONAL=1) without it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("ATTUNE_REQUIRE_OPTIONAL") == "1":
            pytest.fail(f"{module} is required here (ATTUNE_REQUIRE_OPTIONAL=1) but cannot be imported: {e}")
        _missing.add(module)
        pytest.skip(f"{module} is not installed: its tests did NOT run")


def pytest_terminal_summary(terminalreporter):
    if _missing:
        terminalreporter.section("attune: optional dependencies missing", sep="!", red=True, bold=True)
        terminalreporter.line(f"NOT TESTED: everything needing {', '.join(sorted(_missing))} "
                              "(pip install -r python/requirements-test.txt)", red=True)


def reference(q, k, v, causal=False, scale=None):
    """float64 attention with attune's conventions: [.., heads, seq, d], grouped-query heads,
    causal aligned bottom-right (query i sees keys j <= i + seq_kv - seq_q), rows seeing no key = 0."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    group = q.shape[-3] // k.shape[-3]
    k = np.repeat(k, group, axis=-3)
    v = np.repeat(v, group, axis=-3)
    s = (q @ np.swapaxes(k, -1, -2)) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    sq, skv = q.shape[-2], k.shape[-2]
    visible = np.ones((sq, skv), bool)
    if causal:
        visible = np.arange(skv)[None, :] <= np.arange(sq)[:, None] + (skv - sq)
    s = np.where(visible, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    w = np.where(visible, np.exp(s - m), 0)
    den = w.sum(axis=-1, keepdims=True)
    return (w @ v) / np.where(den > 0, den, 1)


def reference_variants(q, k, v, *, causal=False, scale=None, causal_align="bottom_right", window=0, softcap=0.0,
                       alibi_slopes=None, sinks=None, mask=None, top_k=0):
    """float64 attention with every variant, as kernels/include/attune/problem.hpp defines them:
    query i at aligned position i' (bottom_right: i + seq_kv - seq_q; top_left: i); band (causal:
    j <= i'; window w: i' - w < j, and without causal j < i' + w), then soft-cap, ALiBi
    (s - slope_h |i' - j|), mask (bool hides, float adds), top-k (the k largest visible logits),
    softmax whose denominator gains e^(sink_h). Rows seeing no key are 0. [.., heads, seq, d]."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    three_d = q.ndim == 3
    if three_d:
        q, k, v = q[None], k[None], v[None]
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = (q @ np.swapaxes(k, -1, -2)) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    sq, skv = q.shape[2], k.shape[2]
    ip = np.arange(sq)[:, None] + (skv - sq if causal_align == "bottom_right" else 0)
    j = np.arange(skv)[None, :]
    visible = np.ones((sq, skv), bool)
    if causal:
        visible &= j <= ip
    if window:
        visible &= j > ip - window
        if not causal:
            visible &= j < ip + window
    visible = np.broadcast_to(visible, s.shape).copy()
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - np.asarray(alibi_slopes, np.float64)[None, :, None, None] * np.abs(ip - j)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype == bool:
            visible &= np.broadcast_to(m, s.shape)
        else:
            m = np.broadcast_to(m.astype(np.float64), s.shape)
            visible &= m != -np.inf
            s = s + np.where(m == -np.inf, 0, m)
    if top_k:
        ranked = np.where(visible, s, -np.inf)
        order = np.argsort(-ranked, axis=-1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(skv)[None, None, None, :], axis=-1)
        visible &= rank < top_k
    s = np.where(visible, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    sink = None if sinks is None else np.asarray(sinks, np.float64)[None, :, None, None]
    if sink is not None:
        m = np.maximum(m, sink)
    m = np.where(np.isfinite(m), m, 0)
    w = np.where(visible, np.exp(s - m), 0)
    den = w.sum(axis=-1, keepdims=True)
    if sink is not None:
        den = den + np.exp(sink - m)
    out = (w @ v) / np.where(den > 0, den, 1)
    return out[0] if three_d else out


# Unit roundoff of each storage type: an output rounded once to it is off by u |ref| at most.
UNIT_ROUNDOFF = {"float32": 0.0, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# attune's float32 bound on unit-normal inputs (reference/reference.cpp's derivation).
TOL_F32 = 1e-4


def pv_rounding(q, k, v, causal=False, scale=None):
    """The bound's term for kernels that round P to bf16 for the PV product (amx, the bf16
    dot-product tiles): 2 u_bf16 sum_j w_ij |v_j| (reference/reference.cpp derives it)."""
    return 2 * UNIT_ROUNDOFF["bfloat16"] * reference(q, k, np.abs(np.asarray(v, dtype=np.float64)), causal, scale)


def assert_close(out, ref, dtype_name="float32", pv=0.0):
    """|out - ref| <= TOL_F32 + 2 u |ref| + pv elementwise (u: the output type's unit roundoff;
    pv: pv_rounding(...) where the kernel may round P, i.e. bf16 problems that auto may run on amx)."""
    out = np.asarray(out, dtype=np.float64)
    bound = TOL_F32 + 2 * UNIT_ROUNDOFF[dtype_name] * np.abs(ref) + pv
    err = np.abs(out - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"max excess at {worst}: |{out[worst]} - {ref[worst]}| > {bound[worst]}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
