"""Stands in for the attune command in the tests: `attune info` only (the ISA default and the
provenance lines the regression tools read)."""
import os
import sys

if sys.argv[1:2] == ["info"]:
    print("attune 0.1.0")
    print("git revision:   %s" % os.environ.get("FAKE_REVISION", "abcdef123456"))
    print("compiler:       GNU 12.2.0")
    print("build type:     Release")
    print("flags:           -O3 -DNDEBUG")
    print("cpu:            AMD EPYC")
    print("cores:          2")
    print("isa default:    %s" % os.environ.get("ATTUNE_ISA", "avx512"))
    sys.exit(0)
print("fake attune: only 'info' is implemented", file=sys.stderr)
sys.exit(2)
