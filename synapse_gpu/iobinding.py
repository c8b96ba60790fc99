"""onnxruntime's IOBinding: bind input and output buffers once, run many times.

Inputs may be host arrays, GPU arrays, OrtValues or raw pointers (bind_input, the
PyTorch pattern: buffer_ptr=tensor.data_ptr()). An output's element_type chooses what
it holds: float32 (dequantized, the default) or int8 (the graph's values). Outputs
bound to 'cuda' stay on the GPU; outputs bound to a buffer or an OrtValue are written
into it. Every run is synchronous, so synchronize_* have nothing to wait for.
"""
from __future__ import annotations

import numpy as np

from .arrays import OrtValue, from_pointer
from .errors import DeviceError, DtypeError, InputError, ShapeError
from .options import check_run_options

_ELEMENT = {np.dtype(np.float32): "float32", np.dtype(np.int8): "int8"}


class IOBinding:
    def __init__(self, session):
        self._session = session
        self._inputs = {}
        self._outputs = {}  # name -> (device type, output_type, destination array or None)
        self._results = []

    def bind_cpu_input(self, name, arr_on_cpu):
        self._inputs[name] = arr_on_cpu

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        self._inputs[name] = from_pointer(buffer_ptr, shape, element_type, device_type, device_id,
                                          self._session._exe)

    def bind_ortvalue_input(self, name, ortvalue):
        self._inputs[name] = ortvalue

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None,
                    buffer_ptr=None):
        dest = None
        if buffer_ptr is not None:
            if element_type is None or shape is None:
                raise InputError(f"bind_output({name!r}): element_type and shape are needed "
                                 "with buffer_ptr")
            dest = from_pointer(buffer_ptr, shape, element_type, device_type, device_id,
                                self._session._exe)
        self._bind_output(name, str(device_type).lower(), element_type, dest)

    def bind_ortvalue_output(self, name, ortvalue):
        self._bind_output(name, ortvalue.device_name(), ortvalue.element_type(), ortvalue._array)

    def _bind_output(self, name, device_type, element_type, dest):
        dt = np.dtype(np.float32 if element_type is None else element_type)
        if dt not in _ELEMENT:
            raise DtypeError(f"output {name!r}: element_type {dt}; Synapse gives float32 "
                             "(dequantized) or int8")
        if device_type == "cuda" and self._session.device != "cuda":
            raise DeviceError(f"output {name!r} bound to 'cuda' but the session runs on the CPU")
        if device_type not in ("cpu", "cuda"):
            raise DeviceError(f"output {name!r}: device_type {device_type!r}; Synapse has "
                              "'cpu' and 'cuda'")
        self._outputs[name] = (device_type, _ELEMENT[dt], dest)

    def clear_binding_inputs(self):
        self._inputs.clear()

    def clear_binding_outputs(self):
        self._outputs.clear()

    def synchronize_inputs(self):
        pass

    def synchronize_outputs(self):
        pass

    def run(self, session, run_options=None):
        """session.run_with_iobinding's work: one run, results kept for get_outputs."""
        if session is not self._session:
            raise InputError("IOBinding must be used with the session that created it")
        check_run_options(run_options)
        if not self._outputs:
            raise InputError("run_with_iobinding: bind at least one output")
        on_gpu = any(d == "cuda" for d, _, _ in self._outputs.values())
        r = session.run_full(list(self._outputs), self._inputs, output_type="int8",
                             device_outputs=on_gpu)
        results = []
        for (name, (device, kind, dest)), q in zip(self._outputs.items(), r.outputs):
            y = session._output_as(name, q, kind)
            if device == "cpu" and not isinstance(y, np.ndarray):
                y = y.get()
            if dest is not None:
                if tuple(dest.shape) != tuple(y.shape):
                    raise ShapeError(f"output {name!r} is {list(y.shape)}; the bound buffer is "
                                     f"{list(dest.shape)}")
                dest[...] = y
                y = dest
            results.append(OrtValue(y, device, getattr(session._exe, "device_id", 0) or 0))
        self._results = results

    def get_outputs(self):
        return list(self._results)

    def copy_outputs_to_cpu(self):
        return [v.numpy() for v in self._results]
