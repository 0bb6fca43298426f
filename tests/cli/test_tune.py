# `attune tune` and `attune tune-check`: the JSON lines log (provenance first, every measurement,
# one verified choice per shape), the generated header (deterministic, one entry per table key,
# compiles warning-free), progress on stderr, resume after SIGINT/SIGKILL, the strategies'
# evaluation counts and the exit-code contract. Shapes are tiny and --wait-quiet is 0 so the
# file runs in seconds, even next to other measurements.
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_cli import assert_error, assert_ok, attune, clean_env

REPO = Path(__file__).resolve().parents[2]
TYPES = {"provenance", "measurement", "choice"}
PROVENANCE_FIELDS = ["signature", "signature_text", "cpu", "isas", "cores", "compiler", "flags", "version",
                     "git_revision", "date", "strategy", "budget", "command"]
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\S+): (\S+) [\d.]+ GFLOP/s \(spread [\d.]+%(, tie)?\), "
                      r"(\d+)/(\d+) evaluations \((\d+) reused\), elapsed \d+:\d\d, ETA \d+:\d\d$")
SKIPPED = re.compile(r"^\[(\d+)/(\d+)\] (\S+): chosen in the log, skipped$")


# --------------------------------------------------------------------------------------------
# Helpers


def tiny(out, log, extra=None, drop=()):
    """Arguments of a small, fast tune (one thread, 1 ms windows, no waiting for a quiet machine)."""
    opts = {"--seq": "16,32,40", "--heads": "2", "--dk": "8", "--window-ms": "1", "--budget": "20s",
            "--wait-quiet": "0", "--threads": "1", "--out": str(out), "--json": str(log)}
    opts.update(extra or {})
    args = []
    for flag, value in opts.items():
        if flag in drop:
            continue
        args += [flag] if value is None else [flag, value]
    return args


def tune(binary, *args, timeout=60):
    return attune(binary, "tune", *args, timeout=timeout)


def records(path):
    """The records of a JSON lines log. Every line ending in a newline must be a valid record; only
    a last line without its newline (a write cut short) may be partial, and is then ignored."""
    lines = Path(path).read_bytes().decode("utf-8").split("\n")
    tail = lines.pop()  # '' when the file ends with its newline
    out = []
    for n, line in enumerate(lines, 1):
        r = json.loads(line)
        assert isinstance(r, dict) and r.get("type") in TYPES, "%s:%d: %r" % (path, n, line)
        out.append(r)
    if tail:
        try:
            out.append(json.loads(tail))
        except ValueError:
            pass
    return out


def of_type(recs, kind):
    return [r for r in recs if r["type"] == kind]


def shape_name(seq, heads=2, dk=8):
    return "b1_hq%d_hkv%d_sq%d_skv%d_dk%d_dv%d_causal0" % (heads, heads, seq, seq, dk, dk)


def storage_types(r):
    """(dtype, kv_dtype) of a record; records written before the types were keys are fp32."""
    dtype = r.get("dtype", "fp32")
    return dtype, r.get("kv_dtype", dtype)


# Decoding as the tuned table keys it: attune::kDecodeMaxSeqQ (kernels/include/attune/tuned.hpp).
DECODE_MAX_SEQ_Q = 16


def table_key(r):
    """The tuned table's key of a record: d_k, causal, decode, gqa, floor(log2) of both lengths,
    the storage types."""
    return (r["d_k"], r["causal"], r["seq_q"] <= DECODE_MAX_SEQ_Q, r["heads_q"] != r["heads_kv"],
            r["seq_q"].bit_length() - 1, r["seq_kv"].bit_length() - 1) + storage_types(r)


def flops(r):
    return 2.0 * r["batch"] * r["heads_q"] * r["seq_q"] * r["seq_kv"] * (r["d_k"] + r["d_v"])


def sampled(recs, shape):
    """Candidates of a shape measured with at least one sample."""
    return {r["candidate"] for r in of_type(recs, "measurement") if r["shape"] == shape and r["samples"]}


