"""The bundled digits example (examples/digits/train.py) on Synapse's CPU backend.

Thresholds, measured on the shipped files (360 held-out images, report in
synapse_gpu/examples/digits_report.md): float32 and onnxruntime int8 are both
100% accurate, and the smallest top-1 margin of onnxruntime's int8 logits is 6
quantization steps (1st percentile: 20). Synapse reproduces onnxruntime's
requantization bit for bit; its own integer rules for the float islands
(BatchNormalization, PRelu) and the pools may move a tensor by a step, which
can flip only a sample whose margin closes by 6 steps. So we expect 100%;
99% (at most 3 of 360 samples) leaves room for such rule differences while any
real kernel or import bug (a wrong scale, zero point, layout) drops far below.
"""
import os

import numpy as np
import onnxruntime as ort
import pytest

import synapse_gpu

EXAMPLES = os.path.join(os.path.dirname(synapse_gpu.__file__), "examples")
INT8 = os.path.join(EXAMPLES, "digits_int8.onnx")
MIN_ACCURACY = 0.99
MIN_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def digits():
    with np.load(os.path.join(EXAMPLES, "digits_test.npz")) as z:
        return z["images"], z["labels"]


@pytest.fixture(scope="module")
def ort_logits(digits):
    sess = ort.InferenceSession(INT8, providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": digits[0]})[0]


@pytest.fixture(scope="module")
def sess(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # keep the import cache out of $HOME
        mp.setenv("SYNAPSE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return synapse_gpu.InferenceSession(INT8, device="cpu")


def test_shipped_artefacts(digits, ort_logits):
    images, labels = digits
    assert images.dtype == np.float32 and images.shape == (360, 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (360,)
    assert 0 <= images.min() and images.max() <= 1
    total = sum(os.path.getsize(os.path.join(EXAMPLES, f)) for f in os.listdir(EXAMPLES)
                if f.startswith("digits"))
    assert total < 1 << 20
    assert (ort_logits.argmax(1) == labels).mean() >= MIN_ACCURACY


def test_accuracy(sess, digits):
    images, labels = digits
    (logits,) = sess.run(None, {"images": images})
    acc = (logits.argmax(1) == labels).mean()
    assert acc >= MIN_ACCURACY, f"Synapse int8 accuracy {acc:.2%}"


def test_agrees_with_onnxruntime(sess, digits, ort_logits):
    (logits,) = sess.run(None, {"images": digits[0]})
    agree = (logits.argmax(1) == ort_logits.argmax(1)).mean()
    step = sess.graph.outputs[0].scale
    diff = np.abs(np.rint((logits - ort_logits) / step)).max()
    assert agree >= MIN_AGREEMENT, f"top-1 agreement {agree:.2%}, max logit difference {diff} steps"


def test_batch_invariance(sess, digits):
    images = digits[0][:32]
    (batch,) = sess.run(None, {"images": images}, output_type="int8")
    for i in range(len(images)):
        (alone,) = sess.run(None, {"images": images[i:i + 1]}, output_type="int8")
        np.testing.assert_array_equal(alone[0], batch[i], err_msg=f"sample {i}")


def test_shipped_model_file_is_the_import_of_the_onnx_file(sess):
    """digits.syn (what `synapse demo` runs) must be exactly today's import of digits_int8.onnx:
    regenerate it with examples/digits/compile.py after changing the importer or builder."""
    from synapse_gpu.modelfile import load_model, model_id

    assert model_id(load_model(os.path.join(EXAMPLES, "digits.syn"))) == sess.model_id
