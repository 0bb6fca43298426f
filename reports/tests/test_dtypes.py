"""The element type in reports: dt: segments parse (names without one are fp32), per-dtype
tables and figures, the 16-bit vs fp32 table with the synthetic sample's known ratios, peak
fractions against the probe of the instruction each benchmark runs."""
import glob
import os

import pytest

from conftest import assert_ok, run_report, synthetic_bench, synthetic_typed_bench, write_json

from attune_report import bench as bench_mod  # noqa: E402


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    d = tmp_path_factory.mktemp("typed")
    path = write_json(d / "bench.json", synthetic_typed_bench())
    out = d / "report"
    assert_ok(run_report(path, "--out", out))
    return path, out


def test_names_with_and_without_dt_parse():
    old = "attention/flash/avx2/b:1/hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/t:1/real_time"
    new = old.replace("/t:1", "/dt:fp32/t:1")
    for name in (old, new):
        n = bench_mod.benchname.parse(name)
        assert n and bench_mod._shape_of(n).dtype == "fp32"
        assert bench_mod.canonical_name(name) == new[:-len("/real_time")]
    n = bench_mod.benchname.parse(old.replace("/t:1", "/dt:bf16/t:1"))
    assert bench_mod._shape_of(n).dtype == "bf16"
    assert bench_mod._shape_of(n).label() == "s512 d64 h8 bf16 t1"


def test_old_and_new_spellings_of_one_benchmark_are_one_result(tmp_path):
    doc = synthetic_bench(failed=False)
    n = len(doc["benchmarks"])
    renamed = [dict(b, name=b["name"].replace("/t:", "/dt:fp32/t:"), run_name=None) for b in doc["benchmarks"]]
    both = write_json(tmp_path / "b.json", dict(doc, benchmarks=doc["benchmarks"] + renamed))
    bench = bench_mod.load_bench([both])
    assert len(bench.results) == n and all(r.repetitions == 2 for r in bench.results.values())
    assert bench.dtypes() == ["fp32"]


def test_bf16_vs_fp32_ratios(typed):
    path, _ = typed
    bench = bench_mod.load_bench([path])
    assert bench.dtypes() == ["fp32", "bf16", "fp16"]
    pairs = {(r.variant, r.shape.as_fp32().label(), r.shape.dtype): x for r, _, x in bench_mod.dtype_speedups(bench)}
    assert pairs[("flash/avx2", "s2048 d128 h8 t1", "bf16")] == pytest.approx(1.25)
    assert pairs[("flash/avx2", "s2048 d128 h8 t1", "fp16")] == pytest.approx(1.10)
    assert pairs[("gemm/avx2", "s2048 d128 h8 t1", "bf16")] == pytest.approx(0.80)
    assert pairs[("flash/avx2", "q1 kv8192 d128 h32/8 t1", "bf16")] == pytest.approx(1.80)
    assert len(pairs) == 7  # the avx512_bf16 row has no fp32 twin


def test_peak_fraction_uses_the_probe_of_the_instruction(typed):
    path, _ = typed
    bench = bench_mod.load_bench([path])
    by_variant = {(r.variant, r.shape.dtype, r.shape.seq_q, r.shape.threads): r for r in bench.results.values()}
    dot = by_variant[("flash/avx512_bf16", "bf16", 2048, 1)]
    assert bench.probe_for(dot) == ("bf16 dot t1", 400.0)
    assert bench_mod.fraction_of_peak(bench, dot) == pytest.approx(0.5)  # 200 of the 400 GFLOP/s probe
    widened = by_variant[("flash/avx2", "bf16", 2048, 1)]
    assert bench.probe_for(widened) == ("avx2 FMA t1", 100.0)
    assert bench_mod.fraction_of_peak(bench, widened) == pytest.approx(1.0)
    # 16-bit storage halves the compulsory bytes
    assert widened.gbps == pytest.approx(by_variant[("flash/avx2", "fp32", 2048, 1)].gbps * 100 / 80 / 2)


