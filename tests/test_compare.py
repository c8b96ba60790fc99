"""synapse compare / trace / diff: exact node-by-node comparison and the first divergent node."""
import json

import numpy as np
import pytest

from synapse_gpu import tracefile
from synapse_gpu.cli import main
from synapse_gpu.compare import compare, compare_steps, compare_traces
from synapse_gpu.compare_ort import onnx_tensor_map
from synapse_gpu.errors import ModelFormatError
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.session import InferenceSession

DIGITS = "synapse_gpu/examples/digits_int8.onnx"


def altered(node):
    """The tiny CNN with one weight of `node` flipped to the other end of the range."""
    g = tiny_cnn()
    bid = g.node(node).params["w"]
    w = g.buffers[bid].copy()
    w.flat[4] = 127 if w.flat[4] < 0 else -127
    g.buffers[bid] = w
    return g


@pytest.fixture(scope="module")
def feeds():
    return {"input": np.random.default_rng(5).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("node", ["res_conv", "grouped", "fc"])
def test_diff_names_exactly_the_altered_node(node, feeds, tmp_path, capsys):
    base = tiny_cnn()
    a = tracefile.record(InferenceSession(base, device="cpu"), feeds)
    b = tracefile.record(InferenceSession(altered(node), device="cpu"), feeds)
    c = compare_traces(a, b)
    assert not c.identical
    assert c.first_divergent.node == node and c.first_divergent.cause == "rule"
    assert [o.node for o in c.origins] == [node]  # everything after it is "propagated"
    assert any("different models" in n for n in c.notes)
    # the same through files and the CLI
    tracefile.save(a, tmp_path / "a.json")
    tracefile.save(b, tmp_path / "b.json")
    assert main(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    out = capsys.readouterr().out
    assert f"first divergent node: {node} (" in out and "its inputs were identical" in out
    assert main(["diff", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0


def test_trace_file_round_trip_and_digests(feeds, tmp_path):
    sess = InferenceSession(tiny_cnn(), device="cpu")
    t = tracefile.record(sess, feeds, keep_tensors=True)
    r = sess.run_full(None, feeds, trace=True)
    assert [e.digest for e in r.trace] == [t.digests[s.tensor] for s in t.steps]
    assert t.run_digest == r.digest
    tracefile.save(t, tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["format"] == "synapse-trace" and doc["tensors"] == "t.npz"
    back = tracefile.load(tmp_path / "t.json")
    assert back.digests == t.digests and set(back.tensors) == set(t.tensors)
    np.savez(tmp_path / "t.npz", **{k: v + np.int8(1) for k, v in t.tensors.items()})
    with pytest.raises(ModelFormatError, match="do not match"):
        tracefile.load(tmp_path / "t.json")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ModelFormatError, match="not a trace file"):
        tracefile.load(tmp_path / "bad.json")


def test_compare_against_trace_with_tensors_counts_elements(feeds, tmp_path):
    base = tiny_cnn()
    other = tracefile.record(InferenceSession(altered("res_conv"), device="cpu"), feeds,
                             keep_tensors=True)
    tracefile.save(other, tmp_path / "other.json")
    c = compare(base, feeds, str(tmp_path / "other.json"))
    first = c.first_divergent
    assert first.node == "res_conv" and first.cause == "rule"
    assert 0 < first.identical < 1 and first.max_steps > 0 and len(first.first_index) == 4
    # downstream nodes, fed the other side's inputs, give its outputs: only propagated
    assert {n.cause for n in c.nodes if n.node != "res_conv" and n.cause} == {"propagated"}
    assert compare(base, feeds, "cpu").identical


def test_compare_flags_a_nodes_own_rule_after_a_divergence(feeds, monkeypatch):
    """A broken kernel downstream of a divergence is "propagated+rule", not just propagated."""
    from synapse_gpu.backends import cpu

    base = tiny_cnn()
    theirs = tracefile.record(InferenceSession(altered("res_conv"), device="cpu"), feeds,
                              keep_tensors=True)

    def off_by_one(fn):
        def run(*xs):
            y = np.array(fn(*xs), order="C")
            y.flat[0] ^= 1
            return y
        return run

    def broken_prepare(graph, traversal, **kw):
        exe = cpu.CpuExecutable(graph, traversal, **{**kw, "fuse": False})
        exe.wrap(lambda n: n.op == "max_pool", off_by_one)
        return exe

    monkeypatch.setattr(cpu, "prepare", broken_prepare)
    c = compare(base, feeds, theirs)
    causes = {n.node: n.cause for n in c.nodes}
    assert causes["res_conv"] == "rule" and causes["maxpool"] == "propagated+rule"


def test_compare_against_onnxruntime_maps_every_node(capsys):
    import onnx

    x = np.load("synapse_gpu/examples/digits_test.npz")["images"][:4]
    sess = InferenceSession(DIGITS, device="cpu")
    mapping = onnx_tensor_map(onnx.load(DIGITS), sess.graph)
    assert {n.outputs[0] for n in sess.graph.nodes} <= set(mapping)
    c = compare(sess, {"images": x}, "onnxruntime", onnx_model=DIGITS)
    assert all(n.status != "missing" and n.theirs_op for n in c.nodes)
    assert not any("differ from onnxruntime's own run" in n for n in c.notes)
    if not c.identical:  # machine-dependent (onnxruntime's u8s8 kernels saturate without VNNI)
        assert c.first_divergent.cause in ("rule", "input")


def test_cli_compare_and_trace(feeds, tmp_path, capsys):
    np.save(tmp_path / "x.npy", feeds["input"])
    syn = "synapse_gpu/conformance/tiny_cnn.syn"
    assert main(["trace", syn, "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "t.json")]) == 0
    assert main(["compare", syn, "-i", str(tmp_path / "x.npy"), "--against",
                 str(tmp_path / "t.json")]) == 0
    assert main(["compare", syn, "-i", str(tmp_path / "x.npy"), "--against", "cpu", "--all"]) == 0
    out = capsys.readouterr().out
    assert "all identical" in out and out.count("100%") >= 12
    rc = main(["compare", syn, "-i", str(tmp_path / "x.npy")])  # a .syn has no onnxruntime form
    err = capsys.readouterr().err
    assert rc != 0 and "needs the ONNX model" in err and "Traceback" not in err


def test_plot(feeds, tmp_path):
    pytest.importorskip("matplotlib")
    from synapse_gpu.compare import plot_agreement

    base = tiny_cnn()
    other = tracefile.record(InferenceSession(altered("res_conv"), device="cpu"), feeds,
                             keep_tensors=True)
    plot_agreement(compare(base, feeds, other), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_resnet50_qdq_vs_onnxruntime_first_divergent_node(tmp_path_factory):
    """Acceptance: QDQ ResNet-50 against onnxruntime, which runs some convs in float."""
    from synapse_gpu.examples.resnet50 import images, quantized_resnet50

    # one directory per pytest run: quantized_resnet50 reuses the files another test wrote there
    out = tmp_path_factory.getbasetemp() / "resnet50_models"
    path = quantized_resnet50(str(out), formats=("QDQ",))["QDQ"]
    c = compare(path, {"data": images(1, 7)}, "onnxruntime")
    print("\n" + c.verdict() + "\n" + c.table())
    assert sum(n.status != "missing" for n in c.nodes) >= 70  # of 73
    assert any(n.theirs_op.startswith("float Conv") for n in c.nodes if n.theirs_op)
    first = c.first_divergent
    assert first is not None and first.cause == "rule" and first.theirs_op
    assert first.node in c.verdict() and c.origins[0] == first


def test_cpu_rerun_on_a_fused_model_gives_every_nodes_traced_output():
    """compare's rerun path on a model the CPU backend fuses into onnxruntime graphs: every
    node rerun alone on its traced inputs gives its traced output (it crashed once with
    "cannot unpack non-iterable Step" when the backend's steps became fused runs)."""
    from synapse_gpu.backends import cpu_fused
    from synapse_gpu.compare import cpu_rerun

    x = np.load("synapse_gpu/examples/digits_test.npz")["images"][:3]
    sess = InferenceSession(DIGITS, device="cpu")
    if cpu_fused.fusing():
        assert any(s.fused is not None for s in sess._exe.steps)  # the fused path is under test
    q, _, steps = tracefile.node_outputs(sess, {"images": x})
    env = {**q, **{s.tensor: y for s, y in steps}}
    rerun = cpu_rerun(sess.graph, sess.report.traversal)
    for s, y in steps:
        np.testing.assert_array_equal(rerun(s, [env[i] for i in s.inputs]), y)
    # the other side: node 0's output altered, every later node run on the altered values;
    # compare's rerun then finds each later difference only propagated
    theirs = dict(q)
    for k, (s, y) in enumerate(steps):
        theirs[s.tensor] = rerun(s, [theirs[i] for i in s.inputs])
        if k == 0:
            theirs[s.tensor] = theirs[s.tensor].copy()
            theirs[s.tensor].flat[::7] ^= 1
    c = compare_steps([s for s, _ in steps], list(q), env, theirs, rerun=rerun)
    assert c.first_divergent.node == steps[0][0].node and c.first_divergent.cause == "rule"
    later = {n.cause for n in c.nodes[1:] if n.status == "differs"}
    assert later == {"propagated"}


@pytest.mark.parametrize("case,batch", [("rows_refactored", 1), ("moved_sequence", 3)])
def test_batch_view_tensors_compare_in_element_order(case, batch):
    """onnxruntime's tensor of a batch view is (N*R, *T) or has the batch off axis 0, where
    Synapse keeps (N, R, *T) or the batch first: compared element for element through the
    view the graph records, and said so; without that record, a different shape differs."""
    from synapse_gpu.compare_ort import _synapse_layout
    from synapse_gpu.onnx.batch_views import METADATA_KEY
    from synapse_gpu.onnx.importer import import_onnx
    from ort_helpers import rand_i8, rng_for
    from test_onnx_batch_views import CASES

    make, b = CASES[case]
    m, per = make(b, -128)
    x = {"x": rand_i8(rng_for(len(case)), (batch, *per))}
    g = import_onnx(m.SerializeToString())
    c = compare(InferenceSession(g, device="cpu"), x, "onnxruntime", onnx_model=m)
    views = [n for n in c.nodes if n.theirs_op and "batch view" in n.theirs_op]
    assert len(views) >= 2 and c.identical  # the rows/moved ops are bit-exact (QOperator)
    assert any("batch views" in n for n in c.notes) and "batch view" in c.table(all_nodes=True)
    del g.metadata[METADATA_KEY]
    bare = compare(InferenceSession(g, device="cpu"), x, "onnxruntime", onnx_model=m)
    assert {n.node for n in bare.nodes if n.status == "differs"} == {n.node for n in views}
    assert all(n.identical == 0.0 for n in bare.nodes if n.status == "differs")
    # a shape the recorded view does not fit is left as it is: it still differs
    assert _synapse_layout(np.zeros((10, 5), np.int8), ["rows", 3])[1] is None
