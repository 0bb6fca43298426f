# Shared setup of the CLI tests: the binary under test comes from ATTUNE_BIN (ctest sets it to
# the built attune_cli); tests that take `kernel_isa_dtype` run once per line of `attune kernels`
# ("<kernel> <isa> <dtype>"), tests that take `kernel_isa` once per (kernel, isa) pair in it.
import os
import subprocess

import pytest


def _binary():
    path = os.environ.get("ATTUNE_BIN", "")
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise pytest.UsageError(
            "ATTUNE_BIN must name the built attune binary (got %r)" % path)
    return path


def clean_env(**extra):
    """The caller's environment without ATTUNE_ISA (a stray cap would change what runs)."""
    env = {k: v for k, v in os.environ.items() if k != "ATTUNE_ISA"}
    env.update(extra)
    return env


def pytest_configure(config):
    _binary()  # fail the whole session at once, not test by test, if the binary is missing


def _listed_triples():
    out = subprocess.run([_binary(), "kernels"], capture_output=True, text=True,
                         env=clean_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    triples = [tuple(line.split()) for line in out.stdout.splitlines() if line.strip()]
    assert triples, "attune kernels listed nothing"
    return triples


def pytest_generate_tests(metafunc):
    if "kernel_isa_dtype" in metafunc.fixturenames:
        triples = _listed_triples()
        metafunc.parametrize("kernel_isa_dtype", triples, ids=["-".join(t) for t in triples])
    if "kernel_isa" in metafunc.fixturenames:
        pairs = list(dict.fromkeys(t[:2] for t in _listed_triples()))
        metafunc.parametrize("kernel_isa", pairs, ids=["%s-%s" % p for p in pairs])


@pytest.fixture(scope="session")
def attune_bin():
    return _binary()
