"""onnxruntime's documented usage patterns, run twice: with `import onnxruntime as rt` and
with `import synapse_gpu as rt`, nothing else changed.

The model is Quantize -> QLinearConv (int8 activations, per-channel int8 weights) ->
Dequantize, where onnxruntime's kernels are exact on every x86 machine (its uint8 paths
are not without VNNI), so the float outputs are compared bit for bit. Patterns: the
README's run, SessionOptions, providers (names, tuples, provider_options), the model as
path / Path / bytes / ModelProto, metadata and NodeArgs, OrtValues, IO binding with host
buffers. The `target` patterns run three times for Synapse: on the CPU provider, on the
CUDA provider on the emulated device (tests/emucuda), and (marked gpu) on a real GPU;
onnxruntime gets the same providers list and runs on its CPU provider. Then every
argument Synapse refuses, each with the library's own error naming it.
"""
import pathlib
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import synapse_gpu
from synapse_gpu.backends import cuda
from synapse_gpu.errors import DeviceError, InputError, OptionError, ProviderError, SynapseError
from synapse_gpu.modelfile import load_model

RUNTIMES = [onnxruntime, synapse_gpu]


def conv_model():
    rng = np.random.default_rng(16)
    w = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    inits = {"xs": np.float32(0.02), "xz": np.int8(-3), "ws": rng.uniform(0.002, 0.01, 4).astype(np.float32),
             "wz": np.zeros(4, np.int8), "ys": np.float32(0.05), "yz": np.int8(5), "w": w,
             "b": rng.integers(-2000, 2000, 4).astype(np.int32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                              ["yq"], pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, producer_name="migration-test", ir_version=10,
                             opset_imports=[helper.make_opsetid("", 21)])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = conv_model()
    path = tmp_path_factory.mktemp("m") / "conv.onnx"
    onnx.save(m, path)
    return m, str(path)


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(-2, 2, (n, 2, 6, 6)).astype(np.float32)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():  # "CUDA not available" on a machine without a GPU
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def both(pattern, *args):
    """The pattern's result with onnxruntime and with synapse_gpu as `rt`."""
    return [quiet(pattern, rt, *args) for rt in RUNTIMES]


GPU_LIST = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(params=["cpu", "emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def target(request):
    """(the providers list, the provider Synapse must pick)."""
    if request.param == "cpu":
        yield ["CPUExecutionProvider"], "CPUExecutionProvider"
    elif request.param == "emulated":
        standin = pytest.importorskip("emucuda.cupy_standin")
        with standin.installed():
            yield GPU_LIST, "CUDAExecutionProvider"
    else:
        ok, reason = cuda.is_available()
        if not ok:
            pytest.skip(f"no usable GPU: {reason}")
        yield GPU_LIST, "CUDAExecutionProvider"


def both_on(target, pattern, *args):
    """both(), with the target's providers; checks where Synapse ran, drops the providers."""
    providers, want = target
    (o, o_prov), (s, s_prov) = both(pattern, providers, *args)
    assert s_prov == [want] and o_prov[-1] == "CPUExecutionProvider"
    return o, s


# ------------------------------------------------------------------ documented patterns

def readme_pattern(rt, providers, path, x):
    rt.set_default_logger_severity(3)
    rt.set_seed(0)
    sess = rt.InferenceSession(path, providers=providers)
    input_name = sess.get_inputs()[0].name
    output_name = sess.get_outputs()[0].name
    outputs = sess.run([output_name], {input_name: x})
    return (outputs, sess.run(None, {input_name: x})), sess.get_providers()


def test_readme_pattern(model, target):
    x = images(5)
    (o_out, o_all), (s_out, s_all) = both_on(target, readme_pattern, model[1], x)
    assert type(s_out) is list and type(s_out[0]) is np.ndarray and s_out[0].dtype == np.float32
    np.testing.assert_array_equal(s_out[0], o_out[0])
    np.testing.assert_array_equal(s_all[0], o_all[0])
    assert np.unique(s_out[0]).size > 20  # a real output, not a constant


def test_cuda_first_falls_back_like_onnxruntime(model):
    x = images(2, seed=12)
    o, s = both(readme_pattern, GPU_LIST, model[1], x)
    gpu = synapse_gpu.get_device() == "GPU"
    assert s[1] == ["CUDAExecutionProvider" if gpu else "CPUExecutionProvider"]
    np.testing.assert_array_equal(s[0][0][0], o[0][0][0])


def session_options_pattern(rt, providers, path, x, level, threads):
    so = rt.SessionOptions()
    so.graph_optimization_level = level(rt)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = rt.InferenceSession(path, so, providers=providers)
    got = sess.get_session_options()
    fields = (int(got.graph_optimization_level), got.intra_op_num_threads,
              got.inter_op_num_threads, int(got.execution_mode), got.log_severity_level)
    return (sess.run(None, {"x": x})[0], fields), sess.get_providers()


@pytest.mark.parametrize("level, threads", [
    (lambda rt: rt.GraphOptimizationLevel.ORT_DISABLE_ALL, 1),
    (lambda rt: rt.GraphOptimizationLevel.ORT_ENABLE_BASIC, 2),
    (lambda rt: rt.GraphOptimizationLevel.ORT_ENABLE_ALL, 0)])
def test_session_options_pattern(model, target, level, threads):
    x = images(3, seed=1)
    (o_y, o_fields), (s_y, s_fields) = both_on(target, session_options_pattern, model[1], x, level,
                                               threads)
    np.testing.assert_array_equal(s_y, o_y)
    assert s_fields == o_fields


def provider_forms_pattern(rt, path, x):
    outs = []
    for kw in ({"providers": [("CPUExecutionProvider", {})]},
               {"providers": ["CPUExecutionProvider"], "provider_options": [{}]},
               {"providers": ["CPUExecutionProvider", "CPUExecutionProvider"]}):
        sess = rt.InferenceSession(path, **kw)
        outs.append((sess.get_providers(), sess.get_provider_options(), sess.run(None, {"x": x})[0]))
    return outs


def set_providers_pattern(rt, path, x):
    sess = rt.InferenceSession(path, providers=["CPUExecutionProvider"])
    sess.set_providers(["CPUExecutionProvider"], [{}])
    return sess.get_providers(), sess.run(None, {"x": x})[0]


def test_set_providers(model):
    x = images(2, seed=10)
    (o_prov, o_y), (s_prov, s_y) = both(set_providers_pattern, model[1], x)
    assert s_prov == o_prov
    np.testing.assert_array_equal(s_y, o_y)
    sess = synapse_gpu.InferenceSession(model[1], device="cpu")
    with pytest.raises(ProviderError, match="TensorrtExecutionProvider"):
        sess.set_providers(["TensorrtExecutionProvider"])
    assert sess.run(None, {"x": x})[0].shape == (2, 4, 6, 6)  # still usable


def test_provider_forms(model):
    x = images(2, seed=2)
    ort_runs, syn_runs = both(provider_forms_pattern, model[1], x)
    for (op, oo, oy), (sp, so, sy) in zip(ort_runs, syn_runs):
        assert sp == op == ["CPUExecutionProvider"]
        assert set(so) == set(oo) == {"CPUExecutionProvider"}
        np.testing.assert_array_equal(sy, oy)


def model_forms_pattern(rt, providers, m, path, x):
    forms = [path, pathlib.Path(path), m.SerializeToString()]
    if rt is synapse_gpu:
        forms.append(m)  # onnxruntime takes a path or bytes; Synapse also the ModelProto
    sessions = [rt.InferenceSession(f, providers=providers) for f in forms]
    return [s.run(None, {"x": x})[0] for s in sessions], sessions[-1].get_providers()


def test_model_forms(model, target):
    x = images(4, seed=3)
    ort_runs, syn_runs = both_on(target, model_forms_pattern, *model, x)
    assert len(syn_runs) == 4
    for y in syn_runs:
        np.testing.assert_array_equal(y, ort_runs[0])


def test_empty_output_names_and_other_file_names(model, tmp_path):
    m, path = model
    x = images(2, seed=11)
    o = quiet(onnxruntime.InferenceSession, path).run([], {"x": x})
    other = tmp_path / "model.bin"  # onnxruntime reads any file name
    other.write_bytes(m.SerializeToString())
    s = synapse_gpu.InferenceSession(other, device="cpu").run([], {"x": x})
    assert len(s) == len(o) == 1
    np.testing.assert_array_equal(s[0], o[0])
    with pytest.raises(SynapseError, match="cannot read model file"):
        synapse_gpu.InferenceSession(tmp_path / "missing.onnx", device="cpu")


def test_syn_bytes_and_optimized_model_filepath(model, tmp_path):
    m, path = model
    so = synapse_gpu.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "compiled.syn")  # Synapse's compiled form
    s1 = synapse_gpu.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    assert load_model(so.optimized_model_filepath).structure_json() == s1.graph.structure_json()
    s2 = synapse_gpu.InferenceSession((tmp_path / "compiled.syn").read_bytes(), device="cpu")
    renamed = tmp_path / "compiled.model"
    renamed.write_bytes((tmp_path / "compiled.syn").read_bytes())
    s3 = synapse_gpu.InferenceSession(renamed, device="cpu")
    x = images(2, seed=4)
    assert s1.run_full(None, {"x": x}).digest == s2.run_full(None, {"x": x}).digest == \
        s3.run_full(None, {"x": x}).digest


def describe_pattern(rt, providers, path):
    sess = rt.InferenceSession(path, providers=providers)
    meta = sess.get_modelmeta()
    args = [(a.name, a.shape, a.type) for a in sess.get_inputs() + sess.get_outputs()]
    fields = {k: type(getattr(meta, k)) for k in ("producer_name", "graph_name", "domain",
                                                  "description", "graph_description", "version",
                                                  "custom_metadata_map")}
    return (args, fields, meta.producer_name, meta.graph_name), sess.get_providers()


def test_describe(model, target):
    ort_d, syn_d = both_on(target, describe_pattern, model[1])
    assert syn_d == ort_d
    meta = synapse_gpu.InferenceSession(model[1], device="cpu").get_modelmeta()
    assert len(meta.custom_metadata_map["model_id"]) == 64


def ortvalue_pattern(rt, providers, path, x):
    sess = rt.InferenceSession(path, providers=providers)
    xv = rt.OrtValue.ortvalue_from_numpy(x)
    outs = sess.run_with_ort_values(["y"], {"x": xv})
    y = sess.run(None, {"x": xv})[0]
    return (xv.device_name(), xv.shape(), xv.data_type(), outs[0].numpy(), outs[0].data_type(),
            outs[0].shape(), y), sess.get_providers()


def test_ortvalues(model, target):
    x = images(3, seed=5)
    o, s = both_on(target, ortvalue_pattern, model[1], x)
    assert s[:3] == o[:3] and s[4:6] == o[4:6]
    np.testing.assert_array_equal(s[3], o[3])
    np.testing.assert_array_equal(s[6], o[6])


def iobinding_pattern(rt, providers, path, x):
    sess = rt.InferenceSession(path, providers=providers)
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y")
    sess.run_with_iobinding(binding)
    first = binding.copy_outputs_to_cpu()[0]
    # raw pointers (the PyTorch pattern: buffer_ptr=tensor.data_ptr()) and a preallocated output
    x2 = np.ascontiguousarray(x[::-1])
    y = np.full((len(x), 4, 6, 6), 7, np.float32)
    binding.bind_input("x", "cpu", 0, np.float32, list(x2.shape), x2.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
    binding.synchronize_inputs()
    sess.run_with_iobinding(binding)
    binding.synchronize_outputs()
    # OrtValues bound once, updated in place, run again
    xv = rt.OrtValue.ortvalue_from_numpy(x.copy())
    yv = rt.OrtValue.ortvalue_from_shape_and_type([len(x), 4, 6, 6], np.float32)
    binding.bind_ortvalue_input("x", xv)
    binding.bind_ortvalue_output("y", yv)
    sess.run_with_iobinding(binding)
    third = yv.numpy().copy()
    xv.update_inplace(x2)
    sess.run_with_iobinding(binding)
    return (first, y.copy(), third, yv.numpy().copy(), len(binding.get_outputs())), \
        sess.get_providers()


def test_iobinding_host_buffers(model, target):
    x = images(3, seed=6)
    o, s = both_on(target, iobinding_pattern, model[1], x)
    for a, b in zip(s[:4], o[:4]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s[1], s[0][::-1])
    assert s[4] == o[4] == 1


def test_iobinding_int8_output_and_errors(model):
    sess = synapse_gpu.InferenceSession(model[1], device="cpu")
    x = images(2, seed=7)
    b = sess.io_binding()
    b.bind_cpu_input("x", x)
    with pytest.raises(InputError, match="bind at least one output"):
        sess.run_with_iobinding(b)
    b.bind_output("y", element_type=np.int8)
    sess.run_with_iobinding(b)
    (q,) = b.copy_outputs_to_cpu()
    np.testing.assert_array_equal(q, sess.run(None, {"x": x}, output_type="int8")[0])
    with pytest.raises(DeviceError, match="'cuda'.*CPU"):
        b.bind_output("y", "cuda")
    with pytest.raises(SynapseError, match="element_type"):
        b.bind_output("y", element_type=np.int32)
    other = synapse_gpu.InferenceSession(model[1], device="cpu")
    with pytest.raises(InputError, match="session that created it"):
        other.run_with_iobinding(b)


# ------------------------------------------------------------------ containers

class ArrayLike:
    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


class DLPackOnly:
    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_containers_give_the_same_digest(model):
    sess = synapse_gpu.InferenceSession(model[1], device="cpu")
    x = images(3, seed=8)
    want = sess.run_full(None, {"x": x}).digest
    feeds = [ArrayLike(x), DLPackOnly(x), synapse_gpu.OrtValue.ortvalue_from_numpy(x), x.tolist()]
    for f in feeds:
        assert sess.run_full(None, {"x": f}).digest == want, type(f).__name__
    x[0, 0, 0, 0] += 1  # the digest does see the values
    assert sess.run_full(None, {"x": DLPackOnly(x)}).digest != want


def test_torch_cpu_tensor(model):
    torch = pytest.importorskip("torch")
    sess = synapse_gpu.InferenceSession(model[1], device="cpu")
    x = images(2, seed=9)
    assert sess.run_full(None, {"x": torch.from_numpy(x)}).digest == \
        sess.run_full(None, {"x": x}).digest


class FakeGpuArray:
    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA


def test_module_functions():
    synapse_gpu.preload_dlls()
    with pytest.raises(OptionError, match="set_default_logger_severity"):
        synapse_gpu.set_default_logger_severity(7)


def test_ortvalue_devices(model):
    v = synapse_gpu.OrtValue.ortvalue_from_numpy(images(1), "cpu", 0, vendor_id=-1)
    assert v.device_name() == "cpu" and v.is_tensor() and v.has_value()
    with pytest.raises(DeviceError, match="vendor_id"):
        synapse_gpu.OrtValue.ortvalue_from_numpy(images(1), "cuda", 0, vendor_id=0x1002)
    with pytest.raises(DeviceError, match="device_type='dml'"):
        synapse_gpu.OrtValue.ortvalue_from_shape_and_type([1], np.float32, "dml")
    with pytest.raises(DeviceError, match="memory_info"):
        synapse_gpu.OrtValue.ortvalue_from_shape_and_type([1], np.float32, memory_info=object())


def test_gpu_array_on_a_cpu_session_is_refused(model):
    sess = synapse_gpu.InferenceSession(model[1], device="cpu")
    with pytest.raises(InputError, match="GPU memory.*CPU"):
        sess.run(None, {"x": FakeGpuArray()})
    with pytest.raises(DeviceError, match="CUDA"):
        sess.run(None, {"x": images(1)}, device_outputs=True)


class UnreadableDLPack:
    def __dlpack__(self, **kw):
        raise BufferError("read-only export refused")

    def __dlpack_device__(self):
        return (1, 0)


def test_unreadable_dlpack_is_an_input_error(model):
    sess = synapse_gpu.InferenceSession(model[1], device="cpu")
    with pytest.raises(InputError, match="'x'.*DLPack.*read-only"):
        sess.run(None, {"x": UnreadableDLPack()})


# ------------------------------------------------------------------ what Synapse refuses

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}, ProviderError,
     r"'TensorrtExecutionProvider' is not offered.*CUDAExecutionProvider.*CPUExecutionProvider"),
    ({"providers": ["DmlExecutionProvider"]}, ProviderError, "DmlExecutionProvider"),
    ({"providers": "CPUExecutionProvider"}, ProviderError, "give a list"),
    ({"providers": [("CPUExecutionProvider",)]}, ProviderError, "name or a"),
    ({"providers": ["CPUExecutionProvider"], "provider_options": [{}, {}]}, ProviderError,
     "provider_options"),
    ({"provider_options": [{}]}, ProviderError, "without providers"),
    ({"providers": [("CUDAExecutionProvider", {"gpu_mem_limit": 1 << 30})]}, ProviderError,
     "gpu_mem_limit"),
    ({"providers": [("CUDAExecutionProvider", {"device_idx": 0})]}, ProviderError,
     r"device_idx: unknown.*device_id"),
    ({"providers": ["CPUExecutionProvider"], "device": "cpu"}, ProviderError, "one of them"),
    ({"bogus_argument": 1}, OptionError, "bogus_argument"),
    ({"read_config_from_model": 1}, OptionError, "read_config_from_model"),
    ({"sess_options": "cpu"}, OptionError, "device='cpu'"),
    ({"sess_options": 3}, OptionError, "not a SessionOptions"),
])
def test_refused_arguments(model, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        quiet(synapse_gpu.InferenceSession, model[1], **kwargs)


def test_refused_session_options(model):
    for field, value, match in [("enable_profiling", True, "enable_profiling"),
                                ("optimized_model_filepath", "opt.onnx", "optimized_model_filepath")]:
        so = synapse_gpu.SessionOptions()
        setattr(so, field, value)
        with pytest.raises(OptionError, match=match):
            synapse_gpu.InferenceSession(model[1], so)
    so = synapse_gpu.SessionOptions()
    for method in ("register_custom_ops_library", "add_free_dimension_override_by_name",
                   "add_initializer"):
        with pytest.raises(OptionError, match=method):
            getattr(so, method)("a", "b")


def test_onnxruntime_options_objects_are_read(model):
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 3
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = synapse_gpu.InferenceSession(model[1], so, providers=["CPUExecutionProvider"])
    got = sess.get_session_options()
    assert (got.intra_op_num_threads, int(got.graph_optimization_level)) == (3, 0)
    so.enable_profiling = True
    with pytest.raises(OptionError, match="enable_profiling"):
        synapse_gpu.InferenceSession(model[1], so)
    ro = onnxruntime.RunOptions()
    x = images(1)
    sess.run(None, {"x": x}, ro)
    ro.terminate = True
    with pytest.raises(OptionError, match="terminate"):
        sess.run(None, {"x": x}, ro)


def test_cpu_fallback_and_disable_fallback(model):
    if "CUDAExecutionProvider" in synapse_gpu.get_available_providers():
        pytest.skip("a GPU is usable here: no fallback to observe")
    with pytest.warns(RuntimeWarning) as caught:
        sess = synapse_gpu.InferenceSession(model[1], providers=["CUDAExecutionProvider"])
    said = " | ".join(str(w.message) for w in caught)
    assert "CUDAExecutionProvider is not usable" in said and "running on the CPU" in said
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert synapse_gpu.get_device() == "CPU"
    so = synapse_gpu.SessionOptions()
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    with pytest.raises(DeviceError, match="disable_cpu_ep_fallback"):
        quiet(synapse_gpu.InferenceSession, model[1], so, providers=["CUDAExecutionProvider"])


def test_run_errors_are_synapse_errors(model):
    sess = synapse_gpu.InferenceSession(model[1], device="cpu")
    ro = synapse_gpu.RunOptions()
    ro.terminate = True
    with pytest.raises(OptionError, match="terminate"):
        sess.run(None, {"x": images(1)}, ro)
    with pytest.raises(OptionError, match="run_options"):
        sess.run(None, {"x": images(1)}, {"terminate": False})
    with pytest.raises(InputError, match="unknown outputs"):
        sess.run(["z"], {"x": images(1)})
    with pytest.raises(InputError, match="not a path"):
        synapse_gpu.InferenceSession(12345)
