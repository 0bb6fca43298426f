"""The optional inputs: tuner measurements (--tuner) and bench history (--history). Their
formats are documented in the package docstring (attune_report/__init__.py)."""
import json
from dataclasses import dataclass

from .bench import ReportError, _number, canonical_name, check_format, read_json

TUNER_REQUIRED = ("kernel", "seq_q", "seq_kv", "d_k", "block_q", "block_kv", "threads", "gflops")


@dataclass(frozen=True, order=True)
class TunerShape:
    causal: bool
    d_k: int
    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_kv: int

    def label(self):
        seq = "s%d" % self.seq_q if self.seq_q == self.seq_kv else "q%d kv%d" % (self.seq_q, self.seq_kv)
        heads = "h%d" % self.heads_q if self.heads_q == self.heads_kv else "h%d/%d" % (self.heads_q, self.heads_kv)
        return " ".join([seq, "d%d" % self.d_k, heads] + (["b%d" % self.batch] if self.batch != 1 else [])
                        + (["causal"] if self.causal else []))


@dataclass
class Measurement:
    shape: TunerShape
    kernel: str
    isa: str
    block_q: int
    block_kv: int
    threads: int
    gflops: float

    def config(self):
        return "%s/%s %dx%d t%d" % (self.kernel, self.isa, self.block_q, self.block_kv, self.threads)


def load_tuner(path):
    """(context, [Measurement]) from a tuner JSON file."""
    doc = read_json(path, "tuner JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("measurements"), list):
        raise ReportError('tuner JSON %s has no "measurements" list' % path)
    check_format(doc.get("attune_format"), path, "tuner JSON")
    ctx = doc.get("context", {})
    if not isinstance(ctx, dict):
        raise ReportError('tuner JSON %s: "context" is not an object' % path)
    out = []
    for i, m in enumerate(doc["measurements"]):
        where = "tuner JSON %s: measurement #%d" % (path, i + 1)
        if not isinstance(m, dict):
            raise ReportError("%s is not an object" % where)
        missing = [k for k in TUNER_REQUIRED if k not in m]
        if missing:
            raise ReportError("%s lacks %s" % (where, ", ".join(missing)))
        try:
            ints = {k: int(m.get(k, default)) for k, default in
                    (("batch", 1), ("heads_q", 1), ("heads_kv", m.get("heads_q", 1)), ("seq_q", 0), ("seq_kv", 0),
                     ("d_k", 0), ("block_q", 0), ("block_kv", 0), ("threads", 0))}
        except (TypeError, ValueError):
            raise ReportError("%s has a non-integer size field" % where)
        gflops = _number(m["gflops"])
        if gflops is None:
            raise ReportError("%s: gflops %r is not a positive number" % (where, m["gflops"]))
        shape = TunerShape(bool(m.get("causal", False)), ints["d_k"], ints["batch"], ints["heads_q"],
                           ints["heads_kv"], ints["seq_q"], ints["seq_kv"])
        out.append(Measurement(shape, str(m["kernel"]), str(m.get("isa", "?")), ints["block_q"], ints["block_kv"],
                               ints["threads"], gflops))
    if not out:
        raise ReportError("tuner JSON %s holds no measurements" % path)
    return ctx, out


def tuner_best(measurements):
    """[(shape, best Measurement, worst GFLOP/s, number of configs)] in shape order."""
    by_shape = {}
    for m in measurements:
        by_shape.setdefault(m.shape, []).append(m)
    return [(s, max(ms, key=lambda m: m.gflops), min(m.gflops for m in ms), len(ms))
            for s, ms in sorted(by_shape.items())]


@dataclass
class HistoryRun:
    date: str
    revision: str
    results: dict  # benchmark name -> GFLOP/s

    def label(self):
        return " ".join(x for x in (self.date[:10], self.revision[:7]) if x) or "?"


def load_history(path):
    """[HistoryRun] in file order (oldest first) from a JSON-lines history file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ReportError("cannot read history %s: %s" % (path, e.strerror or e))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReportError("history %s is not UTF-8 text (byte %d)" % (path, e.start))
    runs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = "history %s line %d" % (path, n)
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError("%s is not valid JSON: %s at column %d" % (where, e.msg, e.colno))
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
            raise ReportError('%s has no "results" object' % where)
        check_format(doc.get("attune_format"), "%s line %d" % (path, n), "history")
        results = {}
        for name, value in doc["results"].items():
            if _number(value) is None:
                raise ReportError("%s: result %r = %r is not a positive GFLOP/s" % (where, name, value))
            results[canonical_name(name)] = float(value)
        runs.append(HistoryRun(str(doc.get("date", "")), str(doc.get("attune_git_revision", "")), results))
    if not runs:
        raise ReportError("history %s is empty" % path)
    return runs
