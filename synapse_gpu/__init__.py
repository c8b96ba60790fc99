"""Synapse GPU: deterministic int8 inference, bit-identical on every CPU and GPU."""
import os as _os

__version__ = "0.1.0"

# Source tree layout (design card): reference/ and cuda_kernels/ sit beside this
# package. An installed wheel places them inside it (pyproject's package-dir).
# In a source checkout, let the subpackage lookup also see the tree's top level so
# `synapse_gpu.reference` and `synapse_gpu.cuda_kernels` import the same way.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "reference")):
    _top = _os.path.dirname(_here)
    if _os.path.isfile(_os.path.join(_top, "reference", "__init__.py")):
        __path__.append(_top)  # noqa: F821  (package __path__)


# onnxruntime's names, so that `import synapse_gpu as ort` runs onnxruntime code.
_LAZY = {
    "session": ("InferenceSession", "NodeArg", "RunResult", "TraceEntry", "ModelMetadata"),
    "options": ("SessionOptions", "RunOptions", "GraphOptimizationLevel", "ExecutionMode",
                "ExecutionOrder", "set_default_logger_severity", "set_seed"),
    "providers": ("get_available_providers", "get_device", "preload_dlls"),
    "arrays": ("OrtValue",),
    "iobinding": ("IOBinding",),
}


def __getattr__(name):  # keep `import synapse_gpu` light: numpy work starts on use
    import importlib

    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(name)
