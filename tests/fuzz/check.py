"""One fuzz case -> one outcome.

A case passes when the library either refuses it with a SynapseError, or accepts it and
the CPU backend and the numpy reference give the same int8 bits on a random batch.
Anything else is a finding: "bug:<type>" (an exception that is not a SynapseError),
"disagree" (accepted, different bits); run.py adds "timeout" and "memory".
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from synapse_gpu import registry
from synapse_gpu.errors import SynapseError
from synapse_gpu.validate import Limits

# Far below the defaults so that every accepted case runs in milliseconds; the bounds
# themselves are what is being tested (refused before allocation).
FUZZ_LIMITS = Limits(activation_bytes=1 << 20, work=20_000_000)
BATCH = 2
# Backends compared with the reference on every accepted graph; run.py adds "cuda" on the
# emulated device (tests/emucuda) with --emulated-cuda.
DEVICES = ["cpu"]


def reference_run(graph, traversal, feeds):
    """The graph node by node through reference/ (the executable spec)."""
    env = dict(feeds)
    for n in traversal.order:
        env[n.outputs[0]] = registry.call(registry.reference_op(n.op), n,
                                          [env[i] for i in n.inputs], graph.buffers)
    return {t.name: env[t.name] for t in graph.outputs}


def _session(graph, device):
    from synapse_gpu.session import InferenceSession

    return InferenceSession(graph, device=device, strict=False, max_cost=FUZZ_LIMITS.work,
                            max_activation_bytes=FUZZ_LIMITS.activation_bytes)


def run_graph(graph, seed):
    """Accept or refuse `graph`; when accepted, compare every backend with the reference.
    A backend other than the CPU may refuse an accepted graph with a SynapseError (e.g. CUDA
    pooling over more than 3 axes): that is reported, not a disagreement."""
    sess = _session(graph, "cpu")
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in graph.inputs:
        shape = (BATCH if t.shape[0] == -1 else t.shape[0], *t.shape[1:])
        feeds[t.name] = rng.integers(-128, 128, shape).astype(np.int8)
    want = reference_run(graph, sess.report.traversal, feeds)
    for device in DEVICES:
        try:
            s = sess if device == "cpu" else _session(graph, device)
        except SynapseError as e:
            return f"accepted:{device}-refused:{type(e).__name__}"
        got = s.run_full(None, feeds, output_type="int8").int8_outputs
        for name in want:
            if want[name].dtype != np.int8 or not np.array_equal(got[name], want[name]):
                return f"disagree:{device}"
    return "accepted"


def outcome(fn, *args):
    """fn(*args) -> its outcome string; exceptions classified."""
    try:
        return fn(*args)
    except SynapseError as e:
        return f"refused:{type(e).__name__}"
    except MemoryError:
        return "memory"
    except RecursionError:
        return "bug:RecursionError"
    except Exception as e:  # noqa: BLE001 - every other exception is the finding
        return f"bug:{type(e).__name__}"


def check_syn_bytes(data, seed=0):
    """Load a .syn file's bytes (through a temporary file, as users do) and run it."""
    from synapse_gpu.modelfile import load_model

    def go():
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "m.syn")
            with open(p, "wb") as f:
                f.write(data)
            g = load_model(p)
        return run_graph(g, seed)
    return outcome(go)


def check_onnx_bytes(data, seed=0):
    from synapse_gpu.onnx.importer import import_onnx

    return outcome(lambda: run_graph(import_onnx(data), seed))
