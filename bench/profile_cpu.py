"""Where the CPU backend's time goes: per-op-kind totals over a whole model, one process.

Times every step of the CPU executable (the same steps `InferenceSession.run` takes),
median over runs, grouped by op (convs also by kernel size), and prints the engine
the self-test admitted. A fused onnxruntime graph is one step ($SYNAPSE_CPU_FUSE=0
times each layer on its own instead; --ort-ops breaks the fused graphs down by ONNX op
with onnxruntime's profiler). Example (ResNet-50 from bench/bench_resnet50_cpu.py):

    python bench/profile_cpu.py /tmp/synapse_resnet50/resnet50_QOperator-uint8.onnx \
        --batch 1,8 --ort-ops --out bench/results/profile_resnet50_cpu.md
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import synapse_gpu as sg
from timing import QuietCheck, load_line, machine_line


def kind(step, buffers):
    if step.fused is not None:
        return f"fused onnxruntime graph ({len(step.nodes)} nodes)"
    node = step.nodes[0]
    if node.op.startswith("conv"):
        w = buffers[node.params["w"]]
        grouped = " grouped" if node.attrs.get("group", 1) > 1 else ""
        return f"{node.op} {'x'.join(map(str, w.shape[2:]))}{grouped}"
    return node.op


def profile(sess, batch, runs):
    """Median seconds of each step of the CPU executable over `runs` runs (after one warm-up)."""
    exe, spec = sess._exe, sess.graph.inputs[0]
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (batch,) + tuple(spec.shape[1:])).astype(np.int8)
    times = np.zeros((runs, len(exe.steps)))
    for r in range(runs + 1):
        env = {spec.name: x}
        for i, step in enumerate(exe.steps):
            t0 = time.perf_counter()
            env.update(zip(step.outputs, step.fn(*[env[t] for t in step.inputs])))
            if r:
                times[r - 1, i] = time.perf_counter() - t0
    return np.median(times, axis=0)


def ort_op_times(model, batch, runs):
    """{ONNX op type: (nodes, seconds per run)} inside the fused onnxruntime graphs, from
    onnxruntime's own profiler (a fresh session whose graphs are built with it on)."""
    import onnxruntime as ort

    base = ort.SessionOptions

    class Profiled(base):
        def __init__(self):
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = os.path.join(tempfile.gettempdir(), "synapse_cpu_profile")

    ort.SessionOptions = Profiled
    try:
        sess = sg.InferenceSession(model, device="cpu")
        spec = sess.graph.inputs[0]
        x = np.random.default_rng(0).integers(-128, 128, (batch,) + tuple(spec.shape[1:])).astype(np.int8)
        for _ in range(runs):
            sess._exe.run({spec.name: x})
    finally:
        ort.SessionOptions = base
    totals = {}
    for step in sess._exe.steps:
        for ort_sess, _, _ in (step.fused.run.sessions.values() if step.fused is not None else []):
            with open(ort_sess.end_profiling()) as f:
                for e in json.load(f):
                    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                        n, t = totals.get(e["args"]["op_name"], (0, 0.0))
                        totals[e["args"]["op_name"]] = (n + 1, t + e["dur"] * 1e-6)
    return {op: (n // runs, t / runs) for op, (n, t) in totals.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", default="1,8", help="batch sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", help="also write the tables (markdown) here")
    ap.add_argument("--ort-ops", action="store_true",
                    help="also time the ONNX ops inside the fused graphs (onnxruntime's profiler)")
    args = ap.parse_args()
    sess = sg.InferenceSession(args.model, device="cpu")
    exe = sess._exe
    lines = [machine_line(), f"model: {args.model}",
             f"engine: {exe.engine} ({'; '.join(exe.engine_report)})"]
    with QuietCheck() as quiet:
        for batch in [int(b) for b in args.batch.split(",")]:
            med = profile(sess, batch, args.runs)
            groups = {}
            for step, t in zip(exe.steps, med):
                k = kind(step, sess.graph.buffers)
                n, s = groups.get(k, (0, 0.0))
                groups[k] = (n + 1, s + t)
            total = med.sum()
            lines += ["", f"batch {batch}, median of {args.runs} runs per step:", "",
                      "| op | nodes | ms | share |", "|---|---|---|---|"]
            for k, (n, s) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
                lines.append(f"| {k} | {n} | {s * 1e3:.2f} | {s / total:.0%} |")
            lines.append(f"| total (steps only) | {len(exe.steps)} | {total * 1e3:.2f} | 100% |")
            ops = ort_op_times(args.model, batch, args.runs) if args.ort_ops else {}
            if ops:
                total = sum(t for _, t in ops.values())
                lines += ["", f"batch {batch}, inside the fused graphs (onnxruntime's profiler, "
                          f"mean of {args.runs} runs):", "", "| ONNX op | nodes | ms | share |",
                          "|---|---|---|---|"]
                lines += [f"| {op} | {n} | {t * 1e3:.2f} | {t / total:.0%} |"
                          for op, (n, t) in sorted(ops.items(), key=lambda kv: -kv[1][1])]
    lines += ["", quiet.line(), load_line()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# CPU profile (bench/profile_cpu.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
