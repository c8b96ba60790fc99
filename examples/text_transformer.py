"""A small quantized transformer text classifier, int64 token ids in, end to end.

    python examples/text_transformer.py [OUT_DIR] [--samples 300]

Builds a 2-layer transformer encoder classifier with onnx.helper (no torch needed:
vocab 1000, 16 tokens, d_model 64, 4 heads, FFN 128 with GELU (the Erf form torch
exports), post-norm LayerNormalization, mean pool, 4 classes; random weights from a
fixed seed), quantizes it with onnxruntime's quantize_static (QDQ, uint8 activations,
int8 weights) on random token batches, imports it into Synapse and prints the
agreement of Synapse's int8 logits with onnxruntime's on random sequences.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from onnx import TensorProto, helper, numpy_helper

VOCAB, SEQ, D_MODEL, HEADS, FFN, CLASSES, LAYERS = 1000, 16, 64, 4, 128, 4, 2
OPSET = 17


def float_model(seed=0, vocab=VOCAB, seq=SEQ, d=D_MODEL, heads=HEADS, ffn=FFN, classes=CLASSES,
                layers=LAYERS, pool="mean"):
    """The float32 classifier as an onnx.ModelProto: tokens (N, seq) int64 -> logits (N, classes)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    dh = d // heads

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def weight(name, *shape, scale=None):
        s = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        return const(name, (rng.standard_normal(shape) * s).astype(np.float32))

    def op(kind, ins, name, **attrs):
        nodes.append(helper.make_node(kind, ins, [name], name=name, **attrs))
        return name

    def linear(x, name, k, m):
        y = op("MatMul", [x, weight(f"{name}.w", k, m)], f"{name}.mm")
        return op("Add", [y, weight(f"{name}.b", m, scale=0.1)], name)

    def layer_norm(x, name):
        g = const(f"{name}.g", (1 + 0.1 * rng.standard_normal(d)).astype(np.float32))
        b = const(f"{name}.b", (0.1 * rng.standard_normal(d)).astype(np.float32))
        return op("LayerNormalization", [x, g, b], name, axis=-1, epsilon=1e-5)

    def heads_first(x, name, perm):
        r = op("Reshape", [x, const(f"{name}.shape", np.array([0, seq, heads, dh], np.int64))],
               f"{name}.split")
        return op("Transpose", [r], name, perm=perm)

    emb = op("Gather", [weight("embedding", vocab, d, scale=1.0), "tokens"], "embed")
    x = op("Add", [emb, weight("position", seq, d, scale=0.5)], "embed_pos")
    for i in range(layers):
        p = f"l{i}"
        q = heads_first(linear(x, f"{p}.q", d, d), f"{p}.qh", [0, 2, 1, 3])
        k = heads_first(linear(x, f"{p}.k", d, d), f"{p}.kh", [0, 2, 3, 1])
        v = heads_first(linear(x, f"{p}.v", d, d), f"{p}.vh", [0, 2, 1, 3])
        s = op("MatMul", [q, k], f"{p}.scores")
        s = op("Div", [s, const(f"{p}.sqrt_dh", np.array(np.sqrt(dh), np.float32))], f"{p}.scaled")
        a = op("Softmax", [s], f"{p}.attn", axis=-1)
        c = op("Transpose", [op("MatMul", [a, v], f"{p}.ctx_h")], f"{p}.ctx_t", perm=[0, 2, 1, 3])
        c = op("Reshape", [c, const(f"{p}.merge", np.array([0, seq, d], np.int64))], f"{p}.ctx")
        x = layer_norm(op("Add", [x, linear(c, f"{p}.o", d, d)], f"{p}.res1"), f"{p}.ln1")
        h = linear(x, f"{p}.ff1", d, ffn)
        # GELU as torch exports it: x * 0.5 * (1 + erf(x / sqrt(2)))
        e = op("Erf", [op("Div", [h, const(f"{p}.sqrt2", np.array(np.sqrt(2), np.float32))],
                          f"{p}.gelu_div")], f"{p}.gelu_erf")
        e = op("Add", [e, const(f"{p}.one", np.array(1, np.float32))], f"{p}.gelu_add")
        g = op("Mul", [op("Mul", [h, e], f"{p}.gelu_mul"),
                       const(f"{p}.half", np.array(0.5, np.float32))], f"{p}.gelu")
        x = layer_norm(op("Add", [x, linear(g, f"{p}.ff2", ffn, d)], f"{p}.res2"), f"{p}.ln2")
    if pool == "mean":
        pooled = op("ReduceMean", [x], "pool", axes=[1], keepdims=0)
    else:  # the first token's state (BERT's [CLS] position)
        pooled = op("Gather", [x, const("first", np.array(0, np.int64))], "pool", axis=1)
    linear(pooled, "logits", d, classes)
    graph = helper.make_graph(
        nodes, "text_transformer",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=8, producer_name="synapse text_transformer")
    return model


def random_tokens(rng, n, seq=SEQ, vocab=VOCAB):
    """Uniform ids with both ends of the vocabulary present."""
    t = rng.integers(0, vocab, size=(n, seq), dtype=np.int64)
    t.flat[0], t.flat[-1] = 0, vocab - 1
    return t


