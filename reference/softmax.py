"""Integer softmax: an exp table, an integer sum and one rounded integer division.

Along ``axis``, for int8 x with input scale s_x:
    d_i = max(x) - x_i                       in [0, 255]
    e_i = E[d_i],  E[d] = rhe(EXP_ONE * exp(-s_x * d))   (int32 table, built once)
    S   = sum_i e_i                          (exact, int32: see the bound)
    y_i = clamp(rhe(e_i * R / S) + z_y, qmin, qmax),  R = floor(f32(1 / s_y))
rhe is round half to even; e_i * R / S is rounded as an exact rational (integer
quotient and remainder), so the result does not depend on summation order.
The zero point of x cancels in d and plays no part.

Why this form: it is ONNX Runtime's QLinearSoftmax (com.microsoft) with its
float32 table and float32 sum replaced by a fixed-point table and an exact
integer sum; R = floor(1 / s_y) is ONNX Runtime's own output factor (exact for
the usual s_y = 1/256). docs/ops_rules.md gives the measured agreement.

Bound: E[0] = EXP_ONE = (2^31 - 1) // MAX_AXIS = 2^19 - 1 and E[d] <= E[0], so S <=
L * EXP_ONE < 2^31 for an axis of L <= MAX_AXIS = 4096 elements (longer axes are
rejected). e_i * R < 2^19 * R needs int64 in the division (R < 2^31).
"""
import numpy as np

MAX_AXIS = 4096
EXP_ONE = (2**31 - 1) // MAX_AXIS


def softmax_params(s_x, s_y, z_y):
    """Build-time params and attrs of ``softmax`` from float32 scales (host, once).

    Returns {"exp_table": int32 (256,), "y_inv_scale": int, "y_zero_point": int}.
    The table is exp in float64, scaled and rounded half to even; it is stored
    in the model, so the run has no float.
    """
    d = np.arange(256, dtype=np.float64)
    table = np.rint(EXP_ONE * np.exp(-float(np.float32(s_x)) * d)).astype(np.int32)
    inv = int(np.floor(np.float32(1) / np.float32(s_y)))
    return {"exp_table": table, "y_inv_scale": inv, "y_zero_point": int(z_y)}


def softmax(x, *, exp_table, axis, y_inv_scale, y_zero_point, qmin=-128, qmax=127):
    """y = integer softmax of int8 x along ``axis`` (module docstring for the rule)."""
    x = np.asarray(x, dtype=np.int64)
    if x.shape[axis] > MAX_AXIS:
        raise ValueError(f"softmax over {x.shape[axis]} > {MAX_AXIS} elements would "
                         f"overflow the int32 sum of the exp table")
    e = np.asarray(exp_table, dtype=np.int64)[x.max(axis=axis, keepdims=True) - x]
    s = e.sum(axis=axis, keepdims=True)
    num = e * np.int64(y_inv_scale)
    q, r = num // s, num % s
    q += (2 * r > s) | ((2 * r == s) & (q % 2 == 1))
    return np.clip(q + y_zero_point, qmin, qmax).astype(np.int8)
