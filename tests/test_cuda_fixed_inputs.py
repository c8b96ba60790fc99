"""CUDA backend: tensors whose axis 0 is a fixed size, not the batch (a .syn graph input
declared (32, 70), a matmul's second operand). The core sizes slots per sample; the CUDA
plan gives such a tensor all of its elements at every batch size (cuda.py _slot_sizes).
Checked bit for bit against the CPU backend and the numpy reference, on a GPU if there is
one, else on the emulated device."""
import numpy as np
import pytest

from synapse_gpu import InferenceSession, build
from synapse_gpu.backends import cuda
from synapse_gpu.graph import GraphBuilder

from cuda_host import cases
from synapse_devices import gpu  # noqa: F401  (autouse: a GPU, else the emulator)

# a: rows x 32, its zero point at either end; w: (32, 70) fixed, its zero point near the
# middle (with both at the ends every product has one sign and the output saturates); the
# output (rows, 70), its zero point at the other end, spans several 256-thread blocks.
K, N = 32, 70


def matmul_graph(a_rows, za):
    b = GraphBuilder()
    a = b.add_input("a", (a_rows, K), 0.05, za)
    w = b.add_input("w", (K, N), 0.04, -za // 16)
    b.add_output(build.matmul(b, a, w, y_scale=0.6, y_zero_point=-za // 2))
    return b.build()


def feeds(rng, rows):
    return {"a": rng.integers(-128, 128, (rows, K)).astype(np.int8),
            "w": rng.integers(-128, 128, (K, N)).astype(np.int8)}


@pytest.mark.parametrize("za", [-128, 127])
def test_fixed_first_axis_inputs_run_as_on_the_cpu(za):
    """Every input fixed (the session's batch is their axis 0, 32): the reported case,
    "cannot reshape array of size 70 into shape (32, 70)" on CUDA."""
    g = matmul_graph(32, za)
    x = feeds(np.random.default_rng([11, za + 128]), 32)
    want = InferenceSession(g, device="cpu").run(None, x, output_type="int8")[0]
    got = InferenceSession(g, device="cuda").run(None, x, output_type="int8")[0]
    np.testing.assert_array_equal(got, want)
    assert want.shape == (32, N) and len(np.unique(want)) > 64  # not saturated


@pytest.mark.parametrize("za,batch", [(-128, 1), (127, 5)])
def test_a_fixed_operand_beside_a_batched_one(za, batch):
    """A batched input and a fixed one in one plan, each batch size its own plan."""
    g = matmul_graph(-1, za)
    trav = cases.traversal(g)
    exe = cuda.prepare(g, trav)
    for rows in (batch, 3):  # a second batch size after the first: a plan of its own
        x = feeds(np.random.default_rng([rows, 12]), rows)
        got, _ = exe.run(x)
        want = cases.reference_run(g, trav, x)[g.outputs[0].name]
        np.testing.assert_array_equal(got[g.outputs[0].name], want)
        assert len(np.unique(want)) > min(64, want.size // 4)
