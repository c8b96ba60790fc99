"""The transformer text classifier of examples/text_transformer.py (built with onnx.helper,
no torch), quantized once per test process, for the token-model tests."""
import functools
import importlib.util
import os
import tempfile

import numpy as np

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "text_transformer.py")


def example():
    spec = importlib.util.spec_from_file_location("text_transformer", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@functools.cache
def quantized_transformer():
    """Path of the quantized (QDQ) classifier: the example's sizes, seed 0."""
    tt = example()
    path = os.path.join(tempfile.mkdtemp(prefix="synapse_tokens_"), "text_transformer_qdq.onnx")
    return tt.quantize(tt.float_model(), path)


def random_ids(rng, shape, vocab):
    """Uniform token ids with both ends of the vocabulary present."""
    ids = rng.integers(0, vocab, size=shape, dtype=np.int64)
    ids.flat[0], ids.flat[-1] = 0, vocab - 1
    return ids
