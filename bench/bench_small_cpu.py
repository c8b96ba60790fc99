"""Small networks on the CPU, synapse_gpu vs onnxruntime on the same files, one process:
a MobileNetV2 (bench/mobilenet_v2.py, 224 x 224, quantized like the ResNet-50
benchmark) and the digits MLP shipped in synapse_gpu/examples (digits_int8.onnx).
Batch-1 latency and batch-8 throughput, ratios printed (timing.py:compare_files); then
the MobileNetV2 QOperator files against onnxruntime on their uint8-weight copies
(bench_resnet50_cpu.py:ceiling).

    python bench/bench_small_cpu.py [--quick] [--out bench/results/small_cpu.md]
"""
import argparse
import os
import tempfile

import numpy as np

import synapse_gpu
from mobilenet_v2 import quantized_mobilenet_v2
from synapse_gpu.examples.resnet50 import images
from bench_resnet50_cpu import CEILING_HEAD, ceiling, fused_line
from timing import QuietCheck, compare_files, load_line, machine_line, table

DEFAULT = "QOperator-uint8,QOperator-uint8-r7,QDQ"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed runs")
    ap.add_argument("--formats", default=DEFAULT, help=f"MobileNetV2 files, default {DEFAULT}")
    ap.add_argument("--models", default=os.path.join(tempfile.gettempdir(), "synapse_mnv2"))
    ap.add_argument("--threads", type=int, default=2, help="threads per layer, both engines")
    ap.add_argument("--out", help="also write the result table (markdown) here")
    args = ap.parse_args()
    os.environ["SYNAPSE_CPU_THREADS"] = str(args.threads)
    rounds, reps = (2, 3) if args.quick else (4, 5)
    files = {}
    for fmt in args.formats.split(","):
        base, r7 = (fmt[:-3], True) if fmt.endswith("-r7") else (fmt, False)
        files[f"mobilenet_v2 {fmt}"] = quantized_mobilenet_v2(args.models, [base], reduce_range=r7)[base]
    examples = os.path.join(os.path.dirname(synapse_gpu.__file__), "examples")
    with np.load(os.path.join(examples, "digits_test.npz")) as z:
        digits = z["images"][:8]
    with QuietCheck() as quiet:
        rows, engines = compare_files(files, images(8, 7), rounds, reps, args.threads)
        more, engines2 = compare_files({"digits (QDQ file)": os.path.join(examples, "digits_int8.onnx")},
                                       digits, rounds * 4, reps * 4, args.threads)
        ceil = [ceiling(k, p, images(8, 7), rounds, reps, args.threads) for k, p in files.items()
                if "QOperator" in k]
    lines = [machine_line(), f"Synapse CPU engine: {', '.join(sorted(set(engines + engines2)))}; "
             f"{args.threads} threads (onnxruntime: intra_op_num_threads); {fused_line()}", ""]
    lines += table(rows + more)
    if ceil:
        lines += ["", "The QOperator files with uint8 weights (onnxruntime's exact u8u8 kernels on AVX2, "
                  "default optimizations), interleaved:", ""] + CEILING_HEAD + ceil
    lines += ["", quiet.line(), load_line()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Small networks, CPU (bench/bench_small_cpu.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
