"""Static int8 quantization of a float ONNX model, through onnxruntime.quantization.

No quantizer of our own: `quant_pre_process` (shape inference, graph optimization:
it folds Conv+BatchNorm) then `quantize_static` with a calibration reader over
arrays given in memory or in an .npz file. Defaults give what Synapse imports
best: QDQ format, per-channel symmetric int8 weights, int8 activations.
Our job here is the checks ORT does not make (calibration names, shapes, dtypes,
NaN), turned into synapse_gpu errors that say what to fix.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DtypeError, InputError, ModelFormatError, OnnxImportError, ShapeError

FORMATS = ("qdq", "qoperator")
QUANT_TYPES = ("int8", "uint8")  # what Synapse imports (uint8 is shifted to int8 there)
CALIBRATE_METHODS = ("minmax", "entropy", "percentile", "distribution")


def quantize_onnx(model_f32_path, calibration, out_path, *, fmt="qdq", per_channel=True,
                  activation_type="int8", weight_type="int8", preprocess=True, extra_options=None,
                  calibrate_method="minmax", batch_size=32, progress=True, **passthrough):
    """Quantize `model_f32_path` with calibration data and write the int8 model to `out_path`.

    calibration: {input name: array (N, ...)} or the path of an .npz with one array
    per model input (other arrays, such as labels, are ignored); the N samples go
    to onnxruntime in batches of `batch_size` (or the model's fixed batch size).
    extra_options: onnxruntime's (defaults: WeightSymmetric True, BatchNormalization
    scales per channel on axis 0). passthrough: other quantize_static keywords
    (nodes_to_exclude, op_types_to_quantize, reduce_range, calibration_cache_path...).
    Errors are synapse_gpu errors (ValueError/TypeError for bad keyword values).
    Returns out_path as a str.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    _check_choice("fmt", fmt, FORMATS)
    _check_choice("activation_type", activation_type, QUANT_TYPES)
    _check_choice("weight_type", weight_type, QUANT_TYPES)
    _check_choice("calibrate_method", calibrate_method, CALIBRATE_METHODS)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    allowed = set(inspect.signature(quantize_static).parameters) - {
        "model_input", "model_output", "calibration_data_reader", "quant_format", "per_channel",
        "activation_type", "weight_type", "calibrate_method", "extra_options"}
    unknown = sorted(set(passthrough) - allowed)
    if unknown:
        raise TypeError(f"quantize_onnx: unknown keyword(s) {unknown}; quantize_static also "
                        f"accepts {sorted(allowed)}")

    model_f32_path = str(model_f32_path)
    try:
        model = onnx.load(model_f32_path, load_external_data=False)
    except Exception as e:  # missing file, not protobuf, truncated
        raise ModelFormatError(f"cannot read ONNX model {model_f32_path}: {e}") from None
    inputs = _model_inputs(model)
    data = _load_calibration(calibration, inputs, model_f32_path)

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile,
              "distribution": CalibrationMethod.Distribution}[calibrate_method]
    options = {"WeightSymmetric": True, **(extra_options or {})}
    # ORT looks for a BatchNormalization scale's channels on axis 1; the scale is 1-D.
    options["QDQOpTypePerChannelSupportToAxis"] = {
        "BatchNormalization": 0, **options.get("QDQOpTypePerChannelSupportToAxis", {})}
    out_path = str(out_path)
    with tempfile.TemporaryDirectory(prefix="synapse_quant_") as tmp:
        src = model_f32_path
        if preprocess:
            src = os.path.join(tmp, "preprocessed.onnx")
            try:
                quant_pre_process(model_f32_path, src)
            except Exception as e:
                raise OnnxImportError(
                    f"onnxruntime quant_pre_process failed on {model_f32_path}: "
                    f"{type(e).__name__}: {e}. Retry without preprocessing (preprocess=False, "
                    f"CLI --no-preprocess)") from e
        reader = _Reader(data, inputs, int(batch_size), progress,
                         equal_batches=calibrate_method != "minmax")
        try:
            quantize_static(src, out_path, reader, quant_format=QuantFormat.QDQ if fmt == "qdq"
                            else QuantFormat.QOperator, per_channel=per_channel,
                            activation_type=qtype[activation_type], weight_type=qtype[weight_type],
                            calibrate_method=method, extra_options=options, **passthrough)
        except Exception as e:
            raise OnnxImportError(f"onnxruntime quantize_static failed on {model_f32_path}: "
                                  f"{type(e).__name__}: {e}") from e
        finally:
            reader.close()
    return out_path


