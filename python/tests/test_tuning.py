"""Run-time tuning files from Python: attune.load_tuning() makes `auto` use a table without a
rebuild; bad files warn once and fall back; info() says which table is active."""

import json

import numpy as np
import pytest

import attune


def _tuning_file(path, block_q=24, block_kv=48, cpu=None, signature=None):
    """A one-machine tuning file for this machine (or `cpu`), one fp32 entry at d_k 64, seq 128."""
    info = attune.info()
    m = info["machine"]
    isa = "scalar"
    lines = [
        {"type": "tuning", "schema": 1},
        {"type": "machine", "id": "m0", "signature": signature or info["build_signature"], "signature_text": "",
         "cpu": cpu or m["cpu"], "isas": m["isas"], "cores": m["cores"], "l1d": m["l1d"], "l2": m["l2"],
         "l3": m["l3"], "compiler": "", "flags": "", "version": "", "git_revision": "", "date": "2026-12-07",
         "strategy": "test", "budget": "", "command": "test_tuning.py"},
        {"type": "entry", "machine": "m0", "shape": "", "dtype": "fp32", "kv_dtype": "fp32", "d_k": 64,
         "causal": False, "decode": False, "gqa": False, "log2_seq_q": 7, "log2_seq_kv": 7, "kernel": "flash",
         "isa": isa, "block_q": block_q, "block_kv": block_kv, "threads": 1, "kv_splits": 0, "micro": 0,
         "gflops": 1.0, "spread": 0.0, "tie": False},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def qkv():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((8, 128, 64), dtype=np.float32)
    return q, q.copy(), q.copy()


@pytest.fixture(autouse=True)
def _unload():
    attune.load_tuning("")
    yield
    attune.load_tuning("")


def test_a_loaded_table_drives_auto(tmp_path, qkv):
    q, k, v = qkv
    default = attune.resolve(q, k, v)
    assert attune.load_tuning(_tuning_file(tmp_path / "t.json"))
    c = attune.resolve(q, k, v)
    assert (c["kernel"], c["isa"], c["block_q"], c["block_kv"], c["threads"]) == ("flash", "scalar", 24, 48, 1)
    assert "exact match" in attune.info()["tuned_table"] and "t.json" in attune.info()["tuned_table"]
    # Explicit fields win over the table; results stay those of the kernels.
    assert attune.resolve(q, k, v, block_q=8)["block_q"] == 8
    np.testing.assert_allclose(attune.attention(q, k, v), attune.attention(q, k, v, kernel="naive"), atol=1e-5)
    # A list of paths, a missing one first: one warning, the good one is used.
    assert attune.load_tuning([tmp_path / "missing.json", tmp_path / "t.json"])
    assert not attune.load_tuning("")
    assert attune.resolve(q, k, v) == default


@pytest.mark.parametrize("bad", ["corrupt", "truncated", "other build", "huge"])
def test_bad_files_warn_once_and_fall_back(tmp_path, qkv, capfd, bad):
    q, k, v = qkv
    default = attune.resolve(q, k, v)
    path = _tuning_file(tmp_path / "t.json", signature="fnv1a64:0000000000000000" if bad == "other build" else None,
                        block_q=10**40 if bad == "huge" else 24)
    text = path.read_text()
    if bad == "corrupt":
        path.write_text(text.replace('"entry"', '{"entry"'))
    elif bad == "truncated":
        path.write_text(text[: len(text) - 30])
    capfd.readouterr()
    assert not attune.load_tuning(path)
    err = capfd.readouterr().err
    assert err.count("warning") == 1, err
    assert attune.resolve(q, k, v) == default


def test_another_machines_table_is_taken_only_as_the_nearest(tmp_path, qkv):
    q, k, v = qkv
    # Same ISA set and caches, another CPU name: the nearest machine, and info says so.
    assert attune.load_tuning(_tuning_file(tmp_path / "t.json", cpu="Some Other CPU"))
    assert attune.resolve(q, k, v)["block_q"] == 24
    assert "nearest: same ISA set" in attune.info()["tuned_table"]


def test_info_names_the_machine():
    m = attune.info()["machine"]
    assert m["cpu"] == attune.info()["cpu"] and m["cores"] >= 1 and "scalar" in m["isas"]


# ---- Online tuning on first use ----------------------------------------------------------------


@pytest.fixture
def online():
    attune.set_tuning("online", budget_ms=50)
    yield
    attune.set_tuning("table")


def _inputs(heads, seq_q, seq_kv, d, heads_kv=None, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((heads, seq_q, d), dtype=np.float32)
    k = rng.standard_normal((heads_kv or heads, seq_kv, d), dtype=np.float32)
    v = rng.standard_normal((heads_kv or heads, seq_kv, d), dtype=np.float32)
    return q, k, v


def test_online_races_each_new_key_once_and_stays_correct(online):
    before = attune.online_tuning_stats()["races"]
    shapes = [(8, 64, 64, 64, None), (8, 100, 100, 64, None), (8, 1, 500, 64, 2), (4, 96, 96, 32, None)]
    for heads, sq, skv, d, hkv in shapes:
        q, k, v = _inputs(heads, sq, skv, d, hkv)
        out = attune.attention(q, k, v)
        np.testing.assert_allclose(out, attune.attention(q, k, v, kernel="naive"), atol=2e-5)
    assert attune.online_tuning_stats()["races"] - before == 3  # 64 and 100 share a key
    for heads, sq, skv, d, hkv in shapes:
        attune.attention(*_inputs(heads, sq, skv, d, hkv, seed=1))
    assert attune.online_tuning_stats()["races"] - before == 3


def test_online_concurrent_first_calls_race_once(online):
    import threading

    before = attune.online_tuning_stats()["races"]
    q, k, v = _inputs(8, 200, 200, 48)
    outs = [None] * 6

    def call(i):
        outs[i] = attune.attention(q, k, v)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert attune.online_tuning_stats()["races"] - before == 1
    for out in outs:
        np.testing.assert_allclose(out, outs[0], atol=2e-5)


def test_online_winners_saved_and_loaded(tmp_path):
    path = tmp_path / "sub" / "tuning.json"
    attune.set_tuning("online", budget_ms=50, save=path)
    try:
        q, k, v = _inputs(8, 300, 300, 40)
        attune.attention(q, k, v)
        chosen = attune.resolve(q, k, v)
    finally:
        attune.set_tuning("table")
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in recs] == ["tuning", "machine", "entry"]
    assert recs[2]["d_k"] == 40
    assert attune.load_tuning(path)
    assert attune.resolve(q, k, v) == chosen


def test_set_tuning_rejects_bad_modes():
    with pytest.raises(ValueError, match="online"):
        attune.set_tuning("sometimes")
    with pytest.raises(ValueError, match="budget_ms"):
        attune.set_tuning("online", budget_ms=0)
    assert attune.default_tuning_path().endswith("attune/tuning.json")