def quantize(model, path, seed=1, batches=8, batch=16, fmt="QDQ"):
    """quantize_static (uint8 activations, int8 weights) calibrated on random token batches."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    rng = np.random.default_rng(seed)
    seq = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    table = next(n.input[0] for n in model.graph.node if n.op_type == "Gather"
                 and n.input[1] == "tokens")  # the embedding table's rows: the vocabulary
    vocab = next(numpy_helper.to_array(t).shape[0] for t in model.graph.initializer
                 if t.name == table)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"tokens": random_tokens(rng, batch, seq, vocab)}
                            for _ in range(batches)])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "float.onnx")
        with open(src, "wb") as f:
            f.write(model.SerializeToString())
        quantize_static(src, path, Reader(), quant_format=getattr(QuantFormat, fmt),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


def _ort(onnx_path, optimized=True):
    """onnxruntime on the CPU; optimized=False runs every QDQ group as float ops (no u8s8
    integer kernels, which saturate int16 pair sums on x86 without VNNI)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])


def agreement(onnx_path, samples=300, seed=2, batch=50, optimized=True):
    """Synapse's int8 logits (CPU) against onnxruntime's on the same quantized file:
    (share of identical logits, max difference in steps, top-1 agreement)."""
    import synapse_gpu

    sess = synapse_gpu.InferenceSession(onnx_path, device="cpu")
    ref = _ort(onnx_path, optimized)
    out = sess.graph.outputs[0]
    rng = np.random.default_rng(seed)
    same = total = worst = top1 = 0
    for s in range(0, samples, batch):
        t = random_tokens(rng, min(batch, samples - s))
        ours = sess.run(None, {"tokens": t}, output_type="int8")[0].astype(np.int64)
        theirs = np.rint(ref.run(None, {"tokens": t})[0] / np.float32(out.scale)).astype(
            np.int64) + out.zero_point
        diff = np.abs(ours - theirs)
        same, total, worst = same + int((diff == 0).sum()), total + diff.size, max(worst, int(diff.max()))
        top1 += int((ours.argmax(1) == theirs.argmax(1)).sum())
    return same / total, worst, top1 / samples


def float_fidelity(float_proto, onnx_path, samples=300, seed=3):
    """Top-1 agreement with the float model and mean |logit - float logit| in output steps,
    for Synapse and for onnxruntime (optimized, and unoptimized) on the same quantized file."""
    import synapse_gpu

    ids = random_tokens(np.random.default_rng(seed), samples)
    f = _ort(float_proto.SerializeToString()).run(None, {"tokens": ids})[0]
    sess = synapse_gpu.InferenceSession(onnx_path, device="cpu")
    step = np.float32(sess.graph.outputs[0].scale)
    out = {}
    for name, y in (("synapse", sess.run(None, {"tokens": ids})[0]),
                    ("onnxruntime", _ort(onnx_path).run(None, {"tokens": ids})[0]),
                    ("onnxruntime unoptimized", _ort(onnx_path, False).run(None, {"tokens": ids})[0])):
        out[name] = (float((y.argmax(1) == f.argmax(1)).mean()), float(np.abs(y - f).mean() / step))
    return out


def torch_model(seed=0, vocab=VOCAB, seq=SEQ, d=D_MODEL, heads=HEADS, ffn=FFN, classes=CLASSES):
    """The same classifier written in torch (batch-first attention, random weights from a
    fixed seed), exported with dynamic batch (opset 17); needs torch (not a test dependency)."""
    import io

    import onnx
    import torch

    torch.manual_seed(seed)
    lin = torch.nn.Linear

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = lin(d, d), lin(d, d), lin(d, d), lin(d, d)
            self.ff1, self.ff2 = lin(d, ffn), lin(ffn, d)
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)

        def forward(self, x):
            def split(y):  # (N, S, D) -> (N, heads, S, D / heads)
                return y.reshape(-1, seq, heads, d // heads).transpose(1, 2)
            a = torch.softmax(split(self.q(x)) @ split(self.k(x)).transpose(-1, -2)
                              / (d // heads) ** 0.5, dim=-1)
            x = self.ln1(x + self.o((a @ split(self.v(x))).transpose(1, 2).reshape(-1, seq, d)))
            return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, d)
            self.pos = torch.nn.Parameter(torch.randn(seq, d) * 0.5)
            self.blocks = torch.nn.Sequential(*[Block() for _ in range(LAYERS)])
            self.head = lin(d, classes)

        def forward(self, tokens):
            return self.head(self.blocks(self.emb(tokens) + self.pos).mean(1))

    f = io.BytesIO()
    torch.onnx.export(Classifier().eval(), (torch.randint(0, vocab, (2, seq)),), f,
                      input_names=["tokens"], output_names=["logits"], opset_version=OPSET,
                      dynamic_axes={"tokens": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    return onnx.load_from_string(f.getvalue())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=None)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--torch", action="store_true", help="build the model in torch and export it")
    ap.add_argument("--pool", choices=("mean", "first"), default="mean",
                    help="mean pool, or the first token's state (onnx.helper build)")
    ap.add_argument("--format", choices=("QDQ", "QOperator"), default="QDQ",
                    help="quantize_static's format (QOperator leaves ReduceMean float: use "
                         "--pool first)")
    args = ap.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="text_transformer_")
    os.makedirs(out, exist_ok=True)
    model = torch_model() if args.torch else float_model(pool=args.pool)
    name = f"text_transformer{'_torch' * args.torch}_{args.pool}_{args.format}.onnx"
    path = quantize(model, os.path.join(out, name), fmt=args.format)
    for optimized in (True, False):
        same, worst, top1 = agreement(path, args.samples, optimized=optimized)
        print(f"{path}: {args.samples} sequences vs onnxruntime{'' if optimized else ' unoptimized'}: "
              f"logits identical {same:.2%}, max {worst} steps, top-1 agreement {top1:.2%}")
    for name, (top1, dist) in float_fidelity(model, path, args.samples).items():
        print(f"  {name}: top-1 equal to the float model's {top1:.2%}, mean distance {dist:.2f} steps")


if __name__ == "__main__":
    sys.exit(main())
