"""Reading attune bench JSON (Google Benchmark output of attune_bench and its peers) into one
result per benchmark, with the run's provenance and probes; every way the input can be wrong
becomes a ReportError naming the file and what is wrong with it."""
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field, replace

# Bench names are parsed by the regression gate's module (regress/attune_regress/benchname.py,
# standard library only), found next to this package in the tree.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "regress"))
from attune_regress import benchname  # noqa: E402

FORMAT_VERSION = "1"

DTYPE_ORDER = ("fp32", "bf16", "fp16")
# The ISA whose inner loop is the bf16 dot product (vdpbf16ps): its bf16 ceiling is that probe.
BF16_DOT_ISA = "avx512_bf16"

# Other projects' implementations timed on the same shapes: compared against, never "best".
PEERS = ("pytorch",)
BASELINE = "gemm"
# Kernels and ISAs are ordered as the run's build lists them (context attune_kernels: the
# registry's order; isa_compiled, else isa_runnable: best first), then any others by name.
# JSON written before attune_bench listed its kernels is ordered by the registry of that time.
KERNELS_BEFORE_CONTEXT = "naive,blocked,simd,flash,amx,gemm"


class ReportError(Exception):
    """Bad input data (exit status 1); the message is the whole one-line explanation."""


@dataclass(frozen=True, order=True)
class Shape:
    # Field order is the report's sort order: masks, then head sizes, then lengths.
    causal: bool
    d_k: int
    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_kv: int
    threads: int
    dtype: str = "fp32"  # storage type of Q, K, V and O
    var: str = ""        # attention variants (attune_bench's var: segment), "" for plain attention
    kv: str = ""         # K/V storage type when it differs from dtype (kv: segment), e.g. "int8"

    @property
    def square(self):
        return self.seq_q == self.seq_kv

    def label(self, threads=True):
        """Short and unambiguous: 's512 d64 h8 causal t1', 'q1 kv8192 d128 h32/8 bf16 t2'."""
        seq = "s%d" % self.seq_q if self.square else "q%d kv%d" % (self.seq_q, self.seq_kv)
        heads = "h%d" % self.heads_q if self.heads_q == self.heads_kv else "h%d/%d" % (self.heads_q, self.heads_kv)
        parts = [seq, "d%d" % self.d_k, heads]
        if self.batch != 1:
            parts.append("b%d" % self.batch)
        if self.causal:
            parts.append("causal")
        if self.dtype != "fp32":
            parts.append(self.dtype)
        if self.kv:
            parts.append("kv " + self.kv)
        if self.var:
            parts.append(self.var)
        if threads:
            parts.append("t%d" % self.threads)
        return " ".join(parts)

    def without_threads(self):
        return (self.causal, self.d_k, self.batch, self.heads_q, self.heads_kv, self.seq_q, self.seq_kv, self.dtype,
                self.var, self.kv)

    def as_fp32(self):
        return replace(self, dtype="fp32")


@dataclass
class Result:
    kernel: str
    isa: str
    shape: Shape
    gflops: float               # median over repetitions
    gbps: float = None          # bytes_per_second / 1e9: Q, K, V read and O written once, in storage sizes
    peak_frac: float = None     # FLOPS / the probe of the instruction it runs (see Bench.probe_for), same threads
    repetitions: int = 1
    cv: float = None            # coefficient of variation of FLOPS over repetitions
    source: str = ""

    @property
    def name(self):
        s = self.shape
        return benchname.BenchName(self.kernel, self.isa, s.batch, s.heads_q, s.heads_kv, s.seq_q, s.seq_kv, s.d_k,
                                   s.causal, s.threads, s.dtype, s.var, kv=s.kv).format()

    @property
    def variant(self):
        return "%s/%s" % (self.kernel, self.isa)

    def label(self):
        return "%s %s" % (self.variant, self.shape.label())

    @property
    def intensity(self):
        """Arithmetic intensity in FLOP per byte of compulsory traffic."""
        return self.gflops / self.gbps if self.gbps else None