def assert_one_verified_choice_per_shape(recs, shapes):
    choices = of_type(recs, "choice")
    assert sorted(c["shape"] for c in choices) == sorted(shapes)
    for c in choices:
        ms = [r for r in of_type(recs, "measurement") if r["shape"] == c["shape"] and r["candidate"] == c["candidate"]]
        assert ms, "choice %s of %s was never measured" % (c["candidate"], c["shape"])
        assert all(m["verified"] for m in ms), ms
        last = ms[-1]
        assert last["samples"], "choice %s of %s has no samples" % (c["candidate"], c["shape"])
        assert c["samples"] == len(last["samples"])
        assert c["gflops"] == pytest.approx(last["gflops"], rel=1e-3)
        assert 1 <= c["evaluations"] <= c["space"]


def header_entries(text):
    """(key, kernel, isa, block_q, block_kv, threads, kv_splits, micro, from-shape) per table row."""
    row = re.compile(r"^    \{(\d+), (true|false), (true|false), (true|false), (-?\d+), (-?\d+), \"(\w+)\", "
                     r"\"(\w+)\", (\d+), (\d+), (\d+), (\d+), (\d+), [\d.]+, [\d.]+, (true|false), "
                     r"Dtype::(\w+), Dtype::(\w+)\},$")
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = row.match(line)
        if not m:
            assert not line.startswith("    {"), "malformed table row: %r" % line
            continue
        g = m.groups()
        key = (int(g[0]), g[1] == "true", g[2] == "true", g[3] == "true", int(g[4]), int(g[5]), g[14], g[15])
        src = re.match(r"^    //   from (\S+?)(;|$)", lines[i + 1])
        assert src, "row without its source shape: %r" % lines[i + 1]
        out.append((key, g[6], g[7], int(g[8]), int(g[9]), int(g[10]), int(g[11]), int(g[12]), src.group(1)))
    return out


@pytest.fixture(scope="module")
def smart_run(attune_bin, tmp_path_factory):
    """One smart tune of three tiny shapes (16 and 32/40: two table keys, one shared)."""
    d = tmp_path_factory.mktemp("smart")
    out, log = d / "tuned.h", d / "tune.json"
    r = tune(attune_bin, *tiny(out, log))
    assert_ok(r)
    return {"dir": d, "out": out, "log": log, "result": r, "header": out.read_bytes(),
            "log_bytes": log.read_bytes(), "shapes": [shape_name(s) for s in (16, 32, 40)]}


# --------------------------------------------------------------------------------------------
# A smart tune: log, header, progress


def test_log_starts_with_provenance(smart_run):
    recs = records(smart_run["log"])
    assert smart_run["log_bytes"].endswith(b"\n")
    prov = recs[0]
    assert prov["type"] == "provenance"
    assert len(of_type(recs, "provenance")) == 1
    for f in PROVENANCE_FIELDS:
        assert isinstance(prov[f], str), f
    for f in ["signature", "cpu", "compiler", "git_revision", "version"]:
        assert prov[f].strip(), "empty provenance field %s" % f
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["date"]), prov["date"]
    assert prov["strategy"] == "smart" and prov["budget"] == "20s"
    assert prov["command"].startswith("attune tune ") and "--seq 16,32,40" in prov["command"]


def test_one_measured_verified_choice_per_shape(smart_run):
    recs = records(smart_run["log"])
    assert_one_verified_choice_per_shape(recs, smart_run["shapes"])
    for c in of_type(recs, "choice"):
        assert c["strategy"] == "smart"
        # evaluations: the unique candidates that were timed, all of them in the log
        assert c["evaluations"] == len(sampled(recs, c["shape"]))
    for m in of_type(recs, "measurement"):
        assert m["shape"] in smart_run["shapes"]
        assert m["verified"] or m["error"], m
        if not m["verified"]:
            assert not m["samples"], "an unverified candidate was timed: %r" % m


def test_header_has_provenance_and_one_entry_per_key(smart_run):
    text = smart_run["header"].decode("utf-8")
    recs = records(smart_run["log"])
    prov = recs[0]
    assert text.startswith("// Generated by `attune tune` from tune.json; do not edit")
    assert "\n#pragma once\n" in text
    assert "// command: " + prov["command"] + "\n" in text
    assert "// build:   " + prov["signature_text"] + "\n" in text
    assert 'constexpr char kSignature[] = "%s";' % prov["signature"] in text
    for f in ["cpu", "compiler", "git_revision", "date", "strategy", "command"]:
        assert '/* %s */ "%s",' % (f, prov[f]) in text, f
    assert "static_assert(std::is_sorted(kEntries.begin(), kEntries.end(), tuned_order));" in text

    choices = {c["shape"]: c for c in of_type(recs, "choice")}
    by_key = {}
    for c in choices.values():  # the shape with the most FLOPs represents its key
        k = table_key(c)
        if k not in by_key or flops(c) > flops(by_key[k]):
            by_key[k] = c
    entries = header_entries(text)
    assert len(entries) == 2 == len(by_key), entries
    assert "std::array<TunedEntry, 2> kEntries" in text
    for key, kernel, isa, bq, bkv, threads, splits, micro, src in entries:
        c = by_key[key]
        assert src == c["shape"]
        assert (kernel, isa, bq, bkv, threads, splits, micro) == (
            c["kernel"], c["isa"], c["block_q"], c["block_kv"], c["threads"], c["kv_splits"], c["micro"])


