"""Array containers at the session boundary: numpy, anything with __array__ or
__dlpack__, GPU arrays (CuPy, PyTorch CUDA tensors: __dlpack__ / __cuda_array_interface__),
and OrtValue, onnxruntime's container.

A GPU array fed to a CUDA session stays on the GPU: the executable adopts it in place
(no copy to the host) and the boundary quantize runs there. The quantize is one IEEE
float32 division and round-half-even per element, correctly rounded on the GPU as on the
CPU (CuPy does not compile with fast math), so the int8 values, and the digest, are the
same whatever the container.
"""
from __future__ import annotations

import ctypes
import math

import numpy as np

from .errors import DeviceError, DtypeError, InputError
from .reference.boundary import dequantize

_DL_CUDA, _DL_CUDA_MANAGED = 2, 13  # DLPack device types in GPU memory


def on_gpu(x):
    """True when x lives in CUDA memory (and so cannot be read by numpy)."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    return dev is not None and dev()[0] in (_DL_CUDA, _DL_CUDA_MANAGED)


def _device(exe):
    """The CUDA executable's device (backends/cuda_device.py: adopt, scope, clone,
    wrap_pointer), or None on the CPU."""
    dev = getattr(exe, "dev", None)
    return dev if hasattr(dev, "adopt") else None


def as_input(x, name, exe):
    """A numpy array, or for a GPU array a device array of ``exe`` (no host copy)."""
    if isinstance(x, OrtValue):
        x = x._array
    if isinstance(x, np.ndarray):
        return x
    dev = _device(exe)
    if dev is not None:
        a = dev.adopt(x)
        if a is not None:
            return a
    elif on_gpu(x):
        raise InputError(f"input {name!r} is in GPU memory but the session runs on the "
                         f"{exe.device.upper()}; pass a host array or run on CUDA")
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError) as e:
            raise InputError(f"input {name!r}: numpy cannot read it through DLPack ({e})") from None
    return np.asarray(x)


def quantize_xp(xp, a, scale, zero_point):
    """reference.boundary.quantize's operations with array module xp (CuPy on a GPU)."""
    q = xp.rint(a.astype(xp.float32) / xp.float32(scale)) + xp.float32(zero_point)
    return xp.clip(q, -128, 127).astype(xp.int8)


def dequantize_xp(xp, q, scale, zero_point):
    """reference.boundary.dequantize's operations with array module xp."""
    return (q.astype(xp.int32) - xp.int32(zero_point)).astype(xp.float32) * xp.float32(scale)


_LO, _HI = np.float32(-128), np.float32(127)


