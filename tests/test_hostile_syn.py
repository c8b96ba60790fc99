"""Hostile .syn files (issue 15): every reproduction is refused with the library's own
error, before anything of a hostile size is allocated; nothing reaches a backend that
the reference and the backends would not agree on.

Files are written like an attacker would: valid safetensors, canonical metadata and a
correct model id over arbitrary content (tests/fuzz/mutate_syn.py:write).
"""
import copy
import json
import struct
import tracemalloc

import numpy as np
import pytest

from synapse_gpu import build
from synapse_gpu.errors import (ChecksumError, CostLimitError, DtypeError, ModelFormatError,
                                ResourceLimitError, ShapeError, SynapseError, UnsupportedOpError)
from synapse_gpu.graph import GraphBuilder
from synapse_gpu.modelfile import load_model, save_model
from synapse_gpu.session import InferenceSession
from synapse_gpu.validate import Limits, validate
from tests.fuzz.check import run_graph
from tests.fuzz.mutate_syn import write


def base_graph(channels=2):
    """x (-1, 1, 8, 8) -> conv2d (3x3, 2 channels) -> requantize (the last node) -> y."""
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.add_input("x", (-1, 1, 8, 8), 0.02, 0)
    h = build.conv(b, x, rng.integers(-127, 128, (channels, 1, 3, 3)).astype(np.int8), 0.01, None,
                   y_scale=0.05, y_zero_point=0, pads=[1, 1, 1, 1], name="conv")
    h = build.requantize(b, h, y_scale=0.01, y_zero_point=5, name="last")
    b.add_output(h, "y")
    return b.build()


def hostile(tmp_path, edit, graph=None):
    """Write base_graph() (or `graph`) with `edit(structure, buffers)` applied; return the path."""
    g = graph or base_graph()
    d = copy.deepcopy(g.structure_json())
    bufs = {k: np.array(v) for k, v in g.buffers.items()}
    edit(d, bufs)
    p = tmp_path / "m.syn"
    p.write_bytes(write(d, bufs))
    return p


def node(d, name):
    return next(n for n in d["nodes"] if n["name"] == name)


def test_the_base_file_loads_and_the_backend_agrees_with_the_reference(tmp_path):
    p = hostile(tmp_path, lambda d, b: None)
    assert run_graph(load_model(p), 0) == "accepted"


def set_attr(name, key, value):
    def edit(d, b):
        node(d, name)["attrs"][key] = value
    return edit


@pytest.mark.parametrize("edit, exc, match", [
    # int8 wrap: logits 145, 147 came out as -111, -109
    (lambda d, b: node(d, "last")["attrs"].update(qmax=1000, y_zero_point=120), ModelFormatError,
     r"'last'.*attr qmax 1000 is outside \[-128, 127\]"),
    (set_attr("last", "y_zero_point", 1000), ModelFormatError, r"attr y_zero_point 1000 is outside"),
    # the CPU backend returned the zero point, the reference saturated values
    (set_attr("last", "shift", -2 ** 63), ModelFormatError, r"attr shift -9223372036854775808 is outside \[-104, 172\]"),
    (set_attr("last", "multiplier", 1 << 24), ModelFormatError, r"attr multiplier 16777216 is outside \[0, 16777215\]"),
    (set_attr("last", "multiplier", -3), ModelFormatError, r"attr multiplier -3 is outside"),
    (lambda d, b: node(d, "last")["attrs"].update(qmin=100, qmax=50), ModelFormatError,
     r"clamp qmin 100 > qmax 50"),  # gave qmax everywhere
    # reached the backends before: PreparedConv.__init__() got an unexpected keyword 'bogus'
    (set_attr("conv", "bogus", 1), UnsupportedOpError, r"unknown attrs \['bogus'\]"),
    (set_attr("conv", "strides", [1, "x"]), ModelFormatError, r"attr strides entry 1 must be an integer, got 'x'"),
    (set_attr("conv", "y_zero_point", [1, 2]), ModelFormatError, r"attr y_zero_point must be an integer, got \[1, 2\]"),
    (set_attr("conv", "x_zero_point", 2 ** 63), ModelFormatError, r"attr x_zero_point 9223372036854775808 is outside"),
    (set_attr("conv", "group", True), ModelFormatError, r"attr group must be an integer, got True"),
    (set_attr("conv", "strides", [0, 1]), ModelFormatError, r"attr strides entry 0 0 is outside \[1, 65536\]"),
    (set_attr("conv", "pads", "same_upper"), ModelFormatError, r"attr pads must be a list"),
    (set_attr("conv", "dilations", []), ShapeError, r"do not fit together"),
])
def test_attribute_reproductions_are_refused(tmp_path, edit, exc, match):
    with pytest.raises(exc, match=match):
        InferenceSession(hostile(tmp_path, edit), device="cpu")


def test_param_values_outside_the_rule_are_refused(tmp_path):
    def shift(d, b):
        b[node(d, "conv")["params"]["shift"]][0] = 500
    with pytest.raises(ModelFormatError, match=r"param shift has values in \[.*500\], outside \[-104, 172\]"):
        InferenceSession(hostile(tmp_path, shift), device="cpu")

    def wzp(d, b):
        b[node(d, "conv")["params"]["w_zero_point"]][1] = 300
    with pytest.raises(ModelFormatError, match="param w_zero_point"):
        InferenceSession(hostile(tmp_path, wzp), device="cpu")

    def dtype(d, b):
        k = node(d, "conv")["params"]["bias"]
        b[k] = b[k].astype(np.int64)
    with pytest.raises(DtypeError, match="param bias has dtype int64"):
        InferenceSession(hostile(tmp_path, dtype), device="cpu")


