"""attune_bench's benchmark names, parsed and written in one place: the regression gate, the report
(reports/attune_report) and the PyTorch peer (bench/pytorch_sdpa.py) all go through here.
bench/bench_main.cpp (name_of) writes them:

    attention/<kernel>/<isa>/b:B/hq:H/hkv:H/sq:S/skv:S/d:D/causal:C[/dt:T][/kv:T][/var:V]/t:T

then whatever Google Benchmark appends (/real_time, /repeats:N, ...). dt: (the storage type of
Q, K, V and O) came later: a name without it is fp32, the only type before it. kv: (the storage
type of K and V, e.g. bf16 or a quantized int8, fp8_e4m3, int4) is there only when it differs. Standard library
only, so the report can import it without the gate's numpy."""
from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "attention/<kernel>/<isa>/b:B/hq:H/hkv:H/sq:S/skv:S/d:D/causal:C[/dt:fp32|bf16|fp16][/kv:T][/var:V]/t:T"
_NAME = re.compile(
    r"^attention/(?P<kernel>[A-Za-z0-9_.+-]+)/(?P<isa>[A-Za-z0-9_.+-]+)/b:(?P<batch>\d+)/"
    r"hq:(?P<heads_q>\d+)/hkv:(?P<heads_kv>\d+)/sq:(?P<seq_q>\d+)/skv:(?P<seq_kv>\d+)/"
    r"d:(?P<d_k>\d+)/causal:(?P<causal>[01])(?:/dt:(?P<dtype>[a-z0-9]+))?(?:/kv:(?P<kv>[a-z0-9_]+))?(?:/var:(?P<var>[A-Za-z0-9_.]+))?"
    r"/t:(?P<threads>\d+)"
    r"(?P<suffix>(?:/[A-Za-z_]+(?::[^/]*)?)*)$")


@dataclass(frozen=True)
class BenchName:
    kernel: str
    isa: str
    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_kv: int
    d_k: int
    causal: bool
    threads: int
    dtype: str = "fp32"  # storage type of Q, K, V and O
    var: str = ""        # the attention variants (var: segment), "" for plain attention
    suffix: str = ""     # Google Benchmark's segments after t:, e.g. "/real_time"
    kv: str = ""         # storage type of K and V when it differs from dtype (kv: segment), else ""

    def format(self, fp32_segment: bool = True, suffix: bool = True) -> str:
        """The name. fp32_segment=False writes fp32 without dt:, as names were before it existed
        (the gate's keys, so baselines and histories recorded then keep matching)."""
        dt = "" if self.dtype == "fp32" and not fp32_segment else "/dt:" + self.dtype
        return "attention/%s/%s/b:%d/hq:%d/hkv:%d/sq:%d/skv:%d/d:%d/causal:%d%s%s%s/t:%d%s" % (
            self.kernel, self.isa, self.batch, self.heads_q, self.heads_kv, self.seq_q, self.seq_kv, self.d_k,
            int(self.causal), dt, "/kv:" + self.kv if self.kv else "", "/var:" + self.var if self.var else "",
            self.threads,
            self.suffix if suffix else "")


def parse(name: str) -> BenchName | None:
    """The fields of an attune_bench name, or None when `name` does not follow SCHEME."""
    m = _NAME.match(name)
    if not m:
        return None
    g = m.groupdict()
    return BenchName(kernel=g["kernel"], isa=g["isa"], batch=int(g["batch"]), heads_q=int(g["heads_q"]),
                     heads_kv=int(g["heads_kv"]), seq_q=int(g["seq_q"]), seq_kv=int(g["seq_kv"]), d_k=int(g["d_k"]),
                     causal=g["causal"] == "1", threads=int(g["threads"]), dtype=g["dtype"] or "fp32",
                     var=g["var"] or "", suffix=g["suffix"], kv=g["kv"] or "")
