"""The CPU backend's table lookups give the reference's bits (indexing, broadcasting, channels)."""
import numpy as np
import pytest

from synapse_gpu import build, registry
from synapse_gpu.backends import cpu_tables
from synapse_gpu.graph import GraphBuilder


def _node(make, shapes, zps, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    ins = [b.add_input(f"x{i}", s, rng.uniform(0.01, 0.1), z) for i, (s, z) in enumerate(zip(shapes, zps))]
    make(b, rng, *ins)
    return b.nodes[-1], b.buffers, rng


CASES = {
    "add": (lambda b, r, x, y: build.add(b, x, y, y_scale=r.uniform(0.02, 0.2), y_zero_point=7,
                                         relu=True), 2),
    "mul": (lambda b, r, x, y: build.mul(b, x, y, y_scale=r.uniform(0.001, 0.01), y_zero_point=-3), 2),
    "requantize": (lambda b, r, x: build.requantize(b, x, y_scale=r.uniform(0.01, 0.1),
                                                    y_zero_point=-100), 1),
    "batchnorm": (lambda b, r, x: build.batchnorm(
        b, x, r.uniform(-2, 2, 6), r.normal(0, 1, 6), r.normal(0, 1, 6), r.uniform(0.5, 2, 6),
        y_scale=0.05, y_zero_point=1), 1),
    "prelu": (lambda b, r, x: build.prelu(b, x, r.uniform(-0.5, 0.5, 6), y_scale=0.03,
                                          y_zero_point=-128), 1),
}


@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("zps", [(-128, 127), (127, -128), (0, 5)])
@pytest.mark.parametrize("shapes", [((-1, 6, 5, 4), (-1, 6, 5, 4)), ((-1, 6, 5, 4), (1, 6, 1, 4)),
                                    ((-1, 6), (-1, 6))])
def test_table_equals_reference(op, zps, shapes):
    make, arity = CASES[op]
    node, buffers, rng = _node(make, shapes[:arity], zps[:arity], seed=hash((op, zps)) % 1000)
    xs = [rng.integers(-128, 128, (3,) + s[1:] if s[0] == -1 else s).astype(np.int8)
          for s in shapes[:arity]]
    xs[0][..., 0] = -128  # the ends of the domain
    xs[0].reshape(-1)[-1] = 127
    want = registry.call(registry.reference_op(op), node, xs, buffers)
    got = cpu_tables.prepare(node, buffers)(*xs)
    assert got.dtype == np.int8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shapes", [((-1, 6, 5, 4), (-1, 6, 5, 4)), ((-1, 6, 5, 4), (1, 6, 1, 4))],
                         ids=["flat", "broadcast"])
def test_binary_split_over_threads_equals_reference(shapes, monkeypatch):
    """The lookup split over threads (forced on small arrays) gives the same bits."""
    monkeypatch.setattr(cpu_tables, "_SPLIT_MIN", 1)
    monkeypatch.setattr("synapse_gpu.backends.cpu_ort.threads", lambda: 3)
    node, buffers, rng = _node(CASES["add"][0], shapes, (-128, 127), seed=4)
    xs = [rng.integers(-128, 128, (7,) + s[1:] if s[0] == -1 else s).astype(np.int8) for s in shapes]
    want = registry.call(registry.reference_op("add"), node, xs, buffers)
    np.testing.assert_array_equal(cpu_tables.prepare(node, buffers)(*xs), want)
