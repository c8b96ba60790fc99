"""Quantized fully connected layer (dense) and activation-by-activation matmul.

dense (ONNX QLinearMatMul / Gemm with constant int8 weights, per-column scales):
    acc[..., j] = bias[j] + sum_k (x[..., k] - x_zero_point) * (W[k, j] - w_zero_point[j])
    y[..., j]   = requant(acc[..., j], multiplier[j], shift[j], y_zero_point, qmin, qmax)
with W = w.T if trans_w (w stored (M, K)) else w (stored (K, M)).
Overflow bound, per output column j, checked by the core at load:
    sum_k |W[k, j] - w_zero_point[j]| * max(|-128 - x_zero_point|, |127 - x_zero_point|)
    + |bias[j]| < 2^31.

matmul (ONNX QLinearMatMul of two activations, per-tensor quantization):
    acc = (a - a_zero_point) @ (b - b_zero_point)     (numpy matmul broadcasting)
    y   = requant(acc, multiplier, shift, y_zero_point, qmin, qmax)
Overflow bound: K * max|a - a_zero_point| * max|b - b_zero_point| < 2^31 over the
int8 ranges, K = a.shape[-1].

Both accumulate in int64 here and leave the bound to the core.
"""
import numpy as np

from .requant import INT8_MAX, INT8_MIN, requant


def dense(x, *, w, bias, multiplier, shift, w_zero_point, x_zero_point, y_zero_point, trans_w,
          qmin=INT8_MIN, qmax=INT8_MAX):
    """x int8 (..., K) -> int8 (..., M); w int8 (M, K) if trans_w else (K, M); per-column
    bias int32, multiplier/shift int64, w_zero_point int (length M)."""
    W = np.asarray(w).T if trans_w else np.asarray(w)
    K, M = W.shape
    if np.shape(x)[-1] != K:
        raise ValueError(f"dense: input {np.shape(x)} does not match weight {np.shape(w)} "
                         f"(trans_w={trans_w})")
    xc = np.asarray(x).astype(np.int64) - int(x_zero_point)
    wc = W.astype(np.int64) - np.asarray(w_zero_point, np.int64).reshape(1, M)
    acc = xc @ wc + np.asarray(bias, np.int64)
    return requant(acc, multiplier, shift, int(y_zero_point), qmin, qmax)


def matmul(a, b, *, a_zero_point, b_zero_point, y_zero_point, multiplier, shift,
           qmin=INT8_MIN, qmax=INT8_MAX):
    """int8 a (..., M, K) @ int8 b (..., K, N) -> int8, numpy broadcasting of the batch
    axes; one (per-tensor) multiplier and shift, python ints."""
    ac = np.asarray(a).astype(np.int64) - int(a_zero_point)
    bc = np.asarray(b).astype(np.int64) - int(b_zero_point)
    return requant(np.matmul(ac, bc), int(multiplier), int(shift), int(y_zero_point), qmin, qmax)