@dataclass
class Bench:
    results: dict = field(default_factory=dict)      # canonical name -> Result
    contexts: list = field(default_factory=list)     # (path, context dict), one per input file
    failed: list = field(default_factory=list)       # (name, error message) of skipped benchmarks
    ignored: list = field(default_factory=list)      # names that are not attention benchmarks

    @property
    def context(self):
        """The first file's context with the others' keys added (peer files repeat the bench's)."""
        merged = {}
        for _, ctx in reversed(self.contexts):
            merged.update(ctx)
        return merged

    @property
    def default_isa(self):
        return self.context.get("isa_default")

    def peak(self, isa, threads):
        """Measured FMA peak in GFLOP/s, or None when the run had no probes."""
        return _number(self.context.get("peak_gflops_%s_t%d" % (isa, threads)))

    def default_peak(self, threads):
        return self.peak(self.default_isa, threads) if self.default_isa else None

    def triad(self, threads):
        """Measured stream-triad bandwidth in GB/s, or None."""
        return _number(self.context.get("triad_gbps_t%d" % threads))

    def peaks(self):
        """{(isa, threads): GFLOP/s} for every probe in the context."""
        out = {}
        for key, value in self.context.items():
            m = re.match(r"^peak_gflops_(.+)_t(\d+)$", key)
            if m and _number(value):
                out[(m.group(1), int(m.group(2)))] = _number(value)
        return out

    def triads(self):
        return self._per_thread("triad_gbps")

    def bf16_dots(self):
        """{threads: GFLOP/s} of the bf16 dot-product (vdpbf16ps) probe, where the CPU has it."""
        return self._per_thread("bf16_dot_gflops")

    def read16s(self):
        """{threads: GB/s} of the 16-bit read probe."""
        return self._per_thread("read16_gbps")

    def _per_thread(self, prefix):
        out = {}
        for key, value in self.context.items():
            m = re.match(r"^%s_t(\d+)$" % prefix, key)
            if m and _number(value):
                out[int(m.group(1))] = _number(value)
        return out

    def probe_for(self, r):
        """(what, GFLOP/s) of the probe of the instruction r's inner loop runs, as attune_bench's
        peak_frac uses it: the bf16 dot product for bf16 on the ISA built around it, else the fp32
        FMA peak of r's ISA (16-bit storage is widened and multiplied in fp32), else of the default
        ISA (peers, whose ISA is not attune's); (None, None) without probes."""
        t = r.shape.threads
        if r.shape.dtype == "bf16" and r.isa == BF16_DOT_ISA and r.kernel != BASELINE:
            return "bf16 dot t%d" % t, self.bf16_dots().get(t)
        for isa in (r.isa, self.default_isa):
            if isa and self.peak(isa, t):
                return "%s FMA t%d" % (isa, t), self.peak(isa, t)
        return None, None

    def kernels(self):
        """Every kernel of the run's build and of its results, in the order the report shows them."""
        listed = self.context.get("attune_kernels") or KERNELS_BEFORE_CONTEXT
        return _listed_then_named(listed, {r.kernel for r in self.results.values()})

    def isas(self):
        """Every ISA of the run's build (else of its CPU) and of its results, best first."""
        listed = self.context.get("isa_compiled") or self.context.get("isa_runnable") or ""
        return _listed_then_named(listed, {r.isa for r in self.results.values()} | {i for i, _ in self.peaks()})

    def kernel_key(self, kernel):
        return _rank(self.kernels(), kernel)

    def isa_key(self, isa):
        return _rank(self.isas(), isa)

    def variant_key(self, kernel_isa):
        kernel, isa = kernel_isa
        return self.kernel_key(kernel) + self.isa_key(isa)

    def dtypes(self):
        return sorted({r.shape.dtype for r in self.results.values()}, key=dtype_key)

    def shapes(self):
        return sorted({r.shape for r in self.results.values()})

    def at(self, shape, kernel=None):
        return [r for r in self.results.values()
                if r.shape == shape and (kernel is None or r.kernel == kernel)]


def label_of(name):
    """'flash/avx2 s512 d64 h8 t1' for a benchmark name; the name itself if it is not one."""
    n = benchname.parse(name)
    if not n:
        return name
    return _result_of(n, 1.0).label()


def canonical_name(name):
    """One spelling per benchmark: with dt: (fp32 when the name has none) and without Google
    Benchmark's suffixes; a name that is not an attention benchmark is returned as it is."""
    n = benchname.parse(name)
    return n.format(suffix=False) if n else name


def _shape_of(n):
    return Shape(causal=n.causal, d_k=n.d_k, batch=n.batch, heads_q=n.heads_q, heads_kv=n.heads_kv, seq_q=n.seq_q,
                 seq_kv=n.seq_kv, threads=n.threads, dtype=n.dtype, var=n.var, kv=n.kv)


