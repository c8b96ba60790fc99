"""Whole-model CPU benchmark: quantized ResNet-50, synapse_gpu vs onnxruntime, same files.

The model is synapse_gpu/examples/resnet50.py: light_resnet50's architecture with
seeded weights, quantized by onnxruntime's quantize_static (per-channel int8
weights) to QOperator with int8 activations (the file both engines run
bit-for-bit the same math on, apart from QLinearAdd's rounding), QOperator with
uint8 activations (onnxruntime's fastest x86 path) and QDQ. For each file, in one
process: batch-1 latency and batch-8 throughput, medians of alternating blocks,
onnxruntime with the CPU provider, default optimizations, intra_op threads = 2.
Before timing, Synapse's outputs must be identical across two runs and across
batch 8 vs batch 1; the share of identical int8 logits vs onnxruntime is printed.

    python bench/bench_resnet50_cpu.py [--quick] [--out bench/results/resnet50_cpu.md]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort

import synapse_gpu as sg
from synapse_gpu.examples.resnet50 import images, quantized_resnet50
from timing import QuietCheck, machine_line, median_times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed runs")
    ap.add_argument("--formats", default="QOperator,QOperator-uint8,QDQ")
    ap.add_argument("--models", default=os.path.join(tempfile.gettempdir(), "synapse_resnet50"),
                    help="where the quantized models are built (reused when present)")
    ap.add_argument("--out", help="also write the result table (markdown) here")
    args = ap.parse_args()
    rounds, reps = (2, 1) if args.quick else (3, 2)
    formats = args.formats.split(",")
    t0 = time.perf_counter()
    paths = quantized_resnet50(args.models, formats=formats)
    print(f"models ready in {time.perf_counter() - t0:.0f} s ({args.models})")
    lines = [machine_line()]
    x8 = images(8, 7)
    x1 = x8[:1]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    rows = []
    with QuietCheck() as quiet:
        for fmt in formats:
            ours = sg.InferenceSession(paths[fmt], device="cpu")
            peer = ort.InferenceSession(paths[fmt], so, providers=["CPUExecutionProvider"])
            name = ours.get_inputs()[0].name
            q8 = ours.run(None, {name: x8}, output_type="int8")[0]
            assert np.array_equal(q8, ours.run(None, {name: x8}, output_type="int8")[0])
            assert np.array_equal(q8[:1], ours.run(None, {name: x1}, output_type="int8")[0])
            spec = ours.graph.outputs[0]
            ref = np.rint(peer.run(None, {name: x8})[0] / np.float32(spec.scale)) + spec.zero_point
            same = float(np.mean(q8 == ref))
            top1 = float(np.mean(q8.argmax(1) == ref.argmax(1)))
            (b1, _), (p1, _), (b8, _), (p8, _) = median_times([
                (lambda: ours.run(None, {name: x1}), 0.3), (lambda: peer.run(None, {name: x1}), 0.05),
                (lambda: ours.run(None, {name: x8}), 0.3), (lambda: peer.run(None, {name: x8}), 0.05),
            ], warmup=1, rounds=rounds, reps=reps)
            rows.append((fmt, b1, p1, 8 / b8, 8 / p8, same, top1))
            print(f"{fmt}: done", flush=True)
    lines += ["", "| file | Synapse b1 ms | ORT b1 ms | b1 ratio (Synapse/ORT time) | Synapse b8 img/s | "
              "ORT b8 img/s | b8 ratio (Synapse/ORT throughput) | identical int8 logits | top-1 agree |",
              "|---|---|---|---|---|---|---|---|---|"]
    for fmt, b1, p1, t8, r8, same, top1 in rows:
        lines.append(f"| {fmt} | {b1 * 1e3:.0f} | {p1 * 1e3:.0f} | {b1 / p1:.2f} | {t8:.2f} | "
                     f"{r8:.2f} | {t8 / r8:.2f} | {same:.1%} | {top1:.0%} |")
    lines += ["", quiet.line()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# ResNet-50 int8, whole model, CPU (bench/bench_resnet50_cpu.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
