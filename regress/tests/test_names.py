"""Benchmark names across the dt: segment: runs recorded before it (fp32 only, no dt:) compare
with and extend the history of runs named with dt:fp32; 16-bit benchmarks stay apart."""
import json
import re

import numpy as np

from attune_regress import benchjson, benchname, cli, compare as cmp, history, proof, suite
from regress_synth import bench_json, bench_name


def typed(name, dt="fp32"):
    """The same benchmark as attune_bench names it since the element type became a dimension."""
    return name.replace("/t:", "/dt:%s/t:" % dt)


def test_one_parser_reads_and_writes_every_spelling():
    name = "attention/flash/avx2/b:2/hq:8/hkv:2/sq:1/skv:8192/d:128/causal:1/dt:bf16/var:w512/t:4/real_time/repeats:3"
    n = benchname.parse(name)
    assert (n.kernel, n.isa, n.batch, n.heads_q, n.heads_kv, n.seq_q, n.seq_kv, n.d_k, n.causal, n.dtype, n.var,
            n.threads, n.suffix) == ("flash", "avx2", 2, 8, 2, 1, 8192, 128, True, "bf16", "w512", 4,
                                     "/real_time/repeats:3")
    assert n.format() == name and n.format(suffix=False) == name[:name.index("/real_time")]
    old = bench_name("simd", 512, 64)  # before dt: existed
    assert benchname.parse(old).dtype == "fp32"
    assert benchname.parse(old).format(fp32_segment=False) == old
    assert benchname.parse(old).format() == typed(old)
    assert proof.short(typed(old, "bf16")) == "simd h8/8 s512/512 d64 bf16"
    for other in ("icount/flash/avx2/hq:2/hkv:2/sq:256/skv:256/d:64/causal:0", "attention/flash/avx2/b:1",
                  "BM_memcpy/64"):
        assert benchname.parse(other) is None and proof.short(other) == other


def test_canonical_name_drops_only_the_fp32_segment():
    old = bench_name("flash", 2048, 128)
    assert benchjson.canonical_name(typed(old)) == old
    assert benchjson.canonical_name(old) == old
    assert benchjson.canonical_name(typed(old, "bf16")) == typed(old, "bf16")
    assert benchjson.canonical_name("icount/flash/avx2/hq:2/hkv:2/sq:256/skv:256/d:64/causal:0") == \
        "icount/flash/avx2/hq:2/hkv:2/sq:256/skv:256/d:64/causal:0"


def test_an_old_baseline_compares_with_a_new_run(write_json):
    rng = np.random.default_rng(3)
    names = [bench_name(k, s) for k in ("flash", "simd") for s in (128, 512)]
    base = {n: list(1e3 * (1 + i) * np.exp(rng.normal(0, 0.01, 5))) for i, n in enumerate(names)}
    new = {typed(n): list(1e3 * (1 + i) * np.exp(rng.normal(0, 0.01, 5))) for i, n in enumerate(names)}
    new[typed(names[0], "bf16")] = [500.0] * 5  # a 16-bit benchmark has no fp32 twin in the baseline
    b = benchjson.load(write_json(bench_json(base)))
    n = benchjson.load(write_json(bench_json(new)))
    assert sorted(n.times) == sorted(names + [typed(names[0], "bf16")])
    result = cmp.compare(b, n, cmp.Thresholds(10.0))
    assert sorted(r.name for r in result.rows) == sorted(names)
    assert not result.regressed


def test_history_keeps_one_series_across_the_rename(write_json, tmp_path):
    rng = np.random.default_rng(4)
    name = bench_name("flash")
    d = tmp_path / "hist"
    for day, key in ((1, name), (2, typed(name))):
        run = write_json(bench_json({key: list(np.exp(rng.normal(0, 0.01, 5)))}, date="2026-11-%02dT10:00:00Z" % day,
                                    attune_git_revision="rev%d" % day))
        assert cli.main(["record", run, "--history", str(d)]) == 0
    [path] = [p for p in d.iterdir() if p.suffix == ".jsonl"]
    names = {json.loads(line)["name"] for line in path.read_text().splitlines()}
    assert names == {name}
    assert len(history.read(str(path)).records) == 2


def test_the_suite_filter_selects_fp32_benchmarks_as_the_bench_names_them():
    f = re.compile(suite.bench_filter("avx512"))
    for shape in suite.SHAPES:
        assert f.search("attention/flash/avx512/b:1/%s/t:1/real_time" % shape)
    fp32 = "attention/simd/avx512/b:1/hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/dt:fp32/t:1/real_time"
    assert f.search(fp32) and not f.search(fp32.replace("dt:fp32", "dt:bf16"))
    assert not f.search(fp32.replace("/t:1/", "/t:2/"))


def test_short_labels_name_16_bit_types():
    assert proof.short(typed(bench_name("flash", 512, 64), "bf16")) == "flash h8/8 s512/512 d64 bf16"
    assert proof.short(typed(bench_name("simd", 512, 128, 1))) == "simd h8/8 s512/512 d128 causal"
