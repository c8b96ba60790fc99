"""Whole-model CPU benchmark: quantized ResNet-50, synapse_gpu vs onnxruntime, same files.

The model is synapse_gpu/examples/resnet50.py: light_resnet50's architecture with
seeded weights, quantized by onnxruntime's quantize_static (per-channel int8
weights) to: QOperator with uint8 activations (onnxruntime's fastest x86 path; on x86
without VNNI its u8s8 kernels saturate, so it is not exact there), the same with 7-bit
weights (reduce_range: what onnxruntime advises for such machines, exact there), QDQ,
and optionally QOperator with int8 activations. For each file, in one process: batch-1
latency and batch-8 throughput, medians of alternating blocks, onnxruntime with the CPU
provider, default optimizations, intra_op threads = 2 (timing.py:compare_files). Then the
QOperator files against onnxruntime on their uint8-weight copies (`u8u8_copy`): the
fastest exact onnxruntime run on an AVX2 machine without VNNI.

    python bench/bench_resnet50_cpu.py [--quick] [--out bench/results/resnet50_cpu.md]
"""
import argparse
import os
import tempfile
import time

from synapse_gpu.examples.resnet50 import images, quantized_resnet50
from timing import QuietCheck, compare_files, load_line, machine_line, table


def fused_line():
    from synapse_gpu.backends.cpu_fused import FUSE_ENV, fusing

    return f"fused onnxruntime graphs {'on' if fusing() else 'off'} (${FUSE_ENV})"

DEFAULT = "QOperator-uint8,QOperator-uint8-r7,QDQ"


def u8u8_copy(path):
    """The same QOperator model with uint8 weights (w + 128, zero points + 128, an exact
    change of representation), written next to it: onnxruntime runs its u8u8 kernels on
    it, which are exact on AVX2 (no vpmaddubsw saturation): the honest speed ceiling for
    an exact engine on such a machine."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    out = path.replace(".onnx", "_u8u8.onnx")
    if os.path.exists(out):
        return out
    m = onnx.load(path)
    inits = {t.name: t for t in m.graph.initializer}
    weights = {n.input[i] for n in m.graph.node if n.op_type in ("QLinearConv", "QGemm") for i in (3, 5)}
    for name in weights:
        a = numpy_helper.to_array(inits[name])
        if a.dtype == np.int8:
            inits[name].CopyFrom(numpy_helper.from_array((a.astype(np.int16) + 128).astype(np.uint8), name))
    onnx.save(m, out)
    return out


def ceiling(label, path, x8, rounds, reps, threads):
    """One row: Synapse vs onnxruntime on the file (u8s8 at ORT_ENABLE_ALL) and on its
    u8u8 copy, interleaved; and whether Synapse's logits equal the u8u8 run's codes."""
    import numpy as np

    import synapse_gpu as sg
    from timing import median_times, ort_session

    ours = sg.InferenceSession(path, device="cpu")
    name = ours.get_inputs()[0].name
    peers = [ort_session(p, threads) for p in (path, u8u8_copy(path))]
    spec = ours.graph.outputs[0]
    q8 = ours.run(None, {name: x8}, output_type="int8")[0]
    ref = np.rint(peers[1].run(None, {name: x8})[0] / np.float32(spec.scale)) + spec.zero_point
    fns = [lambda: ours.run(None, {name: x8[:1]})] + [lambda p=p: p.run(None, {name: x8[:1]}) for p in peers]
    fns += [lambda: ours.run(None, {name: x8})] + [lambda p=p: p.run(None, {name: x8}) for p in peers]
    t = [m for m, _ in median_times([(f, 0.05) for f in fns], warmup=1, rounds=rounds, reps=reps)]
    return (f"| {label} | {t[0] * 1e3:.1f} | {t[1] * 1e3:.1f} | {t[2] * 1e3:.1f} | {t[0] / t[2]:.2f} | "
            f"{8 / t[3]:.1f} | {8 / t[4]:.1f} | {8 / t[5]:.1f} | {t[5] / t[3]:.2f} | "
            f"{np.mean(q8 == ref):.1%} |")


CEILING_HEAD = ["| file | Synapse b1 ms | ORT u8s8 b1 ms | ORT u8u8 b1 ms | b1 ratio (Synapse/ORT u8u8) | "
                "Synapse b8 img/s | ORT u8s8 b8 img/s | ORT u8u8 b8 img/s | b8 ratio (Synapse/ORT u8u8) | "
                "identical to ORT u8u8 |", "|---|---|---|---|---|---|---|---|---|---|"]


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
    x8 = images(8, 7)
    with QuietCheck() as quiet:
        rows, engines = compare_files(files, x8, rounds, reps, args.threads)
        ceil = [ceiling(k, p, x8, rounds, reps, args.threads) for k, p in files.items()
                if k.startswith("QOperator")]
    lines = [machine_line(), f"Synapse CPU engine: {', '.join(engines)}; {args.threads} threads "
             f"(onnxruntime: intra_op_num_threads); {fused_line()}", ""] + table(rows)
    if ceil:
        lines += ["", "The same QOperator files with uint8 weights (onnxruntime's exact u8u8 kernels on "
                  "AVX2, default optimizations), interleaved:", ""] + CEILING_HEAD + ceil
    lines += ["", quiet.line(), load_line()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# ResNet-50 int8, whole model, CPU (bench/bench_resnet50_cpu.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
