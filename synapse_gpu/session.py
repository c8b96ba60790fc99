"""InferenceSession: the public API, modelled on onnxruntime's.

    import synapse_gpu as sg
    sess = sg.InferenceSession("model.syn" | "model.onnx", device="auto")  # or providers=[...]
    probs, = sess.run(None, {"input": x_float32})          # float32, dequantized
    q, = sess.run(None, {"input": x_int8}, output_type="int8")
    sess.last_result.digest                                  # sha256 of model+inputs+outputs

Inputs: float32 (quantized at the boundary with the input's scale and zero point,
one IEEE float32 division and round-half-even per element) or int8 (taken as the
quantized values). NaN raises InputError: a NaN cast to an integer differs
between CPU and GPU, so it has no deterministic meaning. +-inf saturate to the
int8 range like any out-of-range value.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import __version__, backends
from .arrays import (OrtValue, as_input, dequantize_any, dequantize_table, quantize_any,
                     to_host)
from .cost import model_cost
from .digest import RunDigest, tensor_digest
from .errors import (DeviceError, DtypeError, InputError, ModelFormatError, ResourceLimitError,
                     ShapeError)
from .graph import Graph
from .iobinding import IOBinding
from .modelfile import load_model, model_id, save_model
from .options import (CUDA_GRAPHS_KEY, CUDA_VARIANT_KEY, FALLBACK_KEY, check_run_options,
                      check_session_kwargs, session_options)
from .providers import CPU, CUDA, resolve as resolve_providers
from .reference.embedding import out_of_range, pack_ids
from .validate import DEFAULT_LIMITS, Limits, validate

_FLOATS = frozenset(map(np.dtype, (np.float16, np.float32, np.float64)))
_INT8 = np.dtype(np.int8)
# Working memory one backend call may use: a larger batch runs in chunks (batch invariance:
# the same bits). The CPU path's numpy temporaries peak near 114 bytes per element of a
# node's tensor (avg_pool, concat: int64 copies and window sums; measured with tracemalloc).
RUN_BYTES = 1 << 30
CPU_BYTES_PER_ELEMENT = 128


def _concat(parts):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import cupy  # device outputs of a chunked CUDA run

    return cupy.concatenate(parts)


@dataclass(frozen=True)
class NodeArg:
    """A graph input or output as onnxruntime describes it: "N" marks the batch axis."""

    name: str
    shape: list
    type: str


@dataclass(frozen=True)
class ModelMetadata:
    """onnxruntime's ModelMetadata fields; custom_metadata_map holds the graph's metadata
    and the model id."""

    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict


def model_metadata(graph, mid):
    m = graph.metadata
    return ModelMetadata(m.get("onnx_producer", "synapse_gpu"), m.get("name", ""), "", "", "", 0,
                         dict(m, model_id=mid))


@dataclass(frozen=True)
class TraceEntry:
    index: int
    node: str
    op: str
    tensor: str
    shape: tuple
    digest: str


@dataclass
class RunResult:
    outputs: list  # in the order asked for, float32 or int8
    int8_inputs: dict  # name -> int8 array as fed to the graph (after the boundary quantize)
    int8_outputs: dict  # name -> int8 array, every graph output
    digest: str
    trace: list | None  # TraceEntry per node in execution order, when asked for
    cost: int | None = None  # deterministic cost of this run: batch x cost per sample (cost.py)


def _cache_dir():
    return os.environ.get("SYNAPSE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "synapse_gpu")


def _importer_fingerprint():
    """sha256 of the code that turns ONNX into a graph: a changed importer never serves
    a stale cached import, even within one release."""
    from . import build, onnx as onnx_pkg, reference

    h = hashlib.sha256(f"synapse-gpu {__version__}".encode())
    for d in (os.path.dirname(onnx_pkg.__file__), os.path.dirname(reference.__file__)):
        for f in sorted(os.listdir(d)):
            if f.endswith(".py"):
                with open(os.path.join(d, f), "rb") as fh:
                    h.update(f.encode() + fh.read())
    with open(build.__file__, "rb") as fh:
        h.update(fh.read())
    return h.hexdigest()


def load_any(model, verbose=False):
    """A Graph from a Graph, a .syn or ONNX file's path (str or os.PathLike; told apart by
    content when the name does not end in .syn), the bytes of either file, or an
    onnx.ModelProto; ONNX is imported and cached by content hash."""
    if isinstance(model, Graph):
        return model
    if hasattr(model, "SerializeToString"):  # onnx.ModelProto, as onnxruntime accepts it
        model = model.SerializeToString()
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, path = bytes(model), "<model bytes>"
        if _is_safetensors(data):
            return _load_syn_bytes(data)
    else:
        try:
            path = os.fspath(model)
        except TypeError:
            raise InputError(f"model: {type(model).__name__} is not a path, bytes, onnx.ModelProto "
                             "or Graph") from None
        if path.lower().endswith(".syn"):
            return load_model(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelFormatError(f"cannot read model file {path}: {e.strerror}") from None
        if _is_safetensors(data):  # a .syn file by another name; anything else is ONNX
            return load_model(path)
    from .onnx.importer import import_onnx

    key = hashlib.sha256(data + _importer_fingerprint().encode()).hexdigest()
    cached = os.path.join(_cache_dir(), key + ".syn")
    if os.path.exists(cached):
        try:
            return load_model(cached)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
    graph = import_onnx(data)
    try:
        os.makedirs(_cache_dir(), exist_ok=True)
        save_model(graph, cached)
    except OSError:
        pass  # the cache is an optimisation only
    if verbose:
        print(f"synapse: imported {path} (cached as {cached})")
    return graph


def _is_safetensors(data):
    """A .syn file: 8-byte little-endian header length, then that many bytes of JSON. ONNX
    bytes (a protobuf) would need a '{' at offset 8 and a length prefix within the data."""
    n = int.from_bytes(data[:8], "little")
    return len(data) > 8 and data[8:9] == b"{" and 8 + n <= len(data)


def _load_syn_bytes(data):
    with tempfile.TemporaryDirectory() as d:  # load_model's checks read a file
        p = os.path.join(d, "model.syn")
        with open(p, "wb") as f:
            f.write(data)
        return load_model(p)


def _token_vocab(graph):
    """Token input -> the rows of the smallest embedding table that reads it."""
    vocab = {}
    for n in graph.nodes:
        if n.op == "embedding":
            rows = graph.param(n, "table").shape[0]
            vocab[n.inputs[0]] = min(rows, vocab.get(n.inputs[0], rows))
    return vocab


def _token_feed(a, t, vocab):
    """int token ids (N, S...) -> their packed int8 bytes, every id checked against vocab."""
    if a.dtype.kind not in "iu":
        raise DtypeError(f"input {t.name!r} has dtype {a.dtype}; expected integer token ids (int64)")
    bad = out_of_range(a, vocab)
    if bad is not None:
        raise InputError(f"input {t.name!r}: token id {bad[1]} at index {list(bad[0])} is outside "
                         f"the vocabulary [0, {vocab})")
    return pack_ids(a)


def _dims(shape):
    return ["N" if i == 0 and d == -1 else d for i, d in enumerate(shape)]


class InferenceSession:
    """Load, prove and prepare a model once; run it many times.

    onnxruntime's arguments (path_or_bytes, sess_options, providers, provider_options,
    **kwargs) as docs/from_onnxruntime.md maps them; or, instead of providers,
    device: "auto" (CUDA when CuPy and a GPU answer, else the CPU with a one-line
    notice), "cpu" or "cuda" (DeviceError if unusable). strict: enforce the
    Synapse limits (docs/SPEC.md); the int32 overflow proof is always enforced.
    max_cost, max_activation_bytes: the static resource bounds per sample (validate.Limits:
    the deterministic cost of cost.py, the planned activation bytes); a model over one
    is refused (CostLimitError / ResourceLimitError) before any backend is prepared.
    None keeps the default limit.
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, *,
                 device=None, strict=True, verbose=False, max_cost=None,
                 max_activation_bytes=None, **kwargs):
        # onnxruntime's arguments first (providers.py, options.py): refused ones raise
        # OptionError before any work.
        check_session_kwargs(kwargs)
        self._sess_options = session_options(sess_options)
        verbose = verbose or self._sess_options.log_severity_level == 0  # ORT's VERBOSE
        device, device_id, self._provider = resolve_providers(
            device, providers, provider_options, self._no_cpu_fallback())
        self.graph = load_any(path_or_bytes, verbose)
        self.model_id = model_id(self.graph)
        limits = Limits(DEFAULT_LIMITS.activation_bytes if max_activation_bytes is None
                        else max_activation_bytes, DEFAULT_LIMITS.work if max_cost is None else max_cost)
        self.report = validate(self.graph, strict=strict, limits=limits)
        self.cost = model_cost(self.graph, self.report.traversal.shapes, self.report.traversal.order)
        self.verbose = verbose
        self._prepare(device, device_id)
        if self._sess_options.optimized_model_filepath:  # options.py allows .syn only
            save_model(self.graph, self._sess_options.optimized_model_filepath)
        self._ops = {n.name: n.op for n in self.graph.nodes}
        self._vocab = _token_vocab(self.graph)
        # per-call metadata made once: names, output lookup, digest prefix, dequantize tables
        self._in_names = [t.name for t in self.graph.inputs]
        # (input, expected shape: token ids without their bytes axis, dims after the batch)
        self._in_specs = [(t, s, tuple(s[1:])) for t in self.graph.inputs
                          for s in [t.shape[:-1] if t.dtype == "int64" else t.shape]]
        self._qparams = {t.name: (np.float32(t.scale), np.float32(t.zero_point))
                         for t in self.graph.inputs}
        self._outs = {t.name: t for t in self.graph.outputs}
        self._digest = RunDigest(self.model_id, self._in_names + list(self._outs))
        self._dequant = {t.name: dequantize_table(t.scale, t.zero_point)
                         for t in self.graph.outputs}
        self.last_result = None

    def _prepare(self, device, device_id):
        backend = backends.select(device)
        at = {} if device_id is None else {"device_id": device_id}
        if CUDA_VARIANT_KEY in self._sess_options._config and backend.__name__.endswith(".cuda"):
            at["variant"] = self._sess_options._config[CUDA_VARIANT_KEY]
        if CUDA_GRAPHS_KEY in self._sess_options._config and backend.__name__.endswith(".cuda"):
            at["cuda_graphs"] = self._sess_options._config[CUDA_GRAPHS_KEY]
        self._exe = backend.prepare(self.graph, self.report.traversal, verbose=self.verbose, **at)
        self.device = self._exe.device
        self.__dict__.pop("_sample_bytes", None)  # it depends on the device

    def set_providers(self, providers=None, provider_options=None):
        """onnxruntime's: prepare the graph again on the first available provider."""
        device, device_id, self._provider = resolve_providers(
            None, providers, provider_options, self._no_cpu_fallback())
        self._prepare(device, device_id)

    def _no_cpu_fallback(self):
        return self._sess_options._config.get(FALLBACK_KEY) == "1"

    def get_inputs(self):
        return [NodeArg(t.name, _dims(t.shape[:-1]), "tensor(int64)") if t.dtype == "int64" else
                NodeArg(t.name, _dims(t.shape), "tensor(float)") for t in self.graph.inputs]

    def get_outputs(self):
        return [NodeArg(t.name, _dims(t.shape), "tensor(float)") for t in self.graph.outputs]

    def get_modelmeta(self):
        return model_metadata(self.graph, self.model_id)

    def get_providers(self):
        """The one provider running the whole graph (Synapse never splits a graph)."""
        return [CUDA if self.device == "cuda" else CPU]

    def get_provider_options(self):
        (name,) = self.get_providers()
        if self._provider is not None:  # chosen from providers=: the options as given
            return {name: dict(self._provider[1])}
        dev = getattr(self._exe, "device_id", None)
        return {name: {} if dev is None else {"device_id": str(dev)}}

    def get_session_options(self):
        return session_options(self._sess_options)

    def io_binding(self):
        return IOBinding(self)

    def run_with_iobinding(self, iobinding, run_options=None):
        iobinding.run(self, run_options)

    def quantize_feeds(self, input_feed):
        """The int8 feeds a run would give the graph: {input name: int8 array}, every input
        checked (names, shapes, dtypes, NaN, batch agreement, token ids) and float inputs
        quantized at the boundary. Token ids come back as their packed int8 bytes."""
        if not isinstance(input_feed, dict):
            raise InputError("input_feed must be a dict {input name: array}")
        names = self._in_names
        if len(input_feed) != len(names) or any(n not in input_feed for n in names):
            self._names_error(input_feed)
        feeds, batch = {}, None
        for t, shape, rest in self._in_specs:
            a = input_feed[t.name]
            if type(a) is not np.ndarray:
                try:
                    a = as_input(a, t.name, self._exe)  # numpy, or on this GPU
                except (ValueError, TypeError) as e:  # e.g. a ragged nested list
                    raise InputError(f"input {t.name!r} is not an array ({str(e)[:120]})") from None
            if a.ndim != len(shape) or a.shape[1:] != rest or (
                    shape[0] != -1 and a.shape[0] != shape[0]) or a.shape[0] < 1:
                raise ShapeError(f"input {t.name!r} has shape {list(a.shape)}; expected "
                                 f"{_dims(shape)}")
            if t.dtype == "int64":
                q = _token_feed(to_host(a), t, self._vocab[t.name])
            elif a.dtype == _INT8:
                q = a
            elif a.dtype in _FLOATS:
                q = self._quantize(a, t)
            else:
                raise DtypeError(f"input {t.name!r} has dtype {a.dtype}; expected float32 "
                                 "(quantized here) or int8 (already quantized)")
            if batch is not None and a.shape[0] != batch:
                raise ShapeError(f"inputs have different batch sizes ({batch} and {a.shape[0]})")
            batch = a.shape[0]
            # a GPU array (arrays.as_input) stays on its device
            feeds[t.name] = np.ascontiguousarray(q) if isinstance(q, np.ndarray) else q
        return feeds

    def _names_error(self, input_feed):
        names = self._in_names
        unknown = sorted(set(input_feed) - set(names))
        missing = [n for n in names if n not in input_feed]
        raise InputError(f"unknown inputs {unknown} / missing inputs {missing}; "
                         f"the model's inputs are {names}")

    def run_traced(self, input_feed):
        """One run keeping every node's int8 output, without digests: (int8 feeds as
        quantize_feeds gives them, {graph output name: int8}, [(node name, tensor name,
        int8 array)] in execution order). What run_full(trace=True) digests."""
        feeds = self.quantize_feeds(input_feed)
        return (feeds, *self._run_chunked(feeds, True, {}))

    def _chunk(self):
        """Samples per backend call, so that one call stays within RUN_BYTES."""
        return max(1, RUN_BYTES // self._sample_bytes)

    @cached_property  # read on every run: every tensor's size summed once
    def _sample_bytes(self):
        tr = self.report.traversal
        return self.report.activation_bytes + (CPU_BYTES_PER_ELEMENT * max(
            tr.sample_elems(t) for t in tr.shapes) if self.device == "cpu" else 0)

    def _quantize(self, a, t):
        """The boundary quantize chunk by chunk: its float temporaries stay bounded."""
        step = self._chunk()
        if a.shape[0] <= step:  # one chunk: no slices, no joined copy
            return self._quantize_part(a, t)
        q = np.empty(a.shape, np.int8)
        for s in range(0, a.shape[0], step):
            q[s:s + step] = to_host(self._quantize_part(a[s:s + step], t))
        return q

    def _quantize_part(self, a, t):
        q = quantize_any(a, *self._qparams[t.name], self._exe)
        if q is None:
            raise InputError(f"input {t.name!r} contains NaN, which has no deterministic "
                             "int8 value; clean the input first")
        return q

    def _run_chunked(self, feeds, trace, extra):
        """The backend on at most _chunk() samples at a time; outputs and trace joined."""
        n, step = len(next(iter(feeds.values()))), self._chunk()
        parts = []
        for s in range(0, n, step):
            chunk = feeds if n <= step else {k: v[s:s + step] for k, v in feeds.items()}
            try:
                parts.append(self._exe.run(chunk, trace=trace, **extra))
            except MemoryError:
                raise ResourceLimitError(f"out of memory running {min(step, n - s)} samples; "
                                         "lower synapse_gpu.session.RUN_BYTES") from None
        if len(parts) == 1:
            return parts[0]
        q_out = {k: _concat([p[0][k] for p in parts]) for k in parts[0][0]}
        steps = [(node, tensor, _concat([p[1][i][2] for p in parts]))
                 for i, (node, tensor, _) in enumerate(parts[0][1])] if trace else None
        return q_out, steps

    def _output_as(self, name, q, output_type):
        if output_type == "int8":
            return q
        if isinstance(q, np.ndarray) and q.dtype == _INT8:  # the reference's values by code
            return self._dequant[name].take(q.view(np.uint8))
        t = self._outs[name]
        return dequantize_any(q, t.scale, t.zero_point, self._exe)

    def run_full(self, output_names, input_feed, *, output_type="float32", trace=False,
                 device_outputs=False):
        """Like run(), returning a RunResult with the digest and the optional trace.

        device_outputs: on CUDA, return the outputs as CuPy arrays (DLPack-ready for
        torch.from_dlpack); the digest still covers them (their int8 values are read back).
        """
        if device_outputs and self.device != "cuda":
            raise DeviceError("device_outputs=True needs a session on CUDA; this one runs on "
                              f"the {self.device.upper()}")
        if output_type not in ("float32", "int8"):
            raise InputError(f"output_type {output_type!r}: use 'float32' or 'int8'")
        outs = self._outs
        names = list(outs) if output_names is None else list(output_names)
        bad = [n for n in names if n not in outs]
        if bad:
            raise InputError(f"unknown outputs {bad}; the model's outputs are {list(outs)}")
        feeds = self.quantize_feeds(input_feed)
        q_out, steps = self._run_chunked(feeds, trace,
                                         {"device_outputs": True} if device_outputs else {})
        digest = self._digest([to_host(feeds[n]) for n in self._in_names] +
                              [to_host(q_out[n]) for n in outs])
        entries = None
        if trace:
            entries = [TraceEntry(i, node, self._ops[node], tensor, tuple(y.shape),
                                  tensor_digest(tensor, y)) for i, (node, tensor, y) in enumerate(steps)]
            if self.verbose:
                for e in entries:
                    print(f"[{e.index:4d}] {e.node} ({e.op}) -> {list(e.shape)} {e.digest[:16]}")
        result = [self._output_as(n, q_out[n], output_type) for n in names]
        self.last_result = RunResult(result, feeds, q_out, digest, entries,
                                     self.cost.per_batch(len(next(iter(feeds.values())))))
        return self.last_result

    def run(self, output_names, input_feed, run_options=None, *, output_type="float32", trace=False,
            device_outputs=False):
        """onnxruntime-style run: a list of arrays (float32 by default, or int8).

        input_feed values: numpy arrays, anything with __array__ or __dlpack__, OrtValues,
        or GPU arrays (CuPy, PyTorch), used in place on a CUDA session. run_options: an
        onnxruntime-style RunOptions (options.py). The digest and trace of the call are in
        ``self.last_result``.
        """
        check_run_options(run_options)
        names = output_names or None  # onnxruntime: None or [] asks for every output
        return self.run_full(names, input_feed, output_type=output_type, trace=trace,
                             device_outputs=device_outputs).outputs

    def run_with_ort_values(self, output_names, input_dict_ort_values, run_options=None):
        """onnxruntime's run with OrtValues in and out."""
        check_run_options(run_options)
        return [OrtValue(y) for y in self.run(output_names, input_dict_ort_values)]
