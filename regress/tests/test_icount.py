"""Instruction counts: parsing callgrind output (a real file from valgrind 3.19 and synthetic
ones), compare verdicts and exit codes, `icount run` on stand-ins, baselines."""
import json
import os

import pytest

from attune_regress import cli, icount
from attune_regress.benchjson import InputError
from regress_synth import DATA

CONTEXT = {"cpu_model": "AMD EPYC", "cores": "2", "attune_compiler": "GNU 12.2.0", "attune_flags": " -O3 -DNDEBUG",
           "attune_build_type": "Release", "isa": "avx2", "valgrind": "valgrind-3.19.0", "libc": "glibc 2.36",
           "attune_version": "0.1.0", "attune_git_revision": "abc", "date": "2026-11-25T10:00:00Z"}


def test_parses_a_real_callgrind_file():
    assert icount.parse_callgrind(os.path.join(DATA, "callgrind.tiny.out")) == 15200


@pytest.mark.parametrize("text, expected", [
    ("events: Ir Dr Dw\nsummary: 10 20 30\ntotals: 11 21 31\n", 11),   # totals wins, Ir first
    ("events: Dr Ir\nsummary: 20 42\n", 42),                            # Ir's position, summary only
    ("version: 1\nevents: Ir\n\nfn=(1) f\n0 5\nsummary: 5\n", 5),
])
def test_parses_ir_by_position(tmp_path, text, expected):
    p = tmp_path / "cg.out"
    p.write_text(text)
    assert icount.parse_callgrind(str(p)) == expected


@pytest.mark.parametrize("text, message", [
    ("", "no 'events:'"),
    ("hello\n", "no 'events:'"),
    ("events: Dr Dw\ntotals: 1 2\n", "Ir is not among"),
    ("events: Ir\nfn=(1) f\n0 5\n", "cut short"),
    ("events: Ir\ntotals: lots\n", "no count for Ir"),
])
def test_bad_callgrind_files(tmp_path, text, message):
    p = tmp_path / "cg.out"
    p.write_text(text)
    with pytest.raises(InputError, match=message):
        icount.parse_callgrind(str(p))
    with pytest.raises(InputError, match="cannot read"):
        icount.parse_callgrind(str(tmp_path / "missing.out"))


def doc(counts, **context):
    ctx = dict(CONTEXT)
    ctx.update(context)
    return {"format": "attune_icount", "version": 1, "context": ctx,
            "cases": {n: {"Ir": v, "command": "x"} for n, v in counts.items()}}


def test_compare_verdicts_at_the_threshold():
    base = dict(doc({"a": 1000000, "b": 1000000, "c": 1000000, "d": 1000000, "e": 5}), path="base")
    new = dict(doc({"a": 1000000, "b": 1009999, "c": 1010000, "d": 980000, "f": 5}), path="new")
    rows, geo, only_base, only_new = icount.compare(base, new, 1.0)
    v = {r.name: r.verdict for r in rows}
    assert v == {"a": "OK", "b": "OK", "c": "REGRESSION", "d": "IMPROVEMENT"}
    assert rows[0].name == "c"  # worst first
    assert only_base == ["e"] and only_new == ["f"]
    assert geo == pytest.approx((1.0 * 1.009999 * 1.01 * 0.98) ** 0.25)
    with pytest.raises(InputError, match="--threshold"):
        icount.compare(base, new, 0)
    with pytest.raises(InputError, match="no case is common"):
        icount.compare(base, dict(doc({"z": 1}), path="z"), 1.0)


def write(tmp_path, name, d):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return str(p)