def test_wrong_declared_output_shape_is_refused(tmp_path):
    """get_outputs used to report the declared, wrong shape."""
    def edit(d, b):
        d["outputs"][0]["shape"] = [-1, 3, 8, 8]
    with pytest.raises(ShapeError, match=r"'y': declared shape \[-1, 3, 8, 8\] but the ops give \[-1, 2, 8, 8\]"):
        InferenceSession(hostile(tmp_path, edit), device="cpu")


@pytest.mark.parametrize("edit, match", [
    (lambda d, b: d.update(quant=None), "malformed"),
    (lambda d, b: d["quant"]["y"].__setitem__(1, 300), r"zero point 300 must be an integer in \[-128, 127\]"),
    (lambda d, b: d["inputs"][0].update(scale=0.0), "scale 0.0 must be a finite float32 > 0"),
    (lambda d, b: d["inputs"][0].update(scale=1e39), "cannot be stored canonically|finite"),
    (lambda d, b: d["inputs"][0].update(shape=[-1, 1, 0, 8]), "positive dims"),
    (lambda d, b: d["inputs"][0].update(shape=[-1] + [1] * 40), "1 to 8 integers"),
    (lambda d, b: d["inputs"].append(dict(d["inputs"][0])), "duplicate input names"),
    (lambda d, b: d.update(outputs=[]), "no outputs"),
    (lambda d, b: node(d, "conv").update(inputs=[["x"]]), "lists of tensor names"),
    (lambda d, b: node(d, "conv").update(op=["conv2d"]), "must be strings"),
    (lambda d, b: d["outputs"][0].update(zero_point=6), "differ from the graph's quantization"),
])
def test_structure_reproductions_are_refused(tmp_path, edit, match):
    with pytest.raises(ModelFormatError, match=match):
        InferenceSession(hostile(tmp_path, edit), device="cpu")


def _rewrite_metadata(path, fn):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    fn(header)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + n:])


def test_non_finite_number_in_the_metadata_is_a_model_format_error(tmp_path):
    """A non-finite scale in the header raised ValueError."""
    p = hostile(tmp_path, lambda d, b: None)
    _rewrite_metadata(p, lambda h: h["__metadata__"].update(
        synapse=h["__metadata__"]["synapse"].replace('"scale":0.019999999552965164', '"scale":Infinity', 1)))
    assert b"Infinity" in p.read_bytes()
    with pytest.raises(ModelFormatError, match="non-finite number Infinity"):
        load_model(p)


def test_foreign_safetensors_dtype_is_refused_before_any_array(tmp_path):
    """A safetensors dtype F8_E4M3 raised AttributeError (numpy has no float8)."""
    p = hostile(tmp_path, lambda d, b: None)
    _rewrite_metadata(p, lambda h: next(v for k, v in h.items() if k != "__metadata__"
                                        and v["dtype"] == "I8").update(dtype="F8_E4M3"))
    with pytest.raises(ModelFormatError, match="dtype F8_E4M3; expected I8, I32 or I64"):
        load_model(p)


def test_deeply_nested_and_huge_json_values(tmp_path):
    nested = 1
    for _ in range(50):
        nested = [nested]
    for edit in (set_attr("conv", "fn", nested),
                 set_attr("conv", "group", 10 ** 30)):
        with pytest.raises(SynapseError):
            InferenceSession(hostile(tmp_path, edit), device="cpu")
    p = hostile(tmp_path, lambda d, b: None)
    _rewrite_metadata(p, lambda h: h["__metadata__"].update(
        synapse=h["__metadata__"]["synapse"].replace('"metadata":{}', '"metadata":' + "[" * 100000
                                                     + "]" * 100000, 1)))
    with pytest.raises(ModelFormatError):
        load_model(p)


def test_huge_pads_are_refused_before_allocation(tmp_path):
    """A conv with pads [1, 1000000, 1, 1] grew the process by 2.3 GB."""
    def edit(d, b):
        node(d, "conv")["attrs"]["pads"] = [1, 1000000, 1, 1]
        d["outputs"][0]["shape"] = [-1, 16, 8, 1000007]  # consistent, as an attacker writes it
    p = hostile(tmp_path, edit, base_graph(channels=16))
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match=r"bytes of activations per sample .* > limit"):
            InferenceSession(p, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_resource_limits_are_configurable():
    g = base_graph()
    rep = validate(g)
    assert rep.activation_bytes == 64 + 128 + 128 and rep.work > 0  # input slot + two tensors
    with pytest.raises(ResourceLimitError, match="> limit 100"):
        validate(g, limits=Limits(activation_bytes=100))
    with pytest.raises(CostLimitError, match=f"model cost {rep.work} per sample > max_cost 10"):
        InferenceSession(g, device="cpu", max_cost=10)
    assert InferenceSession(g, device="cpu", max_activation_bytes=rep.activation_bytes).report.work == rep.work
    assert validate(g, limits=Limits(None, None)).work == rep.work  # report only


def test_every_byte_flip_of_a_saved_file_is_a_library_error(tmp_path):
    p = tmp_path / "ok.syn"
    save_model(base_graph(), p)
    data = p.read_bytes()
    for i in range(0, len(data), max(1, len(data) // 97)):
        b = bytearray(data)
        b[i] ^= 0x5A
        p.write_bytes(bytes(b))
        try:
            load_model(p)
        except (ModelFormatError, ChecksumError):
            pass
