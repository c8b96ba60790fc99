"""Token models on the CUDA backend (cuda_kernels/embedding.cu): embedding_v1 and constant_v1
bit-exact with the reference and the CPU backend, and the whole quantized transformer
classifier bit-identical on CUDA and CPU. A real GPU where CuPy finds one, else the
emulated device (tests/emucuda: guard zones catch any read outside the table)."""
import numpy as np
import pytest

from synapse_gpu import InferenceSession
from synapse_gpu.backends import cuda
from synapse_gpu.reference.embedding import pack_ids

from cuda_host import cases
from ort_helpers import rng_for
from synapse_devices import gpu  # noqa: F401  (autouse: a GPU, else the emulator)
from test_ref_embedding import expected, token_graph
from token_models import example, quantized_transformer, random_ids

pytestmark = pytest.mark.gpu


# 5 x 16 x 64 = 5120 outputs: several blocks; 2 x 9 x 40 at batch 5: a partial last block
@pytest.mark.parametrize("seq,vocab,dim", [((16,), 1000, 64), ((2, 9), 77, 40), ((1,), 1, 1)])
@pytest.mark.parametrize("z", [(-128, 127), (127, -128)])
@pytest.mark.parametrize("batch", [1, 5])
def test_embedding_and_constant_match_reference_and_cpu(seq, vocab, dim, z, batch):
    g = token_graph(vocab, seq, dim, *z)
    ids = random_ids(rng_for(batch, vocab, *seq), (batch, *seq), vocab)
    feeds = {"tokens": pack_ids(ids)}
    trav = cases.traversal(g)
    y_gpu, steps_gpu = cuda.prepare(g, trav).run(feeds, trace=True)
    y_cpu, steps_cpu = InferenceSession(g, device="cpu")._exe.run(feeds, trace=True)
    np.testing.assert_array_equal(y_gpu["y"], expected(g, ids))
    for (n, t, a), (_, _, b) in zip(steps_gpu, steps_cpu):  # every node, not only the output
        np.testing.assert_array_equal(a, b, err_msg=n)


def test_kernel_never_reads_outside_the_table():
    """A caller that bypasses the session's range check gets zeros, not a stray read."""
    g = token_graph(10, (4,), 8)
    ids = np.array([[0, 10, (1 << 31) - 1, 9]], np.int64)
    x = pack_ids(ids)
    x[0, 2] = [-1, -1, -1, -1]  # the bytes of -1
    exe = cuda.prepare(g, cases.traversal(g))
    _, steps = exe.run({"tokens": x}, trace=True)
    emb = steps[0][2]
    table = g.param(g.nodes[0], "table")
    np.testing.assert_array_equal(emb[0, [0, 3]], table[[0, 9]])
    assert not emb[0, [1, 2]].any()


def test_transformer_classifier_matches_cpu():
    """The quantized 2-layer encoder (int64 tokens in): CUDA = CPU bit for bit, batch 1 and 5,
    and the batch of 5 equals its samples run one by one."""
    path = quantized_transformer()
    ids = example().random_tokens(np.random.default_rng(7), 5)
    gpu_sess = InferenceSession(path, device="cuda")
    cpu_sess = InferenceSession(path, device="cpu")
    y5 = gpu_sess.run(None, {"tokens": ids}, output_type="int8")[0]
    np.testing.assert_array_equal(y5, cpu_sess.run(None, {"tokens": ids}, output_type="int8")[0])
    assert gpu_sess.last_result.digest == cpu_sess.last_result.digest
    for i in range(5):
        np.testing.assert_array_equal(
            gpu_sess.run(None, {"tokens": ids[i:i + 1]}, output_type="int8")[0], y5[i:i + 1])
