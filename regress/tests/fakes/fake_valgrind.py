"""Stands in for valgrind in the tests: `--version`, or writes a callgrind output file whose Ir
depends on the attune run's shape and kernel (times FAKE_IR_SCALE), without running anything.
FAKE_VALGRIND_LOG: append one line per call: the argv and ATTUNE_ISA as seen."""
import json
import os
import sys

argv = sys.argv[1:]
if argv == ["--version"]:
    print("valgrind-3.19.0")
    sys.exit(0)
opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("--") and "=" in a}
if os.environ.get("FAKE_VALGRIND_LOG"):
    with open(os.environ["FAKE_VALGRIND_LOG"], "a") as f:
        f.write(json.dumps({"argv": argv, "ATTUNE_ISA": os.environ.get("ATTUNE_ISA")}) + "\n")
prog = next(i for i, a in enumerate(argv) if not a.startswith("--"))
run = argv[prog + 1:]


def arg(name):
    return run[run.index(name) + 1]


size = 0
for t in ("--q", "--k"):
    size += os.path.getsize(arg(t))
ir = int(size * (3 if arg("--kernel") == "flash" else 4) * (2 if "--causal" in run else 1)
         * float(os.environ.get("FAKE_IR_SCALE", "1")))
with open(opts["--callgrind-out-file"], "w") as f:
    f.write("# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 1\ncmd:  %s\npart: 1\n\n"
            "desc: I1 cache: \ndesc: D1 cache: \ndesc: LL cache: \n\ndesc: Trigger: Program termination\n\n"
            "positions: line\nevents: Ir\nsummary: %d\n\n\nob=(1) /bin/attune\nfl=(1) ???\nfn=(1) kernel\n0 %d\n\n"
            "totals: %d\n" % (" ".join(argv[prog:]), ir, ir, ir))
