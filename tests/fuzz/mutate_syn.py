"""Structured mutations of a .syn model: the graph JSON and the buffers, model id recomputed.

A file that anyone can write: valid safetensors, canonical metadata, a correct model id,
and any content. A few cases also damage the bytes (truncation, flips) after writing.
"""
from __future__ import annotations

import copy
import hashlib
import json

import numpy as np

from synapse_gpu.modelfile import FORMAT, VERSION

INTS = [0, 1, -1, 2, 3, 7, 127, 128, -128, -129, 255, 256, 1 << 15, 1 << 16, 1 << 23, 1 << 24,
        (1 << 24) - 1, 62, 63, 64, -104, -105, 172, 173, 1 << 31, -(1 << 31), (1 << 31) - 1,
        1 << 40, 1 << 53, (1 << 63) - 1, -(1 << 63), 10 ** 6, 1000000, -2]
JUNK = [None, "x", "", 1.5, -0.0, True, False, [], {}, [1, "x"], [[1]], {"a": 1}, "same_upper",
        1e39, [1, 2], [0] * 20, "\u00e9\u2603", 10 ** 30]
SCALES = [0.0, -1.0, 1e-45, 1e-30, 1e39, 3.4e38, 1.0, 0.5, 1e-3]
ATTR_NAMES = ["x_zero_point", "y_zero_point", "qmin", "qmax", "multiplier", "shift", "strides",
              "pads", "dilations", "group", "kernel_shape", "axis", "perm", "shape", "mode",
              "value", "trans_w", "ceil_mode", "count_include_pad", "bogus", "fn", "y_inv_scale"]
OPS = ["conv1d", "conv2d", "conv3d", "dense", "matmul", "requantize", "batchnorm", "relu", "clip",
       "prelu", "lut", "softmax", "add", "mul", "max_pool", "avg_pool", "global_avg_pool",
       "flatten", "reshape", "transpose", "identity", "concat", "pad", "nope"]
DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.float32]


def _value(rng, old=None):
    r = rng.random()
    if r < 0.45:
        if isinstance(old, list) and old and rng.random() < 0.7:
            v = list(old)
            i = int(rng.integers(len(v)))
            k = rng.integers(4)
            if k == 0:
                v[i] = _value(rng, v[i])
            elif k == 1:
                v.pop(i)
            elif k == 2:
                v.append(v[i])
            else:
                v = v * 2
            return v
        if isinstance(old, int) and not isinstance(old, bool) and rng.random() < 0.5:
            return int(rng.choice([old + 1, old - 1, -old, old * 2, old + 256, old - 256]))
        return int(rng.choice(INTS))
    if r < 0.75:
        return copy.deepcopy(JUNK[int(rng.integers(len(JUNK)))])
    n = int(rng.integers(0, 6))
    return [int(rng.choice(INTS[:16])) for _ in range(n)]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))] if len(seq) else None


def _tensors(d):
    names = [t["name"] for t in d["inputs"]]
    for n in d["nodes"]:
        names += n["outputs"]
    return names


def m_attr(d, bufs, rng):
    n = _pick(rng, d["nodes"])
    keys = list(n["attrs"])
    k = _pick(rng, keys) if keys and rng.random() < 0.8 else _pick(rng, ATTR_NAMES)
    if rng.random() < 0.15 and k in n["attrs"]:
        del n["attrs"][k]
    else:
        n["attrs"][k] = _value(rng, n["attrs"].get(k))


def m_edge(d, bufs, rng):
    """An attribute or per-channel parameter at an edge of its schema range: values the
    library accepts, where backends most easily disagree."""
    from synapse_gpu.opdefs import OPS
    from synapse_gpu.schema import Int, Ints

    n = _pick(rng, d["nodes"])
    spec = OPS.get(n["op"])
    if spec is None:
        return
    ranged = [(k, s) for k, s in spec.attrs.items() if isinstance(s, (Int, Ints))]
    ranged += [(k, s) for k, s in spec.params.items() if s.lo is not None and k in n["params"]]
    if not ranged:
        return
    k, s = _pick(rng, ranged)
    lo, hi = s.lo, min(s.hi, s.lo + (1 << 62))
    pick = lambda: int(_pick(rng, [lo, hi, lo + 1, hi - 1, int(rng.integers(lo, hi + 1))]))  # noqa
    if k in spec.params:
        b = bufs[n["params"][k]].copy()
        if b.size:
            b.reshape(-1)[int(rng.integers(b.size))] = pick()
        bufs[n["params"][k]] = b
    elif isinstance(s, Ints):
        old = n["attrs"].get(k) or [1]
        n["attrs"][k] = [pick() if rng.random() < 0.5 else v for v in old]
    else:
        n["attrs"][k] = pick()


def m_buffer(d, bufs, rng):
    k = _pick(rng, sorted(bufs))
    a = bufs[k]
    r = rng.integers(6)
    if r == 0:
        bufs[k] = a.astype(DTYPES[int(rng.integers(len(DTYPES)))])
    elif r == 1:
        bufs[k] = a.reshape(-1)[: int(rng.integers(0, a.size + 1))].copy()
    elif r == 2 and a.ndim:
        bufs[k] = np.concatenate([a, a], axis=int(rng.integers(a.ndim)))
    elif r == 3:
        info = np.iinfo(a.dtype) if a.dtype.kind in "iu" else None
        v = _pick(rng, [info.min, info.max, 0, -1, 1 << 24, (1 << 24) - 1]) if info else 0
        b = a.copy()
        b.reshape(-1)[int(rng.integers(max(b.size, 1))) if b.size else slice(0, 0)] = np.array(
            v).astype(b.dtype)
        bufs[k] = b
    elif r == 4:
        bufs[k] = a.reshape((1,) + a.shape) if rng.random() < 0.5 else a.reshape(-1)
    else:
        info = np.iinfo(a.dtype)
        bufs[k] = rng.integers(info.min, int(info.max) + 1, a.shape, dtype=a.dtype)


