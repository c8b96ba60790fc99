"""The canonical model file (.syn): safetensors with the graph JSON in its metadata.

Why safetensors: a maintained format with a bounded, validated header (data
offsets are checked against the file size before any array exists) and no code
execution on load, unlike pickle; the parameters are plain named arrays.

Layout: tensors = the graph's buffers by buffer id; metadata = ONE key
"synapse" (safetensors writes a multi-key metadata map in hash order, so a single
key keeps the bytes canonical) holding compact sorted JSON:
    {"format": "synapse-gpu", "version": 1, "graph": {...}, "model_id": "<hex>"}

Model id = sha256 over the canonical content (docs/SPEC.md, "Model id"):
    b"synapse-model-v1\\0" + graph JSON bytes + for each buffer in sorted id order:
    id utf-8, b"\\0", dtype str (e.g. "|i1", "<i4"), b"\\0", shape as int64 LE count
    then dims, the C-order little-endian bytes.
It does not depend on the file's byte layout, so it is the same after any
save/load round trip and on every machine; load() recomputes it and refuses a
file whose content no longer matches, or whose metadata is not byte for byte the
canonical JSON of what it parses to (ChecksumError).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .errors import ChecksumError, ModelFormatError
from .graph import Graph

FORMAT = "synapse-gpu"
VERSION = 1
MAX_FILE_BYTES = 4 << 30  # far above any Synapse-limit model; refuses absurd inputs early
_DTYPES = {"|i1": np.int8, "<i4": np.int32, "<i8": np.int64}
_SAFETENSORS_DTYPES = {"I8", "I32", "I64"}


def _canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def model_id(graph: Graph) -> str:
    h = hashlib.sha256(b"synapse-model-v1\0")
    h.update(_canonical_json(graph.structure_json()))
    for bid in sorted(graph.buffers):
        a = np.ascontiguousarray(graph.buffers[bid])
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder not in "|<=" else a.dtype
        a = a.astype(dt, copy=False)
        h.update(bid.encode() + b"\0" + a.dtype.str.replace("=", "<").encode() + b"\0")
        h.update(np.array([a.ndim, *a.shape], dtype="<i8").tobytes())
        h.update(a.tobytes())
    return h.hexdigest()


def to_bytes(graph: Graph) -> bytes:
    from safetensors.numpy import save

    for bid, a in graph.buffers.items():
        if np.dtype(a.dtype).str not in _DTYPES:
            raise ModelFormatError(f"buffer {bid!r}: dtype {a.dtype} cannot be stored (int8/int32/int64)")
    meta = {"format": FORMAT, "version": VERSION, "graph": graph.structure_json(),
            "model_id": model_id(graph)}
    return save({k: np.ascontiguousarray(v) for k, v in graph.buffers.items()},
                metadata={"synapse": _canonical_json(meta).decode()})


def save_model(graph: Graph, path) -> str:
    """Write the canonical file (atomically) and return the model id."""
    data = to_bytes(graph)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return model_id(graph)


def _no_constant(name):
    raise ValueError(f"non-finite number {name} in the metadata")


def load_model(path) -> Graph:
    """Read and verify a .syn file; every failure is a ModelFormatError."""
    from safetensors import SafetensorError, safe_open

    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ModelFormatError(f"cannot read model file {path}: {e.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise ModelFormatError(f"{path}: {size} bytes is larger than any valid model")
    if not os.path.isfile(path):
        raise ModelFormatError(f"{path} is not a file (a directory?); give a .syn model file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("synapse")
            if raw is None:
                raise ModelFormatError(f"{path}: not a Synapse model file (no 'synapse' metadata)")
            # NaN/Infinity are not JSON (and never canonical); ValueError covers integers
            # past Python's digit limit; RecursionError deeply nested values
            meta = json.loads(raw, parse_constant=_no_constant)
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ModelFormatError(f"{path}: metadata is not of format {FORMAT!r}")
            if meta.get("version") != VERSION:
                raise ModelFormatError(f"{path}: format version {meta.get('version')!r}, this "
                                       f"library reads version {VERSION}; upgrade synapse-gpu")
            for k in f.keys():  # before any array exists: numpy lacks e.g. float8
                if f.get_slice(k).get_dtype() not in _SAFETENSORS_DTYPES:
                    raise ModelFormatError(f"{path}: buffer {k!r} has dtype "
                                           f"{f.get_slice(k).get_dtype()}; expected I8, I32 or I64")
            buffers = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ModelFormatError(f"{path}: corrupted or truncated model file ({e})") from None
    except OSError as e:
        raise ModelFormatError(f"cannot read model file {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ModelFormatError(f"{path}: metadata is not valid JSON ({type(e).__name__}: "
                               f"{str(e)[:200]})") from None
    if not isinstance(meta.get("graph"), dict):
        raise ModelFormatError(f"{path}: metadata has no graph object")
    graph = Graph.from_structure(meta["graph"], buffers)
    try:
        canonical = _canonical_json(dict(meta, graph=graph.structure_json())).decode()
    except (ValueError, TypeError, RecursionError) as e:  # e.g. a scale that overflows float32
        raise ModelFormatError(f"{path}: graph values cannot be stored canonically "
                               f"({type(e).__name__}: {str(e)[:200]})") from None
    if canonical != raw:
        # e.g. a digit changed in a scale that still rounds to the same float32
        raise ChecksumError(f"{path}: metadata is not in canonical form: the file was altered")
    found = model_id(graph)
    if found != meta.get("model_id"):
        raise ChecksumError(f"{path}: content checksum {found[:16]}... does not match the stored "
                            f"model id {str(meta.get('model_id'))[:16]}...: the file is corrupted")
    return graph
