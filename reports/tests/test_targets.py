# The kernel issue's speed targets evaluated on synthetic bench runs with known ratios.
import json

from attune_report import targets
from attune_report.bench import load_bench
from attune_report.render import write_markdown

from conftest import CONTEXT, row

PEAK = {1: 100.0, 2: 200.0}


def write(tmp_path, rows, **ctx):
    path = tmp_path / "bench.json"
    context = dict(CONTEXT, attune_format="1", **ctx)
    path.write_text(json.dumps({"context": context, "benchmarks": rows}))
    return load_bench([str(path)])


def by_target(results):
    return {text.split(":")[0]: rows for text, rows in results}


def flash(gflops, t=1, **shape):
    return row("flash", "avx2", gflops, threads=t, peak=PEAK[t], **shape)


def test_ratios_and_verdicts(tmp_path):
    rows = [
        flash(85.0, seq=2048, d=128),                 # 85% of peak: meets 80%
        flash(65.0, seq=2048, d=64),                  # 65%: misses 70%
        flash(50.0, seq=128, d=64),                   # 50%: meets 45%
        flash(60.0, seq=2048, d=128, causal=1),       # 60%: misses 65%
        flash(160.0, t=2, seq=2048, d=128),           # x1.88 vs probe x2.0: 0.94 meets 0.90
        flash(110.0, t=2, seq=2048, d=64),            # x1.69: 0.85 misses
        row("gemm", "scalar", 60.0, seq=2048, d=64),  # flash 65 / 60 = 1.08 < 1.15
        row("gemm", "scalar", 70.0, seq=2048, d=128),  # 85 / 70 = 1.21 >= 1.0
    ]
    got = by_target(targets.evaluate(write(tmp_path, rows)))
    d128 = got["flash, non-causal, seq >= 1024, d_k 128, 1 thread"]
    assert [(r.shape, round(r.value, 3), r.ok) for r in d128] == [("s2048 d128 h8 t1", 0.85, True)]
    assert [r.ok for r in got["flash, non-causal, seq >= 1024, d_k 64, 1 thread"]] == [False]
    assert [round(r.value, 2) for r in got["flash, non-causal, seq 128, 1 thread"]] == [0.5]
    causal = got["flash, causal, seq >= 2048, 1 thread (unmasked work)"]
    assert [(round(r.value, 2), r.ok) for r in causal] == [(0.6, False)]
    threads = {r.shape: (round(r.value, 3), r.ok) for r in got["flash's 2-thread speedup >= 90% of the peak probe's, seq >= 1024"]}
    assert threads == {"s2048 d64 h8": (0.846, False), "s2048 d128 h8": (0.941, True)}
    gemm = {r.shape: (round(r.value, 3), r.goal, r.ok) for r in got["flash >= gemm on every shape (>= 1.15x at d_k 64, seq >= 1024)"]}
    assert gemm == {"s2048 d64 h8 t1": (1.083, 1.15, False), "s2048 d128 h8 t1": (1.214, 1.0, True)}
    # No decode shape in this run: reported as not measured, never as passed.
    assert got["decode (seq_q 1, seq_kv >= 8192), all threads"] == []
    lines = targets.summary_lines(targets.evaluate(write(tmp_path, rows)))
    assert any("not measured" in x and x.startswith("decode") for x in lines)
    assert any(x.startswith("flash, non-causal, seq >= 1024, d_k 128") and "1/1 shapes pass" in x for x in lines)


def test_decode_against_triad(tmp_path):
    # 32 query heads over 8 K/V heads, seq_kv 8192, d 128: bytes are K/V (+ tiny Q/O).
    r = row("flash", "avx2", 10.0, sq=1, skv=8192, d=128, hq=32, hkv=8, threads=2, peak=PEAK[2])
    got = by_target(targets.evaluate(write(tmp_path, [r])))
    (d,) = got["decode (seq_q 1, seq_kv >= 8192), all threads"]
    assert d.unit == "of triad" and abs(d.value - r["bytes_per_second"] / 30e9) < 1e-9


def test_spread_is_the_largest_cv(tmp_path):
    reps = [flash(g, seq=2048, d=128) for g in (80.0, 85.0, 90.0)]
    got = by_target(targets.evaluate(write(tmp_path, reps)))
    (r,) = got["flash, non-causal, seq >= 1024, d_k 128, 1 thread"]
    assert abs(r.value - 0.85) < 1e-9 and abs(r.spread - 5.0 / 85.0) < 1e-9


def test_markdown_has_the_targets_section(tmp_path):
    bench = write(tmp_path, [flash(85.0, seq=2048, d=128)])
    out = tmp_path / "summary.md"
    write_markdown(str(out), command="test", inputs=["bench.json"], generated="now", bench=bench)
    text = out.read_text()
    assert "## Speed targets" in text and "0.85 of peak" in text and "| yes |" in text
