"""Reading attune_bench's Google Benchmark JSON: repetitions per benchmark and provenance."""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field

from . import benchname

# Context fields that must match for two runs to be comparable; their hash names the
# baseline and history files of a machine configuration.
FINGERPRINT_FIELDS = ("cpu_model", "isa_default", "cores", "preset", "attune_compiler", "attune_flags")
# Must match too when both runs carry it (older JSON may lack it).
OPTIONAL_FINGERPRINT_FIELDS = ("attune_build_type",)
# Expected to differ between a baseline and new code: a warning, never a refusal.
WARN_FIELDS = ("attune_version", "attune_git_revision", "isa_runnable", "bench_tiles")


def canonical_name(name: str) -> str:
    """attention/.../causal:0/dt:fp32/t:1/real_time -> attention/.../causal:0/t:1/real_time.
    attune_bench names carry dt:<fp32|bf16|fp16> since the element type became a problem
    dimension; fp32, the only type before that, is keyed without it, so baselines and histories
    recorded earlier keep matching new runs; 16-bit benchmarks keep theirs. Other names (icount
    cases) are their own keys."""
    parsed = benchname.parse(name)
    return parsed.format(fp32_segment=False) if parsed else name


UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
MIN_REPETITIONS = 3


class InputError(Exception):
    """Bad input: the CLI reports it as one `error:` line and exits 2."""


@dataclass
class BenchRun:
    path: str
    context: dict
    times: dict = field(default_factory=dict)  # name -> list of real_time in seconds, in file order
    skipped: list = field(default_factory=list)  # names of benchmarks that reported an error

    def fingerprint(self) -> dict:
        return fingerprint_of(self.context, self.path)

    def fingerprint_hash(self) -> str:
        return fingerprint_hash(self.fingerprint())


def _norm(value) -> str:
    return " ".join(str(value).split())


def fingerprint_of(context: dict, path: str = "<run>") -> dict:
    missing = [f for f in FINGERPRINT_FIELDS if f not in context]
    if missing:
        raise InputError("%s: context lacks %s (not an attune_bench run?)" % (path, ", ".join(missing)))
    fp = {f: _norm(context[f]) for f in FINGERPRINT_FIELDS}
    for f in OPTIONAL_FINGERPRINT_FIELDS:
        if f in context:
            fp[f] = _norm(context[f])
    return fp


def fingerprint_hash(fp: dict) -> str:
    canonical = json.dumps(fp, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


CLOCKS = ("real", "cpu")


def load(path: str, clock: str = "real") -> BenchRun:
    """Parse one attune_bench JSON file; raises InputError with the reason. clock: which time of
    each repetition the comparisons read, Google Benchmark's real_time (wall) or cpu_time (the
    process's CPU time: for one-thread benchmarks it leaves out time the kernel was preempted)."""
    if clock not in CLOCKS:
        raise InputError("unknown clock %r (one of %s)" % (clock, ", ".join(CLOCKS)))
    field_name = clock + "_time"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError("cannot read %s: %s" % (path, e.strerror or e))
    if not raw.strip():
        raise InputError("%s is empty" % path)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError("%s is not valid JSON (%s)" % (path, e))
    if not isinstance(data, dict) or not isinstance(data.get("context"), dict) \
            or not isinstance(data.get("benchmarks"), list):
        raise InputError("%s is not a Google Benchmark JSON file (needs 'context' and 'benchmarks')" % path)
    run = BenchRun(path=path, context=data["context"])
    for i, b in enumerate(data["benchmarks"]):
        if not isinstance(b, dict) or not isinstance(b.get("name"), str):
            raise InputError("%s: benchmarks[%d] has no name" % (path, i))
        # Aggregates (mean/median/stddev/cv) are derived from the repetitions: ignore them.
        if b.get("run_type", "iteration") != "iteration" or "aggregate_name" in b:
            continue
        name = canonical_name(b["name"])
        if b.get("error_occurred"):
            if name not in run.skipped:
                run.skipped.append(name)
            continue
        value, unit = b.get(field_name), b.get("time_unit", "ns")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or unit not in UNIT_SECONDS \
                or not math.isfinite(value) or value <= 0:
            raise InputError("%s: %s has no positive %s with a known time_unit" % (path, name, field_name))
        run.times.setdefault(name, []).append(float(value) * UNIT_SECONDS[unit])
    if not run.times:
        raise InputError("%s holds no benchmark results" % path)
    fingerprint_of(run.context, path)  # fail early when provenance is missing
    return run


def provenance_differences(base: BenchRun, new: BenchRun):
    """(refusals, warnings): human-readable lines about context fields that differ."""
    refusals, warnings = [], []
    fb, fn = base.fingerprint(), new.fingerprint()
    for f in FINGERPRINT_FIELDS:
        if fb[f] != fn[f]:
            refusals.append("%s differs: baseline %r, new %r" % (f, fb[f], fn[f]))
    for f in OPTIONAL_FINGERPRINT_FIELDS:
        if f in fb and f in fn and fb[f] != fn[f]:
            refusals.append("%s differs: baseline %r, new %r" % (f, fb[f], fn[f]))
        elif (f in fb) != (f in fn):
            warnings.append("%s is recorded in only one run" % f)
    for f in WARN_FIELDS:
        b, n = base.context.get(f), new.context.get(f)
        if b is not None and n is not None and _norm(b) != _norm(n):
            warnings.append("%s differs: baseline %r, new %r" % (f, _norm(b), _norm(n)))
    return refusals, warnings


def write_atomic(path: str, data: bytes) -> None:
    """Write the whole file to a temporary sibling, fsync, rename over `path`, fsync the folder:
    readers see the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.tmp.%d" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def busy_warning(run: BenchRun):
    """A line when Google Benchmark saw a 1-minute load average of at least half the CPUs as the
    run started (a co-runner can slow 1-thread kernels by tens of percent), else None."""
    load, cpus = run.context.get("load_avg"), run.context.get("num_cpus")
    try:
        first, cpus = float(load[0]), int(cpus)
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if cpus > 0 and first >= 0.5 * cpus:
        return ("%s started with load average %.2f on %d CPUs: other work may have distorted its timings"
                % (run.path, first, cpus))
    return None
