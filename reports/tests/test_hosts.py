"""Machines side by side (`scripts/report.sh results/hostA results/hostB ... --out DIR`), on two real
bench runs: the Zen 4 VM with its own ISAs (data/hosts/zen4-avx512) and the same VM run with
ATTUNE_ISA=avx2 as a stand-in for an AVX2-only machine (data/hosts/zen4-as-avx2; its host_name was
edited to tell the two apart). Same three shapes, flash/simd/blocked, one thread."""
import json
import os
import shutil

from conftest import DATA, PNG_MAGIC, run_report

HOSTS = os.path.join(DATA, "hosts")
A, B = os.path.join(HOSTS, "zen4-avx512"), os.path.join(HOSTS, "zen4-as-avx2")


def _best(path, shape_part):
    """The best non-naive GFLOP/s and its kernel/isa among a bench file's rows whose name has shape_part."""
    rows = [r for r in json.load(open(os.path.join(path, "bench.json")))["benchmarks"]
            if shape_part in r["name"] and r.get("run_type") == "aggregate" and r.get("aggregate_name") == "median"]
    r = max(rows, key=lambda r: r["FLOPS"])
    kernel, isa = r["name"].split("/")[1:3]
    return r["FLOPS"] / 1e9, kernel, isa


def test_two_machines_side_by_side(tmp_path):
    out = tmp_path / "report"
    r = run_report(A, B, "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out / "hosts.html")
    md = (out / "hosts.md").read_text()
    # Each machine named by its CPU (and host), with provenance.
    assert "| AMD EPYC (vm) | " in md and "| AMD EPYC (vm-as-avx2) | " in md
    assert "GNU 12.2.0" in md and "0.1.0" in md
    # One row per shape both measured, with each machine's own winner: AVX-512 on the first, AVX2 on the other.
    rows = [line for line in md.splitlines() if line.startswith("| s512") or line.startswith("| q1")]
    assert len(rows) == 3, md
    decode = next(line for line in rows if line.startswith("| q1 kv2048 d128 h32/8 t1"))
    for path, cell in zip((A, B), decode.split(" | ")[1:]):
        gflops, kernel, isa = _best(path, "/sq:1/skv:2048/d:128/causal:0/")
        assert cell.strip(" |").startswith("%.1f (" % gflops), (cell, gflops)
        assert cell.strip(" |").endswith("%s/%s" % (kernel, isa)), cell
    assert "/avx512" in decode.split(" | ")[1] and "/avx2" in decode.split(" | ")[2]
    for png in ("hosts_gflops.png", "hosts_peak.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    html = (out / "hosts.html").read_text()
    assert "hosts_gflops.png" in html and "hosts_peak.png" in html and "AMD EPYC (vm-as-avx2)" in html


def test_same_machine_twice_is_told_apart(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(A, copy)
    r = run_report(A, copy, "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert "AMD EPYC (vm) #2" in (tmp_path / "r" / "hosts.md").read_text()


def test_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_report(A, tmp_path / "empty", "--out", tmp_path / "r")
    assert r.returncode == 1 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
    r = run_report("hosts", A, "--out", tmp_path / "r")
    assert r.returncode == 1 and "at least two" in r.stderr, r.stderr
    assert not (tmp_path / "r" / "hosts.html").exists()
