"""scripts/regress.sh and .ci/run on stand-ins: record-only without a baseline (a new CI machine),
compare and fail with one, the confirming second run, instruction counts, paired mode."""
import json
import os
import subprocess
import sys

import pytest

from attune_regress import icount

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "regress.sh")


@pytest.fixture
def env(fake_bin, tmp_path):
    e = dict(os.environ)
    e.update(ATTUNE_BENCH=str(fake_bin / "attune_bench"), ATTUNE_PYTHON=sys.executable,
             ATTUNE_REGRESS_OUT=str(tmp_path / "out"), ATTUNE_BASELINES=str(tmp_path / "baselines"),
             ATTUNE_VALGRIND=str(fake_bin / "valgrind"), FAKE_BENCH_COUNTER=str(tmp_path / "calls"))
    e.pop("ATTUNE_ISA", None)
    (tmp_path / "baselines").mkdir()
    return e


def regress(env, *args, **extra):
    e = dict(env)
    e.update(extra)
    return subprocess.run(["bash", SCRIPT, *args], env=e, capture_output=True, text=True, timeout=120)


def test_no_baseline_records_and_passes(env, tmp_path):
    p = regress(env)
    assert p.returncode == 0, p.stderr
    assert "no baseline for this machine" in p.stdout
    hist = tmp_path / "out" / "history"
    lines = [l for f in hist.glob("*.jsonl") for l in f.read_text().splitlines()]
    assert len(lines) == 8
    assert not [f for f in os.listdir(tmp_path / "baselines") if f.endswith(".json")]  # never stored implicitly


def test_regression_against_the_stored_baseline_fails_once_confirmed(env, tmp_path):
    assert regress(env, "--update-baseline").returncode == 0
    stored = [f for f in os.listdir(tmp_path / "baselines") if f.endswith(".json") and f != "index.json"]
    assert len(stored) == 1
    assert regress(env).returncode == 0                          # unchanged: passes
    p = regress(env, FAKE_BENCH_SLOW="1.3")                     # slower in both runs: confirmed
    assert p.returncode == 1, p.stdout + p.stderr
    assert "confirming with a fresh run" in p.stdout and "== confirmed" in p.stdout
    calls = int((tmp_path / "calls").read_text())
    p = regress(env, FAKE_BENCH_SLOW="1.3", FAKE_BENCH_SLOW_CALLS=str(calls + 1))  # only the first run slow
    assert p.returncode == 0, p.stdout + p.stderr
    assert "not confirmed by the fresh run" in p.stdout


def test_thresholds_file_is_used(env, tmp_path):
    assert regress(env, "--update-baseline").returncode == 0
    (tmp_path / "baselines" / "thresholds.json").write_text(json.dumps({"default": 50, "patterns": {}}))
    p = regress(env, FAKE_BENCH_SLOW="1.3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "threshold 50%: OK" in p.stdout  # the suite too


def test_icount_records_then_compares(env, tmp_path):
    p = regress(env, "--icount")
    assert p.returncode == 0, p.stderr
    assert "no instruction-count baseline" in p.stdout
    assert list((tmp_path / "out").glob("icount-2*.json"))
    assert regress(env, "--icount", "--update-baseline").returncode == 0
    assert list((tmp_path / "baselines").glob("icount-*.json"))
    p = regress(env, "--icount")
    n = len(icount.CASES)
    assert p.returncode == 0 and "%d of %d cases identical" % (n, n) in p.stdout
    p = regress(env, "--icount", FAKE_IR_SCALE="1.02")
    assert p.returncode == 1 and "REGRESSION" in p.stdout


def test_paired_mode(env, tmp_path):
    p = regress(env, "--paired", env["ATTUNE_BENCH"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "paired session" in p.stdout + p.stderr
    assert not (tmp_path / "out" / "history").exists()  # A/B sessions are not history
    assert regress(env, "--paired", str(tmp_path / "missing")).returncode == 2
    assert regress(env, "--paired").returncode == 2


def test_bench_missing_is_exit_2(env, tmp_path):
    p = regress(env, ATTUNE_BENCH=str(tmp_path / "nope"))
    assert p.returncode == 2 and "is not built" in p.stderr


def test_ci_runs_both_checks_after_the_tests():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    pos = {key: next(i for i, l in enumerate(lines) if key in l)
           for key in ("scripts/test.sh", "scripts/fuzz.sh", "scripts/regress.sh --against", "scripts/regress.sh ||",
                       "scripts/regress.sh --icount")}
    assert pos["scripts/test.sh"] < pos["scripts/fuzz.sh"] < pos["scripts/regress.sh --against"] \
        < pos["scripts/regress.sh ||"] < pos["scripts/regress.sh --icount"]
    assert lines[-1] == 'exit "$status"'


@pytest.fixture
def reference_build(tmp_path, fake_bin):
    """A stand-in for building the reference revision: its bench is the stand-in bench, never slowed."""
    script = tmp_path / "build-reference.sh"
    script.write_text('#!/bin/sh\nmkdir -p "$1/build/bin"\nprintf \'#!/bin/sh\\nunset FAKE_BENCH_SLOW\\nexec "%s" "$@"\\n\' '
                      '> "$1/build/bin/attune_bench"\nchmod +x "$1/build/bin/attune_bench"\n'
                      % (fake_bin / "attune_bench"))
    script.chmod(0o755)
    return str(script)


def test_against_a_reference_is_gated_only_with_a_calibration(env, tmp_path, reference_build):
    e = dict(env, ATTUNE_REFERENCE_BUILD=reference_build)
    p = regress(e, "--against", "HEAD~1", FAKE_BENCH_SLOW="1.3")
    assert p.returncode == 0, p.stdout + p.stderr        # no calibration for this machine: reported only
    assert "REGRESSION" in p.stdout and "no calibration" in p.stdout and "not gated" in p.stdout
    cal = subprocess.run([sys.executable, "-m", "attune_regress", "calibrate", "--bench", env["ATTUNE_BENCH"],
                          "--sessions", "5", "--store", str(tmp_path / "baselines")],
                         env=dict(env, PYTHONPATH=os.path.join(ROOT, "regress")), capture_output=True, text=True,
                         cwd=str(tmp_path))
    assert cal.returncode == 0, cal.stderr
    p = regress(e, "--against", "HEAD~1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "thresholds: calibrated for" in p.stdout and "reference built in" in p.stdout
    p = regress(e, "--against", "HEAD~1", FAKE_BENCH_SLOW="1.3")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "REGRESSION" in p.stdout and "== confirmed" in p.stdout  # a second session agreed
    assert not (tmp_path / "out" / "reference" / "src").exists()  # the worktree is removed again


def test_against_an_unknown_revision_is_reported_not_failed(env, reference_build):
    p = regress(dict(env, ATTUNE_REFERENCE_BUILD=reference_build), "--against", "0" * 40)
    assert p.returncode == 0 and "is not in this clone" in p.stdout
    assert regress(env, "--against").returncode == 2