def quantize_host(a, scale, zero_point):
    """reference.boundary.quantize's float32 operations on a host array, in place on one
    temporary (scale, zero_point: np.float32); None when `a` holds a NaN. After the clip
    every value is in [-128, 127] or NaN, so the temporary's sum cannot overflow: it is
    NaN exactly when some value is."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.divide(a.astype(np.float32, copy=False), scale)
        np.rint(t, out=t)
        np.add(t, zero_point, out=t)
        np.minimum(np.maximum(t, _LO, out=t), _HI, out=t)
    if math.isnan(np.add.reduce(t, axis=None)):
        return None
    return t.astype(np.int8)


def dequantize_table(scale, zero_point):
    """reference.boundary.dequantize of every int8 value, indexed by its uint8 code
    (q.view(np.uint8)): one lookup gives the same float32 bits as the reference."""
    return dequantize(np.arange(256, dtype=np.uint8).view(np.int8), scale, zero_point)


def quantize_any(a, scale, zero_point, exe):
    """The boundary quantize on the host or, for a device array, on its device; None when
    `a` holds a NaN (no deterministic int8 value)."""
    if isinstance(a, np.ndarray):
        return quantize_host(a, np.float32(scale), np.float32(zero_point))
    with _device(exe).scope() as xp:
        return None if bool(xp.isnan(a).any()) else quantize_xp(xp, a, scale, zero_point)


def dequantize_any(q, scale, zero_point, exe):
    """The boundary dequantize on the host or, for a device array, on its device."""
    if isinstance(q, np.ndarray):
        return dequantize(q, scale, zero_point)
    with _device(exe).scope() as xp:
        return dequantize_xp(xp, q, scale, zero_point)


def to_host(a):
    return a if isinstance(a, np.ndarray) else a.get()


_ONNX_TYPES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.int8): "tensor(int8)",
               np.dtype(np.float16): "tensor(float16)", np.dtype(np.float64): "tensor(double)"}


_NVIDIA = 0x10DE  # PCI vendor id: Synapse's 'cuda' is NVIDIA's


def _device_type(device_type, vendor_id=-1):
    d = str(device_type).lower()
    if d not in ("cpu", "cuda"):
        raise DeviceError(f"device_type={device_type!r}: Synapse has 'cpu' and 'cuda'")
    if int(vendor_id) not in (-1, 0, _NVIDIA):
        raise DeviceError(f"vendor_id={vendor_id!r}: Synapse runs on NVIDIA GPUs ({_NVIDIA:#x})")
    return d


def from_pointer(ptr, shape, element_type, device_type, device_id, exe):
    """An array viewing raw memory (onnxruntime's bind_input/bind_output buffer_ptr)."""
    dtype = np.dtype(element_type)
    n = int(np.prod(shape)) * dtype.itemsize
    if _device_type(device_type) == "cpu":
        buf = (ctypes.c_char * n).from_address(int(ptr))
        return np.frombuffer(buf, dtype=dtype).reshape(tuple(shape))
    if _device(exe) is None:
        raise DeviceError("a 'cuda' buffer needs a session on the CUDA provider")
    return _device(exe).wrap_pointer(int(ptr), tuple(shape), dtype, int(device_id))


class OrtValue:
    """onnxruntime.OrtValue's tensor subset: a numpy array on 'cpu', a device array on 'cuda'."""

    def __init__(self, array, device_type="cpu", device_id=0):
        self._array, self._device = array, (_device_type(device_type), int(device_id))

    @classmethod
    def ortvalue_from_numpy(cls, numpy_obj, /, device_type="cpu", device_id=0, vendor_id=-1):
        if _device_type(device_type, vendor_id) == "cpu":
            return cls(np.asarray(numpy_obj), "cpu", device_id)
        return cls(_gpu(device_id, lambda cp: cp.asarray(numpy_obj)), "cuda", device_id)

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, element_type, device_type="cpu", device_id=0,
                                     vendor_id=-1, memory_info=None):
        if memory_info is not None:
            raise DeviceError("ortvalue_from_shape_and_type: memory_info is not supported; give "
                              "device_type and device_id")
        if _device_type(device_type, vendor_id) == "cpu":
            return cls(np.zeros(tuple(shape), element_type), "cpu", device_id)
        return cls(_gpu(device_id, lambda cp: cp.zeros(tuple(shape), element_type)), "cuda",
                   device_id)

    @classmethod
    def from_dlpack(cls, data):
        if on_gpu(data):
            dev = data.__dlpack_device__()[1]
            return cls(_gpu(dev, lambda cp: cp.from_dlpack(data)), "cuda", dev)
        return cls(np.from_dlpack(data))

    def numpy(self):
        return to_host(self._array)

    def shape(self):
        return list(self._array.shape)

    def element_type(self):
        return np.dtype(self._array.dtype).type

    def data_type(self):
        dt = np.dtype(self._array.dtype)
        if dt not in _ONNX_TYPES:
            raise DtypeError(f"OrtValue of dtype {dt}: no ONNX tensor type here")
        return _ONNX_TYPES[dt]

    def device_name(self):
        return self._device[0]

    def data_ptr(self):
        a = self._array
        return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr

    def is_tensor(self):
        return True

    def has_value(self):
        return True

    def update_inplace(self, np_arr):
        np_arr = np.asarray(np_arr)
        if np_arr.shape != self._array.shape or np_arr.dtype != self._array.dtype:
            raise InputError(f"update_inplace: {np_arr.dtype}{list(np_arr.shape)} does not match "
                             f"{self._array.dtype}{list(self._array.shape)}")
        if isinstance(self._array, np.ndarray):
            self._array[...] = np_arr
        else:
            self._array.set(np_arr)

    def __dlpack__(self, **kwargs):  # torch.from_dlpack(value), cupy.from_dlpack(value)
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def _gpu(device_id, make):
    """make(cupy) on GPU device_id: a 'cuda' OrtValue holds a CuPy array."""
    from .backends.cuda_device import _cupy

    cp = _cupy()
    with cp.cuda.Device(int(device_id)):
        return make(cp)