def test_compare_command_exit_codes(tmp_path, capsys):
    base = write(tmp_path, "b.json", doc({"x/flash": 1000, "x/simd": 2000}))
    same = write(tmp_path, "s.json", doc({"x/flash": 1000, "x/simd": 2000}, attune_git_revision="def"))
    worse = write(tmp_path, "w.json", doc({"x/flash": 1020, "x/simd": 2000}))
    other = write(tmp_path, "o.json", doc({"x/flash": 1000, "x/simd": 2000}, valgrind="valgrind-3.22.0"))
    md = tmp_path / "ic.md"
    assert cli.main(["icount", "compare", base, same, "--markdown", str(md)]) == 0
    out, err = capsys.readouterr()
    assert "2 of 2 cases identical" in out and "attune_git_revision differs" in err
    assert md.read_text().startswith("## attune instruction counts: no regression")
    assert cli.main(["icount", "compare", base, worse]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert cli.main(["icount", "compare", base, worse, "--threshold", "3"]) == 0
    capsys.readouterr()
    assert cli.main(["icount", "compare", base, other]) == 2
    assert "valgrind differs" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    (json.dumps({"format": "other"}), "not an instruction-count file"),
    (json.dumps({"format": "attune_icount", "context": {}, "cases": {}}), "holds no cases"),
    (json.dumps({"format": "attune_icount", "context": {}, "cases": {"a": {"Ir": 1}}}), "context lacks"),
    (json.dumps(doc({"a": 0})), "no positive integer Ir"),
    (json.dumps(doc({"a": 1.5})), "no positive integer Ir"),
])
def test_bad_count_files_exit_2(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = write(tmp_path, "g.json", doc({"a": 1}))
    assert cli.main(["icount", "compare", good, str(bad)]) == 2
    assert message in capsys.readouterr().err


def test_run_on_stand_ins(fake_bin, tmp_path, monkeypatch, capsys):
    log = tmp_path / "vg.jsonl"
    monkeypatch.setenv("FAKE_VALGRIND_LOG", str(log))
    monkeypatch.setenv("ATTUNE_ISA", "avx512")  # the caller's environment does not reach the counted runs
    out = tmp_path / "ic.json"
    assert cli.main(["icount", "run", "--attune", str(fake_bin / "attune"), "--valgrind", str(fake_bin / "valgrind"),
                     "--out", str(out), "--quiet"]) == 0
    d = icount.load(str(out))
    assert set(d["cases"]) == {c.name for c in icount.CASES}
    assert d["context"]["isa"] == "avx2" and d["context"]["valgrind"] == "valgrind-3.19.0"
    assert d["context"]["attune_git_revision"] == "abcdef123456"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == len(icount.CASES)
    for c in calls:
        assert c["ATTUNE_ISA"] == "avx2"
        assert "--collect-atstart=no" in c["argv"] and "--toggle-collect=attune::attention(*" in c["argv"]
        assert c["argv"][c["argv"].index("--threads") + 1] == "1"
        assert c["argv"][c["argv"].index("--isa") + 1] == "avx2"
        assert "./attune" in c["argv"] and c["argv"][c["argv"].index("--q") + 1].startswith("in")  # relative
    # same inputs, same counts: a second run compares identical
    out2 = tmp_path / "ic2.json"
    assert cli.main(["icount", "run", "--attune", str(fake_bin / "attune"), "--valgrind", str(fake_bin / "valgrind"),
                     "--out", str(out2), "--quiet"]) == 0
    assert icount.load(str(out2))["cases"] == d["cases"]


def test_run_refuses_a_count_of_zero(fake_bin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_IR_SCALE", "0")
    assert cli.main(["icount", "run", "--attune", str(fake_bin / "attune"), "--valgrind", str(fake_bin / "valgrind"),
                     "--out", str(tmp_path / "x.json"), "--quiet"]) == 2
    assert "no instructions counted" in capsys.readouterr().err
    assert cli.main(["icount", "run", "--attune", str(tmp_path / "nope"), "--out", str(tmp_path / "x.json")]) == 2


def test_baselines_per_configuration(tmp_path, capsys):
    a = write(tmp_path, "a.json", doc({"x": 1}))
    other = write(tmp_path, "o.json", doc({"x": 1}, cpu_model="Intel Xeon"))
    bdir = tmp_path / "baselines"
    assert cli.main(["icount", "baseline", "path", a, "--dir", str(bdir)]) == 3
    assert "no instruction-count baseline" in capsys.readouterr().err
    assert cli.main(["icount", "baseline", "update", a, "--dir", str(bdir)]) == 0
    stored = capsys.readouterr().out.strip()
    assert os.path.basename(stored).startswith("icount-") and os.path.isfile(stored)
    assert cli.main(["icount", "baseline", "path", a, "--dir", str(bdir)]) == 0
    assert capsys.readouterr().out.strip() == stored
    assert cli.main(["icount", "baseline", "path", other, "--dir", str(bdir)]) == 3
    index = json.loads((bdir / "index.json").read_text())
    assert index[os.path.basename(stored)[:-5]]["kind"] == "icount"


def test_counting_environment_is_fixed():
    env = icount.counting_env({"HOME": "/root", "ATTUNE_ISA": "avx512", "X": "1", "ATTUNE_ICOUNT_PASS_ENV": "X, Y"})
    assert env == dict(icount.FIXED_ENV, X="1") and env["ATTUNE_ISA"] == "avx2"