def test_report_has_per_dtype_tables_and_the_16_bit_table(typed):
    _, out = typed
    md = read(out / "summary.md")
    for dt in ("fp32", "bf16", "fp16"):
        assert "### %s" % dt in md
    # per-dtype best kernel and speedup over gemm in the same dtype
    assert "| s2048 d128 h8 bf16 t1 | flash/avx512_bf16 | 200.0 | 50% | 6.25x |" in md
    assert "| s2048 d128 h8 t1 | flash/avx2 | 80.0 | 80% | 2.00x |" in md
    assert "## 16-bit vs fp32" in md
    assert "| flash/avx2 | s2048 d128 h8 t1 | bf16 | 100.0 | 80.0 | 1.25x | 100% | 80% | avx2 FMA t1 |" in md
    assert "| gemm/avx2 | s2048 d128 h8 t1 | bf16 | 32.0 | 40.0 | 0.80x |" in md
    assert "bf16 vs fp32, same kernel/ISA/shape/threads, geometric mean: prefill" in md
    assert "decode (seq_q 1) 1.80x over 1 benchmarks" in md
    page = read(out / "report.html")
    assert '<h2 id="dtypes">16-bit vs fp32</h2>' in page
    assert "bf16 dot product, vdpbf16ps (GFLOP/s)" in page and "16-bit read (GB/s)" in page
    assert '<td class="num">400.0</td>' in page and '<td class="num">18.0</td>' in page


def test_report_draws_per_dtype_figures(typed):
    _, out = typed
    names = {os.path.basename(p) for p in glob.glob(str(out / "*.png"))}
    assert {"dtype_speedup.png", "speedup_vs_gemm.png", "speedup_vs_gemm_bf16.png",
            "throughput_b1_hq8_hkv8_t1.png", "throughput_b1_hq8_hkv8_t1_bf16.png"} <= names
    assert 'id="dtype_speedup.png"' in read(out / "report.html")


def test_fp32_only_runs_have_no_16_bit_sections(tmp_path):
    path = write_json(tmp_path / "b.json", synthetic_bench())
    assert_ok(run_report(path, "--out", tmp_path / "out"))
    md = read(tmp_path / "out" / "summary.md")
    assert "16-bit" not in md and "### fp32" not in md
    assert not os.path.exists(tmp_path / "out" / "dtype_speedup.png")


def test_kv_cache_types_table(tmp_path):
    """kv: rows (a bf16 or quantized K/V under fp32 Q/O): their own shapes, a table of bytes/s
    against the triad probe and the speedup over the bf16-K/V twin."""
    doc = synthetic_bench(failed=False)
    base = "attention/flash/avx2/b:1/hq:32/hkv:8/sq:1/skv:32768/d:128/causal:0/dt:fp32/kv:%s/t:1/real_time"
    extra = []
    for kv, gflops, gbps in (("bf16", 40.0, 10.0), ("int8", 70.0, 9.0), ("int4", 90.0, 6.0)):
        extra.append({"name": base % kv, "run_name": base % kv, "run_type": "iteration", "repetitions": 1,
                      "repetition_index": 0, "threads": 1, "iterations": 10, "real_time": 1.0, "cpu_time": 1.0,
                      "time_unit": "ms", "FLOPS": gflops * 1e9, "bytes_per_second": gbps * 1e9})
    path = write_json(tmp_path / "b.json", dict(doc, benchmarks=doc["benchmarks"] + extra))
    bench = bench_mod.load_bench([path])
    kinds = {r.shape.kv for r in bench.results.values()}
    assert {"bf16", "int8", "int4"} <= kinds
    from attune_report import render
    headers, rows = render.kv_rows(bench)
    by_kv = {row[2]: row for row in rows}
    assert by_kv["int8"][headers.index("vs bf16 K/V")] == render.fmt_ratio(70.0 / 40.0)
    assert by_kv["int4"][headers.index("GB/s")] == "6.0"
    assert by_kv["bf16"][headers.index("vs bf16 K/V")] == ""
    out = tmp_path / "report"
    assert_ok(run_report(path, "--out", out))
    md = read(glob.glob(os.path.join(str(out), "*.md"))[0])
    assert "## K/V cache types" in md and "int8" in md
