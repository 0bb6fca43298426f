"""attune_report's contract: every plot is written and embedded, the tables hold the numbers in
the JSON, bad inputs give one-line errors with exit 1 (data) or 2 (usage) and never a partial
report. data/sample_bench.json is a real quick-preset attune_bench run on a 2-core AMD EPYC VM,
trimmed to naive/scalar, simd/avx512, flash/avx2 and flash/sse4_2."""
import base64
import glob
import json
import os
import re

import numpy as np
import pytest

from conftest import (CONTEXT, KEY_GEMM, KEY_GFLOPS, PNG_MAGIC, assert_error, assert_ok, row, run_report,
                      synthetic_bench, synthetic_pytorch, write_json)

from attune_report import bench as bench_mod  # noqa: E402
from attune_report import cli  # noqa: E402

EXPECTED = ["throughput_b1_hq8_hkv8_t1.png", "throughput_b1_hq8_hkv8_t2.png", "peak_fraction_b1_hq8_hkv8_t1.png",
            "peak_fraction_b1_hq8_hkv8_t2.png", "speedup_vs_gemm.png", "speedup_vs_pytorch.png", "roofline.png",
            "scaling.png", "compare.png", "tuner.png", "history.png"]
KEY_NAME = "attention/flash/avx2/b:1/hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/t:1"


def tuner_doc():
    ms = [dict(kernel="flash", isa="avx2", seq_q=s, seq_kv=s, d_k=64, heads_q=8, block_q=bq, block_kv=bkv,
               threads=1, gflops=50.0 + bq / 8 + bkv / 16 + s / 64)
          for s in (512, 2048) for bq in (16, 32, 64) for bkv in (64, 128, 256)]
    return {"attune_format": "1", "context": {"cpu_model": CONTEXT["cpu_model"]}, "measurements": ms}


