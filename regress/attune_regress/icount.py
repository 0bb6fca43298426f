"""Instruction counts: the deterministic second signal beside wall time.

Each case is one `attune run` (fixed shape, fixed inputs, one kernel, 1 thread, ISA capped to
AVX2 because valgrind 3.19 cannot run AVX-512) under `valgrind --tool=callgrind`, counting only
inside attune::attention (--collect-atstart=no --toggle-collect), so process start-up and file I/O
do not reach the count. What could still move it is layout: path strings and environment
variables sit on the stack and the heap before the kernel runs, shifting buffer alignment and so
the paths memset and the kernels' peel loops take (a different work folder moved counts by
0.006%). So every case runs in its work folder, as `./attune` (a symlink), on short relative
file names, with a fixed minimal environment. The count (Ir) is then identical run after run and
from any checkout on one machine configuration, so a tight threshold (1%) is safe.

JSON written by `icount run`:
  {"format": "attune_icount", "version": 1, "context": {...}, "cases": {name: {"Ir": int, "command": str}}}
The context's FINGERPRINT_FIELDS name the configuration; counts are compared only within one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass

from .benchjson import InputError, write_atomic

FORMAT = "attune_icount"
VERSION = 1
ISA = "avx2"
TOGGLE = "attune::attention(*"
# What decides the count besides attune's code: the compiler and its flags, the ISA, the libc
# (memset and friends are picked per CPU by glibc), the CPU as valgrind presents it, valgrind.
FINGERPRINT_FIELDS = ("cpu_model", "cores", "attune_compiler", "attune_flags", "attune_build_type", "isa",
                      "valgrind", "libc")
WARN_FIELDS = ("attune_version", "attune_git_revision")


@dataclass(frozen=True)
class Case:
    kernel: str
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_kv: int
    d: int
    causal: bool
    dtype: str = "fp32"  # storage of Q, K, V and O (`attune run --dtype`)

    @property
    def name(self) -> str:
        # fp32 names carry no dt: segment (they are the names the first baselines stored).
        return "icount/%s/%s/hq:%d/hkv:%d/sq:%d/skv:%d/d:%d/causal:%d%s" % (
            self.kernel, ISA, self.heads_q, self.heads_kv, self.seq_q, self.seq_kv, self.d, int(self.causal),
            "" if self.dtype == "fp32" else "/dt:" + self.dtype)


# Small versions of the wall-time set's shapes (several query and key tiles each, ~1-2 s per
# case under valgrind, most of it valgrind's start-up).
CASES = tuple(Case(k, *shape) for k in ("flash", "simd") for shape in (
    (2, 2, 128, 128, 128, False),
    (2, 2, 256, 256, 64, False),
    (2, 2, 256, 256, 128, True),
    (8, 2, 1, 2048, 128, False),
)) + tuple(Case(k, *shape, dtype="bf16") for k in ("flash", "simd") for shape in (
    # The 16-bit conversion path: widened key tiles (prefill) and in-register widening (decoding).
    (2, 2, 256, 256, 128, True),
    (8, 2, 1, 2048, 128, False),
))


def parse_callgrind(path: str) -> int:
    """Ir of a callgrind output file: the `totals:` line (else `summary:`), at the position of
    Ir in the `events:` line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise InputError("cannot read %s: %s" % (path, e.strerror or e))
    events = re.search(r"^events:\s*(.+)$", text, re.M)
    if not events:
        raise InputError("%s is not a callgrind output file (no 'events:' line)" % path)
    names = events.group(1).split()
    if "Ir" not in names:
        raise InputError("%s: Ir is not among the recorded events (%s)" % (path, " ".join(names)))
    line = re.search(r"^totals:\s*(.+)$", text, re.M) or re.search(r"^summary:\s*(.+)$", text, re.M)
    if not line:
        raise InputError("%s has no 'totals:' or 'summary:' line (cut short?)" % path)
    values = line.group(1).split()
    pos = names.index("Ir")
    if pos >= len(values) or not values[pos].isdigit():
        raise InputError("%s: no count for Ir in %r" % (path, line.group(0)))
    return int(values[pos])


