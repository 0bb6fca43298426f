"""The command line: exit codes, refusals, bad input, markdown, baselines."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from attune_regress import cli
from regress_synth import CONTEXT, DATA, bench_json, bench_name

REGRESS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def times(rng, shift=1.0, n=10, names=None, sigma=0.01):
    names = names or [bench_name("flash"), bench_name("simd")]
    return {name: list(shift * 0.5 * (1 + i) * np.exp(rng.normal(0, sigma, n))) for i, name in enumerate(names)}


def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pair(write_json):
    rng = np.random.default_rng(0)
    return write_json(bench_json(times(rng))), write_json(bench_json(times(rng)))


def test_module_entry_point_runs(pair):
    env = dict(os.environ, PYTHONPATH=REGRESS)
    out = subprocess.run([sys.executable, "-m", "attune_regress", "compare", *pair], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "suite:" in out.stdout and bench_name("flash") in out.stdout


def test_identical_runs_pass_and_write_markdown(pair, tmp_path, capsys):
    md = tmp_path / "report.md"
    code, out, err = run_cli(capsys, "compare", pair[0], pair[1], "--markdown", md)
    assert code == 0, err
    assert "REGRESSION" not in out
    text = md.read_text()
    assert text.startswith("## attune regression check: no regression")
    assert "| verdict |" in text and bench_name("simd") in text


def test_regression_exits_1(write_json, tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = write_json(bench_json(times(rng)))
    new = write_json(bench_json(times(rng, 1.12)))
    md = tmp_path / "r.md"
    code, out, _ = run_cli(capsys, "compare", base, new, "--markdown", md)
    assert code == 1
    assert out.count("REGRESSION") >= 2
    assert "**REGRESSION**" in md.read_text()
    # A threshold above the slowdown turns it into a pass.
    code, out, _ = run_cli(capsys, "compare", base, new, "--threshold", "20")
    assert code == 0


def test_units_are_normalised(write_json, capsys):
    rng = np.random.default_rng(2)
    t = times(rng)
    base = write_json(bench_json(t, unit="ms"))
    new = write_json(bench_json({k: [v * 1e3 for v in vs] for k, vs in t.items()}, unit="us"))
    code, out, _ = run_cli(capsys, "compare", base, new)
    assert code == 0
    assert "+0.0%" in out


@pytest.mark.parametrize("field", ["cpu_model", "isa_default", "cores", "preset", "attune_compiler",
                                   "attune_flags", "attune_build_type"])
def test_refuses_runs_from_different_configurations(write_json, capsys, field):
    rng = np.random.default_rng(3)
    base = write_json(bench_json(times(rng)))
    new = write_json(bench_json(times(rng), **{field: "something else"}))
    code, out, err = run_cli(capsys, "compare", base, new)
    assert code == 2
    assert "refusing" in err and field in err
    assert out == ""


def test_warns_but_compares_across_versions(write_json, capsys):
    rng = np.random.default_rng(4)
    base = write_json(bench_json(times(rng)))
    new = write_json(bench_json(times(rng), attune_version="0.2.0", attune_git_revision="abcdef123456"))
    code, out, err = run_cli(capsys, "compare", base, new)
    assert code == 0
    assert "warning: attune_version differs" in err
    assert "warning: attune_git_revision differs" in err


def test_missing_build_type_is_a_warning(write_json, capsys):
    rng = np.random.default_rng(5)
    data = bench_json(times(rng))
    del data["context"]["attune_build_type"]
    code, _, err = run_cli(capsys, "compare", write_json(bench_json(times(rng))), write_json(data))
    assert code == 0
    assert "attune_build_type is recorded in only one run" in err


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("   \n", "is empty"),
    ('{"context": {}, "benchmarks": [', "not valid JSON"),
    ("[1, 2]", "not a Google Benchmark JSON"),
    ('{"context": {}, "benchmarks": []}', "holds no benchmark results"),
    (json.dumps({"context": {}, "benchmarks": [{"name": "x", "run_type": "iteration", "real_time": 1,
                                                "time_unit": "ms"}]}), "context lacks cpu_model"),
    (json.dumps({"context": CONTEXT, "benchmarks": [{"name": "x", "run_type": "iteration",
                                                     "real_time": "fast", "time_unit": "ms"}]}),
     "no positive real_time"),
    (json.dumps({"context": CONTEXT, "benchmarks": [{"name": "x", "run_type": "iteration",
                                                     "real_time": 1.0, "time_unit": "fortnights"}]}),
     "no positive real_time"),
])
def test_bad_input_exits_2(write_json, pair, capsys, content, message):
    bad = write_json(content)
    for args in ((pair[0], bad), (bad, pair[1])):
        code, out, err = run_cli(capsys, "compare", *args)
        assert code == 2
        assert err.startswith("error: ") and message in err, err


def test_missing_file_exits_2(pair, tmp_path, capsys):
    code, _, err = run_cli(capsys, "compare", pair[0], tmp_path / "nope.json")
    assert code == 2 and "cannot read" in err


def test_no_common_benchmarks_exits_2(write_json, capsys):
    rng = np.random.default_rng(6)
    base = write_json(bench_json(times(rng, names=[bench_name("flash")])))
    new = write_json(bench_json(times(rng, names=[bench_name("simd")])))
    code, _, err = run_cli(capsys, "compare", base, new)
    assert code == 2 and "no benchmark name is common" in err


def test_fewer_than_three_repetitions_exits_2(write_json, capsys):
    rng = np.random.default_rng(7)
    base = write_json(bench_json(times(rng)))
    new = write_json(bench_json(times(rng, n=2)))
    code, _, err = run_cli(capsys, "compare", base, new)
    assert code == 2 and "fewer than 3 repetitions" in err and "--benchmark_repetitions" in err


def test_aggregates_and_errored_benchmarks_are_ignored(write_json, capsys):
    rng = np.random.default_rng(8)
    data = bench_json(times(rng))
    data["benchmarks"].append({"name": bench_name("naive"), "run_type": "iteration", "error_occurred": True,
                               "error_message": "time budget exhausted", "real_time": 0, "time_unit": "ms"})
    code, out, err = run_cli(capsys, "compare", write_json(bench_json(times(rng))), write_json(data))
    assert code == 0
    assert "naive" in err and "naive" not in out.split("suite:")[0]
    assert "_median" not in out


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('["x"]', "one object"),
    ('{"flash": -1}', "positive percentage"),
    ('{"flash": "10"}', "positive percentage"),
    ('{"(": 10}', "bad regex"),
])
def test_bad_thresholds_file_exits_2(pair, write_json, capsys, content, message):
    code, _, err = run_cli(capsys, "compare", *pair, "--thresholds", write_json(content, "thr.json"))
    assert code == 2 and message in err


def test_bad_threshold_and_alpha_exit_2(pair, capsys):
    assert run_cli(capsys, "compare", *pair, "--threshold", "0")[0] == 2
    assert run_cli(capsys, "compare", *pair, "--alpha", "1.5")[0] == 2
    with pytest.raises(SystemExit) as e:  # argparse: usage errors exit 2 as well
        cli.main(["compare", pair[0]])
    assert e.value.code == 2


def test_real_runs_from_attune_bench(capsys, tmp_path):
    """Two real quick runs (5 repetitions, random interleaving) of the same build: an A/A pair."""
    a, b = os.path.join(DATA, "real_a.json"), os.path.join(DATA, "real_b.json")
    md = tmp_path / "real.md"
    code, out, err = run_cli(capsys, "compare", a, b, "--markdown", md)
    assert code == 0, out + err
    assert out.count("/real_time") == 4
    assert "REGRESSION" not in out


def test_baseline_update_and_path(pair, tmp_path, capsys):
    d = tmp_path / "baselines"
    code, _, err = run_cli(capsys, "baseline", "path", pair[1], "--dir", d)
    assert code == 3 and "no baseline" in err
    code, out, _ = run_cli(capsys, "baseline", "update", pair[0], "--dir", d)
    assert code == 0
    stored = out.strip()
    assert os.path.dirname(stored) == str(d) and stored.endswith(".json")
    key = os.path.basename(stored)[:-5]
    index = json.loads((d / "index.json").read_text())
    assert index[key]["cpu_model"] == "AMD EPYC" and index[key]["preset"] == "quick"
    # The new run of the same configuration finds it, and compares against it.
    code, out, _ = run_cli(capsys, "baseline", "path", pair[1], "--dir", d)
    assert code == 0 and out.strip() == stored
    assert run_cli(capsys, "compare", stored, pair[1])[0] == 0
    assert not [f for f in os.listdir(d) if ".tmp" in f]


def test_baseline_is_per_configuration(write_json, tmp_path, capsys):
    rng = np.random.default_rng(9)
    d = tmp_path / "baselines"
    a = write_json(bench_json(times(rng)))
    b = write_json(bench_json(times(rng), preset="standard"))
    assert run_cli(capsys, "baseline", "update", a, "--dir", d)[0] == 0
    assert run_cli(capsys, "baseline", "path", b, "--dir", d)[0] == 3
    assert run_cli(capsys, "baseline", "update", b, "--dir", d)[0] == 0
    assert len(json.loads((d / "index.json").read_text())) == 2


def test_baseline_rejects_bad_runs(write_json, tmp_path, capsys):
    rng = np.random.default_rng(10)
    d = tmp_path / "baselines"
    code, _, err = run_cli(capsys, "baseline", "update", write_json(bench_json(times(rng, n=1))), "--dir", d)
    assert code == 2 and "fewer than 3 repetitions" in err
    assert run_cli(capsys, "baseline", "path", write_json(""), "--dir", d)[0] == 2


def test_busy_machine_is_a_warning(write_json, capsys):
    rng = np.random.default_rng(11)
    base = bench_json(times(rng))
    base["context"].update(load_avg=[0.1, 0.2, 0.3], num_cpus=2)
    new = bench_json(times(rng))
    new["context"].update(load_avg=[1.9, 1.2, 0.6], num_cpus=2)
    code, _, err = run_cli(capsys, "compare", write_json(base), write_json(new))
    assert code == 0
    assert err.count("load average") == 1 and "1.90 on 2 CPUs" in err
