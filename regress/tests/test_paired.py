"""Paired sessions on a stand-in bench (tests/fakes/fake_bench.py): the run order, the merged
files, and the verdicts and exit codes of `paired`."""
import json
import os
import subprocess

import pytest

from attune_regress import benchjson, cli, paired
from attune_regress.benchjson import InputError
from regress_synth import bench_json, bench_name


def test_abba_alternates_and_random_is_seeded():
    assert paired.schedule(2, 4, "abba") == [[0, 1], [1, 0], [0, 1], [1, 0]]
    three = paired.schedule(3, 6, "abba")
    assert three == [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1], [2, 0, 1], [1, 0, 2]]
    for arm in range(3):  # every arm in every position exactly twice
        assert sorted(r.index(arm) for r in three) == [0, 0, 1, 1, 2, 2]
    r1, r2 = paired.schedule(3, 8, "random", seed=5), paired.schedule(3, 8, "random", seed=5)
    assert r1 == r2 and all(sorted(r) == [0, 1, 2] for r in r1)
    assert r1 != paired.schedule(3, 8, "random", seed=6)
    with pytest.raises(InputError, match="--order"):
        paired.schedule(2, 2, "aabb")
    with pytest.raises(InputError, match="--rounds"):
        paired.schedule(2, 0)


def test_session_flags_replace_the_callers_output_and_repetitions():
    args = ["--preset", "quick", "--benchmark_repetitions=10", "--benchmark_out", "x.json", "--benchmark_out_format=json",
            "--benchmark_filter=^a"]
    assert paired.strip_own_flags(args) == ["--preset", "quick", "--benchmark_filter=^a"]
    cmd = paired.run_command(paired.Arm("new", "/b", ["--block-kv", "64"]), args, 3, "o.json")
    assert cmd == ["/b", "--preset", "quick", "--benchmark_filter=^a", "--block-kv", "64", "--benchmark_repetitions=3",
                   "--benchmark_out=o.json", "--benchmark_out_format=json"]


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("order", ["abba", "random"])
def test_session_runs_in_schedule_order_and_merges(fake_bin, tmp_path, monkeypatch, order):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_BENCH_LOG", str(log))
    bench = str(fake_bin / "attune_bench")
    arms = [paired.Arm("base", bench, env={"FAKE_TAG": "A"}), paired.Arm("new", bench, ["--block-kv", "64"],
                                                                           env={"FAKE_TAG": "B"})]
    out = tmp_path / "session"
    base_json, new_json = paired.session(arms, ["--benchmark_repetitions=10"], 4, 3, str(out), order, seed=2)
    tags = "".join(c["tag"] for c in read_log(log))
    expected = "".join("".join("AB"[i] for i in r) for r in paired.schedule(2, 4, order, seed=2))
    assert tags == expected
    if order == "abba":
        assert tags == "ABBAABBA"
    calls = read_log(log)
    assert all("--benchmark_repetitions=3" in c["argv"] and "--benchmark_repetitions=10" not in c["argv"] for c in calls)
    assert all(("--block-kv" in c["argv"]) == (c["tag"] == "B") for c in calls)
    base, new = benchjson.load(base_json), benchjson.load(new_json)
    assert len(base.times) == 8 and all(len(t) == 12 for t in base.times.values())  # 4 rounds x 3
    assert all(len(t) == 12 for t in new.times.values())
    raw = json.loads(open(new_json).read())
    assert all(r["run_type"] == "iteration" for r in raw["benchmarks"])  # aggregates dropped
    assert sorted({r["merged_run"] for r in raw["benchmarks"]}) == [0, 1, 2, 3]
    ctx = raw["context"]
    assert ctx["paired_arm"] == "new" and ctx["paired_rounds"] == 4 and ctx["merged_from"] == 4
    assert ctx["paired_schedule"] == " ".join("".join("AB"[i] for i in r) for r in paired.schedule(2, 4, order, 2))
    assert "--block-kv 64" in ctx["paired_command"] and ctx["paired_env"] == "FAKE_TAG=B"
    # the busiest run's load average is kept (the fake's load grows with its call number)
    assert ctx["load_avg"][0] == pytest.approx(max(c["call"] for c in calls if c["tag"] == "B") * 0.1)
    assert len(os.listdir(out / "runs")) == 8