def _result_of(n, gflops, **counters):
    return Result(n.kernel, n.isa, _shape_of(n), gflops=gflops, **counters)


def _number(value):
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _listed_then_named(listed, seen):
    """The comma-separated `listed` names in their order, then the others of `seen` by name."""
    order = [x for x in listed.split(",") if x]
    return tuple(order + sorted(set(seen) - set(order)))


def _rank(order, name):
    return (order.index(name) if name in order else len(order), name)


def dtype_key(dtype):
    return _rank(DTYPE_ORDER, dtype)


def read_json(path, what="bench JSON"):
    """The parsed top-level value of a JSON file, or a ReportError saying why there is none."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ReportError("cannot read %s %s: %s" % (what, path, e.strerror or e))
    if not raw.strip():
        raise ReportError("%s %s is empty" % (what, path))
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ReportError("%s %s is not UTF-8 text (byte %d)" % (what, path, e.start))
    except json.JSONDecodeError as e:
        raise ReportError("%s %s is not valid JSON: %s at line %d column %d" % (what, path, e.msg, e.lineno, e.colno))


def check_format(value, path, what):
    """Absent means version 1; anything else this reader does not know is refused."""
    if value is not None and str(value) != FORMAT_VERSION:
        raise ReportError("%s %s has attune_format %r; this attune_report reads format %s only"
                          % (what, path, value, FORMAT_VERSION))


def _base_name(row):
    """The benchmark's own name for an aggregate row (Google Benchmark appends _<aggregate>)."""
    if row.get("run_type") == "aggregate":
        run_name = row.get("run_name")
        if isinstance(run_name, str) and run_name:
            return run_name
        agg = row.get("aggregate_name")
        if isinstance(agg, str) and row["name"].endswith("_" + agg):
            return row["name"][:-len(agg) - 1]
    return row["name"]


def load_bench(paths):
    """One Bench from one or more JSON files (a bench run and, say, its pytorch peer file).
    Repetitions of a benchmark (several iteration rows, from one file or several) are reduced to
    their median; when a file holds only aggregates, the median (else mean) aggregate is used."""
    bench = Bench()
    samples = {}  # name -> {"rows": [(row, path)], "aggregates": {aggregate_name: (row, path)}}
    parsed = {}   # name -> benchname.BenchName
    for path in paths:
        doc = read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            raise ReportError('%s is not attune bench output: no "benchmarks" list' % path)
        ctx = doc.get("context", {})
        if not isinstance(ctx, dict):
            raise ReportError('%s is not attune bench output: "context" is not an object' % path)
        check_format(ctx.get("attune_format"), path, "bench JSON")
        if not doc["benchmarks"]:
            raise ReportError("%s holds no benchmarks" % path)
        bench.contexts.append((path, ctx))
        matched = 0
        for i, row in enumerate(doc["benchmarks"]):
            if not isinstance(row, dict) or not isinstance(row.get("name"), str):
                raise ReportError("%s: benchmark #%d has no name" % (path, i + 1))
            name = _base_name(row)
            n = benchname.parse(name)
            if not n:
                if name.startswith("attention/"):
                    raise ReportError("%s: benchmark name %r does not follow %s" % (path, name, benchname.SCHEME))
                bench.ignored.append(name)
                continue
            matched += 1
            key = n.format(suffix=False)  # canonical: with dt:, without Google Benchmark's suffixes
            parsed[key] = n
            entry = samples.setdefault(key, {"rows": [], "aggregates": {}, "errors": []})
            if row.get("error_occurred") or row.get("skipped"):
                entry["errors"].append(str(row.get("error_message") or row.get("skip_message") or "skipped"))
                continue
            if _number(row.get("FLOPS")) is None:
                raise ReportError("%s: benchmark %r has no positive FLOPS counter" % (path, row["name"]))
            if row.get("run_type") == "aggregate":
                entry["aggregates"][str(row.get("aggregate_name"))] = (row, path)
            else:
                entry["rows"].append((row, path))
        if not matched:
            first = doc["benchmarks"][0]["name"]
            raise ReportError("%s is not attune bench output: no benchmark name follows %s (first: %r)"
                              % (path, benchname.SCHEME, first))

    for key, entry in samples.items():
        result = _reduce(parsed[key], entry)
        if result is None:
            bench.failed.append((key, "; ".join(sorted(set(entry["errors"])))))
        else:
            bench.results[key] = result
    bench.failed.sort()
    if not bench.results:
        raise ReportError("%s: every benchmark was skipped (%s)" % (", ".join(paths), bench.failed[0][1]))
    return bench


