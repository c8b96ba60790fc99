"""Backends by name: "cpu" (numpy, always there) and "cuda" (CuPy, optional).

A backend module exposes prepare(graph, traversal) -> executable with
run(feeds, trace) -> (outputs, trace_steps). The CPU path never imports CuPy.
"""
from __future__ import annotations

import importlib
import warnings

from ..errors import DeviceError

_notified = False


def cuda_status():
    """(available, reason) without raising; imports the CUDA backend lazily."""
    try:
        cuda = importlib.import_module("synapse_gpu.backends.cuda")
    except ImportError as e:  # the module itself is part of the package
        return False, f"CUDA backend failed to import: {e}"
    return cuda.is_available()


def select(device):
    """Return the backend module for "cpu", "cuda" or "auto"."""
    global _notified
    if device == "cpu":
        return importlib.import_module("synapse_gpu.backends.cpu")
    if device in ("cuda", "gpu"):
        ok, reason = cuda_status()
        if not ok:
            raise DeviceError(f"device='cuda' requested but CUDA is not usable: {reason}")
        return importlib.import_module("synapse_gpu.backends.cuda")
    if device == "auto":
        ok, reason = cuda_status()
        if ok:
            return importlib.import_module("synapse_gpu.backends.cuda")
        if not _notified:
            _notified = True
            warnings.warn(f"synapse_gpu: no usable GPU ({reason}); running on the CPU "
                          "(same bits, slower)", RuntimeWarning, stacklevel=3)
        return importlib.import_module("synapse_gpu.backends.cpu")
    raise DeviceError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'")
