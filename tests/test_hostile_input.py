"""Hostile ONNX names and hostile feeds (issue 15): library errors, bounded memory."""
import tracemalloc

import numpy as np
import pytest

from synapse_gpu import session as session_mod
from synapse_gpu.errors import InputError, ModelFormatError, ShapeError, SynapseError
from synapse_gpu.onnx.importer import import_onnx
from synapse_gpu.session import InferenceSession
from tests.fuzz.seeds import qdq_chain, qoperator_conv
from tests.test_hostile_syn import base_graph


@pytest.mark.parametrize("name", [b"conv", b"q"])
def test_onnx_name_with_invalid_utf8(name):
    """protobuf hands an invalid UTF-8 string over as bytes: was a TypeError in graph.py."""
    data = qoperator_conv().SerializeToString()
    i = data.find(name)
    with pytest.raises(ModelFormatError):
        import_onnx(data[:i] + b"\xff" + data[i + 1:])


def test_onnx_flatten_of_an_empty_input_name():
    """A Flatten with input '' was an AttributeError in onnx/fold.py."""
    m = qdq_chain()
    for n in m.graph.node:
        if n.op_type == "Reshape":
            n.op_type = "Flatten"
            del n.input[:]
            n.input.append("")
    with pytest.raises(ModelFormatError, match="Flatten.*data input"):
        import_onnx(m.SerializeToString())


@pytest.fixture(scope="module")
def sess():
    return InferenceSession(base_graph(), device="cpu")


@pytest.mark.parametrize("feed, exc", [
    ([[[[0.0] * 8] * 8], [[[0.0] * 7] * 8]], InputError),  # ragged: was a raw ValueError
    ("not an array", SynapseError),
    (np.zeros((0, 1, 8, 8), np.float32), ShapeError),
    (np.zeros((2, 1, 8, 8), np.int64), SynapseError),
    (np.array([[[[np.nan] * 8] * 8]], np.float32), InputError),
])
def test_bad_feeds(sess, feed, exc):
    with pytest.raises(exc):
        sess.run(None, {"x": feed})


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_batches_run_in_chunks_with_the_same_bits_and_bounded_memory(monkeypatch):
    """Batch 2^20 on digits raised MemoryError from an int64 intermediate: batches are now
    cut so that one backend call stays within RUN_BYTES (here 1 MiB: 62 samples).
    On the numpy path, whose temporaries tracemalloc sees (an onnxruntime graph's live in
    its own arena)."""
    monkeypatch.setenv("SYNAPSE_CPU_ENGINE", "float32-blas")
    sess = InferenceSession(base_graph(), device="cpu")
    x = np.random.default_rng(1).integers(-128, 128, (3000, 1, 8, 8)).astype(np.int8)
    whole = sess.run_full(None, {"x": x}, output_type="int8", trace=True)
    whole_peak = _peak(lambda: sess.run_full(None, {"x": x}, output_type="int8"))
    monkeypatch.setattr(session_mod, "RUN_BYTES", 1 << 20)
    assert sess._chunk() == 62
    chunked = sess.run_full(None, {"x": x}, output_type="int8", trace=True)
    assert chunked.digest == whole.digest
    assert [e.digest for e in chunked.trace] == [e.digest for e in whole.trace]
    np.testing.assert_array_equal(chunked.outputs[0], whole.outputs[0])
    # outputs (384 KB) and their joining copies, plus one chunk's temporaries; the whole
    # batch at once takes an int64 table index per element (3 MB) on top
    bound = (1 << 20) + 3 * 3000 * 2 * 64
    assert _peak(lambda: sess.run_full(None, {"x": x}, output_type="int8")) < bound < whole_peak
