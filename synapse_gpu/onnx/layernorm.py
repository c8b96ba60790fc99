"""LayerNormalization, InstanceNormalization, GroupNormalization -> the `layernorm` op
(reference/layernorm.py: integer mean and variance, integer square root, per-element
requantization). InstanceNormalization normalizes each (sample, channel) row of the
spatial axes with its channel's gain (K = C, m = 1); GroupNormalization views (N, C, *sp)
as (N, G, C/G * sp) rows, each element with its channel's gain (K = G, m = n), and
reshapes back. All three keep the batch axis out of every row.

quantize_static (QDQ) leaves it between a DequantizeLinear and a QuantizeLinear, with
its Scale a DequantizeLinear of int8 weights and its B a DequantizeLinear of int32: the
rule takes their real values (float32) and rescales them once, at the output scale
that the QuantizeLinear gives. A mixin of importer._Importer.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import helper

from .. import build
from ..errors import ModelFormatError, UnsupportedOpError
from ..reference.layernorm import layernorm_params
from .checks import label
from .values import Pending


class LayerNormOps:
    def _LayerNormalization(self, node):
        if any(node.output[1:]):
            self._fail(node, "the Mean / InvStdDev outputs are training outputs",
                       exc=UnsupportedOpError)
        x = self._deq(node, 0)
        shape = self.b.shapes[self._deq_t(x)]
        a = self._attrs(node)
        axis = int(a.get("axis", -1)) % len(shape)
        if axis == 0:
            self._fail(node, "normalizes over axis 0, the batch: samples would mix",
                       exc=UnsupportedOpError)
        inner = tuple(shape[axis:])
        n = math.prod(inner)

        def per_element(i, what, default):
            if len(node.input) <= i or not node.input[i]:
                return np.full(n, default, np.float32)
            v = self._float_param(node, i, what)
            try:
                return np.broadcast_to(v, inner).reshape(-1)
            except ValueError:
                self._fail(node, f"{what} of shape {list(v.shape)} does not broadcast to the "
                                 f"normalized shape {list(inner)}", exc=UnsupportedOpError)
        gamma, beta = per_element(1, "scale", 1.0), per_element(2, "bias", 0.0)
        eps = float(a.get("epsilon", 1e-5))

        def emit(ys, yz, qmin, qmax):
            xt = self._deq_t(x)
            p, at = self._ln_params(node, gamma, beta, eps, xt, ys, n)
            return self._layernorm_node(node, xt, axis, p, at, ys, yz, qmin, qmax)
        return Pending(node, emit)

    def _layernorm_node(self, node, x, axis, params, attrs, ys, yz, qmin, qmax, name=None):
        return self.b.add_node("layernorm", [x], attrs=dict(
            axis=axis, x_zero_point=int(self.b.quant[x][1]), y_zero_point=int(yz),
            qmin=int(qmin), qmax=int(qmax), **attrs), params=params,
            name=name or label(node), out_quant=(ys, yz))

    def _norm_channels(self, node):
        """(x, shape, eps, gamma (C,), beta (C,)) of Instance/GroupNormalization."""
        x = self._deq(node, 0)
        shape = self.b.shapes[self._deq_t(x)]
        if len(shape) < 3:
            self._fail(node, f"input {list(shape)} has no spatial axis", exc=ModelFormatError)
        C = shape[1]
        groups = int(self._attrs(node).get("num_groups", C))
        if C % groups:
            self._fail(node, f"{C} channels in {groups} groups", exc=ModelFormatError)
        per = groups if node.op_type == "GroupNormalization" and self.opset < 21 else C
        gamma, beta = (self._float_param(node, i, w).reshape(-1) for i, w in
                       ((1, "scale"), (2, "bias")))
        if gamma.size != per or beta.size != per:
            self._fail(node, f"scale and bias need {per} values, got {gamma.size} and "
                             f"{beta.size}", exc=ModelFormatError)
        gamma, beta = (np.repeat(v, C // per) for v in (gamma, beta))
        return x, shape, float(self._attrs(node).get("epsilon", 1e-5)), gamma, beta, groups

    def _InstanceNormalization(self, node):
        x, shape, eps, gamma, beta, _ = self._norm_channels(node)
        n = math.prod(shape[2:])

        def emit(ys, yz, qmin, qmax):
            xt = self._deq_t(x)
            p, at = self._ln_params(node, gamma.reshape(-1, 1), beta.reshape(-1, 1), eps,
                                    xt, ys, n)
            return self._layernorm_node(node, xt, 2, p, at, ys, yz, qmin, qmax)
        return Pending(node, emit)

    def _GroupNormalization(self, node):
        x, shape, eps, gamma, beta, G = self._norm_channels(node)
        sp = math.prod(shape[2:])
        n = shape[1] // G * sp

        def emit(ys, yz, qmin, qmax):
            xt = build.reshape(self.b, self._deq_t(x), [G, n], name=f"{label(node)}.groups")
            per_el = np.repeat(gamma, sp).reshape(G, n), np.repeat(beta, sp).reshape(G, n)
            p, at = self._ln_params(node, *per_el, eps, xt, ys, n)
            y = self._layernorm_node(node, xt, 2, p, at, ys, yz, qmin, qmax,
                                     name=f"{label(node)}.norm")
            return build.reshape(self.b, y, list(shape[1:]), name=label(node))
        return Pending(node, emit)

    def _ln_params(self, node, gamma, beta, eps, xt, ys, n):
        try:
            return layernorm_params(gamma, beta, eps, self.b.quant[xt][0], ys, n)
        except ValueError as e:
            self._fail(node, str(e), exc=UnsupportedOpError)


def fuse_decomposed(proto, order):
    """The topological order with each decomposed layer norm (older exporters, opset < 17)
    replaced by one LayerNormalization node (proto is only read):

        mu = ReduceMean(x); c = x - mu; var = ReduceMean(c^2)   (the same trailing axes)
        z = c / Sqrt(var + eps) [* gamma] [+ beta]               (eps, gamma, beta constant)

    looking through the QuantizeLinear -> DequantizeLinear pairs quantize_static puts on
    the Add/Mul tensors: the integer rule computes the whole block exactly instead of
    quantizing the variance and the normalized value in between.
    """
    return _Decomposed(proto, order).run()


class _Decomposed:
    def __init__(self, proto, order):
        self.order = order
        self.inits = {t.name: t for t in proto.graph.initializer}
        self.producer = {o: n for n in order for o in n.output}
        self.readers = {}
        for n in order:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in proto.graph.output}

    def run(self):
        new, drop = {}, set()
        for n in self.order:
            if n.op_type == "Div" and id(n) not in drop:
                found = self._match(n)
                if found is not None:
                    node, members = found
                    new[id(members[-1])] = node
                    drop |= {id(m) for m in members}
        if not new:
            return self.order
        return [new.get(id(n), n) for n in self.order if id(n) not in drop or id(n) in new]

    def _src(self, t, seen):
        """t with Q -> DQ pairs looked through (the pair's nodes recorded in seen)."""
        while True:
            dq = self.producer.get(t)
            q = self.producer.get(dq.input[0]) if dq is not None and \
                dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                return t
            seen += [q, dq]
            t = q.input[0]

    def _op(self, t, op, seen):
        n = self.producer.get(self._src(t, seen))
        if n is None or n.op_type != op:
            return None
        seen.append(n)
        return n

    def _const(self, t):
        """A scalar or vector constant's float value: initializer, or DequantizeLinear of one."""
        from onnx import numpy_helper
        if t in self.inits:
            v = numpy_helper.to_array(self.inits[t])
            return v.astype(np.float64) if v.dtype.kind == "f" else None
        n = self.producer.get(t)
        if n is not None and n.op_type == "DequantizeLinear" and n.input[0] in self.inits \
                and all(i in self.inits for i in n.input[1:] if i):
            q = numpy_helper.to_array(self.inits[n.input[0]]).astype(np.float64)
            s = numpy_helper.to_array(self.inits[n.input[1]]).astype(np.float64)
            z = numpy_helper.to_array(self.inits[n.input[2]]).astype(np.float64) \
                if len(n.input) > 2 and n.input[2] else 0.0
            return (q - z) * s if np.ndim(s) == 0 else None
        return None

    def _axes(self, n):
        """The reduced axes if they are the trailing ones, given as negative numbers."""
        from onnx import numpy_helper
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        axes = a.get("axes")
        if axes is None and len(n.input) > 1 and n.input[1] in self.inits:
            axes = numpy_helper.to_array(self.inits[n.input[1]])
        axes = sorted(int(v) for v in np.ravel(axes if axes is not None else []))
        keep = {x.name: x.i for x in n.attribute}.get("keepdims", 1)
        return axes if axes and keep and axes == list(range(-len(axes), 0)) else None

    def _match(self, div):
        seen = [div]
        c, sd = div.input
        sqrt = self._op(sd, "Sqrt", seen)
        add = sqrt and self._op(sqrt.input[0], "Add", seen)
        if not add:
            return None
        var_t, eps_t = add.input if self._const(add.input[1]) is not None else add.input[::-1]
        eps = self._const(eps_t)
        var = self._op(var_t, "ReduceMean", seen)
        sq = var and (self._op(var.input[0], "Pow", seen) or self._op(var.input[0], "Mul", seen))
        if eps is None or eps.size != 1 or not sq:
            return None
        if sq.op_type == "Pow" and not np.array_equal(self._const(sq.input[1]), 2.0) or \
                sq.op_type == "Mul" and sq.input[0] != sq.input[1]:
            return None
        sub = self._op(sq.input[0], "Sub", seen)
        if not sub or self._src(c, seen) != sub.output[0]:
            return None
        mu = self._op(sub.input[1], "ReduceMean", seen)
        if not mu or mu.input[0] != sub.input[0] or self._axes(mu) is None or \
                self._axes(mu) != self._axes(var):
            return None
        end, gamma, beta = div.output[0], "", ""
        for op in ("Mul", "Add"):
            nxt = self._single_reader(end, seen)
            if nxt is None or nxt.op_type != op:
                break
            other = [i for i in nxt.input if self._src(i, []) != end]
            if len(other) != 1 or self._const(other[0]) is None:
                break
            seen += [nxt] + [r for r in self._chain(end)]
            end = nxt.output[0]
            gamma, beta = (other[0], beta) if op == "Mul" else (gamma, other[0])
        inner = {o for n in seen for o in n.output} - {end}
        members = {id(n) for n in seen}
        if any(t in self.outputs or any(id(r) not in members for r in self.readers.get(t, []))
               for t in inner):
            return None
        node = helper.make_node("LayerNormalization", [sub.input[0], gamma, beta], [end],
                                name=div.name or None, axis=min(self._axes(mu)),
                                epsilon=float(eps.reshape(-1)[0]))
        members = sorted(seen, key=lambda n: self.order.index(n))
        return node, members

    def _chain(self, t):
        """The Q -> DQ pair(s) that read t on the way to its single float reader."""
        out = []
        while True:
            rs = self.readers.get(t, [])
            if len(rs) != 1 or rs[0].op_type != "QuantizeLinear":
                return out
            dqs = self.readers.get(rs[0].output[0], [])
            if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear":
                return out
            out += [rs[0], dqs[0]]
            t = dqs[0].output[0]

    def _single_reader(self, t, seen):
        pair = self._chain(t)
        t = pair[-1].output[0] if pair else t
        rs = self.readers.get(t, [])
        return rs[0] if len(rs) == 1 else None