def test_merge_refuses_runs_of_different_configurations(write_json, tmp_path):
    a = write_json(bench_json({bench_name(): [1, 1, 1]}))
    b = write_json(bench_json({bench_name(): [1, 1, 1]}, cpu_model="Intel Xeon"))
    with pytest.raises(InputError, match="cpu_model"):
        paired.merge([a, b], str(tmp_path / "m.json"))
    m = paired.merge([a, a], str(tmp_path / "m.json"), {"note": "x"})
    run = benchjson.load(m)
    assert run.times[bench_name()] == [1e-3] * 6 and run.context["note"] == "x"


def test_merge_command(write_json, tmp_path, capsys):
    a = write_json(bench_json({bench_name(): [1, 2, 3]}))
    b = write_json(bench_json({bench_name(): [4, 5]}))
    dest = tmp_path / "m.json"
    assert cli.main(["merge", str(dest), a, b]) == 0
    assert len(benchjson.load(str(dest)).times[bench_name()]) == 5


def paired_cli(fake_bin, tmp_path, *extra):
    bench = str(fake_bin / "attune_bench")
    return cli.main(["paired", "--base-bench", bench, "--new-bench", bench, "--out", str(tmp_path / "p"), "--quiet",
                     *extra])


def test_paired_same_binary_passes(fake_bin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BENCH_COUNTER", str(tmp_path / "n"))
    assert paired_cli(fake_bin, tmp_path, "--suite", "--markdown", str(tmp_path / "r.md")) == 0
    out = capsys.readouterr().out
    assert "REGRESSION" not in out and "suite:" in out
    assert (tmp_path / "r.md").read_text().startswith("## attune regression check: no regression")


def test_paired_flag_slowdown_is_a_regression(fake_bin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BENCH_COUNTER", str(tmp_path / "n"))
    assert paired_cli(fake_bin, tmp_path, "--new-args", "--block-kv 64", "--", "--preset", "quick") == 1
    captured = capsys.readouterr()
    assert captured.out.count("REGRESSION") >= 8
    assert "bench_tiles differs" in captured.err  # a warning, not a refusal


def test_paired_env_reaches_one_side_only(fake_bin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BENCH_COUNTER", str(tmp_path / "n"))
    assert paired_cli(fake_bin, tmp_path, "--base-env", "FAKE_BENCH_SLOW=1.25") == 0  # base slower: improvement
    assert "IMPROVEMENT" in capsys.readouterr().out


def test_paired_bench_failure_and_bad_options_exit_2(fake_bin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BENCH_FAIL", "1")
    assert paired_cli(fake_bin, tmp_path) == 2
    assert "told to fail" in capsys.readouterr().err
    monkeypatch.delenv("FAKE_BENCH_FAIL")
    assert paired_cli(fake_bin, tmp_path, "--new-env", "NOEQUALS") == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert paired_cli(fake_bin, tmp_path, "--threshold", "-1") == 2
    assert paired_cli(fake_bin, tmp_path, "--rounds", "0") == 2


def test_proof_on_the_stand_in(fake_bin, tmp_path, monkeypatch, capsys):
    """The proof end to end, tiny: its default slowdown is the bench's --inject-slowdown 5, here
    raised to 20% so every A/B benchmark is caught, and the A/A sessions of identical seeded
    noise raise no alarm."""
    monkeypatch.setenv("FAKE_BENCH_COUNTER", str(tmp_path / "n"))
    out = tmp_path / "proof"
    code = cli.main(["proof", "--bench", str(fake_bin / "attune_bench"), "--aa", "2", "--ab", "2", "--out", str(out),
                     "--baselines", str(tmp_path / "none"), "--sweep", "3,10,25",
                     "--slowdown-args", "--inject-slowdown 20"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["aa"]["comparisons"] == 2 and s["aa"]["false_alarm_benchmarks"] == 0
    assert s["ab"]["comparisons"] == 2 and s["ab"]["target_tests"] == 16 and s["ab"]["target_detections"] == 16
    assert all(abs(r["true_change"] - 0.2) < 0.02 for r in s["ab"]["per_benchmark"].values())
    rates = {round(x["slowdown"], 2): x["detection_rate"] for x in s["sweep"]}
    assert rates[0.03] == 0 and rates[0.25] == 1
    assert s["smallest_reliable_slowdown"] in (0.1, 0.25)
    md = (out / "summary.md").read_text()
    assert "(a) A/A" in md and "(b) A/B" in md and "proof.png" in md
    assert (out / "proof.png").stat().st_size > 10000
    assert sorted(os.listdir(out / "sessions")) == ["00-aa+ab", "01-aa+ab"]
    # the default design: duet sessions (A with A2, A with B), judged with a calibration of their own
    assert sorted(os.listdir(out / "sessions" / "00-aa+ab")) == ["a2", "b"]
    assert s["settings"]["order"] == "duet" and s["calibration"]["comparisons"] == 10
    assert json.loads((out / "calibration.json").read_text())["kind"] == "attune-regress-calibration"
    assert "calibrated for" in s["settings"]["thresholds"] and "Calibration (10 A/A" in md


def test_proof_helpers():
    from attune_regress import proof
    assert proof.session_plan(4, 2) == [(True, False), (True, True), (True, False), (True, True)]
    assert proof.session_plan(2, 4) == [(False, True), (True, True), (False, True), (True, True)]
    assert [b for _, b in proof.session_plan(20, 10)].count(True) == 10
    assert proof.clopper_pearson_upper(0, 59) == pytest.approx(0.0495, abs=5e-4)   # the "0 in 59" rule
    assert proof.clopper_pearson_upper(0, 20) == pytest.approx(0.139, abs=1e-3)
    assert proof.clopper_pearson_upper(3, 3) == 1.0
    assert proof.short(bench_name("simd", 512, 128, 1)) == "simd h8/8 s512/512 d128 causal"


def test_duet_runs_both_arms_of_a_round_at_once_on_swapped_cpus(fake_bin, tmp_path, monkeypatch):
    """--order duet: each round's two runs go out together, pinned one per CPU with taskset, the
    CPUs swapped every round; more than two arms, or fewer than two CPUs, are refused."""
    monkeypatch.setattr(paired, "duet_cpus", lambda: [3, 5])
    bench = str(fake_bin / "attune_bench")
    arms = [paired.Arm("base", bench), paired.Arm("new", bench, ["--block-kv", "64"])]
    rounds = []
    monkeypatch.setenv("FAKE_BENCH_COUNTER", str(tmp_path / "n"))

    def together(jobs):
        rounds.append([(job[0][:3], job[0][3] == bench and "--block-kv" in job[0]) for job in jobs])
        for cmd, env, _ in jobs:  # the fake bench, unpinned (the CPUs are made up)
            subprocess.run(cmd[3:], env=env, check=True)

    base_json, new_json = paired.session(arms, [], 4, 2, str(tmp_path / "s"), "duet", together=together)
    assert len(rounds) == 4 and all(len(r) == 2 for r in rounds)
    assert all([pin[2] for pin, _ in r] == ["3", "5"] for r in rounds)  # one run per CPU
    new_on_cpu3 = [r[0][1] for r in rounds]
    assert new_on_cpu3 == [False, True, False, True]  # the arms swap CPUs every round
    assert all(len(t) == 8 for t in benchjson.load(new_json).times.values())  # 4 rounds x 2
    with pytest.raises(InputError, match="two arms"):
        paired.session(arms + [paired.Arm("third", bench)], [], 2, 1, str(tmp_path / "t"), "duet", together=together)
    monkeypatch.undo()  # the real duet_cpus, on a process allowed one CPU
    monkeypatch.setattr(paired.os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(InputError, match="two CPUs"):
        paired.duet_cpus()


def test_proof_in_duet_order_on_the_stand_in(fake_bin, tmp_path, monkeypatch):
    """The proof with --order duet: A/A and A/B each run as two-arm sessions of their own."""
    monkeypatch.setenv("FAKE_BENCH_COUNTER", str(tmp_path / "n"))
    monkeypatch.setattr(paired, "duet_cpus", lambda: [0, 0])
    out = tmp_path / "proof"
    code = cli.main(["proof", "--bench", str(fake_bin / "attune_bench"), "--aa", "2", "--ab", "1", "--out", str(out),
                     "--baselines", str(tmp_path / "none"), "--sweep", "25", "--order", "duet",
                     "--slowdown-args", "--inject-slowdown 20"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["order"] == "duet"
    assert s["aa"]["comparisons"] == 2 and s["aa"]["false_alarm_benchmarks"] == 0
    assert s["ab"]["comparisons"] == 1 and s["ab"]["target_detections"] == s["ab"]["target_tests"] == 8
    assert sorted(os.listdir(out / "sessions" / "01-aa+ab")) == ["a2", "b"]
