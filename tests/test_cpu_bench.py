"""The CPU benchmark helpers run (bench/timing.py, bench/profile_cpu.py, bench/mobilenet_v2.py):
a smoke test on the small models, no timing asserted."""
import os
import sys

import numpy as np

import synapse_gpu as sg

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)
DIGITS = os.path.join(os.path.dirname(sg.__file__), "examples", "digits_int8.onnx")

import mobilenet_v2  # noqa: E402
import profile_cpu  # noqa: E402
import timing  # noqa: E402


def _digits(n):
    with np.load(os.path.join(os.path.dirname(DIGITS), "digits_test.npz")) as z:
        return z["images"][:n]


def test_compare_files_on_digits():
    rows, engines = timing.compare_files({"digits": DIGITS}, _digits(8), rounds=1, reps=1)
    (label, b1, p1, t8, r8, same, top1, best1, best8), = rows
    assert label == "digits" and min(b1, p1, t8, r8, best1, best8) > 0 and 0 <= same <= 1 and top1 > 0.5
    assert len(engines) == 1
    assert timing.table(rows)[2].startswith("| digits |")


def test_profile_covers_every_step():
    sess = sg.InferenceSession(DIGITS, device="cpu")
    med = profile_cpu.profile(sess, 2, runs=1)
    assert med.shape == (len(sess._exe.steps),) and np.all(med > 0)


def test_mobilenet_v2_float_model_runs():
    import onnx
    import onnxruntime as ort

    model = mobilenet_v2.float_mobilenet_v2()
    onnx.checker.check_model(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 52 and sum(n.op_type == "Add" for n in model.graph.node) == 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"data": np.zeros((1, 3, 224, 224), np.float32)})[0]
    assert y.shape == (1, 1000) and np.isfinite(y).all()
