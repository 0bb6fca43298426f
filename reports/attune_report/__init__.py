"""attune_report: plots and a self-contained HTML report from attune bench JSON.

Usage (Debian's /usr/bin/python3 with python3-matplotlib and python3-numpy; `scripts/report.sh`
sets PYTHONPATH=reports and runs it):

    python3 -m attune_report BENCH.json [MORE.json ...] --out DIR
            [--compare BEFORE.json AFTER.json] [--tuner TUNE.json] [--history HISTORY.jsonl]
    python3 -m attune_report weights W.npy [--labels LABELS.txt] [--batch 0,1] [--heads 0,3] --out DIR

Several BENCH.json files are merged (e.g. attune_bench's bench.json and bench/pytorch_sdpa.py's
pytorch.json); with --compare and no BENCH.json, AFTER.json is the run reported.

Outputs in DIR (written to a scratch directory first and renamed into place, report.html last,
so a failed run never leaves a half-written report):

    report.html                      one file: provenance, probes, best kernel per shape, every plot
                                     (PNG as base64 data URIs), comparison/tuner/history sections
    summary.md                       the tables in markdown, for CI logs
    throughput_b*_hq*_hkv*_t*[_bf16].png  GFLOP/s vs seq_q = seq_kv (16-bit types: own files), one line per kernel/ISA, a panel per
                                     d_k, non-causal and causal rows, the measured peak as a ceiling
    peak_fraction_b*_hq*_hkv*_t*.png fraction of peak of the best kernel per (seq, d_k)
    speedup_vs_gemm[_bf16][_N].png   each kernel/ISA over the `gemm` baseline (if the run has it), per dtype
    speedup_vs_pytorch[_bf16][_N].png  each kernel/ISA over the PyTorch peer (if given), per dtype
    dtype_speedup.png                each 16-bit benchmark over its fp32 twin (if the run has both)
    roofline.png                     FLOPS / bytes_per_second vs GFLOP/s under the probes' roofs
    scaling.png                      speedup vs threads, for shapes run at several thread counts
    compare.png, tuner.png, history.png   with --compare, --tuner, --history

`weights` writes weights_b<batch>.png (a panel per head, queries down, keys across) and
weights.html.

Exit status: 0 success; 1 bad input data (missing, empty or malformed file, not attune output,
unknown attune_format); 2 usage error. Errors are one "error: ..." line on stderr.

Input formats
-------------
Bench JSON: Google Benchmark JSON from attune_bench. Benchmark names follow
`attention/<kernel>/<isa>/b:B/hq:H/hkv:H/sq:S/skv:S/d:D/causal:C/dt:DT/t:T` (DT: fp32, bf16 or
fp16, the storage type of Q, K, V and O; names without dt:, from before it existed, are fp32;
suffixes Google Benchmark appends, such as /real_time, are allowed); counters FLOPS (required),
bytes_per_second and peak_frac (optional). Repetitions are reduced to the median of the iteration rows, or to the
median (else mean) aggregate when only aggregates were reported. Rows with error_occurred are
listed as skipped. The context gives provenance and the probes peak_gflops_<isa>_t<threads>
(fp32 FMA, GFLOP/s), bf16_dot_gflops_t<threads> (vdpbf16ps, where the CPU has AVX512-BF16),
triad_gbps_t<threads> and read16_gbps_t<threads> (GB/s), and the build's lists that order
kernels and ISAs in tables and fix their markers and colours in plots: attune_kernels (registry
order) and isa_compiled (best first; else isa_runnable). A run with several dtypes gets one
best-kernel table per dtype and a 16-bit vs fp32 table (same kernel, ISA, shape and threads). context.attune_format, when present, must be "1".

Tuner JSON (--tuner), one object:

    {"attune_format": "1",                      # optional; "1" if absent
     "context": {"cpu_model": "...", ...},      # optional provenance, same keys as the bench's
     "measurements": [
       {"kernel": "flash", "isa": "avx2",       # isa optional
        "batch": 1, "heads_q": 8, "heads_kv": 8, # optional: 1, 1, heads_q
        "seq_q": 512, "seq_kv": 512, "d_k": 64, "causal": false,   # causal optional: false
        "block_q": 64, "block_kv": 128, "threads": 2,
        "gflops": 85.2}, ...]}                   # measured GFLOP/s of that configuration

  Plotted per shape as GFLOP/s over (block_q, block_kv), best configuration marked.

History (--history), JSON lines, oldest first, one bench run per line:

    {"attune_format": "1", "date": "2026-11-25T09:17:38Z", "attune_git_revision": "e0eece3",
     "results": {"attention/flash/avx2/b:1/hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/t:1": 84.4, ...}}

  results maps benchmark names to GFLOP/s; date, attune_git_revision and attune_format are
  optional. Plotted as each benchmark relative to its own median, with their geometric mean.

Weights: a float .npy [batch, heads, seq_q, seq_kv] (3-D [heads, seq_q, seq_kv] and 2-D are
accepted); labels: UTF-8 text, one token per line, either seq_kv lines (queries take the last
seq_q, as causal attention aligns the last query with the last key) or seq_q + seq_kv lines
(queries first).
"""
