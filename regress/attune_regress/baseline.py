"""Stored baselines, one per machine fingerprint: DIR/<fingerprint-hash>.json (the bench JSON
as written by attune_bench) and DIR/index.json (hash -> fingerprint fields, revision, date).
Only the explicit `baseline update` command writes them."""
from __future__ import annotations

import os
import shutil

from .benchjson import MIN_REPETITIONS, BenchRun, InputError
from . import history


def path_for(run: BenchRun, directory: str) -> str:
    return os.path.join(directory, run.fingerprint_hash() + ".json")


def find(run: BenchRun, directory: str):
    p = path_for(run, directory)
    return p if os.path.isfile(p) else None


def update(run: BenchRun, directory: str) -> str:
    short = [n for n, t in run.times.items() if len(t) < MIN_REPETITIONS]
    if short:
        raise InputError("%s: fewer than %d repetitions for %d benchmark(s), e.g. %s; a baseline needs "
                         "--benchmark_repetitions >= %d" % (run.path, MIN_REPETITIONS, len(short), short[0],
                                                             MIN_REPETITIONS))
    entry = dict(run.fingerprint())
    return store(run.path, directory, os.path.basename(path_for(run, directory)), run.fingerprint_hash(), entry)


def store(source: str, directory: str, name: str, key: str, entry: dict) -> str:
    """Copy `source` to DIR/name atomically (temporary sibling, fsync, rename) and list it in
    DIR/index.json under `key`, all under the folder's lock. Shared with `icount baseline`."""
    dest = os.path.join(directory, name)
    with history.locked(directory):
        tmp = os.path.join(directory, ".%s.tmp.%d" % (name, os.getpid()))
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        history.update_index(directory, key, entry)
    return dest
