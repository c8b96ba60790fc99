"""The zoo table: quantized public architectures through Synapse and onnxruntime.

    python bench/zoo.py                      # the nine light_* models (tests/test_zoo.py's)
    python bench/zoo.py --torchvision        # + torchvision architectures (needs torch,
                                             #   torchvision: a separate venv, not CI)
    python bench/zoo.py --models resnet50 squeezenet --images 2
    python bench/zoo.py --extra              # + the EXTRA models (own inputs, e.g. tokens)

Each model: seeded random weights, quant_pre_process, quantize_static per-channel QInt8 to
QDQ and QOperator (synapse_gpu/examples/zoo.py; files cached in zoo.cache_dir()), then per
format: does it import, the share of output codes identical to onnxruntime on the same
file, the largest difference in steps, top-1 agreement, and the time ratio (Synapse CPU,
one batch of all images / onnxruntime CPU, the same images). Writes bench/results/zoo.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from synapse_gpu.errors import SynapseError  # noqa: E402
from synapse_gpu.examples import zoo  # noqa: E402
from synapse_gpu.onnx.importer import import_onnx  # noqa: E402

TORCHVISION = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet",
               "mnasnet0_5", "convnext_tiny", "vit_b_16")


# Models with their own inputs: name -> builder() returning ({format: path}, inputs), the
# inputs one batch for the graph's first input. Other model families register here.
EXTRA = {}


def torchvision_paths(name, formats=zoo.FORMATS):
    """Export a torchvision architecture (seeded weights, batch 1, opset 17) and quantize
    it like the light models."""
    import onnx
    import torch
    import torchvision

    out = os.path.join(zoo.cache_dir(), f"tv-{name}")
    os.makedirs(out, exist_ok=True)
    src = os.path.join(out, "export.onnx")
    if not os.path.exists(src):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), src, input_names=["x"],
                          output_names=["logits"], opset_version=17, dynamo=False)
        onnx.save(onnx.load(src), src)  # external data folded back in
    return zoo.quantize_file(src, out, formats)


def row(name, fmt, path, x):
    try:
        graph = import_onnx(path)
    except SynapseError as e:
        return [name, fmt, f"no: {type(e).__name__}: {str(e)[:90]}", "", "", "", ""]
    ours, t_ours = zoo.run_synapse(graph, x, len(x))
    ref, t_ref = zoo.run_onnxruntime(path, graph, x)
    d = np.abs(ours.astype(np.int64) - ref)
    top1 = (ours.reshape(len(x), -1).argmax(1) == ref.reshape(len(x), -1).argmax(1)).mean()
    return [name, fmt, "yes", f"{100 * (d == 0).mean():.2f}%", str(int(d.max())),
            f"{int(round(top1 * len(x)))}/{len(x)}", f"{t_ours / t_ref:.2f}"]


def format_agreement(name, paths, x):
    """onnxruntime's QDQ file vs its own QOperator file (same calibration): the share of
    identical output codes, where the two outputs have one scale."""
    import onnxruntime as ort

    outs = []
    for fmt in zoo.FORMATS:
        sess = ort.InferenceSession(paths[fmt], providers=["CPUExecutionProvider"])
        feed = sess.get_inputs()[0].name
        outs.append(np.concatenate([sess.run(None, {feed: x[i:i + 1]})[0]
                                    for i in range(len(x))]))
    g = import_onnx(paths["QOperator"]).outputs[0]
    codes = [np.rint(o / np.float32(g.scale)) for o in outs]
    d = np.abs(codes[0] - codes[1])
    return [name, "QDQ vs QOperator, onnxruntime", "", f"{100 * (d == 0).mean():.2f}%",
            str(int(d.max())), "", ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=list(zoo.LIGHT))
    ap.add_argument("--torchvision", action="store_true")
    ap.add_argument("--extra", action="store_true", help="the EXTRA models too")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--formats-only", action="store_true",
                    help="only onnxruntime's QDQ vs QOperator agreement (no Synapse runs)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "zoo.md"))
    args = ap.parse_args()
    x = zoo.images(args.images, 7)
    rows, t0 = [], time.time()
    jobs = [(m, lambda m: (zoo.quantized(m), x)) for m in args.models if m in zoo.LIGHT]
    if args.torchvision:
        jobs += [(m, lambda m: (torchvision_paths(m), x)) for m in
                 ([m for m in args.models if m in TORCHVISION] or TORCHVISION)]
    jobs += [(m, lambda m: EXTRA[m]()) for m in EXTRA if args.extra or m in args.models]
    for name, make in jobs:
        try:
            paths, inputs = make(name)
        except Exception as e:  # a model the exporter or the quantizer cannot handle
            rows.append([name, "-", f"not quantized: {type(e).__name__}: {str(e)[:80]}"] +
                        [""] * 4)
            continue
        for fmt in () if args.formats_only else [f for f in zoo.FORMATS if f in paths]:
            rows.append(row(name, fmt, paths[fmt], inputs))
            print(" | ".join(rows[-1]), flush=True)
        if all(f in paths for f in zoo.FORMATS):
            try:  # the output scale is read from Synapse's import of the QOperator file
                rows.append(format_agreement(name, paths, inputs))
            except SynapseError as e:
                rows.append([name, "QDQ vs QOperator, onnxruntime",
                             f"not compared: {type(e).__name__}"] + [""] * 4)
            print(" | ".join(rows[-1]), flush=True)
    import onnxruntime
    head = ["model", "format", "imports", "identical to onnxruntime", "max steps",
            "top-1 agreement", "time ratio (Synapse / ORT)"]
    lines = [
        "# Zoo: quantized public architectures, Synapse vs onnxruntime", "",
        f"Command: `python bench/zoo.py {' '.join(sys.argv[1:])}`".rstrip() + f" ({args.images} "
        f"images, {time.time() - t0:.0f} s). Machine: {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores, shared with other jobs (time ratios are rough); onnxruntime "
        f"{onnxruntime.__version__}, CPU provider.", "",
        "Output codes compared on the model's own output (the Softmax of the light models: "
        "most codes sit at the bottom of the range, so 'identical' is high whenever top-1 "
        "agrees). onnxruntime computes float islands (a Sum the quantizer left float) and "
        "unfused QDQ groups in float32, so those models cannot be bit-identical; QOperator "
        "models whose every tensor is quantized are (tests/test_onnx_exact.py, "
        "tests/test_onnx_resnet.py).", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def text_transformer():
    """examples/text_transformer.py's classifier, QDQ (int64 tokens in), 64 random sequences."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import text_transformer as tt

    path = os.path.join(zoo.cache_dir(), "text_transformer_qdq.onnx")
    if not os.path.exists(path):
        os.makedirs(zoo.cache_dir(), exist_ok=True)
        tt.quantize(tt.float_model(), path)
    return {"QDQ": path}, tt.random_tokens(np.random.default_rng(0), 64)


EXTRA["text_transformer"] = text_transformer


if __name__ == "__main__":
    main()
