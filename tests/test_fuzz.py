"""The fuzzers in CI: a bounded run with a fixed seed, and the regression corpus replayed.

A case passes when it is refused with a SynapseError or accepted with the CPU backend
and the reference agreeing bit for bit (tests/fuzz/check.py). The big campaigns
(>= 10,000 .syn and 20,000 ONNX mutations, forked workers with a memory limit and a
timeout) run with `python -m tests.fuzz.run`.
"""
import os

import pytest

from tests.fuzz import check, run

CORPUS = os.path.join(os.path.dirname(run.__file__), "corpus")
# Findings in code owned elsewhere, kept until fixed (strict: once fixed, drop the entry).
KNOWN = {}  # file name -> reason


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN[n])) if n in KNOWN else n
    for n in sorted(os.listdir(CORPUS))])
def test_corpus_case(name):
    with open(os.path.join(CORPUS, name), "rb") as f:
        data = f.read()
    fn = check.check_syn_bytes if name.endswith(".syn") else check.check_onnx_bytes
    assert not run.is_finding(fn(data)), name


@pytest.mark.parametrize("kind, n", [("syn", 100), ("onnx", 60)])
def test_bounded_fuzz_run_with_a_fixed_seed(kind, n):
    outcomes = {i: run.run_case(kind, 7, i) for i in range(n)}
    findings = {i: o for i, o in outcomes.items() if run.is_finding(o)}
    assert not findings, f"reproduce with tests.fuzz.run.case_bytes({kind!r}, 7, i): {findings}"
    # the mutators must reach both sides: refusals and accepted graphs run on two engines
    assert sum(o == "accepted" for o in outcomes.values()) >= n // 20
