"""synapse verify: shipped golden vectors pass, a broken kernel fails naming its op,
a user's model records and checks, and the onnxruntime determinism audit runs."""
import numpy as np
import pytest

from synapse_gpu.backends import cpu
from synapse_gpu.cli import main
from synapse_gpu.conformance.cases import CASES, build_case, generated_int8
from synapse_gpu.modelfile import save_model
from synapse_gpu.opdefs import OPS
from synapse_gpu.verify import summarize, verify_shipped

from synapse_devices import device  # noqa: F401  (fixture)


def test_conformance_set_covers_every_op_kind():
    ops = {n.op for name, _, _ in CASES for n in build_case(name).nodes}
    assert ops == set(OPS)


def test_generated_int8_is_sha256_counter_mode():
    """The documented generator: bytes of sha256("synapse-golden-v1\\0TAG\\0COUNTER")."""
    import hashlib

    a = generated_int8("x", (3, 5))
    assert a.dtype == np.int8 and a.shape == (3, 5)
    assert a.tobytes() == hashlib.sha256(b"synapse-golden-v1\0x\0" b"0").digest()[:15]
    b = generated_int8("x", (40,))  # crosses into the second block
    assert b.tobytes()[32:] == hashlib.sha256(b"synapse-golden-v1\0x\0" b"1").digest()[:8]


def test_shipped_golden_vectors_pass(device, capsys):
    results = verify_shipped(device)
    lines, ok = summarize(results)
    assert ok, "\n".join(lines)
    assert all(any(line.split()[:2] == [op, "PASS"] for line in lines) for op in OPS)
    assert main(["verify", "--device", device]) == 0
    assert "VERDICT: PASS" in capsys.readouterr().out


def _break(monkeypatch, op):
    """Make the CPU backend's kernel of `op` wrong in one element of every sample."""

    def wrong(fn):
        def run(*xs):
            y = np.array(fn(*xs), order="C")
            y.reshape(len(y), -1)[:, -1] ^= 4
            return y
        return run

    def broken_prepare(graph, traversal, **kw):
        exe = cpu.CpuExecutable(graph, traversal, **{**kw, "fuse": False})
        exe.wrap(lambda n: n.op == op, wrong)
        return exe

    monkeypatch.setattr(cpu, "prepare", broken_prepare)


@pytest.mark.parametrize("op", ["conv2d", "add", "max_pool", "softmax"])
def test_a_broken_kernel_fails_naming_its_op(op, monkeypatch, capsys):
    _break(monkeypatch, op)
    lines, ok = summarize(verify_shipped("cpu"))
    assert not ok
    failed = [line.split()[0] for line in lines if " FAIL " in f" {line} "]
    assert failed[0] == op and set(failed) == {op}, "\n".join(lines)  # downstream ops: propagated
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert f"VERDICT: FAIL: {op}" in out


def test_record_and_check_a_users_model(tmp_path, capsys, monkeypatch):
    from synapse_gpu.examples.tiny import tiny_cnn

    save_model(tiny_cnn(), tmp_path / "m.syn")
    x = np.random.default_rng(1).uniform(0, 1, (2, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    m, xi, g = str(tmp_path / "m.syn"), str(tmp_path / "x.npy"), str(tmp_path / "golden.json")
    assert main(["verify", m, "-i", xi, "--record", g]) == 0
    assert main(["verify", m, "-i", xi, "--check", g]) == 0
    _break(monkeypatch, "dense")
    assert main(["verify", m, "-i", xi, "--check", g]) == 1
    out = capsys.readouterr().out
    assert "dense" in out and "VERDICT: FAIL: dense" in out
    np.save(tmp_path / "y.npy", x[::-1].copy())
    assert main(["verify", m, "-i", str(tmp_path / "y.npy"), "--check", g]) != 0
    assert "is not the one the golden vector was recorded with" in capsys.readouterr().err


def test_verify_argument_errors(capsys):
    assert main(["verify", "--record", "x.json"]) != 0
    err = capsys.readouterr().err
    assert "need a MODEL" in err and "Traceback" not in err


def test_onnxruntime_audit(capsys):
    from synapse_gpu.ort_audit import audit

    x = np.load("synapse_gpu/examples/digits_test.npz")["images"][:3]
    runs, matters, _ = audit("synapse_gpu/examples/digits_int8.onnx", {"images": x},
                             levels=("disabled", "all"), threads=(1, 2))
    assert len(runs) == 8 and set(matters) <= {"optimization level", "thread count", "batching"}
    assert all(a.shape == (3, 10) for outs in runs.values() for a in outs)
    base = runs[("disabled", 1, True)][0]
    differs = not all(np.array_equal(base, o[0]) for o in runs.values())
    assert differs == bool(matters)  # a difference is always attributed to a setting
    assert main(["verify", "--engine", "onnxruntime", "synapse_gpu/examples/digits_int8.onnx"]) in (0, 1)
    out = capsys.readouterr().out
    assert "baseline" in out and "VERDICT: onnxruntime" in out
    assert main(["verify", "--engine", "onnxruntime", "synapse_gpu/examples/digits.syn"]) != 0
    assert "needs MODEL.onnx" in capsys.readouterr().err


def test_shipped_vectors_are_package_data():
    """The wheel carries the conformance models and golden.json (pyproject's package data)."""
    import fnmatch
    import pathlib

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = pathlib.Path(__file__).resolve().parent.parent
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "synapse_gpu.conformance" in tool["packages"]
    globs = tool["package-data"]["synapse_gpu.conformance"]
    data = [p.name for p in (root / "synapse_gpu" / "conformance").iterdir()
            if p.is_file() and p.suffix != ".py"]
    assert "golden.json" in data and all(any(fnmatch.fnmatch(n, g) for g in globs) for n in data)
