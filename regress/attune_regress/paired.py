"""Paired sessions: the arms of an A/B (two attune_bench binaries, or one binary with different
flags or environment) run as alternating processes in one session, so drift on a shared machine
(a co-runner arriving, the clock or the host's load changing) lands on every arm alike instead of
on whichever run happened to be second.

Each round runs every arm once, a few repetitions per process; the order alternates (A B, B A,
A B, ...: ABBA) or is shuffled per round (seeded). The repetitions of each arm are then merged
into one bench JSON, which `compare` judges exactly like a stored baseline and a new run.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field

from .benchjson import InputError, fingerprint_of, write_atomic

ORDERS = ("abba", "random", "duet")
# duet: measured on an AMD EPYC VM (docs/regression.md), it cancels more of the host's drift in
# a third of the time of abba; a machine with one CPU falls back to abba.
DEFAULT_ORDER = "duet"
# Flags the session sets itself for every run; dropped from user-supplied bench flags.
_OWN_FLAGS = ("--benchmark_repetitions", "--benchmark_out", "--benchmark_out_format", "--benchmark_format")


@dataclass
class Arm:
    label: str                                  # file-name safe: "base", "new", "a2", ...
    bench: str                                  # attune_bench binary
    args: list = field(default_factory=list)    # flags for this arm only (after the common ones)
    env: dict = field(default_factory=dict)     # environment added for this arm only


def schedule(n_arms: int, rounds: int, order: str = "abba", seed: int = 0) -> list:
    """The arm indices in run order, round by round. abba: rounds alternate forward and reversed
    order (0 1, 1 0, 0 1, ...), so each arm runs first as often as last; with more than two arms
    every other round also rotates the order (0 1 2, 2 1 0, 1 2 0, 0 2 1, ...), so no arm is
    always in the middle. random: every round is an independent shuffle from a seeded generator
    (the same seed gives the same session). duet (two arms): both arms of a round run at once,
    one per CPU; the listed order is the CPUs', swapped every round (0 1, 1 0, ...)."""
    if order not in ORDERS:
        raise InputError("--order must be one of %s (got %r)" % (", ".join(ORDERS), order))
    if rounds < 1:
        raise InputError("--rounds must be >= 1 (got %d)" % rounds)
    rng = random.Random(seed)
    out = []
    if order == "duet" and n_arms != 2:
        raise InputError("--order duet runs two arms at once, one per CPU (got %d arms)" % n_arms)
    for r in range(rounds):
        idx = list(range(n_arms))
        if order in ("abba", "duet"):
            if n_arms > 2:
                shift = (r // 2) % n_arms
                idx = idx[shift:] + idx[:shift]
            if r % 2:
                idx.reverse()
        else:
            rng.shuffle(idx)
        out.append(idx)
    return out


def strip_own_flags(args) -> list:
    out = []
    skip_next = False
    for a in args:
        if skip_next:
            skip_next = False
            continue
        if any(a == f or a.startswith(f + "=") for f in _OWN_FLAGS):
            skip_next = "=" not in a  # "--benchmark_out PATH" form: drop the value too
            continue
        out.append(a)
    return out


def run_command(arm: Arm, common, repetitions: int, out_path: str) -> list:
    return ([arm.bench] + strip_own_flags(common) + strip_own_flags(arm.args) +
            ["--benchmark_repetitions=%d" % repetitions, "--benchmark_out=" + out_path,
             "--benchmark_out_format=json"])


def _run_once(cmd, env, out_path):
    """Runs one bench process; raises InputError (with the end of its stderr) on failure."""
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise InputError("cannot run %s: %s" % (cmd[0], e.strerror or e))
    if p.returncode != 0 or not os.path.isfile(out_path):
        tail = " | ".join(p.stderr.strip().splitlines()[-3:])
        raise InputError("%s exited with status %d%s" % (cmd[0], p.returncode, ": " + tail if tail else ""))


def duet_cpus() -> list:
    """The two CPUs duet rounds pin their runs to (the first two this process may use)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        raise InputError("--order duet needs two CPUs (this process may use %d)" % len(cpus))
    return cpus[:2]


def _run_together(jobs):
    """Runs (cmd, env, out_path) jobs at the same time; raises InputError as _run_once does."""
    procs = []
    try:
        for cmd, env, _ in jobs:
            procs.append((cmd, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                                text=True)))
    except OSError as e:
        for _, p in procs:
            p.kill()
        raise InputError("cannot run %s: %s" % (jobs[len(procs)][0][0], e.strerror or e))
    failures = []
    for (cmd, p), (_, _, out_path) in zip(procs, jobs):
        _, err = p.communicate()
        if p.returncode != 0 or not os.path.isfile(out_path):
            tail = " | ".join(err.strip().splitlines()[-3:])
            failures.append("%s exited with status %d%s" % (cmd[0], p.returncode, ": " + tail if tail else ""))
    if failures:
        raise InputError("; ".join(failures))


def session(arms, common, rounds: int, repetitions: int, out_dir: str, order: str = "abba", seed: int = 0,
            runner=_run_once, log=None, together=_run_together) -> list:
    """Runs the session; returns one merged JSON path per arm (OUT_DIR/<label>.json). The runs'
    own files stay in OUT_DIR/runs/ (round, position, arm in the name) for inspection.
    duet: each round's two runs go to `together` at once, each pinned to one CPU (taskset); a
    co-runner or a slow spell of the host then reaches both arms of the round alike."""
    if repetitions < 1:
        raise InputError("--repetitions must be >= 1 (got %d)" % repetitions)
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise InputError("arm labels must differ (got %s)" % ", ".join(labels))
    plan = schedule(len(arms), rounds, order, seed)
    runs_dir = os.path.join(out_dir, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    per_arm = {a.label: [] for a in arms}
    total, done = rounds * len(arms), 0
    order_text = []
    cpus = None
    if order == "duet":
        try:
            cpus = duet_cpus()
        except InputError as e:
            if log:
                log("%s: running abba instead" % e)
            order = "abba"
            plan = schedule(len(arms), rounds, order, seed)
    for r, idx in enumerate(plan):
        order_text.append("".join(chr(ord("A") + i) for i in idx))
        if cpus is not None:
            jobs = []
            for pos, i in enumerate(idx):
                arm = arms[i]
                path = os.path.join(runs_dir, "r%02d-cpu%d-%s.json" % (r, cpus[pos], arm.label))
                env = dict(os.environ)
                env.update(arm.env)
                jobs.append((["taskset", "-c", str(cpus[pos])] + run_command(arm, common, repetitions, path), env, path))
                per_arm[arm.label].append(path)
            done += len(idx)
            if log:
                log("runs %d-%d/%d: round %d, %s together" % (done - 1, done, total, r + 1,
                                                             " and ".join(arms[i].label for i in idx)))
            together(jobs)
            continue
        for pos, i in enumerate(idx):
            arm = arms[i]
            path = os.path.join(runs_dir, "r%02d-%d-%s.json" % (r, pos, arm.label))
            cmd = run_command(arm, common, repetitions, path)
            done += 1
            if log:
                log("run %d/%d: round %d, %s" % (done, total, r + 1, arm.label))
            env = dict(os.environ)
            env.update(arm.env)
            runner(cmd, env, path)
            per_arm[arm.label].append(path)
    session_info = {"paired_order": order, "paired_rounds": rounds, "paired_repetitions_per_run": repetitions,
                    "paired_schedule": " ".join(order_text), "paired_arms": ", ".join(
                        "%s=%s" % (chr(ord("A") + i), a.label) for i, a in enumerate(arms))}
    merged = []
    for a in arms:
        dest = os.path.join(out_dir, a.label + ".json")
        info = dict(session_info, paired_arm=a.label, paired_command=" ".join(
            [a.bench] + strip_own_flags(common) + strip_own_flags(a.args)))
        if a.env:
            info["paired_env"] = " ".join("%s=%s" % kv for kv in sorted(a.env.items()))
        merge(per_arm[a.label], dest, info)
        merged.append(dest)
    return merged


def _load_raw(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except OSError as e:
        raise InputError("cannot read %s: %s" % (path, e.strerror or e))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError("%s is not valid JSON (%s)" % (path, e))
    if not isinstance(data, dict) or not isinstance(data.get("context"), dict) \
            or not isinstance(data.get("benchmarks"), list):
        raise InputError("%s is not a Google Benchmark JSON file (needs 'context' and 'benchmarks')" % path)
    return data


def _first_load(context) -> float:
    try:
        return float(context.get("load_avg")[0])
    except (TypeError, ValueError, IndexError):
        return -1.0


def merge(paths, dest: str, extra_context=None) -> str:
    """One bench JSON holding the repetitions (iteration rows) of every file in `paths`, each row
    tagged with `merged_run` (its file's index); aggregates are dropped (they described one run
    only). The context is the first file's, with the highest load average seen and
    `extra_context` added. Files from different machine configurations are refused."""
    if not paths:
        raise InputError("nothing to merge")
    rows, contexts = [], []
    for i, p in enumerate(paths):
        data = _load_raw(p)
        fp = fingerprint_of(data["context"], p)
        if contexts:
            first = fingerprint_of(contexts[0], paths[0])
            diff = [k for k in sorted(set(fp) | set(first)) if fp.get(k) != first.get(k)]
            if diff:
                raise InputError("cannot merge %s with %s: %s differ" % (p, paths[0], ", ".join(diff)))
        contexts.append(data["context"])
        for b in data["benchmarks"]:
            if not isinstance(b, dict):
                raise InputError("%s: a benchmarks entry is not an object" % p)
            if b.get("run_type", "iteration") != "iteration" or "aggregate_name" in b:
                continue
            row = dict(b)
            row["merged_run"] = i
            rows.append(row)
    context = dict(contexts[0])
    busiest = max(contexts, key=_first_load)
    if "load_avg" in busiest:
        context["load_avg"] = busiest["load_avg"]
    context["merged_from"] = len(paths)
    context.update(extra_context or {})
    write_atomic(dest, (json.dumps({"context": context, "benchmarks": rows}, indent=1) + "\n").encode())
    return dest


def parse_env(items) -> dict:
    env = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("environment setting %r is not NAME=VALUE" % item)
        env[key] = value
    return env


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