def _reduce(n, entry):
    rows, aggs = entry["rows"], entry["aggregates"]
    if rows:
        def median(counter):
            xs = [_number(r.get(counter)) for r, _ in rows]
            xs = [x for x in xs if x is not None]
            return statistics.median(xs) if xs else None
        flops = [float(r["FLOPS"]) for r, _ in rows]
        bps = median("bytes_per_second")
        return _result_of(n, median("FLOPS") / 1e9, gbps=bps / 1e9 if bps else None, peak_frac=median("peak_frac"),
                          repetitions=len(rows),
                          cv=statistics.stdev(flops) / statistics.mean(flops) if len(flops) > 1 else None,
                          source=rows[0][1])
    for name in ("median", "mean"):
        if name in aggs:
            row, path = aggs[name]
            cv_row = aggs.get("cv")
            bps = _number(row.get("bytes_per_second"))
            return _result_of(n, float(row["FLOPS"]) / 1e9, gbps=bps / 1e9 if bps else None,
                              peak_frac=_number(row.get("peak_frac")), repetitions=int(row.get("repetitions") or 1),
                              cv=_number(cv_row[0].get("FLOPS")) if cv_row else None, source=path)
    return None


# --------------------------------------------------------------------------------------------
# What the report computes from a Bench


def fraction_of_peak(bench, r):
    """The bench's own peak_frac counter, else GFLOP/s over the probe of r's instruction (peer files)."""
    if r.peak_frac is not None:
        return r.peak_frac
    _, peak = bench.probe_for(r)
    return r.gflops / peak if peak else None


def best_per_shape(bench, dtype=None):
    """[(shape, best attune Result, {kernel: its best Result}), ...] in shape order (of one
    dtype if given); peers are never "best" but are listed for the speedup columns."""
    out = []
    for shape in bench.shapes():
        if dtype is not None and shape.dtype != dtype:
            continue
        rs = bench.at(shape)
        own = [r for r in rs if r.kernel not in PEERS]
        by_kernel = {}
        for r in rs:
            if r.kernel not in by_kernel or r.gflops > by_kernel[r.kernel].gflops:
                by_kernel[r.kernel] = r
        out.append((shape, max(own, key=lambda r: r.gflops) if own else None, by_kernel))
    return out


def speedups(bench, baseline):
    """{(shape, (kernel, isa)): GFLOP/s ratio over the best ISA of `baseline` on that shape}.
    The FLOP count is the same on both sides, so this is the inverse ratio of times."""
    out = {}
    for shape in bench.shapes():
        base = [r for r in bench.at(shape, baseline)]
        if not base:
            continue
        b = max(r.gflops for r in base)
        for r in bench.at(shape):
            if r.kernel != baseline:
                out[(shape, (r.kernel, r.isa))] = r.gflops / b
    return out


def dtype_speedups(bench):
    """[(16-bit Result, fp32 Result, GFLOP/s ratio)] for every 16-bit benchmark whose fp32 twin
    (same kernel, ISA, shape and threads) is in the run, in shape order: what the narrower storage
    buys. The FLOP count is the same, so the ratio is the inverse ratio of times."""
    fp32 = {(r.kernel, r.isa, r.shape): r for r in bench.results.values() if r.shape.dtype == "fp32"}
    out = []
    for r in bench.results.values():
        twin = fp32.get((r.kernel, r.isa, r.shape.as_fp32())) if r.shape.dtype != "fp32" else None
        if twin is not None:
            out.append((r, twin, r.gflops / twin.gflops))
    out.sort(key=lambda t: (dtype_key(t[0].shape.dtype), t[0].shape.as_fp32(),
                            bench.variant_key((t[0].kernel, t[0].isa))))
    return out


def has_kernel(bench, kernel):
    return any(r.kernel == kernel for r in bench.results.values())


def compare(before, after):
    """[(name, before Result, after Result, ratio after/before)] for benchmarks in both, lowest
    ratio (worst regression) first; plus the names only in one of them."""
    common = sorted(set(before.results) & set(after.results))
    rows = [(n, before.results[n], after.results[n], after.results[n].gflops / before.results[n].gflops)
            for n in common]
    rows.sort(key=lambda t: (t[3], t[0]))
    only_before = sorted(set(before.results) - set(after.results))
    only_after = sorted(set(after.results) - set(before.results))
    return rows, only_before, only_after


def geomean(xs):
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None
