"""The static half of the every-CPU check (the emulated runs are the dynamic half): translation
units compiled with ISA flags (kernels/src/isa/*, kernels/src/quant/*, probes_avx512) must define no
weak symbol.
A weak definition is an inline function or template instantiation with external linkage; the
linker keeps one copy of it for the whole program, and if it keeps the one compiled with
-mavx512f, a CPU without AVX-512 faults in code that never asked for AVX-512.
Usage: isa_symbols.py "<object files, ;-separated>" (ctest passes $<TARGET_OBJECTS:attune>)."""
import subprocess
import sys

objects = [o for o in sys.argv[1].split(";") if o]
flagged = [o for o in objects if "/src/isa/" in o or "/src/quant/" in o or o.endswith("probes_avx512.cpp.o")]
if len(flagged) < 2:
    sys.exit("isa_symbols: expected the ISA translation units among %d objects, found %s" % (len(objects), flagged))
bad = []
for obj in flagged:
    out = subprocess.run(["nm", "-C", "--defined-only", obj], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in ("W", "V", "u") and not parts[2].startswith("DW.ref.__gxx_personality"):
            bad.append("%s: %s" % (obj.rsplit("/", 1)[-1], parts[2]))
for b in bad:
    print("weak symbol in an ISA translation unit:", b)
print("isa_symbols: %d ISA translation units, %d weak symbols" % (len(flagged), len(bad)))
sys.exit(1 if bad else 0)
