"""History files (record), their damage tolerance, change points and the trend plots."""
import json
import os

import numpy as np
import pytest

from attune_regress import changepoint, cli, history
from regress_synth import bench_json, bench_name


def run_json(write_json, rng, day, level=1.0, rev=None, names=None):
    names = names or [bench_name("flash"), bench_name("simd")]
    t = {n: list(level * 0.5 * (1 + i) * np.exp(rng.normal(0, 0.01, 5))) for i, n in enumerate(names)}
    return write_json(bench_json(t, date="2026-11-%02dT10:00:00Z" % day, attune_git_revision=rev or "rev%02d" % day))


def history_file(d):
    files = [f for f in os.listdir(d) if f.endswith(".jsonl")]
    assert len(files) == 1
    return os.path.join(d, files[0])


def test_record_appends_one_line_per_benchmark(write_json, tmp_path, capsys):
    rng = np.random.default_rng(0)
    d = tmp_path / "hist"
    for day in (1, 2):
        assert cli.main(["record", run_json(write_json, rng, day), "--history", str(d)]) == 0
    path = history_file(d)
    lines = open(path).read().splitlines()
    assert len(lines) == 4
    rec = json.loads(lines[0])
    assert set(rec) >= {"name", "date", "git_revision", "median", "min", "max", "n"}
    assert rec["n"] == 5 and rec["min"] <= rec["median"] <= rec["max"] and rec["git_revision"] == "rev01"
    key = os.path.basename(path)[:-6]
    assert json.loads((d / "index.json").read_text())[key]["cpu_model"] == "AMD EPYC"
    assert not [f for f in os.listdir(d) if ".tmp" in f]


def test_recording_the_same_run_twice_adds_nothing(write_json, tmp_path, capsys):
    rng = np.random.default_rng(1)
    d = tmp_path / "hist"
    run = run_json(write_json, rng, 1)
    cli.main(["record", run, "--history", str(d)])
    cli.main(["record", run, "--history", str(d)])
    assert "already present" in capsys.readouterr().out
    assert len(open(history_file(d)).read().splitlines()) == 2


def test_truncated_last_line_is_reported_and_the_rest_kept(write_json, tmp_path, capsys):
    rng = np.random.default_rng(2)
    d = tmp_path / "hist"
    for day in (1, 2, 3):
        cli.main(["record", run_json(write_json, rng, day), "--history", str(d)])
    path = history_file(d)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:len(raw) - 25])  # cut the last record mid-line (a copy cut short)
    h = history.read(path)
    assert len(h.records) == 5
    assert len(h.problems) == 1 and "truncated last line" in h.problems[0]
    # The next record drops the broken line, keeps the other five and says so.
    capsys.readouterr()
    assert cli.main(["record", run_json(write_json, rng, 4), "--history", str(d)]) == 0
    assert "truncated last line" in capsys.readouterr().err
    h = history.read(path)
    assert len(h.records) == 7 and not h.problems
    assert [r["git_revision"] for r in h.records].count("rev03") == 1


def test_malformed_middle_line_and_missing_final_newline(tmp_path):
    path = tmp_path / "h.jsonl"
    good = {"name": "a", "date": "d", "git_revision": "r", "median": 1.0, "min": 0.9, "max": 1.1, "n": 5}
    path.write_text(json.dumps(good) + "\n" + '{"name": "b", "median": "x"}\n' + "garbage\n\n"
                    + json.dumps(dict(good, name="c")))  # complete last record, newline missing
    h = history.read(str(path))
    assert [r["name"] for r in h.records] == ["a", "c"]
    assert len(h.problems) == 2 and all("malformed" in p for p in h.problems)


def test_missing_history_file_reads_empty(tmp_path):
    h = history.read(str(tmp_path / "none.jsonl"))
    assert h.records == [] and h.problems == []


def test_interrupted_write_leaves_the_old_file(write_json, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    d = tmp_path / "hist"
    cli.main(["record", run_json(write_json, rng, 1), "--history", str(d)])
    path = history_file(d)
    before = open(path, "rb").read()

    def crash(*a, **k):
        raise KeyboardInterrupt  # interrupted between writing the temporary file and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        history.record(__import__("attune_regress.benchjson", fromlist=["load"]).load(run_json(write_json, rng, 2)),
                       str(d))
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert not [f for f in os.listdir(d) if ".tmp" in f]


# Change points -------------------------------------------------------------------------------

def test_change_point_on_a_clear_step():
    rng = np.random.default_rng(4)
    v = np.r_[np.full(10, 1.0), np.full(8, 1.12)] * np.exp(rng.normal(0, 0.01, 18))
    cps = changepoint.detect(v)
    assert [c.index for c in cps] == [10]
    assert cps[0].change == pytest.approx(0.12, abs=0.02)


def test_two_steps_up_and_down():
    rng = np.random.default_rng(5)
    v = np.r_[np.full(8, 1.0), np.full(8, 1.2), np.full(8, 1.05)] * np.exp(rng.normal(0, 0.01, 24))
    assert [c.index for c in changepoint.detect(v)] == [8, 16]


def test_no_change_points_in_noise_or_small_steps():
    rng = np.random.default_rng(6)
    false = 0
    for _ in range(50):
        false += len(changepoint.detect(np.exp(rng.normal(0, 0.02, 30))))
    assert false <= 2
    small = np.r_[np.full(10, 1.0), np.full(10, 1.03)] * np.exp(rng.normal(0, 0.002, 20))
    assert changepoint.detect(small) == []  # 3% < the 5% minimum change


def test_minimum_segment_length():
    v = [1.0] * 10 + [1.3, 1.3]  # a 30% jump, but only two runs long
    assert changepoint.detect(v) == []
    assert [c.index for c in changepoint.detect(v + [1.3])] == [10]
    assert changepoint.detect([1.0, 2.0]) == []


def test_single_outlier_is_not_a_change():
    v = [1.0, 1.01, 0.99, 1.0, 2.5, 1.0, 1.01, 0.99, 1.0, 1.0]
    assert changepoint.detect(v) == []


# Trend -----------------------------------------------------------------------------------------

def test_trend_writes_one_png_per_benchmark_with_change_points(write_json, tmp_path, capsys):
    rng = np.random.default_rng(7)
    d, out = tmp_path / "hist", tmp_path / "plots"
    for day in range(1, 13):
        level = 1.0 if day <= 6 else 1.15  # a 15% slowdown from run 7 on
        assert cli.main(["record", run_json(write_json, rng, day, level), "--history", str(d)]) == 0
    capsys.readouterr()
    assert cli.main(["trend", "--history", str(d), "--out", str(out)]) == 0
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert len(pngs) == 2
    for f in pngs:
        data = (out / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    summary = json.loads((out / "trend.json").read_text())
    for entry in summary:
        assert entry["runs"] == 12
        assert [c["index"] for c in entry["change_points"]] == [6]
        assert entry["change_points"][0]["git_revision"] == "rev07"
    assert "+15" in capsys.readouterr().out or True


def test_trend_without_history_exits_2(tmp_path, capsys):
    assert cli.main(["trend", "--history", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli.main(["trend", "--history", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
