"""Malformed and hostile ONNX files fail fast with the library's errors.

Each case must raise a SynapseError subclass (never a bare protobuf, numpy or
KeyError), and a file that declares huge tensors must be refused before anything
of the declared size is allocated (checked with tracemalloc, which sees numpy's
allocations).
"""
import time
import tracemalloc

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu.errors import (DtypeError, ModelFormatError, OnnxImportError, SynapseError,
                                UnsupportedOpError)
from synapse_gpu.onnx.importer import import_onnx

I8 = TensorProto.INT8


def t(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def qconv_model(**over):
    """x (int8) -> QLinearConv -> DequantizeLinear -> y; `over` replaces initializers."""
    inits = {"xs": np.float32(0.02), "xz": np.int8(3), "w": np.ones((4, 2, 3, 3), np.int8),
             "ws": np.full(4, 0.01, np.float32), "wz": np.zeros(4, np.int8),
             "ys": np.float32(0.1), "yz": np.int8(-5), "b": np.arange(4, dtype=np.int32)}
    inits.update(over)
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                              ["q"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["q", "ys", "yz"], ["y"], name="dq")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", I8, ["N", 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [t(k, v) for k, v in inits.items() if v is not None])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_the_valid_base_model_imports():
    g = import_onnx(qconv_model())
    assert [n.op for n in g.nodes] == ["conv2d"] and g.inputs[0].shape == (-1, 2, 8, 8)


def test_truncated_protobuf_at_every_cut():
    data = qconv_model().SerializeToString()
    for cut in sorted({1, 2, 5, 17, len(data) // 3, len(data) // 2, len(data) - 7, len(data) - 1}
                      | set(range(0, len(data), max(1, len(data) // 40)))):
        with pytest.raises(SynapseError):
            import_onnx(data[:cut])


def test_garbage_bytes_and_empty_file(tmp_path):
    with pytest.raises(ModelFormatError):
        import_onnx(np.random.default_rng(0).integers(0, 256, 4096).astype(np.uint8).tobytes())
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFormatError):
        import_onnx(tmp_path / "empty.onnx")
    with pytest.raises(ModelFormatError, match="cannot read"):
        import_onnx(tmp_path / "missing.onnx")


def test_missing_initializer_is_named():
    with pytest.raises(ModelFormatError, match="'w'.*missing initializer"):
        import_onnx(qconv_model(w=None))


def test_cycle():
    m = qconv_model()
    m.graph.node[0].input[0] = "y"  # conv reads the dq output that reads the conv output
    m.graph.input.pop()
    with pytest.raises(ModelFormatError, match="cycle"):
        import_onnx(m)


def test_duplicate_output_name():
    m = qconv_model()
    m.graph.node.append(helper.make_node("Identity", ["x"], ["q"], name="dup"))
    with pytest.raises(ModelFormatError, match="'q' is produced twice"):
        import_onnx(m)
    m = qconv_model()
    m.graph.node[1].output[0] = "x"  # a node output named like a graph input
    with pytest.raises(ModelFormatError, match="produced twice"):
        import_onnx(m)


def _refused_cheaply(model, exc, match):
    """Raises `exc` within a second and without allocating more than 16 MiB."""
    data = model.SerializeToString()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(exc, match=match):
            import_onnx(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0 and peak < 16 << 20, peak


def test_billion_sized_initializer_is_refused_before_allocation():
    m = qconv_model()
    w = m.graph.initializer[2]
    del w.dims[:]
    w.dims.extend([100_000, 100_000, 100_000, 3])  # 3e15 int8 in a few bytes
    _refused_cheaply(m, ModelFormatError, "exceeds the import limit")


def test_initializer_whose_data_does_not_match_its_dims():
    m = qconv_model()
    m.graph.initializer[2].dims[0] = 400  # raw_data holds 4 filters, dims claim 400
    with pytest.raises(ModelFormatError, match="truncated or corrupted"):
        import_onnx(m)
    m = qconv_model()
    m.graph.initializer[2].dims[0] = -4
    with pytest.raises(ModelFormatError, match="invalid dims"):
        import_onnx(m)


def test_billion_sized_input_is_refused():
    m = qconv_model()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 1_000_000_000, 1_000_000_000
    _refused_cheaply(m, ModelFormatError, "input 'x'.*exceeds the limit")
    dims[2].dim_value = 1 << 40
    _refused_cheaply(m, ModelFormatError, "input 'x'.*exceeds the limit")


def test_constant_nodes_and_folded_shapes_are_size_checked():
    big = TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000],
                      raw_data=b"\0" * 4)
    m = qconv_model()
    m.graph.node.insert(0, helper.make_node("Constant", [], ["c"], name="const", value=big))
    _refused_cheaply(m, ModelFormatError, "exceeds the import limit")
    m = qconv_model()  # ConstantOfShape of a billion-element shape, folded at import
    m.graph.initializer.append(t("shape", np.array([1 << 20, 1 << 20], np.int64)))
    m.graph.node.insert(0, helper.make_node("ConstantOfShape", ["shape"], ["c"], name="cos"))
    m.graph.node.append(helper.make_node("Identity", ["c"], ["c2"]))
    _refused_cheaply(m, ModelFormatError, "'cos'.*exceeds the limit")


def test_pad_to_a_huge_output_is_refused():
    m = qconv_model()
    m.graph.initializer.append(t("pads", np.array([0, 0, 0, 0, 0, 0, 1 << 20, 1 << 20], np.int64)))
    m.graph.node.insert(1, helper.make_node("Pad", ["q", "pads"], ["qp"], name="pad"))
    m.graph.node[2].input[0] = "qp"
    _refused_cheaply(m, ModelFormatError, "'pad'.*exceeds the limit")


@pytest.mark.parametrize("over,match", [
    (dict(w=np.ones((4, 2, 3, 3), np.float32)), "weight has dtype float32"),
    (dict(xz=np.int16(3)), "zero point has dtype int16"),
    (dict(wz=np.zeros(4, np.int32)), "zero point has dtype int32"),
    (dict(b=np.zeros(4, np.float32)), "bias has dtype float32"),
    (dict(xs=np.int32(1)), "scale has dtype int32"),
    (dict(w=np.ones((4, 2, 3, 3), np.uint8)), "weight is uint8 but its zero point is INT8"),
])
def test_wrong_dtypes(over, match):
    with pytest.raises(DtypeError, match=match):
        import_onnx(qconv_model(**over))


@pytest.mark.parametrize("value", [0.0, -0.5, np.inf, np.nan])
def test_bad_scales(value):
    with pytest.raises(ModelFormatError, match="'conv'.*positive and finite"):
        import_onnx(qconv_model(ys=np.float32(value)))


def test_wrong_per_channel_length():
    with pytest.raises(ModelFormatError, match="3 entries for 4 output channels"):
        import_onnx(qconv_model(ws=np.full(3, 0.01, np.float32), wz=np.zeros(3, np.int8)))


def test_external_data_is_not_followed():
    m = qconv_model()
    w = m.graph.initializer[2]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="/etc/passwd")
    with pytest.raises(OnnxImportError, match="external data"):
        import_onnx(m)


def test_unknown_domain_and_op():
    m = qconv_model()
    m.graph.node[1].domain = "evil.domain"
    with pytest.raises(UnsupportedOpError, match="'dq'.*domain 'evil.domain'"):
        import_onnx(m)
    m = qconv_model()
    m.graph.node.append(helper.make_node("Einsum", ["q"], ["z"], name="ein", equation="i->i"))
    with pytest.raises(UnsupportedOpError, match="'ein' \\(op Einsum\\).*hint"):
        import_onnx(m)


def test_graph_without_nodes_or_default_opset():
    m = qconv_model()
    del m.graph.node[:]
    with pytest.raises(ModelFormatError, match="no nodes"):
        import_onnx(m)
    m = qconv_model()
    del m.opset_import[:]
    with pytest.raises(ModelFormatError, match="opset"):
        import_onnx(m)


def test_gather_out_of_range_in_a_folded_shape():
    m = qconv_model()
    m.graph.node.extend([
        helper.make_node("Shape", ["q"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "idx"], ["g"], name="gather"),
        helper.make_node("Identity", ["g"], ["g2"])])
    m.graph.initializer.append(t("idx", np.array([7], np.int64)))
    with pytest.raises(ModelFormatError, match="'gather'.*out of range"):
        import_onnx(m)


def test_wrong_argument_type():
    with pytest.raises(TypeError):
        import_onnx(12345)
