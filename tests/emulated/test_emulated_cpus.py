# Run-time dispatch proven on CPUs this machine is not: the native build runs under
# `qemu-x86_64 -cpu <model>` (Debian's qemu-user 7.2: its CPUID reports only the model's features
# and any instruction beyond them faults; it has no AVX-512 at all), as a CPU without AVX-512
# (Haswell: AVX2 + FMA), without AVX (Nehalem: SSE4.2) and without SSE4.2 (Conroe: SSSE3). On each:
# `attune info`, `attune kernels`, `attune verify --grid quick`, a forced missing ISA, and the
# dispatch tests of the GoogleTest suites. An instruction the model lacks, executed anywhere
# (a static initializer, an inline function merged from an AVX-512 translation unit, a probe),
# kills the process with SIGILL and fails the test. Correctness only: timings under qemu mean
# nothing. ctest `emulated_cpus` sets QEMU_X86_64, ATTUNE_BIN, ATTUNE_TESTS_BIN, ATTUNE_TUNER_TESTS_BIN.
import os
import signal
import subprocess

import numpy as np
import pytest

# model -> the ISAs attune must find runnable there, best first (the order of `attune info`).
MODELS = {
    "Haswell": ["avx2", "sse4_2", "scalar"],
    "Nehalem": ["sse4_2", "scalar"],
    # Not qemu64: its AMD vendor string makes Debian's OpenBLAS pick a kernel with 3DNow!
    # (femms), which the model lacks: a SIGILL in OpenBLAS, on a CPU no one has.
    "Conroe": ["scalar"],
}
# What each GoogleTest binary runs under emulation: ISA detection and dispatch, `auto`, the
# per-ISA exp2, quantize_kv's builds (each against the reference) and its choice, AMX's absence,
# the tuned table's dispatch.
GTEST_FILTERS = {
    "ATTUNE_TESTS_BIN": "Isa.*:Amx.*:Attention.*:VariantDispatch.*:Dtype.*:Isa/Exp2.*:Isa/KvQuantBuild.*:"
                        "KvQuant.QuantizeKvRunsTheBestBuild:KvQuant.NanAndInfinity",
    "ATTUNE_TUNER_TESTS_BIN": "TunedDispatch.*:TunedHeader.*:RuntimeTuning.*:MachineSelection.*:FleetHeader.*",
}
# qemu warns on stderr about host-only CPUID bits of a model that TCG cannot emulate.
QEMU_NOISE = "TCG doesn't support requested feature"


def _env_path(name):
    path = os.environ.get(name, "")
    if not path or not os.access(path, os.X_OK):
        raise pytest.UsageError("%s must name an executable (got %r)" % (name, path))
    return path


def emulate(model, *argv, env_extra=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTUNE_ISA")}
    env.update(env_extra or {})
    r = subprocess.run([_env_path("QEMU_X86_64"), "-cpu", model, *map(str, argv)], capture_output=True,
                       text=True, env=env, timeout=timeout)
    r.stderr = "".join(line for line in r.stderr.splitlines(True) if QEMU_NOISE not in line)
    # A guest that dies of a signal (SIGILL: an instruction the model lacks) takes qemu with it:
    # subprocess reports -signal (or 128 + signal through a shell).
    died = -r.returncode if r.returncode < 0 else r.returncode - 128 if r.returncode > 128 else 0
    assert not died, "%s under -cpu %s died of signal %d (%s):\n%s" % (
        " ".join(map(str, argv)), model, died, signal.Signals(died).name if died < 65 else "?", r.stderr[-2000:])
    return r


def field(stdout, name):
    for line in stdout.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].split()
    raise AssertionError("no '%s:' line in:\n%s" % (name, stdout))


@pytest.fixture(params=sorted(MODELS), scope="module")
def model(request):
    return request.param


def test_info_detects_the_model_and_auto_picks_its_best_isa(model):
    expected = MODELS[model]
    r = emulate(model, _env_path("ATTUNE_BIN"), "info")
    assert r.returncode == 0, r.stderr
    assert field(r.stdout, "isa runnable") == expected
    assert field(r.stdout, "isa detected") == expected
    assert field(r.stdout, "isa default") == [expected[0]]
    assert field(r.stdout, "auto kernel") == ["flash", expected[0]]
    assert field(r.stdout, "auto bf16") == ["flash", expected[0]]
    assert "bf16 dot rate" not in r.stdout  # no AVX512-BF16 probe where the model lacks it
    # The build carries the ISAs the model lacks: they are compiled, just never run.
    assert "avx512" in field(r.stdout, "isa compiled")


def test_kernels_lists_only_the_models_isas(model):
    r = emulate(model, _env_path("ATTUNE_BIN"), "kernels")
    assert r.returncode == 0, r.stderr
    isas = {line.split()[1] for line in r.stdout.splitlines() if line.strip()}
    assert isas == set(MODELS[model])


def test_verify_quick_grid_passes_on_every_isa_of_the_model(model):
    r = emulate(model, _env_path("ATTUNE_BIN"), "verify", "--grid", "quick", "--quiet")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert r.stdout.splitlines()[-1].startswith("OK: ")
    rows = [line.split() for line in r.stdout.splitlines()[1:-1]]
    assert {row[1] for row in rows} == set(MODELS[model])
    assert {row[0] for row in rows} >= {"naive", "blocked", "simd", "flash"}


@pytest.mark.parametrize("isa", ["avx512", "avx512_bf16", "amx", "avx2", "sse4_2"])
def test_forcing_an_isa_the_model_lacks_is_a_clean_error(model, isa, tmp_path):
    if isa in MODELS[model]:
        pytest.skip("%s has %s" % (model, isa))
    rng = np.random.default_rng(3)
    for name in "qkv":
        np.save(tmp_path / (name + ".npy"), rng.standard_normal((1, 2, 9, 8)).astype(np.float32))
    out = tmp_path / "o.npy"
    dtype = ["--dtype", "bf16"] if isa == "amx" else []
    r = emulate(model, _env_path("ATTUNE_BIN"), "run", "--q", tmp_path / "q.npy", "--k", tmp_path / "k.npy",
                "--v", tmp_path / "v.npy", "--out", out, "--isa", isa, *dtype)
    assert r.returncode == 2, (r.returncode, r.stderr)  # a usage error, as for any refused flag
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: isa '%s' is not supported by this CPU" % isa), r.stderr
    assert not out.exists()


@pytest.mark.parametrize("binary", sorted(GTEST_FILTERS))
def test_dispatch_tests_pass(model, binary):
    r = emulate(model, _env_path(binary), "--gtest_filter=" + GTEST_FILTERS[binary],
                env_extra={"ATTUNE_EXPECT_RUNNABLE": " ".join(MODELS[model])})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "[  PASSED  ]" in r.stdout
    if binary == "ATTUNE_TESTS_BIN":  # the check of this model's ISAs ran, not skipped
        assert "[       OK ] Isa.DetectionMatchesTheExpectedCpu" in r.stdout