def m_params(d, bufs, rng):
    n = _pick(rng, [n for n in d["nodes"] if n["params"]] or d["nodes"])
    r = rng.integers(3)
    if r == 0 and n["params"]:
        role = _pick(rng, sorted(n["params"]))
        n["params"][role] = _pick(rng, sorted(bufs) + ["missing"])
    elif r == 1 and n["params"]:
        del n["params"][_pick(rng, sorted(n["params"]))]
    else:
        n["params"][_pick(rng, ["w", "bias", "table", "extra"])] = _pick(rng, sorted(bufs))


def m_node(d, bufs, rng):
    nodes = d["nodes"]
    i = int(rng.integers(len(nodes)))
    n = nodes[i]
    r = rng.integers(8)
    if r == 0:
        n["op"] = _pick(rng, OPS)
    elif r == 1:
        n["inputs"] = [_pick(rng, _tensors(d) + ["ghost"]) for _ in range(int(rng.integers(0, 4)))]
    elif r == 2 and n["inputs"]:
        n["inputs"][int(rng.integers(len(n["inputs"])))] = _pick(rng, _tensors(d))
    elif r == 3:
        n["outputs"] = [_pick(rng, _tensors(d))] if rng.random() < 0.5 else n["outputs"] * 2
    elif r == 4:
        nodes.insert(int(rng.integers(len(nodes) + 1)), copy.deepcopy(n))
    elif r == 5 and len(nodes) > 1:
        nodes.pop(i)
    elif r == 6:
        j = int(rng.integers(len(nodes)))
        nodes[i], nodes[j] = nodes[j], nodes[i]
    else:
        n["name"] = _pick(rng, [nodes[0]["name"], "", "n\u00e9"])


def m_io(d, bufs, rng):
    t = _pick(rng, d["inputs"] + d["outputs"])
    r = rng.integers(5)
    if r == 0:
        i = int(rng.integers(len(t["shape"])))
        t["shape"][i] = int(_pick(rng, [0, -1, 1, 2, 3, 1 << 20, 10 ** 9, -2, 4096, 100000]))
    elif r == 1:
        t["scale"] = float(_pick(rng, SCALES))
    elif r == 2:
        t["zero_point"] = _value(rng, t["zero_point"])
    elif r == 3:
        t["name"] = _pick(rng, _tensors(d))
    else:
        t["shape"] = t["shape"] + [1] if rng.random() < 0.5 else t["shape"][:-1]


def m_quant(d, bufs, rng):
    r = rng.integers(4)
    if r == 0:
        d["quant"] = _pick(rng, [None, [], "x", {"a": None}])
    elif d["quant"]:
        k = _pick(rng, sorted(d["quant"]))
        if r == 1:
            d["quant"][k] = [float(_pick(rng, SCALES)), d["quant"][k][1]]
        elif r == 2:
            d["quant"][k] = [d["quant"][k][0], _value(rng, d["quant"][k][1])]
        else:
            del d["quant"][k]


def _paths(v, path=()):
    yield path
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _paths(x, path + (i,))


def m_json(d, bufs, rng):
    paths = [p for p in _paths(d) if p]
    p = _pick(rng, paths)
    parent = d
    for k in p[:-1]:
        parent = parent[k]
    parent[p[-1]] = _value(rng, parent[p[-1]])


MUTATORS = [m_attr] * 4 + [m_edge] * 6 + [m_buffer] * 2 + [m_params, m_node, m_node, m_io, m_io, m_quant, m_json,
                                             m_json]


def raw_model_id(structure, bufs):
    """modelfile.model_id over raw JSON (which may not even parse as a Graph)."""
    h = hashlib.sha256(b"synapse-model-v1\0")
    h.update(json.dumps(structure, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())
    for bid in sorted(bufs):
        a = np.ascontiguousarray(bufs[bid])
        h.update(bid.encode() + b"\0" + a.dtype.str.encode() + b"\0")
        h.update(np.array([a.ndim, *a.shape], dtype="<i8").tobytes())
        h.update(a.tobytes())
    return h.hexdigest()


def write(structure, bufs):
    from safetensors.numpy import save

    meta = {"format": FORMAT, "version": VERSION, "graph": structure,
            "model_id": raw_model_id(structure, bufs)}
    return save({k: np.ascontiguousarray(v) for k, v in bufs.items()},
                metadata={"synapse": json.dumps(meta, sort_keys=True, separators=(",", ":"),
                                                ensure_ascii=True)})


def mutate(graph, rng):
    """Bytes of a mutated .syn file derived from `graph` (1 to 3 mutations)."""
    d = copy.deepcopy(graph.structure_json())
    bufs = {k: np.array(v) for k, v in graph.buffers.items()}
    for _ in range(int(rng.integers(1, 4))):
        try:
            MUTATORS[int(rng.integers(len(MUTATORS)))](d, bufs, rng)
        except (KeyError, TypeError, IndexError, AttributeError, ValueError):
            pass  # an earlier mutation broke what this one walks: keep the case as it is
    data = write(d, bufs)
    r = rng.random()
    if r < 0.05:
        return data[: int(rng.integers(len(data)))]
    if r < 0.1:
        b = bytearray(data)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return bytes(b)
    return data
