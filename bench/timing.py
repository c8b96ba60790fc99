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