def test_header_compiles_warning_free(smart_run, tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    src = tmp_path / "use_tuned.cpp"
    src.write_text('#include "%s"\n#include "%s"  // twice: #pragma once\n\n'
                   "int main() { return attune::tuned_data::kEntries.size() == 2 ? 0 : 1; }\n"
                   % (smart_run["out"], smart_run["out"]))
    r = subprocess.run([gxx, "-std=c++20", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                        "-I", str(REPO / "kernels" / "include"), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_progress_per_shape(smart_run):
    r = smart_run["result"]
    recs = records(smart_run["log"])
    choices = {c["shape"]: c for c in of_type(recs, "choice")}
    progress = [PROGRESS.match(line) for line in r.stderr.splitlines() if line.startswith("[")]
    assert all(progress), r.stderr
    assert [(int(m.group(1)), int(m.group(2))) for m in progress] == [(1, 3), (2, 3), (3, 3)]
    for m, shape in zip(progress, smart_run["shapes"]):
        c = choices[shape]
        assert m.group(3) == shape and m.group(4) == c["candidate"]
        assert (int(m.group(6)), int(m.group(7)), int(m.group(8))) == (c["evaluations"], c["space"], 0)
    assert re.search(r"^tune: wrote .*tuned\.h, .*tune\.tuning\.json and .*tune\.json \(\d+:\d\d\); "
                     r"run-time use: ATTUNE_TUNING=.*tune\.tuning\.json$", r.stderr, re.M), r.stderr
    assert r.stdout == ""


def test_resume_of_a_finished_log_regenerates_the_same_header(attune_bin, smart_run, tmp_path):
    # Same file name: the header names its log.
    log, out = tmp_path / "tune.json", tmp_path / "tuned.h"
    log.write_bytes(smart_run["log_bytes"])
    r = tune(attune_bin, *tiny(out, log), "--resume")
    assert_ok(r)
    assert out.read_bytes() == smart_run["header"]
    skipped = [SKIPPED.match(line) for line in r.stderr.splitlines() if line.startswith("[")]
    assert all(skipped) and [m.group(3) for m in skipped] == smart_run["shapes"], r.stderr
    # Nothing measured again: the log only gained the resumed run's provenance.
    text = log.read_bytes()
    assert text.startswith(smart_run["log_bytes"])
    added = records(log)[len(records(smart_run["log"])):]
    assert [a["type"] for a in added] == ["provenance"] and "--resume" in added[0]["command"]
    # And once more: still the same bytes.
    assert_ok(tune(attune_bin, *tiny(out, log), "--resume"))
    assert out.read_bytes() == smart_run["header"]


# --------------------------------------------------------------------------------------------
# Interruption and resume


def start_and_interrupt(binary, args, log, sig, stderr_path):
    """Starts a tune, waits until the log holds a choice and a measurement of a later shape, sends
    sig; returns the exit status."""
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen([binary, "tune", *args], stdout=subprocess.DEVNULL, stderr=err, env=clean_env(),
                                # as an interactive Ctrl-C would find it, even if our caller ignores SIGINT
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while True:
                types = [r["type"] for r in records(log)] if log.exists() else []
                if "choice" in types and types[-1] == "measurement":
                    break
                assert proc.poll() is None, "the tune ended (exit %s) before it could be interrupted" % proc.returncode
                assert time.monotonic() < deadline, "no choice in the log after 60 s"
                time.sleep(0.005)
            proc.send_signal(sig)
            return proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_after_interruption(attune_bin, tmp_path, sig):
    out, log = tmp_path / "tuned.h", tmp_path / "tune.json"
    seqs = (16, 24, 32, 40)
    shapes = [shape_name(s) for s in seqs]
    # exhaustive: each shape takes long enough (> 0.1 s) to be interrupted in the middle
    args = tiny(out, log, {"--seq": ",".join(map(str, seqs)), "--strategy": "exhaustive"})
    rc = start_and_interrupt(attune_bin, args, log, sig, tmp_path / "stderr.txt")
    assert rc in (-sig, 128 + sig), "exit %s after signal %d" % (rc, sig)
    assert not out.exists(), "a header was written by an interrupted tune"

    before = records(log)  # valid line by line; only an unterminated last line may be partial
    chosen = [c["shape"] for c in of_type(before, "choice")]
    assert 1 <= len(chosen) < len(shapes) and chosen == shapes[:len(chosen)]
    interrupted = shapes[len(chosen)]
    assert any(m["shape"] == interrupted for m in of_type(before, "measurement"))

    r = tune(attune_bin, *args, "--resume")
    assert_ok(r)
    lines = [line for line in r.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == len(shapes), r.stderr
    for i, (line, shape) in enumerate(zip(lines, shapes)):
        if shape in chosen:
            m = SKIPPED.match(line)
            assert m and m.group(3) == shape, line
        else:
            m = PROGRESS.match(line)
            assert m and m.group(3) == shape, line
            reused = int(m.group(8))
            if shape == interrupted:
                assert reused > 0, "the interrupted shape's measurements were not reused: " + line
            else:
                assert reused == 0, line

    after = records(log)
    assert Path(log).read_bytes().endswith(b"\n")
    assert len(of_type(after, "provenance")) == 2
    assert_one_verified_choice_per_shape(after, shapes)
    # Reuse, record by record: a candidate is verified once, and a later record of a candidate
    # extends its earlier samples instead of starting over.
    verified_only, last_samples = {}, {}
    for m in of_type(after, "measurement"):
        key = (m["shape"], m["candidate"])
        if not m["samples"]:
            verified_only[key] = verified_only.get(key, 0) + 1
            assert verified_only[key] == 1, "verified twice: %r" % (key,)
            continue
        prev = last_samples.get(key, [])
        assert m["samples"][:len(prev)] == prev, "samples of %r started over" % (key,)
        last_samples[key] = m["samples"]
    for c in of_type(after, "choice"):
        assert c["strategy"] == "exhaustive"
    header = out.read_text()
    assert len(header_entries(header)) == len({table_key(c) for c in of_type(after, "choice")}) == 3


def test_resume_drops_a_line_cut_in_the_middle(attune_bin, smart_run, tmp_path):
    log, out = tmp_path / "tune.json", tmp_path / "tuned.h"
    lines = smart_run["log_bytes"].decode().splitlines(True)
    assert lines[-1].startswith('{"type":"choice"')
    cut = "".join(lines[:-1]) + lines[-1][:len(lines[-1]) // 2]  # the last choice, half written
    log.write_text(cut)
    r = tune(attune_bin, *tiny(out, log), "--resume")
    assert_ok(r)
    assert "dropped an interrupted last line" in r.stderr
    recs = records(log)
    assert log.read_bytes().endswith(b"\n")
    assert_one_verified_choice_per_shape(recs, smart_run["shapes"])
    progress = [PROGRESS.match(line) for line in r.stderr.splitlines() if line.startswith("[")]
    assert sum(1 for m in progress if m) == 1 and progress[-1].group(3) == smart_run["shapes"][-1]
    assert int(progress[-1].group(8)) > 0  # its measurements were reused


def test_resume_keeps_a_complete_last_line_without_newline(attune_bin, smart_run, tmp_path):
    # parse_log accepts a valid last line without '\n' ("the writer was cut before '\n'"); the
    # resumed run must then not glue its first line onto it.
    log, out = tmp_path / "tune.json", tmp_path / "tuned.h"
    log.write_bytes(smart_run["log_bytes"].rstrip(b"\n"))
    r = tune(attune_bin, *tiny(out, log), "--resume")
    assert_ok(r)
    assert out.read_bytes() == smart_run["header"]
    recs = records(log)
    assert log.read_bytes().endswith(b"\n")
    assert_one_verified_choice_per_shape(recs, smart_run["shapes"])
    assert_ok(tune(attune_bin, *tiny(out, log), "--resume"))


# --------------------------------------------------------------------------------------------
# Strategies


def test_exhaustive_measures_the_whole_space(attune_bin, tmp_path):
    out, log = tmp_path / "tuned.h", tmp_path / "tune.json"
    r = tune(attune_bin, *tiny(out, log, {"--seq": "16", "--strategy": "exhaustive"}))
    assert_ok(r)
    recs = records(log)
    (c,) = of_type(recs, "choice")
    assert c["strategy"] == "exhaustive" and records(log)[0]["strategy"] == "exhaustive"
    assert c["space"] > 10
    assert c["evaluations"] == c["space"]
    verified = {m["candidate"] for m in of_type(recs, "measurement") if m["verified"]}
    assert len(sampled(recs, c["shape"])) == len(verified) == c["space"]
    assert "%d/%d evaluations" % (c["space"], c["space"]) in r.stderr


def test_random_measures_at_most_evals_plus_the_start(attune_bin, tmp_path):
    picked = []
    for run in range(2):
        out, log = tmp_path / ("tuned%d.h" % run), tmp_path / ("tune%d.json" % run)
        r = tune(attune_bin, *tiny(out, log, {"--seq": "16", "--strategy": "random", "--evals": "5", "--seed": "3"}))
        assert_ok(r)
        recs = records(log)
        (c,) = of_type(recs, "choice")
        assert c["strategy"] == "random"
        assert c["space"] > 6
        assert 1 <= c["evaluations"] <= 6
        timed = sampled(recs, c["shape"])
        assert len(timed) == c["evaluations"]
        assert c["candidate"] in timed
        picked.append(timed)
    assert picked[0] == picked[1], "the same --seed drew different candidates"


# --------------------------------------------------------------------------------------------
# Storage types: one entry per (shape key, dtype, kv_dtype); auto never crosses types


# Looks every storage type of the tiny grid up in a generated header the way `auto` does
# (attune::detail::nearest_entry on the problem's key, from the library's internal
# tuned_impl.hpp; header-only, so no library to link) and prints what each one gets: the
# entry's own types, or "none".
LOOKUP_CPP = r"""
#include "%s"
#include "tuned_impl.hpp"
#include <cstdio>

const char* name(attune::Dtype d) { return d == attune::Dtype::fp32 ? "fp32" : d == attune::Dtype::bf16 ? "bf16" : "fp16"; }

int main() {
  using attune::Dtype;
  const std::pair<Dtype, Dtype> types[] = {{Dtype::fp32, Dtype::fp32}, {Dtype::bf16, Dtype::bf16},
                                           {Dtype::fp16, Dtype::fp16}, {Dtype::fp32, Dtype::bf16}};
  for (const auto& [dtype, kv_dtype] : types) {
    attune::TunedKey key;
    key.d_k = 8;
    key.log2_seq_q = key.log2_seq_kv = attune::log2_bucket(32);
    key.dtype = dtype;
    key.kv_dtype = kv_dtype;
    const attune::TunedEntry* e = attune::detail::nearest_entry(
        std::span<const attune::TunedEntry>(attune::tuned_data::kEntries), key, [](const attune::TunedEntry&) { return true; });
    if (e != nullptr) {
      std::printf("%%s/%%s -> %%s/%%s %%s\n", name(dtype), name(kv_dtype), name(e->dtype), name(e->kv_dtype), e->kernel);
    } else {
      std::printf("%%s/%%s -> none\n", name(dtype), name(kv_dtype));
    }
  }
}
"""


@pytest.fixture(scope="module")
def dtype_run(attune_bin, tmp_path_factory):
    """One tiny shape tuned in fp32 and bf16."""
    d = tmp_path_factory.mktemp("dtype")
    out, log = d / "tuned.h", d / "tune.json"
    r = tune(attune_bin, *tiny(out, log, {"--seq": "32", "--dtype": "fp32,bf16", "--budget": "10s"}))
    assert_ok(r)
    return {"dir": d, "out": out, "log": log, "result": r}


def test_dtype_tunes_each_shape_in_each_type(dtype_run):
    recs = records(dtype_run["log"])
    shapes = [shape_name(32), shape_name(32) + "_bf16"]
    assert_one_verified_choice_per_shape(recs, shapes)
    for r in of_type(recs, "measurement") + of_type(recs, "choice"):
        expected = ("bf16", "bf16") if r["shape"].endswith("_bf16") else ("fp32", "fp32")
        assert (r["dtype"], r["kv_dtype"]) == expected, r
    for c in of_type(recs, "choice"):
        assert c["evaluations"] == len(sampled(recs, c["shape"]))
    assert "--dtype fp32,bf16" in recs[0]["command"]


def test_dtype_header_has_an_entry_per_type(dtype_run):
    text = dtype_run["out"].read_text()
    recs = records(dtype_run["log"])
    choices = {c["shape"]: c for c in of_type(recs, "choice")}
    entries = header_entries(text)
    assert sorted(e[0][6:] for e in entries) == [("bf16", "bf16"), ("fp32", "fp32")], entries
    assert len({e[0][:6] for e in entries}) == 1, "not the same shape key: %r" % entries
    for key, kernel, isa, bq, bkv, threads, splits, micro, src in entries:
        c = choices[src]
        assert key == table_key(c)
        assert (kernel, isa, bq, bkv, threads, splits, micro) == (
            c["kernel"], c["isa"], c["block_q"], c["block_kv"], c["threads"], c["kv_splits"], c["micro"])


def test_dtype_header_dispatches_each_type_to_its_own_entry(dtype_run, tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    src, exe = tmp_path / "lookup.cpp", tmp_path / "lookup"
    src.write_text(LOOKUP_CPP % dtype_run["out"])
    r = subprocess.run([gxx, "-std=c++20", "-Wall", "-Wextra", "-Werror", "-I", str(REPO / "kernels" / "include"),
                        "-I", str(REPO / "kernels" / "src"), str(src), "-o", str(exe)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    choices = {c["shape"]: c for c in of_type(records(dtype_run["log"]), "choice")}
    fp32, bf16 = choices[shape_name(32)], choices[shape_name(32) + "_bf16"]
    assert r.stdout.splitlines() == [
        "fp32/fp32 -> fp32/fp32 " + fp32["kernel"],
        "bf16/bf16 -> bf16/bf16 " + bf16["kernel"],
        "fp16/fp16 -> none",
        "fp32/bf16 -> none",
    ], r.stdout


def test_a_header_from_before_the_storage_types_compiles_as_fp32_entries(tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    old = REPO / "docs" / "proofs" / "tune-auto-attune_tuned.h"  # committed, written before the dtype keys
    assert "Dtype::" not in old.read_text()
    src = tmp_path / "old_header.cpp"
    src.write_text('#include "%s"\n\nusing attune::tuned_data::kEntries;\n'
                   "static_assert(!kEntries.empty());\n"
                   "static_assert(std::all_of(kEntries.begin(), kEntries.end(), [](const attune::TunedEntry& e) {\n"
                   "  return e.dtype == attune::Dtype::fp32 && e.kv_dtype == attune::Dtype::fp32;\n"
                   "}));\n\nint main() {}\n" % old)
    r = subprocess.run([gxx, "-std=c++20", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                        "-I", str(REPO / "kernels" / "include"), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_kv_dtype_tunes_the_decode_mix(attune_bin, tmp_path):
    out, log = tmp_path / "tuned.h", tmp_path / "tune.json"
    r = tune(attune_bin, *tiny(out, log, {"--seq-q": "1", "--seq": "64", "--dtype": "fp32", "--kv-dtype": "bf16",
                                          "--budget": "5s", "--evals": "4"}))
    assert_ok(r)
    (c,) = of_type(records(log), "choice")
    assert c["shape"].endswith("_kvbf16") and (c["dtype"], c["kv_dtype"]) == ("fp32", "bf16")
    (e,) = header_entries(out.read_text())
    assert e[0][6:] == ("fp32", "bf16")


def test_resume_of_an_untyped_log_reads_it_as_fp32(attune_bin, smart_run, tmp_path):
    # A log written before the storage types were recorded: the same records without the fields.
    log, out = tmp_path / "tune.json", tmp_path / "tuned.h"
    lines = []
    for r in records(smart_run["log"]):
        r.pop("dtype", None)
        r.pop("kv_dtype", None)
        lines.append(json.dumps(r, separators=(",", ":")))
    log.write_text("\n".join(lines) + "\n")
    r = tune(attune_bin, *tiny(out, log), "--resume")
    assert_ok(r)
    assert out.read_bytes() == smart_run["header"]
    skipped = [SKIPPED.match(line) for line in r.stderr.splitlines() if line.startswith("[")]
    assert all(skipped) and [m.group(3) for m in skipped] == smart_run["shapes"], r.stderr


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("extra,drop,flag", [
    ({"--strategy": "foo"}, (), "--strategy"),
    ({"--causal": "maybe"}, (), "--causal"),
    ({"--seq": "0"}, (), "--seq"),
    ({"--seq": "16,x"}, (), "--seq"),
    ({"--budget": "-1"}, (), "--budget"),
    ({"--budget": "5x"}, (), "--budget"),
    ({"--heads": "2", "--group": "3"}, (), "--group"),
    ({"--evals": "0"}, (), "--evals"),
    ({}, ("--out",), "--out"),
    ({}, ("--json",), "--json"),
    ({}, ("--seq",), "--seq"),
    ({"--dtype": "fp64"}, (), "--dtype"),
    ({"--dtype": "fp32,"}, (), "--dtype"),
    ({"--dtype": "fp32", "--kv-dtype": "int9"}, (), "--kv-dtype"),
], ids=["strategy", "causal", "seq0", "seq-not-int", "budget-negative", "budget-unit", "group", "evals0",
        "no-out", "no-json", "no-seq", "dtype", "dtype-empty-item", "kv-dtype"])
def test_usage_errors(attune_bin, tmp_path, extra, drop, flag):
    out, log = tmp_path / "tuned.h", tmp_path / "tune.json"
    r = tune(attune_bin, *tiny(out, log, extra, drop))
    assert_error(r, 2)
    assert flag in r.stderr, r.stderr
    assert not out.exists() and not log.exists()


def test_existing_log_without_resume_is_left_alone(attune_bin, smart_run, tmp_path):
    out, log = tmp_path / "tuned.h", tmp_path / "tune.json"
    log.write_bytes(smart_run["log_bytes"])
    r = tune(attune_bin, *tiny(out, log))
    assert_error(r, 2)
    assert "--resume" in r.stderr and str(log) in r.stderr
    assert log.read_bytes() == smart_run["log_bytes"]
    assert not out.exists()


def _corrupt_middle(text):
    lines = text.splitlines(True)
    lines[len(lines) // 2] = "garbage, not a record\n"
    return "".join(lines)


def _other_signature(text):
    first, rest = text.split("\n", 1)
    prov = json.loads(first)
    prov["signature"] = "fnv1a64:0000000000000000"
    return json.dumps(prov, separators=(",", ":")) + "\n" + rest


def _other_cpu(text):
    first, rest = text.split("\n", 1)
    prov = json.loads(first)
    prov["cpu"] = "Some Other CPU 9000"
    return json.dumps(prov, separators=(",", ":")) + "\n" + rest


@pytest.mark.parametrize("make,words", [
    (None, ["does not exist"]),
    (lambda text: "", ["provenance"]),
    (_corrupt_middle, [":%d:"]),  # file:line
    (_other_signature, ["another build"]),
    (_other_cpu, ["Some Other CPU 9000"]),
], ids=["missing", "empty", "corrupt", "other-build", "other-cpu"])
def test_resume_refuses_bad_logs(attune_bin, smart_run, tmp_path, make, words):
    out, log = tmp_path / "tuned.h", tmp_path / "tune.json"
    text = smart_run["log_bytes"].decode()
    content = None if make is None else make(text).encode()
    if content is not None:
        log.write_bytes(content)
    start = time.monotonic()
    r = tune(attune_bin, *tiny(out, log), "--resume")
    assert_error(r, 1)
    assert time.monotonic() - start < 10
    for w in words:
        if w == ":%d:":
            w = ":%d:" % (len(text.splitlines()) // 2 + 1)
        assert w in r.stderr, r.stderr
    if content is None:
        assert not log.exists()
    else:
        assert log.read_bytes() == content, "the log was modified"
    assert not out.exists()


def test_missing_output_directory_fails_before_measuring(attune_bin, tmp_path):
    for out, log in [(tmp_path / "no_such_dir" / "tuned.h", tmp_path / "tune.json"),
                     (tmp_path / "tuned.h", tmp_path / "no_such_dir" / "tune.json")]:
        start = time.monotonic()
        r = tune(attune_bin, *tiny(out, log))
        assert_error(r, 1)
        assert "no_such_dir" in r.stderr
        assert time.monotonic() - start < 5
        assert not log.exists() and not out.exists()


def test_unwritable_output_directory_fails_before_measuring(attune_bin, tmp_path):
    if os.geteuid() == 0:
        ro = Path("/proc")  # root may write anywhere else; nothing can be created in /proc
    else:
        ro = tmp_path / "read_only"
        ro.mkdir()
        ro.chmod(0o555)
    out, log = ro / "attune_test_tuned.h", tmp_path / "tune.json"
    r = tune(attune_bin, *tiny(out, log))
    assert_error(r, 1)
    assert str(ro) in r.stderr
    assert not any(line.startswith("[") for line in r.stderr.splitlines()), "it measured first"
    assert not log.exists() or not of_type(records(log), "measurement")


# --------------------------------------------------------------------------------------------
# tune-check


@pytest.fixture(scope="module")
def one_shape_log(attune_bin, tmp_path_factory):
    # One shape: tune-check waits (up to 30 s per shape, no option to turn it off) while other
    # processes hold the cores, so fewer shapes keep this test short on a busy machine.
    d = tmp_path_factory.mktemp("check")
    log = d / "tune.json"
    assert_ok(tune(attune_bin, *tiny(d / "tuned.h", log, {"--seq": "16"})))
    return log


def test_tune_check_remeasures_default_auto_and_the_choice(attune_bin, one_shape_log, tmp_path):
    out_json = tmp_path / "check.json"
    (c,) = of_type(records(one_shape_log), "choice")
    r = attune(attune_bin, "tune-check", one_shape_log, "--samples", "3", "--window-ms", "1", "--json", out_json,
               timeout=120)
    assert_ok(r)
    lines = r.stdout.splitlines()
    assert lines[0] == c["shape"]
    for label, candidate in [("default", None), ("auto", None), ("tune.json", c["candidate"])]:
        row = [line for line in lines[1:4] if line.split()[0] == label]
        assert len(row) == 1, r.stdout
        assert re.search(r" [\d.]+ GFLOP/s, spread [\d.]+%, x[\d.]+ of default$", row[0]), row[0]
        if candidate:
            assert row[0].split()[1] == candidate
    assert "summary (speed relative to 'default', over 1 shapes):" in r.stdout
    for label in ["default", "auto", "tune.json"]:
        assert re.search(r"^  %s +median x[\d.]+, geometric mean x[\d.]+, worst x[\d.]+, best x[\d.]+ \(1 shapes\)$"
                         % re.escape(label), r.stdout, re.M), r.stdout

    data = json.loads(out_json.read_text())
    assert [s["shape"] for s in data] == [c["shape"]]
    entries = data[0]["entries"]
    assert [e["label"] for e in entries] == ["default", "auto", "tune.json"]
    for e in entries:
        assert e["verified"] is True
        assert len(e["samples"]) == 3 and all(x > 0 for x in e["samples"])
        assert e["median_s"] > 0
    assert entries[2]["candidate"] == c["candidate"]
    assert (entries[2]["evaluations"], entries[2]["space"]) == (c["evaluations"], c["space"])


def test_tune_check_needs_something_to_check(attune_bin):
    r = attune(attune_bin, "tune-check", "--samples", "3")
    assert_error(r, 2)
    assert "nothing to check" in r.stderr


def test_tune_check_refuses_a_corrupt_log(attune_bin, one_shape_log, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(_corrupt_middle(one_shape_log.read_text()))
    r = attune(attune_bin, "tune-check", bad, "--samples", "3", "--window-ms", "1", timeout=30)
    assert_error(r, 1)
    assert "bad.json:" in r.stderr


def test_tune_check_measures_each_type(attune_bin, dtype_run, tmp_path):
    out_json = tmp_path / "check.json"
    r = attune(attune_bin, "tune-check", dtype_run["log"], "--samples", "3", "--window-ms", "1", "--wait-quiet", "0",
               "--json", out_json, timeout=120)
    assert_ok(r)
    data = json.loads(out_json.read_text())
    assert [(s["shape"], s["dtype"], s["kv_dtype"]) for s in data] == [
        (shape_name(32), "fp32", "fp32"), (shape_name(32) + "_bf16", "bf16", "bf16")]
    for s in data:
        assert all(e["verified"] for e in s["entries"]), s


def test_tune_check_refuses_a_bad_dtype(attune_bin):
    r = attune(attune_bin, "tune-check", "--seq", "16", "--dtype", "fp8")
    assert_error(r, 2)
    assert "--dtype" in r.stderr
