"""CUDA backend, kernel variants: which conv/dense kernel each layer runs.

cuda_kernels/conv.cu and dense.cu hold numbered variants next to v1 (their file
headers say what each changes): v2 implicit GEMM with dp4a, v3 the same tiles on
tensor cores (sm_80+), v5 v3 with cp.async double buffering (sm_80+), v4 depthwise
conv2d (conv1d as conv2d); conv, dense and matmul share the GEMM core. Every variant gives
v1's bits (docs/SPEC.md, "GPU kernel variants"), so the choice changes speed only,
never an output or a digest.

The choice is static, per layer shape, never timed at run time:
- forced: prepare(..., variant=...) or SYNAPSE_CUDA_VARIANT, either one variant
  for every family that has it ("v2") or per family ("conv=v3,dense=v2,matmul=v5");
- else a table the GPU benchmark writes (bench/bench_gpu.py): SYNAPSE_CUDA_VARIANT_TABLE
  or the packaged cuda_variants.json, used only on the compute capability it
  was measured on;
- else v1. No table ships until a GPU benchmark shows a variant faster.
A variant that does not apply to a layer falls back: v3 and v5 to v2 below sm_80
(the tensor-core mma.sync m16n8k32 s8 and cp.async need sm_80), v4 to v1 for a conv that is not
depthwise 1-D/2-D or whose input patch exceeds the kernel's shared memory, v2/v3 to
v1 past 32-bit tile coordinates (K or pixels >= 2^31).

v6 (conv only, forced only) is the channels-last conv: Layout below keeps runs of
ops that have a channels-last form in NHWC buffers of their own and converts at
the runs' edges.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..reference.conv import resolve_pads
from .cuda_lowering import Act, Launch, Param, Table, _lower_matmul, _qrange, check_launch, lower

ENV = "SYNAPSE_CUDA_VARIANT"
TABLE_ENV = "SYNAPSE_CUDA_VARIANT_TABLE"
PACKAGED_TABLE = Path(__file__).with_name("cuda_variants.json")
FAMILY_OF = {"conv1d": "conv", "conv2d": "conv", "conv3d": "conv", "dense": "dense",
             "matmul": "matmul"}
VARIANTS = {"conv": ("v1", "v2", "v3", "v4", "v5", "v6"), "dense": ("v1", "v2", "v3", "v5"),
            "matmul": ("v1", "v2", "v3", "v5")}
ALL = sorted(set().union(*VARIANTS.values()))
GEMM = ("v2", "v3", "v5")  # the variants on the implicit-GEMM core (synapse_igemm.cuh)
SM80 = ("v3", "v5")  # mma.sync m16n8k32 s8, cp.async
KERNELS = frozenset({"conv2d_v4", "conv_v6",
                     *(f"{f}_{v}" for f in ("conv", "dense", "matmul") for v in GEMM)})
THREADS = 256  # the variants' block size (cuda_device.BLOCK)
TILE = 64      # synapse_igemm.cuh: SYN_TM = SYN_TP
DW_TILE, DW_PATCH, DW_TAPS = 16, 4096, 1024  # conv.cu: SYN_DW_*


def parse_force(text):
    """"v2" -> {"conv": "v2", "dense": "v2", "matmul": "v2"}; "conv=v3,dense=v2" -> per
    family. OptionError for an unknown family or variant (the environment variable and
    the session option synapse.cuda_variant read the same text)."""
    if not text:
        return {}
    out = {}
    for part in str(text).split(","):
        fam, _, v = part.strip().rpartition("=")
        fams = [fam] if fam else list(VARIANTS)
        for f in fams:
            if f not in VARIANTS:
                raise OptionError(f"{ENV}: unknown kernel family {f!r} ({', '.join(VARIANTS)})")
            if v not in VARIANTS[f] and fam:
                raise OptionError(f"{ENV}: {f} has variants {', '.join(VARIANTS[f])}, not {v!r}")
            if v not in ALL:
                raise OptionError(f"{ENV}: unknown variant {v!r}")
            if v in VARIANTS[f]:
                out[f] = v
    return out


def _conv_geometry(node, S, P):
    a, xs, ys, ws = node.attrs, S[node.inputs[0]], S[node.outputs[0]], P["w"].shape
    nd = len(xs) - 2
    strides = [int(v) for v in a.get("strides") or [1] * nd]
    dil = [int(v) for v in a.get("dilations") or [1] * nd]
    pads = resolve_pads(a.get("pads") or [0] * (2 * nd), xs[2:], ws[2:], strides, dil)[:nd]
    lead = 3 - nd  # 1-D and 2-D as 3-D with unit leading axes

    def fill(v, unit):
        return [unit] * lead + [int(t) for t in v]

    return dict(N=xs[0], C=xs[1], sp=fill(xs[2:], 1), M=ws[0], osp=fill(ys[2:], 1),
                k=fill(ws[2:], 1), s=fill(strides, 1), p=fill(pads, 0), d=fill(dil, 1),
                group=int(a.get("group", 1)))


def shape_key(node, S, P):
    """The table's key of a layer: op and shape without the batch size."""
    if node.op == "dense":
        xs = S[node.inputs[0]]
        return f"dense:K={xs[-1]}:M={S[node.outputs[0]][-1]}:t={int(bool(node.attrs.get('trans_w', 0)))}"
    if node.op == "matmul":
        return f"matmul:a={list(S[node.inputs[0]][1:])}:b={list(S[node.inputs[1]][1:])}"
    g = _conv_geometry(node, S, P)
    return (f"{node.op}:C={g['C']}:M={g['M']}:in={g['sp']}:k={g['k']}:s={g['s']}:p={g['p']}"
            f":d={g['d']}:g={g['group']}")


