"""Attribute and parameter schemas: what a node may carry, as data.

Each op in opdefs.OPS declares every attribute (kind, integer range, required or
not) and every parameter (dtypes, value range). `check_attrs` / `check_param`
refuse anything else: an unknown attribute, a wrong type, a value out of range.
A graph that passes can be trusted by every backend: an int8 zero point or clamp
never wraps, a multiplier times an accumulator never leaves int64, a shift is one
the requantization rule defines, so the reference and all backends compute the
same thing (docs/SPEC.md, "Load-time validation").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT8 = (-128, 127)
# requant's m is a float32 significand and k = 24 - exponent of a finite float32
# M >= 0 (reference/requant.py:quantize_multiplier): 2^-149 <= M < 2^128.
MULTIPLIER = (0, (1 << 24) - 1)
SHIFT = (-104, 172)
# add's integers from reference/elementwise.py:add_params: A, B < 2^51 and |fixed| < 2^59
# keep every sum of its rule below 2^61; 0 <= K <= 62.
ADD_MULTIPLIER = (0, (1 << 51) - 1)
ADD_FIXED = (-(1 << 59) + 1, (1 << 59) - 1)
ADD_SHIFT = (0, 62)
DIM = (1, 1 << 16)  # kernel, stride, dilation: far above any real model, no int64 risk
PAD = (0, 1 << 24)  # the static resource bounds refuse what large pads would allocate
MAX_RANK = 8  # numpy handles 32 axes at most; no model needs more than 8
AXIS = (-MAX_RANK, MAX_RANK - 1)


def is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _show(v):
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


@dataclass(frozen=True)
class Int:
    """One integer in [lo, hi]."""

    lo: int
    hi: int
    required: bool = True

    def error(self, v):
        if not is_int(v):
            return f"must be an integer, got {_show(v)}"
        if not self.lo <= v <= self.hi:
            return f"{int(v)} is outside [{self.lo}, {self.hi}]"
        return None


@dataclass(frozen=True)
class Ints:
    """A list of integers, each in [lo, hi], at most max_len of them (lengths that
    depend on the input's rank are checked by the op's shape rule)."""

    lo: int
    hi: int
    required: bool = True
    max_len: int = MAX_RANK

    def error(self, v):
        if not isinstance(v, (list, tuple)):
            return f"must be a list of integers, got {_show(v)}"
        if len(v) > self.max_len:
            return f"has {len(v)} entries, at most {self.max_len} allowed"
        for i, x in enumerate(v):
            e = Int(self.lo, self.hi).error(x)
            if e:
                return f"entry {i} {e}"
        return None


@dataclass(frozen=True)
class Str:
    """A string; one of `choices` when given (else informational, e.g. lut's fn)."""

    choices: tuple = ()
    required: bool = True

    def error(self, v):
        if not isinstance(v, str) or len(v) > 256:
            return f"must be a string (at most 256 characters), got {_show(v)}"
        if self.choices and v not in self.choices:
            return f"{v!r} is not one of {list(self.choices)}"
        return None


@dataclass(frozen=True)
class Param:
    """A parameter buffer: allowed dtypes and, where the rule needs one, a value range."""

    dtypes: tuple
    lo: int | None = None
    hi: int | None = None

    def error(self, a):
        if a.dtype not in self.dtypes:
            return f"has dtype {a.dtype}, expected {' or '.join(str(d) for d in self.dtypes)}"
        if self.lo is not None and a.size and (a.min() < self.lo or a.max() > self.hi):
            return (f"has values in [{a.min()}, {a.max()}], outside [{self.lo}, {self.hi}] "
                    f"where its integer rule is defined")
        return None


def attrs_error(attrs, spec):
    """The first problem of a node's attributes against its op's spec, or None."""
    if not isinstance(attrs, dict):
        return f"attrs must be a mapping, got {_show(attrs)}"
    unknown = sorted(str(k) for k in attrs if k not in spec)
    if unknown:
        return f"unknown attrs {unknown} (this op takes {sorted(spec)})"
    missing = [k for k, s in spec.items() if s.required and k not in attrs]
    if missing:
        return f"missing attrs {missing}"
    for k, v in attrs.items():
        e = spec[k].error(v)
        if e:
            return f"attr {k} {e}"
    if attrs.get("qmin", INT8[0]) > attrs.get("qmax", INT8[1]):
        return f"clamp qmin {attrs['qmin']} > qmax {attrs['qmax']}"
    return None
