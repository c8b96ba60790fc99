"""Whole-model CPU benchmark: quantized ResNet-50, synapse_gpu vs onnxruntime, same files.

The model is synapse_gpu/examples/resnet50.py: light_resnet50's architecture with
seeded weights, quantized by onnxruntime's quantize_static (per-channel int8
weights) to: QOperator with uint8 activations (onnxruntime's fastest x86 path; on x86
without VNNI its u8s8 kernels saturate, so it is not exact there), the same with 7-bit
weights (reduce_range: what onnxruntime advises for such machines, exact there), QDQ,
and optionally QOperator with int8 activations. For each file, in one process: batch-1
latency and batch-8 throughput, medians of alternating blocks, onnxruntime with the CPU
provider, default optimizations, intra_op threads = 2 (timing.py:compare_files).

    python bench/bench_resnet50_cpu.py [--quick] [--out bench/results/resnet50_cpu.md]
"""
import argparse
import os
import tempfile
import time

from synapse_gpu.examples.resnet50 import images, quantized_resnet50
from timing import QuietCheck, compare_files, load_line, machine_line, table

DEFAULT = "QOperator-uint8,QOperator-uint8-r7,QDQ"


def model_files(formats, models):
    files = {}
    for fmt in formats:
        base, r7 = (fmt[:-3], True) if fmt.endswith("-r7") else (fmt, False)
        files[fmt] = quantized_resnet50(models, formats=[base], reduce_range=r7)[base]
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed runs")
    ap.add_argument("--formats", default=DEFAULT, help=f"default {DEFAULT}; also QOperator")
    ap.add_argument("--models", default=os.path.join(tempfile.gettempdir(), "synapse_resnet50"),
                    help="where the quantized models are built (reused when present)")
    ap.add_argument("--threads", type=int, default=2, help="threads per layer, both engines")
    ap.add_argument("--out", help="also write the result table (markdown) here")
    args = ap.parse_args()
    os.environ["SYNAPSE_CPU_THREADS"] = str(args.threads)
    rounds, reps = (2, 2) if args.quick else (4, 3)
    t0 = time.perf_counter()
    files = model_files(args.formats.split(","), args.models)
    print(f"models ready in {time.perf_counter() - t0:.0f} s ({args.models})")
    with QuietCheck() as quiet:
        rows, engines = compare_files(files, images(8, 7), rounds, reps, args.threads)
    lines = [machine_line(), f"Synapse CPU engine: {', '.join(engines)}; {args.threads} threads per layer "
             "(onnxruntime: intra_op_num_threads)", ""] + table(rows)
    lines += ["", quiet.line(), load_line()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# ResNet-50 int8, whole model, CPU (bench/bench_resnet50_cpu.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
