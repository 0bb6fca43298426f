"""Benchmark history: one JSON line per benchmark per recorded run, one file per machine
fingerprint (DIR/<fingerprint-hash>.jsonl), plus DIR/index.json mapping hash -> fingerprint.

Writes never corrupt a file: the whole new file is written to a temporary sibling, fsynced and
renamed over the old one, under an exclusive lock (DIR/.lock) so concurrent recorders do not lose
each other's lines. Reading still tolerates damage from elsewhere (a copy cut short, a
hand edit): a truncated last line or a malformed line is skipped and reported; the rest is kept.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from dataclasses import dataclass, field

from .benchjson import BenchRun, InputError, canonical_name, write_atomic


@dataclass
class History:
    path: str
    records: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # human-readable lines about skipped content


def _valid(rec) -> bool:
    if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
        return False
    for key in ("median", "min", "max"):
        v = rec.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            return False
    return True


def read(path: str) -> History:
    h = History(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return h
    except OSError as e:
        raise InputError("cannot read %s: %s" % (path, e.strerror or e))
    lines = raw.split(b"\n")
    # A complete file ends with a newline, so the last piece is empty.
    last = lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        if _valid(rec):
            rec["name"] = canonical_name(rec["name"])  # lines written before or after dt: match
            h.records.append(rec)
        else:
            h.problems.append("%s:%d: malformed line skipped" % (path, number))
    if last.strip():
        try:
            rec = json.loads(last)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        if _valid(rec):  # complete record, only the newline missing
            h.records.append(rec)
        else:
            h.problems.append("%s:%d: truncated last line (%d bytes) skipped" % (path, len(lines) + 1, len(last)))
    return h


def encode(records) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n" for r in records)


@contextlib.contextmanager
def locked(directory: str):
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_index(directory: str, key: str, fingerprint: dict) -> None:
    """DIR/index.json: {hash: fingerprint fields}; call under `locked(directory)`."""
    path = os.path.join(directory, "index.json")
    index = {}
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        if not isinstance(index, dict):
            index = {}
    except (OSError, json.JSONDecodeError):
        index = {}
    if index.get(key) != fingerprint:
        index[key] = fingerprint
        write_atomic(path, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())


def summarize(run: BenchRun) -> list:
    """One history record per benchmark of the run (times in milliseconds)."""
    out = []
    date = str(run.context.get("date", ""))
    rev = str(run.context.get("attune_git_revision", ""))
    for name, times in run.times.items():
        ms = sorted(t * 1e3 for t in times)
        n = len(ms)
        med = ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2])
        out.append({"name": name, "date": date, "git_revision": rev, "median": med, "min": ms[0],
                    "max": ms[-1], "n": n, "unit": "ms"})
    return out


def record(run: BenchRun, directory: str):
    """Add the run to DIR/<hash>.jsonl. Returns (path, added, already_present, problems).
    Recording the same run twice adds nothing (a record is keyed by name, date and revision)."""
    key = run.fingerprint_hash()
    path = os.path.join(directory, key + ".jsonl")
    with locked(directory):
        h = read(path)
        seen = {(r.get("name"), r.get("date"), r.get("git_revision")) for r in h.records}
        new = [r for r in summarize(run) if (r["name"], r["date"], r["git_revision"]) not in seen]
        if new or h.problems:
            write_atomic(path, encode(h.records + new))
        update_index(directory, key, run.fingerprint())
    return path, len(new), len(run.times) - len(new), h.problems
