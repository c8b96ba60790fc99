"""Deterministic cost: a hand count on a small model, batch invariance, every op priced."""
import numpy as np
import pytest

from synapse_gpu import build
from synapse_gpu.cost import WEIGHTS, model_cost
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.graph import GraphBuilder
from synapse_gpu.opdefs import OPS

from synapse_devices import device  # noqa: F401  (fixture)


def small_model():
    rng = np.random.default_rng(3)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 1, 4, 4), scale=0.02, zero_point=0)
    h = build.conv(b, x, rng.integers(-127, 128, (2, 1, 3, 3)), 0.01, None, y_scale=0.05,
                   y_zero_point=0, pads=[1, 1, 1, 1], name="conv")
    h = build.relu(b, h, name="relu")
    h = build.max_pool(b, h, [2, 2], strides=[2, 2], name="pool")
    h = build.flatten(b, h, name="flat")
    h = build.dense(b, h, rng.integers(-127, 128, (3, 8)), 0.01, None, y_scale=0.1,
                    y_zero_point=0, name="fc")
    b.add_output(h)
    return b.build()


def test_hand_count():
    assert WEIGHTS == {"macs": 1, "alu": 1, "requants": 4, "lookups": 1, "bytes_read": 1,
                       "bytes_written": 1}  # the hand count below uses these weights
    c = model_cost(small_model())
    by = {n.name: n for n in c.nodes}
    # conv: 2x4x4 outputs x 9 terms; reads 16 input bytes + w 18 + bias 2x4 + multiplier,
    # shift 2x8 each + w_zero_point 2x4; writes 32
    conv = by["conv"]
    assert (conv.macs, conv.requants, conv.bytes_read, conv.bytes_written) == (288, 32, 82, 32)
    assert conv.total == 288 + 4 * 32 + 82 + 32
    assert by["relu"].total == 32 + 32 + 32                 # one clamp per element, read, write
    assert by["pool"].total == 8 * 4 + 32 + 8               # 8 outputs x 2x2 window
    assert by["flat"].total == 8 + 8
    fc = by["fc"]                                           # 3 outputs x 8 terms
    assert (fc.macs, fc.bytes_read) == (24, 8 + 24 + 12 + 24 + 24 + 12)
    assert fc.total == 24 + 4 * 3 + 104 + 3
    assert c.per_sample == 530 + 96 + 72 + 16 + 143 == 857
    assert c.per_batch(5) == 5 * 857
    assert c.count("macs") == 312 and sum(c.by_op().values()) == c.per_sample


def test_every_op_has_a_rule():
    from synapse_gpu.cost import _RULES

    assert set(_RULES) == set(OPS)


def test_cost_is_a_property_of_the_model():
    g = tiny_cnn()
    a, b = model_cost(g), model_cost(tiny_cnn())
    assert a == b and a.per_sample > 0
    wider = model_cost(tiny_cnn(channels=16))
    assert wider.per_sample > a.per_sample


@pytest.mark.parametrize("n", [1, 3])
def test_batch_cost_is_additive(n):
    c = model_cost(tiny_cnn())
    assert c.per_batch(n) == n * c.per_sample


def test_session_cost_and_budget(monkeypatch):
    from synapse_gpu import backends
    from synapse_gpu.errors import CostLimitError
    from synapse_gpu.session import InferenceSession

    g = small_model()
    sess = InferenceSession(g, device="cpu", max_cost=857)  # exactly at the budget: accepted
    r = sess.run_full(None, {"x": np.zeros((3, 1, 4, 4), np.int8)})
    assert sess.cost.per_sample == 857 and r.cost == 3 * 857

    def no_backend(device):
        raise AssertionError("a refused model must not reach a backend")

    monkeypatch.setattr(backends, "select", no_backend)
    with pytest.raises(CostLimitError, match="857 per sample > max_cost 856"):
        InferenceSession(g, device="cpu", max_cost=856)


def test_cost_is_the_same_on_every_device(device):
    from synapse_gpu.session import InferenceSession

    g = tiny_cnn()
    sess = InferenceSession(g, device=device)
    r = sess.run_full(None, {"input": np.zeros((4, 1, 8, 8), np.float32)})
    assert sess.cost == model_cost(g) and r.cost == 4 * model_cost(g).per_sample
