"""Timing helpers shared by the CPU benchmarks: alternating blocks, quiet-machine check."""
import os
import platform
import time

import numpy as np


def machine_line():
    import onnxruntime as ort

    return (f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs; python {platform.python_version()}, numpy {np.__version__}, "
            f"onnxruntime {ort.__version__}")


def cpu_seconds():
    """(CPU seconds used by the whole machine, by this process): the share of the other
    processes tells whether the timings were taken on a quiet machine (Linux only)."""
    own = os.times()
    if not os.path.exists("/proc/stat"):
        return None, own.user + own.system
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    busy = sum(ticks[:3]) + sum(ticks[5:8])  # user nice system, irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def median_times(fns, warmup, rounds, reps):
    """Median and minimum seconds of each (fn, pause), timed in alternating blocks of
    ``reps`` runs, each block followed by its pause.

    Alternating spreads the machine's noise over the engines. The pauses let an engine's
    idle threads stop competing for the cores before the next block: OpenBLAS's workers
    spin for about 0.2 s after a call (measured: onnxruntime right after our conv ran up
    to 3x slower), onnxruntime's for a few milliseconds.
    """
    samples = [[] for _ in fns]
    for r in range(rounds):
        for (fn, pause), times in zip(fns, samples):
            for _ in range(warmup if r == 0 else 1):
                fn()
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            time.sleep(pause)
    return [(float(np.median(t)), min(t)) for t in samples]


class QuietCheck:
    """Share of the machine's CPU time other processes took while the block ran."""

    def __enter__(self):
        self.start, self.wall = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        (m0, o0), (m1, o1) = self.start, cpu_seconds()
        wall = time.perf_counter() - self.wall
        self.others = None if m0 is None else max(0.0, (m1 - m0) - (o1 - o0)) / (wall * os.cpu_count())

    def line(self):
        if self.others is None:
            return "other processes' CPU share unknown (no /proc/stat)"
        return (f"other processes used {self.others:.0%} of the machine's CPU time during the run"
                + (" (timings disturbed: rerun on a quiet machine)" if self.others > 0.05 else ""))


def ort_session(path, threads=2):
    """onnxruntime with the CPU provider, default optimizations, intra-op threads as given."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def compare_files(files, x8, rounds, reps, threads=2):
    """Synapse vs onnxruntime on the same files, interleaved in one process.

    files: {label: path}. For each: Synapse's outputs are first checked identical across
    two runs and batch 8 vs batch 1; then batch-1 latency and batch-8 throughput of both
    (`median_times`); the share of Synapse's int8 logits equal to onnxruntime's output
    requantized to the same codes, and top-1 agreement. Returns (rows, engine lines).
    threads: onnxruntime's intra-op threads; Synapse's come from $SYNAPSE_CPU_THREADS.
    """
    import synapse_gpu as sg

    x1 = x8[:1]
    rows, engines = [], set()
    for label, path in files.items():
        ours = sg.InferenceSession(path, device="cpu")
        engines.add(ours._exe.engine)
        peer = ort_session(path, threads)
        name = ours.get_inputs()[0].name
        q8 = ours.run(None, {name: x8}, output_type="int8")[0]
        assert np.array_equal(q8, ours.run(None, {name: x8}, output_type="int8")[0])
        assert np.array_equal(q8[:1], ours.run(None, {name: x1}, output_type="int8")[0])
        spec = ours.graph.outputs[0]
        ref = np.rint(peer.run(None, {name: x8})[0] / np.float32(spec.scale)) + spec.zero_point
        same = float(np.mean(q8 == ref))
        top1 = float(np.mean(q8.argmax(1) == ref.argmax(1)))
        (b1, b1_min), (p1, p1_min), (b8, b8_min), (p8, p8_min) = median_times([
            (lambda: ours.run(None, {name: x1}), 0.05), (lambda: peer.run(None, {name: x1}), 0.05),
            (lambda: ours.run(None, {name: x8}), 0.05), (lambda: peer.run(None, {name: x8}), 0.05),
        ], warmup=1, rounds=rounds, reps=reps)
        rows.append((label, b1, p1, 8 / b8, 8 / p8, same, top1, b1_min / p1_min, p8_min / b8_min))
        print(f"{label}: done", flush=True)
    return rows, sorted(engines)


def table(rows):
    """Markdown rows: medians, their ratios, and the ratios of the best runs (on a loaded
    machine the best runs are the ones the scheduler disturbed least)."""
    lines = ["| file | Synapse b1 ms | ORT b1 ms | b1 ratio (Synapse/ORT time) | best-run b1 ratio | "
             "Synapse b8 img/s | ORT b8 img/s | b8 ratio (Synapse/ORT throughput) | "
             "best-run b8 ratio | identical int8 logits | top-1 agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, b1, p1, t8, r8, same, top1, best1, best8 in rows:
        lines.append(f"| {label} | {b1 * 1e3:.1f} | {p1 * 1e3:.1f} | {b1 / p1:.2f} | {best1:.2f} | "
                     f"{t8:.1f} | {r8:.1f} | {t8 / r8:.2f} | {best8:.2f} | {same:.1%} | {top1:.0%} |")
    return lines


def load_line():
    return "load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