def attune_info(attune: str, env=None) -> dict:
    """`attune info` as a dict of its `key: value` lines (plus `version`)."""
    try:
        p = subprocess.run([attune, "info"], capture_output=True, text=True, timeout=120, env=env)
    except OSError as e:
        raise InputError("cannot run %s: %s" % (attune, e.strerror or e))
    if p.returncode != 0:
        raise InputError("%s info failed (status %d): %s" % (attune, p.returncode, p.stderr.strip()))
    info = {}
    for line in p.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = " ".join(value.split())
        elif line.startswith("attune "):
            info["version"] = line.split()[1]
    return info


def valgrind_version(valgrind: str) -> str:
    try:
        p = subprocess.run([valgrind, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise InputError("cannot run %s: %s (install valgrind)" % (valgrind, e.strerror or e))
    return p.stdout.strip() or "unknown"


def context_for(attune: str, valgrind: str) -> dict:
    info = attune_info(attune)
    needed = {"cpu": "cpu_model", "cores": "cores", "compiler": "attune_compiler", "flags": "attune_flags",
              "build type": "attune_build_type"}
    missing = [k for k in needed if k not in info]
    if missing:
        raise InputError("%s info does not report %s" % (attune, ", ".join(missing)))
    ctx = {field: info[key] for key, field in needed.items()}
    ctx.update({
        "isa": ISA,
        "valgrind": valgrind_version(valgrind),
        "libc": os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else "unknown",
        "attune_version": info.get("version", "?"),
        "attune_git_revision": info.get("git revision", "?"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "threads": 1,
        "counted": "callgrind --collect-atstart=no --toggle-collect=%s" % TOGGLE,
    })
    return ctx


# The environment of every counted run: nothing from the caller's (its size and order would
# shift the layout), plus the names listed in ATTUNE_ICOUNT_PASS_ENV (comma-separated), for
# wrappers that need them (the tests' stand-in valgrind).
FIXED_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "ATTUNE_ISA": ISA}


def counting_env(environ=None) -> dict:
    environ = os.environ if environ is None else environ
    env = dict(FIXED_ENV)
    for name in environ.get("ATTUNE_ICOUNT_PASS_ENV", "").split(","):
        if name.strip() and name.strip() in environ:
            env[name.strip()] = environ[name.strip()]
    return env


def write_inputs(case: Case, directory: str, index: int) -> dict:
    """q/k/v .npy files for the case's shape (seeded normals), as short names relative to the
    work folder: in<index>_q.npy ... (same length for every case up to 10)."""
    import numpy as np
    paths = {t: "in%d_%s.npy" % (index, t) for t in ("q", "k", "v")}
    rng = np.random.default_rng(1)
    shapes = {"q": (1, case.heads_q, case.seq_q, case.d), "k": (1, case.heads_kv, case.seq_kv, case.d),
              "v": (1, case.heads_kv, case.seq_kv, case.d)}
    for t in ("q", "k", "v"):
        np.save(os.path.join(directory, paths[t]), rng.standard_normal(shapes[t]).astype("<f4"))
    return paths


def case_command(case: Case, valgrind: str, inputs: dict, cg_out: str) -> list:
    """Run in the work folder; `./attune` is a symlink to the binary."""
    cmd = [valgrind, "--tool=callgrind", "--callgrind-out-file=" + cg_out, "--collect-atstart=no",
           "--toggle-collect=" + TOGGLE, "./attune", "run", "--q", inputs["q"], "--k", inputs["k"], "--v", inputs["v"],
           "--out", "out.npy", "--kernel", case.kernel, "--isa", ISA, "--threads", "1"]
    if case.causal:
        cmd.append("--causal")
    if case.dtype != "fp32":
        cmd += ["--dtype", case.dtype]
    return cmd


def run(attune: str, out: str, work: str, valgrind: str = "valgrind", cases=CASES, log=None) -> dict:
    """Counts every case; writes and returns the JSON document."""
    if not os.access(attune, os.X_OK):
        raise InputError("%s is not an executable (build the attune command first)" % attune)
    found = shutil.which(valgrind)
    if not found:
        raise InputError("%s not found (install valgrind)" % valgrind)
    valgrind = os.path.abspath(found)
    os.makedirs(work, exist_ok=True)
    link = os.path.join(work, "attune")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.abspath(attune), link)
    doc = {"format": FORMAT, "version": VERSION, "context": context_for(attune, valgrind), "cases": {}}
    env = counting_env()
    for i, case in enumerate(cases):
        inputs = write_inputs(case, work, i)
        cg_out = "callgrind.%d.out" % i
        if os.path.exists(os.path.join(work, cg_out)):
            os.unlink(os.path.join(work, cg_out))
        cmd = case_command(case, valgrind, inputs, cg_out)
        started = time.monotonic()
        p = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            tail = " | ".join(p.stderr.strip().splitlines()[-3:])
            raise InputError("%s failed (status %d): %s" % (case.name, p.returncode, tail))
        ir = parse_callgrind(os.path.join(work, cg_out))
        if ir == 0:
            raise InputError("%s: no instructions counted inside %s (function renamed, or symbols stripped?)"
                             % (case.name, TOGGLE))
        doc["cases"][case.name] = {"Ir": ir, "command": "cd WORK && " + " ".join(
            shlex.quote(c) for c in ["env", "-i"] + ["%s=%s" % kv for kv in sorted(FIXED_ENV.items())] + cmd[1:])}
        if log:
            log("%-60s %14s Ir  (%.1f s)" % (case.name, format(ir, ","), time.monotonic() - started))
    write_atomic(out, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return doc


# --- reading and comparing ---------------------------------------------------------------

def load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError("cannot read %s: %s" % (path, e.strerror or e))
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError("%s is not valid JSON (%s)" % (path, e))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError("%s is not an instruction-count file (format %r)" % (path, FORMAT))
    if not isinstance(doc.get("context"), dict) or not isinstance(doc.get("cases"), dict) or not doc["cases"]:
        raise InputError("%s holds no cases" % path)
    missing = [f for f in FINGERPRINT_FIELDS if f not in doc["context"]]
    if missing:
        raise InputError("%s: context lacks %s" % (path, ", ".join(missing)))
    for name, c in doc["cases"].items():
        ir = c.get("Ir") if isinstance(c, dict) else None
        if isinstance(ir, bool) or not isinstance(ir, int) or ir <= 0:
            raise InputError("%s: case %s has no positive integer Ir" % (path, name))
    doc["path"] = path
    return doc


def fingerprint(doc: dict) -> dict:
    return {f: " ".join(str(doc["context"][f]).split()) for f in FINGERPRINT_FIELDS}


def fingerprint_hash(doc: dict) -> str:
    canonical = json.dumps(fingerprint(doc), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def provenance_differences(base: dict, new: dict):
    refusals, warnings = [], []
    fb, fn = fingerprint(base), fingerprint(new)
    for f in FINGERPRINT_FIELDS:
        if fb[f] != fn[f]:
            refusals.append("%s differs: baseline %r, new %r" % (f, fb[f], fn[f]))
    for f in WARN_FIELDS:
        b, n = base["context"].get(f), new["context"].get(f)
        if b is not None and n is not None and b != n:
            warnings.append("%s differs: baseline %r, new %r" % (f, b, n))
    return refusals, warnings


@dataclass
class Row:
    name: str
    base: int
    new: int
    verdict: str

    @property
    def ratio(self) -> float:
        return self.new / self.base


def compare(base: dict, new: dict, threshold_pct: float = 1.0):
    """(rows worst first, geometric-mean ratio, only_base, only_new). REGRESSION: new/base >= 1 + T;
    IMPROVEMENT: new/base <= 1/(1 + T); OK otherwise (the counts carry no noise to test)."""
    if not (isinstance(threshold_pct, (int, float)) and math.isfinite(threshold_pct) and threshold_pct > 0):
        raise InputError("--threshold must be a positive percentage (got %r)" % (threshold_pct,))
    limit = 1.0 + threshold_pct / 100.0
    common = [n for n in new["cases"] if n in base["cases"]]
    if not common:
        raise InputError("no case is common to %s and %s" % (base["path"], new["path"]))
    rows = []
    for n in common:
        b, v = base["cases"][n]["Ir"], new["cases"][n]["Ir"]
        r = v / b
        verdict = "REGRESSION" if r >= limit else "IMPROVEMENT" if r <= 1.0 / limit else "OK"
        rows.append(Row(n, b, v, verdict))
    order = {"REGRESSION": 0, "IMPROVEMENT": 1, "OK": 2}
    rows.sort(key=lambda r: (order[r.verdict], r.name))
    geo = math.exp(sum(math.log(r.ratio) for r in rows) / len(rows))
    only_base = sorted(set(base["cases"]) - set(new["cases"]))
    only_new = sorted(set(new["cases"]) - set(base["cases"]))
    return rows, geo, only_base, only_new


def _pct(ratio: float) -> str:
    return "%+.3f%%" % ((ratio - 1.0) * 100.0)


def render(rows, geo, only_base, only_new, base: dict, new: dict, threshold_pct: float, markdown=False) -> str:
    same = sum(1 for r in rows if r.base == r.new)
    regressed = any(r.verdict == "REGRESSION" for r in rows)
    if markdown:
        out = ["## attune instruction counts: %s" % ("REGRESSION" if regressed else "no regression"), "",
               "Baseline `%s` (%s) vs new `%s` (%s); callgrind, ISA %s, 1 thread; threshold %g%%." % (
                   base["path"], base["context"].get("attune_git_revision", "?"), new["path"],
                   new["context"].get("attune_git_revision", "?"), ISA, threshold_pct), "",
               "| verdict | change | base Ir | new Ir | case |", "| --- | ---: | ---: | ---: | --- |"]
        for r in rows:
            v = "**%s**" % r.verdict if r.verdict == "REGRESSION" else r.verdict
            out.append("| %s | %s | %s | %s | `%s` |" % (v, _pct(r.ratio), format(r.base, ","), format(r.new, ","),
                                                     r.name))
        out += ["", "Geometric mean of the ratios %s; %d of %d cases identical." % (_pct(geo), same, len(rows)), ""]
        return "\n".join(out)
    lines = [("verdict", "change", "base Ir", "new Ir", "case")]
    lines += [(r.verdict, _pct(r.ratio), format(r.base, ","), format(r.new, ","), r.name) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = ["  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
           for line in lines]
    out.append("")
    out.append("instruction counts: geometric mean %s, %d of %d cases identical, threshold %g%%: %s"
               % (_pct(geo), same, len(rows), threshold_pct, "REGRESSION" if regressed else "no regression"))
    if only_base or only_new:
        out.append("not compared: %d only in the baseline, %d only in the new run" % (len(only_base), len(only_new)))
    out.append("baseline %s (%s), new %s (%s)" % (base["path"], base["context"].get("attune_git_revision", "?"),
                                                  new["path"], new["context"].get("attune_git_revision", "?")))
    return "\n".join(out) + "\n"


# --- baselines: DIR/icount-<fingerprint-hash>.json next to the wall-time ones --------------

def baseline_path(doc: dict, directory: str) -> str:
    return os.path.join(directory, "icount-%s.json" % fingerprint_hash(doc))


def baseline_find(doc: dict, directory: str):
    p = baseline_path(doc, directory)
    return p if os.path.isfile(p) else None


def baseline_update(doc: dict, directory: str) -> str:
    from .baseline import store
    key = "icount-" + fingerprint_hash(doc)
    return store(doc["path"], directory, key + ".json", key, dict(fingerprint(doc), kind="icount"))