def _params(node, buffers):
    return {r: buffers[b] for r, b in node.params.items()}


def _wrap32(v):
    return ((np.asarray(v, np.int64) + 2 ** 31) % 2 ** 32 - 2 ** 31).tolist()


def _corr(P, wsum, K, zx):
    """bias - z_x sum_k w + K z_x z_w per channel, modulo 2^32 (synapse_igemm.cuh)."""
    zw = P["w_zero_point"].astype(np.int64)
    return Table(tuple(_wrap32(P["bias"].astype(np.int64) - zx * wsum + K * zx * zw)))


def _requant_params(node):
    return (Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"),
            Param(node.params["w_zero_point"], "int32"))


def _gemm_fits(K, pixels):
    return K < 2 ** 31 and pixels < 2 ** 31


def _blocks(groups, rows, pixels):
    return groups * -(-rows // TILE) * -(-pixels // TILE)


def _lower_conv_gemm(node, S, P, v):
    g, a = _conv_geometry(node, S, P), node.attrs
    K = math.prod(P["w"].shape[1:])
    pixels = g["N"] * math.prod(g["osp"])
    if not _gemm_fits(K, pixels):
        return None
    zx = int(a["x_zero_point"])
    wsum = P["w"].reshape(g["M"], -1).astype(np.int64).sum(axis=1)
    n = _blocks(g["group"], g["M"] // g["group"], pixels) * THREADS
    return [Launch(f"conv_{v}", n, (
        Act(node.inputs[0]), Param(node.params["w"], "int8"), _corr(P, wsum, K, zx),
        *_requant_params(node), Act(node.outputs[0]), g["N"], g["C"], *g["sp"], g["M"],
        *g["osp"], *g["k"], *g["s"], *g["p"], *g["d"], g["group"], zx,
        int(a["y_zero_point"]), *_qrange(a)))]


def _depthwise_fits(g):
    if g["sp"][0] != 1 or g["k"][0] != 1 or g["group"] != g["C"] or g["M"] % g["C"]:
        return False
    rows = (DW_TILE - 1) * g["s"][1] + (g["k"][1] - 1) * g["d"][1] + 1
    cols = (DW_TILE - 1) * g["s"][2] + (g["k"][2] - 1) * g["d"][2] + 1
    return rows * cols <= DW_PATCH and g["k"][1] * g["k"][2] <= DW_TAPS


def _lower_depthwise(node, S, P):
    g, a = _conv_geometry(node, S, P), node.attrs
    if node.op == "conv3d" or not _depthwise_fits(g):
        return None
    (_, OH, OW) = g["osp"]
    n = g["N"] * g["M"] * -(-OH // DW_TILE) * -(-OW // DW_TILE) * THREADS
    return [Launch("conv2d_v4", n, (
        Act(node.inputs[0]), Param(node.params["w"], "int8"), Param(node.params["bias"], "int32"),
        Param(node.params["multiplier"], "int64"), Param(node.params["shift"], "int64"),
        Param(node.params["w_zero_point"], "int32"), Act(node.outputs[0]),
        g["N"], g["C"], *g["sp"][1:], g["M"], *g["osp"][1:], *g["k"][1:], *g["s"][1:],
        *g["p"][1:], *g["d"][1:], g["group"], int(a["x_zero_point"]), int(a["y_zero_point"]),
        *_qrange(a)))]


def _lower_dense_gemm(node, S, P, v):
    a, xs, ys = node.attrs, S[node.inputs[0]], S[node.outputs[0]]
    rows, K, M = math.prod(xs[:-1]), xs[-1], ys[-1]
    if not _gemm_fits(K, rows):
        return None
    trans = int(bool(a.get("trans_w", 0)))
    zx = int(a["x_zero_point"])
    wsum = P["w"].astype(np.int64).sum(axis=1 if trans else 0)
    return [Launch(f"dense_{v}", _blocks(1, M, rows) * THREADS, (
        Act(node.inputs[0]), Param(node.params["w"], "int8"), _corr(P, wsum, K, zx),
        *_requant_params(node), Act(node.outputs[0]), rows, K, M, trans, zx,
        int(a["y_zero_point"]), *_qrange(a)))]


def _lower_matmul_gemm(node, S, P, v):
    (v1,) = _lower_matmul(node, S, P)  # the same arguments, tiled per batch matrix
    sa, ys = S[node.inputs[0]], S[node.outputs[0]]
    M, K, N = sa[-2], sa[-1], ys[-1]
    if not (_gemm_fits(K, N) and M < 2 ** 31):
        return None
    return [replace(v1, kernel=f"matmul_{v}", n=_blocks(math.prod(ys[:-2]), M, N) * THREADS)]


_LOWER_GEMM = {"conv": _lower_conv_gemm, "dense": _lower_dense_gemm, "matmul": _lower_matmul_gemm}


def load_table(path=None):
    """{"compute_capability": "90", "device": ..., "layers": {shape_key: variant}} or None."""
    path = path or os.environ.get(TABLE_ENV) or (PACKAGED_TABLE if PACKAGED_TABLE.exists() else None)
    if not path:
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


class Chooser:
    """Per node: a variant's launches, or None where v1 runs (cuda_lowering.lower).

    force: a parse_force() string or dict (None: SYNAPSE_CUDA_VARIANT); cc: the
    device's compute capability ("80"), None where unknown (tensor cores not assumed).
    """

    def __init__(self, force=None, cc=None, table=None):
        if force is None:
            force = os.environ.get(ENV, "")
        self.force = parse_force(force) if isinstance(force, str) else dict(force)
        self.cc = int(cc) if cc else None
        self.table = load_table() if table is None else table
        self.chosen = {}  # node name -> variant that ran (v1 included)
        self.layout = None  # the Layout of the plan being lowered (conv v6 forced)

    def variant(self, node, S, P):
        """The variant asked for this node (before fallbacks)."""
        fam = FAMILY_OF[node.op]
        if fam in self.force:
            return self.force[fam]
        t = self.table
        if t and self.cc is not None and str(t.get("compute_capability")) == str(self.cc):
            return t.get("layers", {}).get(shape_key(node, S, P), "v1")
        return "v1"

    def __call__(self, node, S, P):
        if node.op not in FAMILY_OF:
            return None
        v = self.variant(node, S, P)
        if v == "v6":  # lowered by the layout pass, channels-last
            steps = self.layout.v6.get(node.name) if self.layout else None
            self.chosen[node.name] = "v6" if steps else "v1"
            return steps
        if v in SM80 and (self.cc is None or self.cc < 80):
            v = "v2"
        steps = None
        if v == "v4":
            steps = _lower_depthwise(node, S, P)
        elif v in GEMM:
            steps = _LOWER_GEMM[FAMILY_OF[node.op]](node, S, P, v)
        self.chosen[node.name] = v if steps else "v1"
        return steps

    def plan_layout(self, order, shapes, buffers, outputs):
        """Start lowering a plan: {NHWC buffer name: shape} the plan must allocate ({}
        unless conv v6 is forced: then the Layout pass runs)."""
        self.layout = None
        if self.force.get("conv") != "v6":
            return {}
        self.layout = Layout(order, shapes, lambda n: _params(n, buffers), outputs)
        return self.layout.shapes

    def lower(self, node, shapes, buffers):
        """A node's variant launches, checked against the kernel signatures, or None (v1:
        cuda_lowering.lower)."""
        steps = self(node, shapes, _params(node, buffers))
        out = node.outputs[0]
        if self.layout is not None and node.name in self.layout.nhwc:
            steps = self.layout.steps(node, shapes, steps or lower(node, shapes, buffers))
            self.chosen[node.name] = "v6" if node.op in CONVS else "nhwc"
            out += NHWC  # the node's launches write its channels-last copy
        for s in steps or ():  # a conversion writes its destination (_convert: args[1])
            check_launch(s, s.args[1].name if s.kernel in (TO_NHWC, TO_NCHW) else out)
        return steps



# Ops with a channels-last form besides the v6 conv: elementwise ops whose operands
# all share the output's layout (add: no broadcast).
AGNOSTIC = frozenset({"relu", "clip", "requantize", "lut", "add"})
CONVS = ("conv1d", "conv2d", "conv3d")
NHWC = "#nhwc"  # a tensor's channels-last copy: the name of its own buffer
TO_NHWC, TO_NCHW = "nchw_to_nhwc_v1", "nhwc_to_nchw_v1"  # layout.cu: conversions, not ops


def _convert(kernel, t, S, src, dst):
    """nchw_to_nhwc_v1 / nhwc_to_nchw_v1 of tensor t: (N, C, S) <-> (N, S, C)."""
    shape = S[t]
    return Launch(kernel, math.prod(shape), (Act(src), Act(dst), shape[0], shape[1],
                                              math.prod(shape[2:])))


def _renamed(step, names):
    """A launch with its activations renamed (t -> its NHWC copy)."""
    return replace(step, args=tuple(Act(names.get(a.name, a.name)) if isinstance(a, Act) else a
                                    for a in step.args))


class Layout:
    """The layout pass of one plan (one batch size) when conv v6 is forced: which nodes
    run channels-last, the conversions at the edges of their runs, their NHWC buffers.

    A conv with a v6 lowering runs channels-last; so does an AGNOSTIC op whose inputs
    all have channels-last copies (results of such nodes, or a v6 conv's converted
    input) of its output's shape (no broadcast). A channels-first input of a v6 conv
    is converted before its first such conv (once); a channels-last result is
    converted back right after its node where a channels-first op or the graph's
    output reads it, else only on trace runs (a trace shows every node's output
    channels-first, the same bits as without v6). The NHWC buffers are the plan's
    own, outside the core's slot plan.
    """

    def __init__(self, order, S, params, outputs):
        self.nhwc = set()  # nodes that run channels-last
        self.v6 = {}  # conv name -> its v6 launches (on channels-first names)
        made, copied = set(), set()  # tensors produced channels-last / converted in
        for node in order:
            if node.op in CONVS:
                steps = _lower_conv_gemm(node, S, params(node), "v6")
                ok = steps is not None
                if ok:
                    self.v6[node.name] = steps
                copied.update(t for t in node.inputs if ok and t not in made)
            else:
                ok = node.op in AGNOSTIC and all(t in made | copied and S[t] == S[node.outputs[0]]
                                                 for t in node.inputs)
            if ok:
                self.nhwc.add(node.name)
                made.update(node.outputs)
        read_nchw = {t for n in order if n.name not in self.nhwc for t in n.inputs}
        self.back = (read_nchw | set(outputs)) & made  # converted back for every run
        self.made = made
        self.shapes = {t + NHWC: (S[t][0], *S[t][2:], S[t][1])
                       for n in order if n.name in self.nhwc for t in (*n.inputs, *n.outputs)}
        self._in = set()  # channels-first tensors converted in so far (lowering order)

    def steps(self, node, S, variant_steps):
        """A channels-last node's launches (variant_steps: its v6 or v1 launches, on
        channels-first names) on the NHWC copies, with the conversions around it."""
        names = {t: t + NHWC for t in (*node.inputs, *node.outputs)}
        out = [_convert(TO_NHWC, t, S, t, names[t])
               for t in node.inputs if t not in self.made and t not in self._in]
        self._in.update(node.inputs)
        out += [_renamed(s, names) for s in variant_steps]
        y = node.outputs[0]
        back = _convert(TO_NCHW, y, S, names[y], y)
        out.append(back if y in self.back else replace(back, trace_only=True))
        return out
