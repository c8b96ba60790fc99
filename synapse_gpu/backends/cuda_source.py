"""CUDA backend, kernel loading: the .cu sources as CuPy compiles them.

The families of cuda_kernels/, each family's source text with its local includes
inlined (exactly what CuPy's RawModule receives, and what the NVRTC and emulator
tests compile), the NVRTC options, and every kernel's parameter kinds parsed from
that text (which lowering checks its argument packing against).
"""
from __future__ import annotations

import functools
import importlib.resources
import re

FAMILIES = ("conv", "dense", "elementwise", "pool", "shape", "softmax", "take", "lrn", "layernorm", "resize",
            "embedding", "layout")
# What the backend adds to CuPy's own options (CuPy appends -ftz=true and the
# device's architecture); no -arch here, so CuPy picks the device's own.
NVRTC_OPTIONS = ("-std=c++17",)

_INCLUDE = re.compile(r'^#include "([^"]+)"[ \t]*$', re.M)
_KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
# A parameter list several variants share is a macro (conv.cu: SYN_CONV_GEMM_PARAMS).
_DEFINE = re.compile(r'^#define (\w+)[ \t]+((?:[^\n]*\\\n)*[^\n]*)', re.M)
_PARAM_KINDS = {"i8*": "i8*", "int*": "i32*", "i64*": "i64*", "i64": "i64"}


def _kernel_files():
    return importlib.resources.files("synapse_gpu.cuda_kernels")


@functools.lru_cache(maxsize=None)
def kernel_source(family):
    """The family's .cu text with its local includes inlined (CuPy's disk cache keys
    on the source text, so a header change must change the text it compiles)."""
    files = _kernel_files()

    def inline(text, seen):
        def one(m):
            name = m.group(1)
            if name in seen:  # the header's guard would drop it anyway
                return ""
            return inline((files / name).read_text(encoding="utf-8"), seen | {name})
        return _INCLUDE.sub(one, text)

    return inline((files / f"{family}.cu").read_text(encoding="utf-8"), frozenset())


@functools.lru_cache(maxsize=None)
def kernel_signatures():
    """{kernel name: (family, [parameter kind...])} parsed from the .cu sources.

    Kinds: "i8*" / "i32*" / "i64*" (const input pointers), "out" (the one non-const
    pointer: int8 output), "i64" (a scalar).
    """
    sigs = {}
    for family in FAMILIES:
        text = kernel_source(family)
        macros = {k: v.replace("\\\n", " ") for k, v in _DEFINE.findall(text)}
        for name, params in _KERNEL.findall(text):
            params = macros.get(params.strip(), params)
            kinds = []
            for p in params.split(","):
                words = p.replace("*", " * ").split()[:-1]  # drop the parameter name
                t = "".join(w for w in words if w != "const")
                if t not in _PARAM_KINDS:
                    raise ValueError(f"{family}.cu: {name}: unexpected parameter type {p.strip()!r}")
                kind = _PARAM_KINDS[t]
                kinds.append("out" if kind == "i8*" and "const" not in words else kind)
            sigs[name] = (family, kinds)
    return sigs
