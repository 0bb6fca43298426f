"""The kernel issue's speed targets, evaluated on one bench run as ratios to that run's own probes
(FMA peak, stream triad) and to its other benchmarks, so machines and noise levels compare.

Each target gives one row per benchmarked shape it applies to: the measured ratio (from the
median over repetitions), the goal, pass/fail, and the spread (coefficient of variation of the
benchmarks involved). Shapes the run did not benchmark are simply absent; a target with no shape
at all is reported as "not measured", never as passed."""
from dataclasses import dataclass, replace

from .bench import BASELINE


@dataclass
class TargetRow:
    target: str      # the target's one-line statement
    shape: str       # Shape.label()
    value: float     # the measured ratio
    goal: float      # pass when value >= goal
    unit: str        # "of peak", "of triad", "x"
    spread: float    # largest coefficient of variation among the benchmarks used (None if unknown)
    detail: str      # the numbers behind the ratio

    @property
    def ok(self):
        return self.value >= self.goal


def _flash(bench, shape):
    """The flash result on the run's default ISA (the one `auto` would run) at this shape."""
    rs = [r for r in bench.at(shape, "flash") if r.isa == bench.default_isa]
    return rs[0] if rs else None


def _shapes(bench):
    """The targets are stated for float32 storage: 16-bit benchmarks are not judged by them."""
    return [s for s in bench.shapes() if s.dtype == "fp32"]


def _spread(*results):
    cvs = [r.cv for r in results if r is not None and r.cv is not None]
    return max(cvs) if cvs else None


def _peak_rows(bench, text, goal, pick):
    rows = []
    for shape in _shapes(bench):
        if shape.threads != 1 or not pick(shape):
            continue
        r = _flash(bench, shape)
        peak = bench.default_peak(1)
        if r is None or not peak:
            continue
        rows.append(TargetRow(text, shape.label(), r.gflops / peak, goal, "of peak", _spread(r),
                              "%.1f of %.1f GFLOP/s" % (r.gflops, peak)))
    return rows


def square(shape):
    return shape.seq_q == shape.seq_kv


def evaluate(bench):
    """[(target text, [TargetRow, ...]), ...] in the issue's order."""
    out = []
    out.append(("flash, non-causal, seq >= 1024, d_k 128, 1 thread: >= 80% of peak",
                _peak_rows(bench, "prefill d128", 0.80,
                           lambda s: square(s) and not s.causal and s.seq_q >= 1024 and s.d_k == 128)))
    out.append(("flash, non-causal, seq >= 1024, d_k 64, 1 thread: >= 70% of peak",
                _peak_rows(bench, "prefill d64", 0.70,
                           lambda s: square(s) and not s.causal and s.seq_q >= 1024 and s.d_k == 64)))
    out.append(("flash, non-causal, seq 128, 1 thread: >= 45% of peak",
                _peak_rows(bench, "short prefill", 0.45, lambda s: square(s) and not s.causal and s.seq_q == 128)))
    out.append(("flash, causal, seq >= 2048, 1 thread (unmasked work): >= 65% of peak",
                _peak_rows(bench, "causal prefill", 0.65, lambda s: square(s) and s.causal and s.seq_q >= 2048)))

    # Threads: flash's all-thread speedup against the peak probe's own speedup, same run.
    rows = []
    threads = sorted({t for _, t in bench.peaks()})
    top = threads[-1] if threads else 1
    p1, pn = bench.default_peak(1), bench.default_peak(top)
    for shape in _shapes(bench):
        if shape.threads != 1 or not square(shape) or shape.seq_q < 1024 or top == 1 or not (p1 and pn):
            continue
        r1 = _flash(bench, shape)
        rn = [r for r in bench.at(replace(shape, threads=top), "flash") if r.isa == bench.default_isa]
        if r1 is None or not rn:
            continue
        speedup, probe = rn[0].gflops / r1.gflops, pn / p1
        rows.append(TargetRow("threads", shape.label(threads=False), speedup / probe, 0.90, "of probe's speedup",
                              _spread(r1, rn[0]), "x%.2f on %d threads, probe x%.2f" % (speedup, top, probe)))
    out.append(("flash's %d-thread speedup >= 90%% of the peak probe's, seq >= 1024" % top, rows))

    # Decode: K/V streamed against the triad probe at the same (all) threads.
    rows = []
    for shape in _shapes(bench):
        if shape.seq_q != 1 or shape.seq_kv < 8192 or shape.threads != top:
            continue
        r = _flash(bench, shape)
        triad = bench.triad(top)
        if r is None or not r.gbps or not triad:
            continue
        rows.append(TargetRow("decode", shape.label(), r.gbps / triad, 0.70, "of triad", _spread(r),
                              "%.1f of %.1f GB/s" % (r.gbps, triad)))
    out.append(("decode (seq_q 1, seq_kv >= 8192), all threads: >= 70% of the stream triad", rows))

    # flash against the BLAS baseline on every shape, at the same thread count.
    rows = []
    for shape in _shapes(bench):
        r = _flash(bench, shape)
        g = bench.at(shape, BASELINE)
        if r is None or not g:
            continue
        g = max(g, key=lambda x: x.gflops)
        goal = 1.15 if shape.d_k == 64 and square(shape) and shape.seq_q >= 1024 else 1.0
        rows.append(TargetRow("vs gemm", shape.label(), r.gflops / g.gflops, goal, "x", _spread(r, g),
                              "%.1f vs %.1f GFLOP/s" % (r.gflops, g.gflops)))
    out.append(("flash >= gemm on every shape (>= 1.15x at d_k 64, seq >= 1024)", rows))
    return out


def summary_lines(results):
    """One line per target: passed shapes / measured shapes, worst ratio."""
    lines = []
    for text, rows in results:
        if not rows:
            lines.append("%s: not measured (no such shape in this run)" % text)
            continue
        worst = min(rows, key=lambda r: r.value / r.goal)
        lines.append("%s: %d/%d shapes pass; worst %s %.2f %s (%s)" % (
            text, sum(r.ok for r in rows), len(rows), worst.shape, worst.value, worst.unit, worst.detail))
    return lines
