"""`synapse verify --engine onnxruntime MODEL.onnx`: does onnxruntime agree with itself?

Runs the model under every combination of graph optimization level (disabled,
basic, extended, all), intra-op thread count (1, 2, 4) and batching (one sample
per run, or the whole batch in one run) and compares every output bit for bit
with the baseline (optimizations disabled, 1 thread, one sample per run). A
setting "matters" when two runs that differ only in it give different bits.
"""
from __future__ import annotations

import hashlib
import itertools

import numpy as np

from .errors import InputError

LEVELS = ("disabled", "basic", "extended", "all")
THREADS = (1, 2, 4)
DEFAULT_BATCH = 4


def session_options(level, threads):
    """onnxruntime.SessionOptions for a level name of LEVELS and a thread count (0: its default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return so


def _session(model_bytes, level, threads):
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes, session_options(level, threads),
                                providers=["CPUExecutionProvider"])


def generated_feeds(sess, batch=DEFAULT_BATCH):
    """Deterministic inputs for each model input: symbolic axis 0 = batch, values in [-2, 2)."""
    from .conformance.cases import generated_int8

    feeds = {}
    for i in sess.get_inputs():
        shape = [batch if k == 0 and not isinstance(d, int) else d for k, d in enumerate(i.shape)]
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise InputError(f"input {i.name!r} has shape {i.shape}: give --input for models with "
                             "symbolic dimensions other than the batch")
        q = generated_int8(f"ort-audit/{i.name}", tuple(shape))
        kind = {"tensor(float)": np.float32, "tensor(int8)": np.int8,
                "tensor(uint8)": np.uint8}.get(i.type)
        if kind is None:
            raise InputError(f"input {i.name!r} of type {i.type}: give --input")
        feeds[i.name] = (q.astype(np.float32) / np.float32(64) if kind is np.float32
                         else q.view(np.uint8) if kind is np.uint8 else q)
    return feeds


def _run(sess, feeds, per_sample):
    if not per_sample:
        return sess.run(None, feeds)
    n = len(next(iter(feeds.values())))
    runs = [sess.run(None, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
    return [np.concatenate(parts) for parts in zip(*runs)]


def _fingerprint(outs):
    h = hashlib.sha256()
    for a in outs:
        h.update(str(a.dtype).encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def audit(model_path, feeds=None, levels=LEVELS, threads=THREADS):
    """{(level, threads, per_sample): outputs} and the list of settings that matter."""
    try:
        with open(model_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"cannot read {model_path}: {e.strerror}") from None
    runs = {}
    for level, t in itertools.product(levels, threads):
        sess = _session(data, level, t)
        if feeds is None:
            feeds = generated_feeds(sess)
        elif None in feeds:  # a .npy: the model's single input
            names = [i.name for i in sess.get_inputs()]
            if len(names) != 1:
                raise InputError(f"a .npy feeds one input; the model has {names} (use .npz)")
            feeds = {names[0]: feeds[None]}
        for per_sample in (True, False):
            runs[(level, t, per_sample)] = _run(sess, feeds, per_sample)
    prints = {k: _fingerprint(v) for k, v in runs.items()}
    matters = []
    for axis, name in enumerate(("optimization level", "thread count", "batching")):
        if any(prints[a] != prints[b] for a in prints for b in prints
               if all(a[i] == b[i] for i in range(3) if i != axis) and a[axis] != b[axis]):
            matters.append(name)
    return runs, matters, feeds


def _difference(outs, base, names):
    """'identical' or which outputs differ, in how many elements, by how much."""
    parts = []
    for name, a, b in zip(names, outs, base):
        if a.shape != b.shape:
            parts.append(f"{name}: shape {list(a.shape)} vs {list(b.shape)}")
            continue
        ne = a != b
        if ne.any():
            d = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
            parts.append(f"{name}: {int(ne.sum())}/{a.size} differ (max {d:.3g})")
    return "; ".join(parts) or "identical"


def _load_feeds(path):
    """.npz: arrays by onnxruntime input name; .npy: the single input (named at run time)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read input file {path}: {e}") from None
    return {None: data} if isinstance(data, np.ndarray) else {k: data[k] for k in data.files}


def run_cli(args):
    import onnxruntime as ort

    if not args.model or not str(args.model).lower().endswith(".onnx"):
        raise InputError("--engine onnxruntime needs MODEL.onnx")
    runs, matters, feeds = audit(args.model, _load_feeds(args.input) if args.input else None)
    base = runs[("disabled", 1, True)]
    with open(args.model, "rb") as f:
        names = [o.name for o in _session(f.read(), "disabled", 1).get_outputs()]
    n = len(next(iter(feeds.values())))
    print(f"onnxruntime {ort.__version__} determinism audit of {args.model}: {n} samples; "
          "baseline: optimizations disabled, 1 thread, one sample per run")
    print(f"  {'optimization':<12} {'threads':>7}  {'one sample per run':<34} batch of {n} in one run")
    for level, t in itertools.product(LEVELS, THREADS):
        one = "baseline" if (level, t) == ("disabled", 1) else _difference(
            runs[(level, t, True)], base, names)
        print(f"  {level:<12} {t:>7}  {one:<34} {_difference(runs[(level, t, False)], base, names)}")
    if matters:
        print(f"VERDICT: onnxruntime's outputs on this model change with: {', '.join(matters)}")
        return 1
    print("VERDICT: onnxruntime gave the same bits in every configuration tried")
    return 0