def add_quantize_arguments(parser):
    """Add `synapse quantize`'s arguments to an argparse (sub)parser."""
    parser.add_argument("model", help="float32 .onnx model")
    parser.add_argument("--calibration", "-c", required=True,
                        help=".npz with one array (N, ...) per model input, named as the input")
    parser.add_argument("--output", "-o", required=True,
                        help="output path: .onnx (the quantized ONNX) or .syn (also imported)")
    parser.add_argument("--onnx-output", help="where the quantized ONNX goes when -o is not "
                        ".onnx (default: beside it, suffix .int8.onnx)")
    parser.add_argument("--format", dest="quant_format", choices=FORMATS, default="qdq",
                        help="QDQ (QuantizeLinear/DequantizeLinear pairs) or QOperator "
                        "(QLinearConv...); default qdq")
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="per-output-channel weight scales (default on; --no-per-channel)")
    parser.add_argument("--activation-type", choices=QUANT_TYPES, default="int8")
    parser.add_argument("--weight-type", choices=QUANT_TYPES, default="int8")
    parser.add_argument("--calibrate-method", choices=CALIBRATE_METHODS, default="minmax")
    parser.add_argument("--batch-size", dest="calibration_batch_size", type=int, default=32,
                        help="calibration samples per onnxruntime run (default 32)")
    parser.add_argument("--no-preprocess", action="store_true",
                        help="skip quant_pre_process (shape inference, Conv+BN folding)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run_quantize(args):
    """Run `synapse quantize` from parsed arguments; returns the quantized ONNX path."""
    out = Path(args.output)
    onnx_out = args.onnx_output or (out if out.suffix == ".onnx" else out.with_suffix(".int8.onnx"))
    path = quantize_onnx(args.model, args.calibration, onnx_out, fmt=args.quant_format,
                         per_channel=args.per_channel, activation_type=args.activation_type,
                         weight_type=args.weight_type, preprocess=not args.no_preprocess,
                         calibrate_method=args.calibrate_method,
                         batch_size=args.calibration_batch_size, progress=not args.quiet)
    print(f"wrote {path} ({args.quant_format}, {args.activation_type} activations, "
          f"{args.weight_type} weights, per-channel {'on' if args.per_channel else 'off'})")
    return path


def _check_choice(what, value, choices):
    if value not in choices:
        raise ValueError(f"{what} must be one of {list(choices)}, got {value!r}")


def _model_inputs(model):
    """{name: (numpy dtype, dims with None for symbolic)} of the real graph inputs."""
    from onnx import helper

    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        out[vi.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)), dims)
    return out


def _load_calibration(calibration, inputs, model_path):
    """Validated {input name: array in the input's dtype}, all with the same N."""
    if isinstance(calibration, (str, os.PathLike)):
        try:
            with np.load(calibration, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read calibration file {calibration}: {e}") from None
        src = str(calibration)
    else:
        arrays = {k: np.asarray(v) for k, v in dict(calibration).items()}
        src = "calibration dict"
    names = list(inputs)
    if not names:
        raise InputError(f"{model_path} has no graph inputs to calibrate")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(
            f"{src}: no calibration array for the model input(s) {missing} (arrays: "
            f"{sorted(arrays)}; the inputs of {model_path}: {names}); save one array per input "
            f"under the input's name, e.g. np.savez(path, **{{{names[0]!r}: x}})")
    counts = set()
    out = {}
    for name, (dtype, dims) in inputs.items():
        a = arrays[name]
        if a.dtype != dtype:
            if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(dtype, np.floating)):
                raise DtypeError(f"{src}: calibration array {name!r} is {a.dtype}; the model "
                                 f"input is {dtype}")
            a = a.astype(dtype)
        if a.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], a.shape[1:])):
            want = "(" + ", ".join("N" if i == 0 else "?" if d is None else str(d)
                                   for i, d in enumerate(dims)) + ")"
            raise ShapeError(f"{src}: calibration array {name!r} has shape {a.shape}; the model "
                             f"input is {want}, axis 0 stacking the samples")
        if a.shape[0] == 0:
            raise InputError(f"{src}: calibration array {name!r} holds no samples")
        if dims[0] is not None and a.shape[0] % dims[0]:
            raise ShapeError(f"{src}: {name!r} has {a.shape[0]} samples, not a multiple of the "
                             f"model's fixed batch size {dims[0]}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise InputError(f"{src}: calibration array {name!r} contains NaN or inf")
        counts.add(a.shape[0])
        out[name] = a
    if len(counts) > 1:
        raise ShapeError(f"{src}: calibration arrays have different sample counts "
                         f"{ {k: v.shape[0] for k, v in out.items()} }")
    return out


class _Reader:
    """Feeds the calibration arrays batch by batch, with a progress bar on stderr.

    onnxruntime's CalibrationDataReader accepts any class with get_next (its
    __subclasshook__), so onnxruntime is not imported with this module.
    """

    def __init__(self, data, inputs, batch_size, progress, equal_batches):
        from tqdm import tqdm

        n = len(next(iter(data.values())))
        fixed = {dims[0] for _, dims in inputs.values()} - {None}
        step = fixed.pop() if fixed else min(batch_size, n)
        while equal_batches and n % step:  # ORT's histogram calibrators stack the batches
            step -= 1
        self._batches = [{k: v[s:s + step] for k, v in data.items()} for s in range(0, n, step)]
        self._pos, self._end = 0, len(self._batches)
        self._bar = tqdm(total=n, unit="sample", desc="calibrating", disable=not progress,
                         file=sys.stderr, leave=False)

    def get_next(self):
        if self._pos >= self._end:
            return None
        batch = self._batches[self._pos]
        self._pos += 1
        self._bar.update(len(next(iter(batch.values()))))
        return batch

    def __len__(self):
        return len(self._batches)

    def set_range(self, start_index, end_index):  # used by extra_options CalibStridedMinMax
        self._pos, self._end = start_index, min(end_index, len(self._batches))

    def close(self):
        self._bar.close()