def history_lines():
    runs = []
    for i, rev in enumerate(("aaa1111", "bbb2222", "ccc3333")):
        runs.append(json.dumps({"date": "2026-11-%02dT10:00:00Z" % (20 + i), "attune_git_revision": rev,
                                "results": {KEY_NAME: 80.0 + i, KEY_NAME.replace("t:1", "t:2"): 150.0 - i}}))
    return "\n".join(runs) + "\n"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One report with everything: bench + pytorch peer, gemm baseline, compare, tuner, history."""
    d = tmp_path_factory.mktemp("full")
    doc = synthetic_bench()
    bench = write_json(d / "bench.json", doc)
    torch = write_json(d / "pytorch.json", synthetic_pytorch(doc))
    before_doc = synthetic_bench(failed=False)
    for b in before_doc["benchmarks"]:
        if b["name"].startswith(KEY_NAME + "/"):
            b["FLOPS"] /= 1.25  # after is 1.25x faster on the key benchmark
    before = write_json(d / "before.json", before_doc)
    tuner = write_json(d / "tune.json", tuner_doc())
    (d / "history.jsonl").write_text(history_lines())
    out = d / "report"
    r = run_report(bench, torch, "--out", out, "--compare", before, bench, "--tuner", tuner,
                   "--history", d / "history.jsonl")
    assert_ok(r)
    assert r.stdout.strip() == str(out / "report.html")
    return out, doc


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_every_plot_is_a_png(full):
    out, _ = full
    for name in EXPECTED:
        with open(out / name, "rb") as f:
            data = f.read()
        assert data[:8] == PNG_MAGIC and len(data) > 2000, name
    assert not glob.glob(str(out / ".attune_report-*")), "scratch directory left behind"


def test_html_embeds_every_plot_and_is_self_contained(full):
    out, _ = full
    page = read(out / "report.html")
    for path in glob.glob(str(out / "*.png")):
        with open(path, "rb") as f:
            assert base64.b64encode(f.read()).decode() in page, path
        assert 'id="%s"' % os.path.basename(path) in page
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)


def test_html_tables_hold_the_json_numbers(full):
    out, _ = full
    page = read(out / "report.html")
    # Best kernel on the key shape: 87.64 GFLOP/s, 88% of the 100 GFLOP/s probe, 4.00x gemm, and
    # 2.00x the pytorch peer (whose median over three repetitions is half of flash/avx2).
    assert ('<tr><td>s512 d64 h8 t1</td><td>flash/avx2</td><td class="num">%.1f</td><td class="num">88%%</td>'
            '<td class="num">%.2fx</td><td class="num">2.00x</td></tr>' % (KEY_GFLOPS, KEY_GFLOPS / KEY_GEMM)) in page
    for value in (CONTEXT["cpu_model"], CONTEXT["attune_git_revision"], CONTEXT["attune_compiler"], "torch_version"):
        assert value in page
    assert "stream triad (GB/s)" in page and "FMA peak avx2 (GFLOP/s)" in page
    assert "time budget exhausted" in page  # the skipped benchmark is reported, not dropped silently
    md = read(out / "summary.md")
    assert "| s512 d64 h8 t1 | flash/avx2 | 87.6 | 88% | 4.00x | 2.00x |" in md


def test_compare_table_and_summary(full):
    out, doc = full
    page = read(out / "report.html")
    assert '<td>flash/avx2 s512 d64 h8 t1</td><td class="num">70.1</td><td class="num">87.6</td>' \
           '<td class="num">1.250</td>' in page
    assert "%d benchmarks in both runs" % len([b for b in doc["benchmarks"] if "FLOPS" in b]) in page
    assert "| flash/avx2 s512 d64 h8 t1 | 70.1 | 87.6 | 1.250 |" in read(out / "summary.md")


def test_tuner_and_history_sections(full):
    out, _ = full
    page = read(out / "report.html")
    assert '<h2 id="tuner">' in page and "flash/avx2 64x256 t1" in page
    assert '<h2 id="history">' in page and "ccc3333" in page


def test_real_sample_without_gemm(tmp_path, sample_path):
    with open(sample_path) as f:
        doc = json.load(f)
    r = run_report(sample_path, "--out", tmp_path / "out")
    assert_ok(r)
    out = tmp_path / "out"
    names = sorted(os.path.basename(p) for p in glob.glob(str(out / "*.png")))
    assert "roofline.png" in names and "scaling.png" in names
    assert any(n.startswith("throughput_") for n in names) and any(n.startswith("peak_fraction_") for n in names)
    assert not any(n.startswith("speedup_vs_") for n in names)  # no gemm, no pytorch: skipped, not failed
    page = read(out / "report.html")
    assert "No <code>gemm</code> kernel in this run" in page
    # The best kernel on one shape, recomputed here from the raw JSON.
    shape = "/b:1/hq:8/hkv:8/sq:512/skv:512/d:128/causal:0/t:1/"
    best = max((b for b in doc["benchmarks"] if shape in b["name"]), key=lambda b: b["FLOPS"])
    kernel_isa = "/".join(best["name"].split("/")[1:3])
    assert '<tr><td>s512 d128 h8 t1</td><td>%s</td><td class="num">%.1f</td><td class="num">%.0f%%</td></tr>' % (
        kernel_isa, best["FLOPS"] / 1e9, best["peak_frac"] * 100) in page
    assert doc["context"]["attune_git_revision"] in page


def test_run_without_probes(tmp_path):
    """attune_bench --no-probes: no ceilings or fractions of peak, everything else still drawn."""
    doc = synthetic_bench(seqs=(128, 512), dks=(64,), with_gemm=False)
    doc["context"] = {k: v for k, v in doc["context"].items() if not k.startswith(("peak_", "triad_"))}
    for b in doc["benchmarks"]:
        b.pop("peak_frac", None)
    r = run_report(write_json(tmp_path / "b.json", doc), "--out", tmp_path / "out")
    assert_ok(r)
    names = os.listdir(tmp_path / "out")
    assert "roofline.png" in names and "throughput_b1_hq8_hkv8_t1.png" in names
    assert not any(n.startswith("peak_fraction") for n in names)
    assert "no probe results" in read(tmp_path / "out" / "report.html")


def test_compare_alone_reports_the_after_run(tmp_path):
    before = synthetic_bench(seqs=(128, 512), dks=(64,), with_gemm=False, failed=False)
    after = json.loads(json.dumps(before))
    for b in after["benchmarks"]:
        b["FLOPS"] *= 0.8
    r = run_report("--compare", write_json(tmp_path / "a.json", before), write_json(tmp_path / "b.json", after),
                   "--out", tmp_path / "out")
    assert_ok(r)
    page = read(tmp_path / "out" / "report.html")
    assert "geometric mean after/before 0.800" in page
    assert "0.800" in read(tmp_path / "out" / "summary.md")
    assert (tmp_path / "out" / "compare.png").read_bytes()[:8] == PNG_MAGIC


def test_repetitions_use_the_median(tmp_path):
    rows = []
    for rep, g in enumerate((60.0, 80.0, 90.0)):
        rows.append(row("flash", "avx2", g, seq=512, repetitions=3, repetition_index=rep))
    name = rows[0]["name"]
    for agg, g in (("mean", 76.7), ("median", 80.0), ("stddev", 15.3)):
        rows.append(dict(row("flash", "avx2", g, seq=512), name=name + "_" + agg, run_type="aggregate",
                         aggregate_name=agg))
    rows.append(dict(rows[-1], name=name + "_cv", aggregate_name="cv", FLOPS=0.2))  # a ratio, not a rate
    b = bench_mod.load_bench([write_json(tmp_path / "reps.json", {"context": CONTEXT, "benchmarks": rows})])
    (r,) = b.results.values()
    assert r.gflops == pytest.approx(80.0) and r.repetitions == 3 and r.cv > 0
    only_aggs = [x for x in rows if x.get("run_type") == "aggregate"]
    b = bench_mod.load_bench([write_json(tmp_path / "aggs.json", {"context": CONTEXT, "benchmarks": only_aggs})])
    (r,) = b.results.values()
    assert r.gflops == pytest.approx(80.0) and r.cv == pytest.approx(0.2)


def test_kernels_and_isas_follow_the_runs_own_lists(tmp_path):
    """Order and plot styles come from the run's context (attune_kernels, isa_compiled), so amx or
    a kernel and ISA the report has never heard of get a place and a style of their own."""
    from attune_report import plots
    doc = synthetic_bench(failed=False)
    doc["benchmarks"] += [row("amx", "amx", 50.0, seq=512), row("newk", "newisa", 40.0, seq=512)]
    listed = dict(doc, context=dict(CONTEXT, attune_kernels="naive,blocked,simd,flash,amx,gemm,newk",
                                    isa_compiled="amx,newisa,avx2,sse4_2,scalar"))
    b = bench_mod.load_bench([write_json(tmp_path / "listed.json", listed)])
    assert b.kernels() == ("naive", "blocked", "simd", "flash", "amx", "gemm", "newk")
    assert b.isas() == ("amx", "newisa", "avx2", "sse4_2", "scalar")
    assert sorted({(r.kernel, r.isa) for r in b.results.values()}, key=b.variant_key)[:5] == [
        ("naive", "scalar"), ("simd", "avx2"), ("flash", "avx2"), ("flash", "scalar"), ("amx", "amx")]
    styles = [plots.style(b, k, i) for k, i in zip(b.kernels(), b.isas())]
    assert len({st["color"] for st in styles}) == len({st["marker"] for st in styles}) == len(styles)
    # JSON from before the lists: the kernels in the registry's order of that time, the ISAs as the
    # CPU ran them (isa_runnable), anything else after them by name.
    b = bench_mod.load_bench([write_json(tmp_path / "old.json", doc)])
    assert b.kernels() == ("naive", "blocked", "simd", "flash", "amx", "gemm", "newk")
    assert b.isas() == ("avx2", "scalar", "amx", "newisa")


def bad_docs():
    ok = synthetic_bench(seqs=(128,), dks=(64,))
    return {
        "empty": (b"", "is empty"),
        "blank": (b"  \n", "is empty"),
        "truncated": (json.dumps(ok).encode()[:-20], "not valid JSON"),
        "binary": (b"\xff\xfe\x00garbage", "not UTF-8"),
        "array": (b"[1, 2]", 'no "benchmarks" list'),
        "no_benchmarks": (json.dumps({"context": CONTEXT}).encode(), 'no "benchmarks" list'),
        "zero_benchmarks": (json.dumps({"context": CONTEXT, "benchmarks": []}).encode(), "holds no benchmarks"),
        "foreign_names": (json.dumps({"benchmarks": [{"name": "BM_memcpy/64", "FLOPS": 1.0}]}).encode(),
                          "not attune bench output"),
        "bad_attention_name": (json.dumps({"benchmarks": [{"name": "attention/flash/avx2/b:1", "FLOPS": 1.0}]})
                               .encode(), "does not follow"),
        "no_flops": (json.dumps({"benchmarks": [{k: v for k, v in ok["benchmarks"][0].items() if k != "FLOPS"}]})
                     .encode(), "FLOPS"),
        "all_skipped": (json.dumps({"benchmarks": [dict(ok["benchmarks"][-1])]}).encode(), "every benchmark"),
        "format_2": (json.dumps(dict(ok, context=dict(CONTEXT, attune_format="2"))).encode(), "attune_format"),
    }


@pytest.mark.parametrize("case", sorted(bad_docs()))
def test_bad_bench_json_is_a_data_error(tmp_path, case):
    data, fragment = bad_docs()[case]
    path = tmp_path / ("%s.json" % case)
    path.write_bytes(data)
    out = tmp_path / "out"
    assert_error(run_report(path, "--out", out), 1, fragment)
    assert not (out / "report.html").exists()


def test_format_1_is_accepted(tmp_path):
    doc = synthetic_bench(seqs=(128,), dks=(64,))
    doc["context"]["attune_format"] = "1"
    assert bench_mod.load_bench([write_json(tmp_path / "b.json", doc)]).results


def test_missing_inputs_are_data_errors(tmp_path):
    good = write_json(tmp_path / "good.json", synthetic_bench(seqs=(128,), dks=(64,)))
    assert_error(run_report(tmp_path / "nonesuch.json", "--out", tmp_path / "o"), 1, "nonesuch.json")
    assert_error(run_report(good, "--out", tmp_path / "o", "--tuner", tmp_path / "no.json"), 1, "tuner")
    (tmp_path / "h.jsonl").write_text('{"results": {"x": 1}}\nnot json\n')
    assert_error(run_report(good, "--out", tmp_path / "o", "--history", tmp_path / "h.jsonl"), 1, "line 2")
    (tmp_path / "t.json").write_text(json.dumps({"attune_format": "7", "measurements": []}))
    assert_error(run_report(good, "--out", tmp_path / "o", "--tuner", tmp_path / "t.json"), 1, "attune_format")
    (tmp_path / "file").write_text("x")
    assert_error(run_report(good, "--out", tmp_path / "file"), 1, "not a directory")
    assert not (tmp_path / "o").exists()  # inputs are checked before the output directory is made


@pytest.mark.parametrize("args", [[], ["--out", "x"], ["b.json"], ["b.json", "--out", "x", "--nonesuch"],
                                  ["--compare", "a.json", "--out", "x"], ["weights", "--out", "x"],
                                  ["weights", "w.npy", "--out", "x", "--heads", "a,b"]],
                         ids=["nothing", "no_inputs", "no_out", "unknown_flag", "compare_one_file",
                              "weights_no_npy", "weights_bad_heads"])
def test_usage_errors(tmp_path, args):
    assert_error(run_report(*args), 2)


def test_failed_run_keeps_the_previous_report(tmp_path, monkeypatch):
    """A failure while drawing leaves neither a new report.html nor scratch files."""
    from attune_report import plots

    src = write_json(tmp_path / "b.json", synthetic_bench(seqs=(128, 256), dks=(64,), with_gemm=False))
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("previous report")

    def boom(*_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(plots, "roofline", boom)
    with pytest.raises(RuntimeError):
        cli.main([src, "--out", str(out)])
    assert (out / "report.html").read_text() == "previous report"
    assert sorted(os.listdir(out)) == ["report.html"]


# --------------------------------------------------------------------------------------------
# Attention weights


def softmax_weights(batch=2, heads=3, seq_q=5, seq_kv=7):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, heads, seq_q, seq_kv))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def test_weights_heatmaps(tmp_path):
    np.save(tmp_path / "w.npy", softmax_weights())
    (tmp_path / "labels.txt").write_text("\n".join("tok%d" % i for i in range(7)) + "\n")
    out = tmp_path / "out"
    r = run_report("weights", tmp_path / "w.npy", "--labels", tmp_path / "labels.txt", "--out", out)
    assert_ok(r)
    page = read(out / "weights.html")
    for b in (0, 1):
        data = (out / ("weights_b%d.png" % b)).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 2000
        assert base64.b64encode(data).decode() in page
    assert "[2, 3, 5, 7]" in page


def test_weights_3d_and_head_selection(tmp_path):
    np.save(tmp_path / "w.npy", softmax_weights()[0])  # [heads, seq_q, seq_kv]
    r = run_report("weights", tmp_path / "w.npy", "--heads", "0,2", "--out", tmp_path / "out")
    assert_ok(r)
    assert (tmp_path / "out" / "weights_b0.png").read_bytes()[:8] == PNG_MAGIC


def test_bad_weights_are_data_errors(tmp_path):
    out = tmp_path / "out"
    np.save(tmp_path / "int.npy", np.zeros((1, 1, 2, 2), dtype=np.int32))
    assert_error(run_report("weights", tmp_path / "int.npy", "--out", out), 1, "not float32")
    np.save(tmp_path / "5d.npy", np.zeros((1, 1, 1, 2, 2), dtype=np.float32))
    assert_error(run_report("weights", tmp_path / "5d.npy", "--out", out), 1, "expected [batch, heads")
    (tmp_path / "text.npy").write_text("not an npy")
    assert_error(run_report("weights", tmp_path / "text.npy", "--out", out), 1, "not a valid .npy")
    assert_error(run_report("weights", tmp_path / "missing.npy", "--out", out), 1, "cannot read")
    np.save(tmp_path / "w.npy", softmax_weights())
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert_error(run_report("weights", tmp_path / "w.npy", "--labels", tmp_path / "labels.txt", "--out", out), 1,
                 "expected seq_kv (7)")
    assert_error(run_report("weights", tmp_path / "w.npy", "--heads", "5", "--out", out), 1, "out of range")
    assert not out.exists()
