"""The run-time tuning file from the command line: `attune tune` writes it with the header's rows,
`attune info` reports it when ATTUNE_TUNING names it, `attune tune-merge` joins machines, and a
bad file is one warning and the fallback."""

import json

import pytest

from test_cli import assert_ok, attune, clean_env
from test_tune import header_entries, tiny, tune


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tuned(attune_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("tuning")
    out, log = d / "tuned.h", d / "tune.json"
    assert_ok(tune(attune_bin, *tiny(out, log)))
    return {"dir": d, "out": out, "log": log, "tuning": d / "tune.tuning.json"}


def info(binary, tuning):
    r = attune(binary, "info", env=clean_env(ATTUNE_TUNING=str(tuning)))
    line = [l for l in r.stdout.splitlines() if l.startswith("tuned table:")]
    assert r.returncode == 0 and len(line) == 1, r.stdout + r.stderr
    return line[0], r.stderr


def test_tune_writes_the_file_with_the_headers_rows(tuned):
    recs = lines(tuned["tuning"])
    assert recs[0] == {"type": "tuning", "schema": 1, "about": recs[0]["about"]}
    (machine,) = [r for r in recs if r["type"] == "machine"]
    for field in ("signature", "cpu", "isas", "cores", "l1d", "l2", "l3", "compiler", "version", "git_revision",
                  "date", "command"):
        assert field in machine
    entries = [r for r in recs if r["type"] == "entry"]
    header = header_entries(tuned["out"].read_text())
    assert len(entries) == len(header) == 2
    for e, (key, kernel, isa, bq, bkv, threads, splits, micro, src) in zip(entries, header):
        assert (e["kernel"], e["isa"], e["block_q"], e["block_kv"], e["threads"], e["kv_splits"], e["micro"],
                e["shape"]) == (kernel, isa, bq, bkv, threads, splits, micro, src)


def test_info_reports_the_run_time_table(attune_bin, tuned):
    line, err = info(attune_bin, tuned["tuning"])
    assert "run-time: 2 entries from" in line and "(exact match)" in line, line
    assert err == ""
    r = attune(attune_bin, "info")
    assert "tuned table:    none (built-in defaults)" in r.stdout
    assert "machine:" in r.stdout and " cores | L1d " in r.stdout


def _other_machine(text, cpu="Other CPU", isas=None):
    out = []
    for rec in (json.loads(l) for l in text.splitlines()):
        if rec["type"] == "machine":
            rec["cpu"] = cpu
            rec["l3"] = rec["l3"] * 4 + 1
            if isas:
                rec["isas"] = isas
        out.append(json.dumps(rec))
    return "\n".join(out) + "\n"


def test_merge_joins_machines_and_each_keeps_its_own(attune_bin, tuned, tmp_path):
    other = tmp_path / "other.tuning.json"
    other.write_text(_other_machine(tuned["tuning"].read_text(), isas="avx2 sse4_2 scalar"))
    fleet = tmp_path / "fleet.json"
    # A tuning file, another machine's file and the first one's log: two machines.
    r = attune(attune_bin, "tune-merge", tuned["tuning"], other, tuned["log"], "-o", fleet)
    assert r.returncode == 0, r.stderr
    machines = [rec for rec in lines(fleet) if rec["type"] == "machine"]
    assert [m["id"] for m in machines] == ["m0", "m1"]
    assert machines[1]["cpu"] == "Other CPU"
    assert len([rec for rec in lines(fleet) if rec["type"] == "entry"]) == 4
    line, err = info(attune_bin, fleet)
    assert "machine m0 (exact match)" in line, line
    # Listed the other way round, this machine is m1 and still chosen.
    fleet2 = tmp_path / "fleet2.json"
    assert attune(attune_bin, "tune-merge", other, tuned["tuning"], "-o", fleet2).returncode == 0
    line, _ = info(attune_bin, fleet2)
    assert "machine m1 (exact match)" in line, line


def test_a_machine_of_the_same_isa_set_is_taken_as_the_nearest(attune_bin, tuned, tmp_path):
    near = tmp_path / "near.json"
    near.write_text(_other_machine(tuned["tuning"].read_text()))
    line, _ = info(attune_bin, near)
    assert "(nearest: same ISA set" in line, line


@pytest.mark.parametrize("bad", ["corrupt", "truncated", "other build", "other isa set", "missing"])
def test_bad_files_warn_once_and_fall_back(attune_bin, tuned, tmp_path, bad):
    text = tuned["tuning"].read_text()
    path = tmp_path / "bad.json"
    if bad == "corrupt":
        path.write_text(text.replace('"entry"', '["entry"]', 1))
    elif bad == "truncated":
        path.write_text(text[:-20])
    elif bad == "other build":
        rec = json.loads(text.splitlines()[1])
        path.write_text(text.replace(rec["signature"], "fnv1a64:0000000000000000"))
    elif bad == "other isa set":
        path.write_text(_other_machine(text, isas="neon scalar"))
    line, err = info(attune_bin, path)
    assert err.count("warning") == 1 and err.startswith("attune: warning: "), err
    assert "then compiled: none (built-in defaults)" in line, line
    assert "run-time: none for this machine" in line, line


def test_merge_errors(attune_bin, tuned, tmp_path):
    r = attune(attune_bin, "tune-merge", "-o", tmp_path / "x.json")
    assert r.returncode == 2 and r.stderr.startswith("error:"), r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    r = attune(attune_bin, "tune-merge", bad, "-o", tmp_path / "x.json")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "error:" in r.stderr, r.stderr
    assert not (tmp_path / "x.json").exists()


def test_merge_writes_a_fleet_header_that_compiles(attune_bin, tuned, tmp_path):
    import shutil
    import subprocess

    from test_tune import REPO

    other = tmp_path / "other.tuning.json"
    other.write_text(_other_machine(tuned["tuning"].read_text(), isas="avx2 sse4_2 scalar"))
    header = tmp_path / "fleet.h"
    r = attune(attune_bin, "tune-merge", tuned["tuning"], other, "-o", tmp_path / "fleet.json", "--header", header)
    assert r.returncode == 0, r.stderr
    text = header.read_text()
    assert text.startswith("// Generated by `attune tune-merge` from ")
    assert "#define ATTUNE_TUNED_MACHINES 1" in text and "std::array<TunedMachine, 2> kMachines" in text
    assert '"Other CPU"' in text
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    src = tmp_path / "use_fleet.cpp"
    src.write_text('#include "%s"\n\nint main() { return attune::tuned_data::kMachines.size() == 2 ? 0 : 1; }\n'
                   % header)
    r = subprocess.run([gxx, "-std=c++20", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                        "-I", str(REPO / "kernels" / "include"), str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # Machines of another build cannot share a compiled table: refused, nothing written.
    rec = json.loads(other.read_text().splitlines()[1])
    other.write_text(other.read_text().replace(rec["signature"], "fnv1a64:0000000000000000"))
    r = attune(attune_bin, "tune-merge", tuned["tuning"], other, "-o", tmp_path / "f2.json", "--header", tmp_path / "f2.h")
    assert r.returncode == 1 and "another build" in r.stderr, r.stderr
    assert not (tmp_path / "f2.h").exists() and not (tmp_path / "f2.json").exists()
