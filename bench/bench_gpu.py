"""First GPU benchmark: the naive v1 kernels against cuBLASLt and onnxruntime, one run.

1. int8 GEMM M = N = K (4096): a one-node dense graph (x (M, K) @ W, per-column
   requantization to int8) through the CUDA backend's executable, with both weight
   layouts: w (N, K), trans_w=1, what an ONNX Gemm with transB=1 imports (a warp
   reads 32 different rows: uncoalesced), and w (K, N), trans_w=0 (coalesced);
   then the same product as a matmul of two activations (per-tensor requantization).
   Every kernel variant of each (dense_v1..v5, matmul_v1..v5; the tensor-core ones
   run as v2 below sm_80). Kernel time: CUDA events around the launch, L2 flushed
   before each run;
   run time: the whole exe.run (upload of x, kernel, download of y). Before timing,
   the int8 output must equal reference/dense.py on a few hundred sampled rows (the
   full int64 reference of 4096^3 takes minutes in numpy). Then torch._int_mm
   (cuBLASLt, int32 out) on the same x and w, B column-major, its sampled rows
   checked against the exact product. GOP/s = 2*M*N*K / median time.
2. ResNet-50 QDQ (synapse_gpu/examples/resnet50.py) at batch 1 and 64, float32
   images in, logits out: Synapse (boundary quantize + exe.run) against
   onnxruntime's CUDAExecutionProvider on the same file. Before timing, the GPU's
   int8 logits must equal Synapse's CPU backend bit for bit on two images, alone
   and inside the largest batch. Medians of alternating blocks (timing.py).
   Batch-1 latency with and without CUDA graph replay (backends/cuda.py): int8
   feeds through two executables, plain launches against the captured graph, both
   bit-exact with the CPU backend on every checked run before they are timed.
   Every conv variant forced in turn on the model (v6: channels-last, its layout
   conversions inside the kernel time), each bit-exact with v1 before it is timed.
3. bench/results/gpu_<device>.md and .json: device, driver, CUDA runtime, versions,
   every figure, and the % of the device's int8 dense tensor-core peak.

    PYTHONPATH=. python bench/bench_gpu.py [--quick] [--gemm N] [--out-dir DIR]
    python bench/bench_gpu.py --dry-run --out-dir /tmp/b   # no GPU needed

--dry-run runs every code path on this machine: the CUDA backend on the host
device of tests/cuda_host (the same kernels compiled with g++), CPU clocks, GEMM
64^3, the bundled digits QDQ ONNX file in place of ResNet-50, torch._int_mm on the
CPU and onnxruntime's CPU provider as the stand-ins; the CUDA graph rows run on the
emulated device (tests/emucuda), which captures. Its figures are not GPU figures.
Exit status 1 when a bit-exactness check fails or a part raised (results still written).
"""
import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tree's synapse_gpu, installed or not

import synapse_gpu  # noqa: E402
from synapse_gpu import build, registry  # noqa: E402
from synapse_gpu.backends import cpu, cuda, cuda_variants  # noqa: E402
from synapse_gpu.errors import DeviceError  # noqa: E402
from synapse_gpu.graph import GraphBuilder  # noqa: E402
from synapse_gpu.reference.boundary import quantize  # noqa: E402
from synapse_gpu.reference.dense import dense, matmul  # noqa: E402
from synapse_gpu.session import load_any  # noqa: E402
from synapse_gpu.validate import validate  # noqa: E402
from timing import median_times  # noqa: E402

# int8 dense (no sparsity) tensor-core TOPS, NVIDIA datasheets; the first name
# fragment found in the device name wins, so the PCIe/NVL parts come first.
MODEL_VARIANTS = cuda_variants.VARIANTS["conv"]  # cuda_kernels/conv.cu
INT8_PEAK_TOPS = (("H100 PCIe", 1513), ("H100 NVL", 1671), ("H200 NVL", 1671),
                  ("H100", 1979), ("H200", 1979))
CHECK_ROWS = 256


# ---------------------------------------------------------------- platforms

class CpuSpan:
    def __init__(self):
        self.start = time.perf_counter()

    def stop(self):
        self.end = time.perf_counter()
        return self

    def seconds(self):
        return self.end - self.start


class EventSpan:
    """CUDA events recorded on a stream: the device time between start and stop."""

    def __init__(self, cp, stream):
        self.cp, self.stream = cp, stream
        self.start = cp.cuda.Event()
        self.start.record(stream)

    def stop(self):
        self.end = self.cp.cuda.Event()
        self.end.record(self.stream)
        return self

    def seconds(self):
        self.end.synchronize()
        return self.cp.cuda.get_elapsed_time(self.start, self.end) / 1e3


def _cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}"


def _probe(fn):
    """A version string, or why it is unknown: a report line is never worth a crash."""
    try:
        return fn()
    except Exception as e:
        return f"unknown ({type(e).__name__}: {e})"


class Gpu:
    """The real run: CuPy's current GPU, device work timed with CUDA events."""

    dry_run = False
    torch_device = "cuda"
    ort_provider = "CUDAExecutionProvider"

    def __init__(self):
        cuda.require()  # DeviceError naming what is missing
        import cupy as cp

        self.cp = cp
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        l2 = int(props.get("l2CacheSize", 0)) or 64 << 20
        self._flush = cp.empty(2 * l2, dtype=cp.uint8)  # writing twice the L2 evicts it
        self.info = {"name": self.name, "compute_capability": dev.compute_capability,
                     "multiprocessors": props.get("multiProcessorCount"), "l2_bytes": l2,
                     "memory_bytes": props.get("totalGlobalMem"), "driver": self._driver(),
                     "cuda_runtime": _probe(lambda: _cuda_version(
                         cp.cuda.runtime.runtimeGetVersion())),
                     "nvrtc": _probe(lambda: ".".join(map(str, cp.cuda.nvrtc.getVersion())))}

    def _driver(self):
        try:
            p = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=30, check=True)
            return p.stdout.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError, IndexError) as e:
            v = _cuda_version(self.cp.cuda.runtime.driverGetVersion())
            return f"supports CUDA {v} (nvidia-smi failed: {type(e).__name__})"

    def backend_device(self):
        return cuda.CupyDevice()

    def span(self, stream):
        return EventSpan(self.cp, stream)

    def flush(self):
        self._flush.fill(0)
        self.cp.cuda.Device().synchronize()  # before any stream's next start event

    def torch_stream(self):
        import torch

        return self.cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)

    @contextlib.contextmanager
    def capture_device(self):
        """A maker of backend devices that can capture CUDA graphs."""
        yield cuda.CupyDevice


class DryRun:
    """--dry-run: the CUDA backend on tests/cuda_host's host device, CPU clocks."""

    dry_run = True
    torch_device = "cpu"
    ort_provider = "CPUExecutionProvider"
    name = "dry-run-host"

    def __init__(self):
        sys.path.insert(0, str(ROOT / "tests"))
        from cuda_host.hostlib import HostDevice, library

        self._lib, self._host_device = library(), HostDevice  # one g++ build for all devices
        self.info = {"name": self.name, "note": "dry run: the kernels compiled with g++ and run "
                     "on the CPU (tests/cuda_host); these are not GPU figures"}

    def backend_device(self):
        return self._host_device(self._lib)

    def span(self, stream):
        return CpuSpan()

    def flush(self):
        pass

    def torch_stream(self):
        return None

    @contextlib.contextmanager
    def capture_device(self):
        """The emulated device (the host device has no stream capture)."""
        from emucuda import cupy_standin

        with cupy_standin.installed():
            yield cuda.CupyDevice


class LaunchTimer:
    """A backend device whose kernel launches are timed (CudaExecutable's device seam)."""

    def __init__(self, dev, plat):
        self.dev, self.plat, self.spans = dev, plat, []

    def __getattr__(self, name):
        return getattr(self.dev, name)

    def launch(self, fn, n, args):
        span = self.plat.span(getattr(self.dev, "stream", None))
        self.dev.launch(fn, n, args)
        self.spans.append(span.stop())

    def take_seconds(self):
        s = sum(span.seconds() for span in self.spans)
        self.spans.clear()
        return s


def not_available(reason):
    print(f"  not available: {reason}", flush=True)
    return {"available": False, "reason": reason}


def peak_tops(name):
    return next((tops for frag, tops in INT8_PEAK_TOPS if frag.lower() in name.lower()), None)


def pct(tops, peak):
    return None if peak is None else 100 * tops / peak


def versions():
    v = {"python": platform.python_version(), "numpy": np.__version__,
         "synapse_gpu": synapse_gpu.__version__}
    for mod in ("cupy", "torch", "onnxruntime", "onnx"):
        try:
            m = __import__(mod)
            v[mod] = m.__version__
        except Exception as e:  # a broken CUDA install may fail with more than ImportError
            v[mod] = f"not available: {type(e).__name__}: {e}"
            continue
        if mod == "torch":
            v["torch_cuda"] = m.version.cuda
        if mod == "onnxruntime":
            v["onnxruntime_providers"] = m.get_available_providers()
    return v


# ---------------------------------------------------------------- 1. GEMM

X_SCALE, X_ZP, Y_ZP = 0.02, -3, 5


def gemm_graph(w_nk, w_scale, bias, trans_w):
    """One dense node; y_scale puts about 42 int8 codes in one accumulator std."""
    K = w_nk.shape[1]
    b = GraphBuilder()
    x = b.add_input("x", (-1, K), scale=X_SCALE, zero_point=X_ZP)
    w = w_nk if trans_w else np.ascontiguousarray(w_nk.T)
    y = build.dense(b, x, w, w_scale, bias, y_scale=X_SCALE * 0.01 * np.sqrt(K) * 128,
                    y_zero_point=Y_ZP, trans_w=trans_w, name="gemm")
    b.add_output(y)
    return b.build({"name": f"gemm_k{K}_trans_w{int(trans_w)}"})


def matmul_graph(M, K, N):
    """The GEMM as a matmul of two activations, x (1, M, K) @ w (1, K, N)."""
    b = GraphBuilder()
    x = b.add_input("x", (-1, M, K), scale=X_SCALE, zero_point=X_ZP)
    w = b.add_input("w", (1, K, N), scale=0.01, zero_point=0)
    y = build.matmul(b, x, w, y_scale=X_SCALE * 0.01 * np.sqrt(K) * 128, y_zero_point=Y_ZP,
                     name="gemm")
    b.add_output(y)
    return b.build({"name": f"matmul_k{K}"})


def bench_gemm(plat, size, reps, torch_reps, peak):
    M = N = K = size
    ops = 2 * M * N * K
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (M, K), dtype=np.int8)
    w_nk = rng.integers(-127, 128, (N, K), dtype=np.int8)  # symmetric, as onnxruntime quantizes
    w_scale = rng.uniform(0.005, 0.015, N).astype(np.float32)
    bias = rng.integers(-20000, 20000, N).astype(np.int32)
    rows = (np.arange(M) if M <= CHECK_ROWS else  # the first and last rows and a sample
            np.unique(np.concatenate([[0, M - 1], rng.choice(M, CHECK_ROWS - 2, replace=False)])))
    print(f"GEMM {M}x{N}x{K}: reference on {len(rows)} sampled rows ...", flush=True)
    t0 = time.perf_counter()
    dense_graphs = {t: gemm_graph(w_nk, w_scale, bias, t) for t in (True, False)}
    node = dense_graphs[True].nodes[0]
    want = dense(x[rows], **registry.node_kwargs(node, dense_graphs[True].buffers))  # same W both ways
    mm = matmul_graph(M, K, N)
    w_kn = np.ascontiguousarray(w_nk.T)
    # (op, trans_w, layout, graph, feeds, reference rows)
    cases = [("dense", int(t), "w (N, K), trans_w=1" if t else "w (K, N), trans_w=0", g, {"x": x},
              want) for t, g in dense_graphs.items()]
    cases.append(("matmul", None, "x (M, K) @ w (K, N), two activations", mm,
                  {"x": x[None], "w": w_kn[None]},
                  matmul(x[rows], w_kn, **registry.node_kwargs(mm.nodes[0], mm.buffers))))
    print(f"  reference: {time.perf_counter() - t0:.1f} s", flush=True)
    res = {"M": M, "N": N, "K": K, "ops": ops, "checked_rows": len(rows), "synapse": []}
    runs = [(c, v) for c in cases for v in cuda_variants.VARIANTS[c[0]]]
    for (op, trans_w, layout, graph, feeds, want), variant in runs:
        timed = LaunchTimer(plat.backend_device(), plat)
        exe = cuda.CudaExecutable(graph, validate(graph, strict=False).traversal, dev=timed,
                                  variant=variant)
        variant = exe.variants.chosen["gemm"]  # v3, v5 run as v2 below sm_80
        label = f"{op}_{variant}, {layout}"
        if any(r["variant"] == label for r in res["synapse"]):
            continue
        out = graph.outputs[0].name
        y = exe.run(feeds)[0][out].reshape(M, N)
        mismatches = int(np.count_nonzero(y[rows] != want))
        print(f"  {label}: {'bit-exact' if mismatches == 0 else f'{mismatches} MISMATCHES'} "
              f"on the sampled rows", flush=True)
        exe.run(feeds)  # warm-up (the first run above compiled and uploaded)
        timed.take_seconds()
        kernel, run = [], []
        for _ in range(reps):
            plat.flush()
            t0 = time.perf_counter()
            exe.run(feeds)
            run.append(time.perf_counter() - t0)
            kernel.append(timed.take_seconds())
        k = float(np.median(kernel))
        r = {"variant": label, "op": op, "trans_w": trans_w, "bit_exact": mismatches == 0,
             "mismatches": mismatches, "kernel_ms": k * 1e3, "gops": ops / k / 1e9,
             "peak_pct": pct(ops / k / 1e12, peak), "run_ms": float(np.median(run)) * 1e3,
             "reps": reps}
        print(f"  {label}: kernel {r['kernel_ms']:.3f} ms = {r['gops']:.1f} GOP/s, "
              f"exe.run {r['run_ms']:.3f} ms", flush=True)
        res["synapse"].append(r)
    res["torch_int_mm"] = bench_int_mm(plat, x, w_nk, rows, ops, torch_reps, peak)
    return res


def bench_int_mm(plat, x, w_nk, rows, ops, reps, peak):
    print(f"torch._int_mm on {plat.torch_device}:", flush=True)
    try:
        import torch
    except Exception as e:
        return not_available(f"torch failed to import ({type(e).__name__}: {e})")
    if plat.torch_device == "cuda" and not torch.cuda.is_available():
        return not_available(f"torch {torch.__version__} sees no CUDA device "
                             f"(built for CUDA {torch.version.cuda})")
    a = torch.from_numpy(x).to(plat.torch_device)
    b = torch.from_numpy(w_nk).to(plat.torch_device).t()  # (K, N) column-major: cuBLASLt's TN
    try:
        c = torch._int_mm(a, b)
    except (AttributeError, RuntimeError) as e:
        return not_available(f"torch {torch.__version__}: torch._int_mm failed ({e})")
    # |acc| < K * 2^14 < 2^53: the float64 product is exact
    exact_acc = (x[rows].astype(np.float64) @ w_nk.T.astype(np.float64)).astype(np.int64)
    exact = bool(np.array_equal(c[torch.from_numpy(rows).to(c.device)].cpu().numpy(), exact_acc))
    for _ in range(3):
        torch._int_mm(a, b)
    times = []
    for _ in range(reps):
        plat.flush()
        span = plat.span(plat.torch_stream())
        torch._int_mm(a, b)
        times.append(span.stop().seconds())
    t = float(np.median(times))
    r = {"available": True, "device": plat.torch_device, "torch": torch.__version__,
         "exact": exact, "ms": t * 1e3, "tops": ops / t / 1e12,
         "peak_pct": pct(ops / t / 1e12, peak), "reps": reps}
    print(f"  {'exact' if exact else 'NOT EXACT'} on the sampled rows; {r['ms']:.3f} ms = "
          f"{r['tops']:.2f} TOPS", flush=True)
    return r


# ---------------------------------------------------------------- 2. whole model

def ort_session(path, provider):
    try:
        import onnxruntime as ort
    except Exception as e:
        return None, not_available(f"onnxruntime failed to import ({type(e).__name__}: {e})")
    have = ort.get_available_providers()
    if provider not in have:
        return None, not_available(f"onnxruntime {ort.__version__} offers {have}, not {provider} "
                                   "(the onnxruntime-gpu package provides it)")
    try:
        sess = ort.InferenceSession(path, providers=[provider])
    except Exception as e:
        return None, not_available(f"onnxruntime {ort.__version__}: session with {provider} "
                                   f"failed ({type(e).__name__}: {e})")
    if provider not in sess.get_providers():  # onnxruntime falls back with a warning only
        return None, not_available(f"onnxruntime {ort.__version__} fell back to "
                                   f"{sess.get_providers()} (its warning above says why)")
    return sess, {"available": True, "provider": provider, "onnxruntime": ort.__version__}


def model_case(plat, models_dir, n):
    """(name, ONNX path, n float32 images): ResNet-50 QDQ, or the digits QDQ file for a dry run."""
    if plat.dry_run:
        from synapse_gpu.examples.demo import example_path

        images = np.load(str(example_path("digits_test.npz")))["images"][:n]
        return "digits CNN (dry-run stand-in)", str(example_path("digits_int8.onnx")), images
    from synapse_gpu.examples.resnet50 import images, quantized_resnet50

    print("ResNet-50: building the QDQ file (reused when present) ...", flush=True)
    return "ResNet-50 QDQ", quantized_resnet50(models_dir, formats=("QDQ",))["QDQ"], images(n, 7)


def bench_model(plat, name, path, images, batches, rounds, reps):
    print(f"{name}: import and prepare ...", flush=True)
    graph = load_any(path)
    trav = validate(graph).traversal
    spec_in, spec_out = graph.inputs[0], graph.outputs[0]
    exe = cuda.CudaExecutable(graph, trav, dev=plat.backend_device())

    def feeds(x):  # float32 images in, as the user hands them to a session
        return {spec_in.name: quantize(x, spec_in.scale, spec_in.zero_point)}

    big = images[:max(batches)]
    want = cpu.prepare(graph, trav).run(feeds(images[:2]))[0][spec_out.name]
    alone = exe.run(feeds(images[:2]))[0][spec_out.name]
    ours_big = exe.run(feeds(big))[0][spec_out.name]
    exact = bool(np.array_equal(alone, want) and np.array_equal(ours_big[:2], want))
    print(f"  GPU == CPU bit for bit on 2 images (alone and in the batch of {len(big)}): "
          f"{'yes' if exact else 'NO'}", flush=True)
    res = {"name": name, "file": os.path.basename(path), "nodes": len(graph.nodes),
           "bit_exact_vs_cpu": exact, "checked_images": 2}
    print(f"onnxruntime with {plat.ort_provider}:", flush=True)
    sess, res["onnxruntime"] = ort_session(path, plat.ort_provider)
    if sess is not None:
        ref = sess.run(None, {spec_in.name: big})[0]
        ref_q = np.clip(np.rint(ref / np.float32(spec_out.scale)) + spec_out.zero_point, -128, 127)
        res["onnxruntime"]["identical_int8_logits"] = float(np.mean(ours_big == ref_q))
        res["onnxruntime"]["top1_agree"] = float(np.mean(ours_big.argmax(1) == ref_q.argmax(1)))
    fns = []
    for batch in batches:
        x = big[:batch]
        fns.append((lambda x=x: exe.run(feeds(x)), 0))
        if sess is not None:
            fns.append((lambda x=x: sess.run(None, {spec_in.name: x}), 0))
    times = iter(median_times(fns, warmup=2, rounds=rounds, reps=reps))
    res["batches"] = []
    for batch in batches:
        ours = next(times)[0]
        peer = next(times)[0] if sess is not None else None
        row = {"batch": batch, "synapse_ms": ours * 1e3, "synapse_img_s": batch / ours,
               "ort_ms": None if peer is None else peer * 1e3,
               "ort_img_s": None if peer is None else batch / peer}
        print(f"  batch {batch}: Synapse {row['synapse_img_s']:.1f} img/s"
              + ("" if peer is None else f", onnxruntime {row['ort_img_s']:.1f} img/s"), flush=True)
        res["batches"].append(row)
    res["timing"] = f"median of {rounds} alternating blocks x {reps} runs, wall clock"
    print("batch-1 latency, plain launches vs CUDA graph replay:", flush=True)
    res["cuda_graphs"] = bench_graphs(plat, graph, trav, feeds(images[:1]), rounds, reps)
    print(f"kernel variants at batch {len(big)}:", flush=True)
    res["kernel_variants"] = bench_variants(plat, graph, trav, feeds(big), {spec_out.name: ours_big},
                                            {spec_out.name: want}, reps)
    return res


def bench_graphs(plat, graph, trav, feeds, rounds, reps):
    """exe.run on int8 feeds (staging, traversal, output read): plain launches against
    the replay of the captured CUDA graph, each checked against the CPU backend on its
    warm-up, capture and first replay runs; a run that differs is never timed."""
    want = cpu.prepare(graph, trav).run(feeds)[0]
    batch = int(next(iter(feeds.values())).shape[0])
    with plat.capture_device() as make:
        exes = {on: cuda.CudaExecutable(graph, trav, dev=make(), cuda_graphs=on)
                for on in (False, True)}
        exact = True
        for _ in range(3):  # warm-up, capture + replay, replay
            for exe in exes.values():
                out = exe.run(feeds)[0]
                exact &= all(np.array_equal(out[k], a) for k, a in want.items())
        res = {"batch": batch, "bit_exact_vs_cpu": exact, "launches": exes[True]._plan.launches,
               "graph": exes[True].graph_notes[batch]}
        print(f"  {res['graph']}; both == CPU bit for bit: {'yes' if exact else 'NO, not timed'}",
              flush=True)
        if exact:
            (plain, _), (replay, _) = median_times([(lambda e=e: e.run(feeds), 0)
                                                    for e in exes.values()],
                                                   warmup=2, rounds=rounds, reps=reps)
            res.update(plain_ms=plain * 1e3, graph_ms=replay * 1e3, speedup=plain / replay,
                       timing=f"median of {rounds} alternating blocks x {reps} runs, wall clock")
            print(f"  plain {res['plain_ms']:.3f} ms, graph {res['graph_ms']:.3f} ms "
                  f"({res['speedup']:.2f}x)", flush=True)
    return res


def bench_variants(plat, graph, trav, feeds, want, cpu_want, reps):
    """Each kernel variant forced in turn on the whole model at one batch: before it is
    timed its output must equal, bit for bit, v1's on the whole batch (want) and the CPU
    backend's on the first images (cpu_want); a variant that differs is never timed.
    Kernel times per launch (LaunchTimer), medians; per conv or dense layer shape the
    fastest variant goes into the variant table (backends/cuda_variants.py reads it)."""
    rows, layers = [], {}  # layers: shape key -> {variant: seconds}
    for variant in MODEL_VARIANTS:
        timed = LaunchTimer(plat.backend_device(), plat)
        exe = cuda.CudaExecutable(graph, trav, dev=timed, variant=variant)
        out = exe.run(feeds)[0]
        exact = all(np.array_equal(out[k], a) for k, a in want.items()) and all(
            np.array_equal(out[k][:len(a)], a) for k, a in cpu_want.items())
        used = sorted(set(exe.variants.chosen.values()))
        print(f"  forced {variant} (layers ran {', '.join(used)}): "
              f"{'bit-exact' if exact else 'MISMATCH, not timed'}", flush=True)
        row = {"variant": variant, "ran": used, "bit_exact": exact}
        rows.append(row)
        if not exact:
            continue
        exe.run(feeds)
        timed.take_seconds()
        runs = []
        for _ in range(reps):
            exe.run(feeds)
            runs.append([span.seconds() for span in timed.spans])
            timed.spans.clear()
        med = np.median(np.array(runs), axis=0)
        row["kernel_ms"] = float(med.sum()) * 1e3
        i = 0
        for node, todo in zip(trav.order, exe._plan.steps):
            n = sum(1 for step in todo if step[0] == "launch")
            # v6 runs only forced, for the whole model (its layout pass): never a table entry
            if exe.variants.chosen.get(node.name) == variant != "v6":
                P = {r: graph.buffers[b] for r, b in node.params.items()}
                t = layers.setdefault(cuda_variants.shape_key(node, exe._plan.shapes, P), {})
                t[variant] = t.get(variant, 0.0) + float(med[i:i + n].sum())
            i += n
    dev = plat.backend_device()
    cc = getattr(getattr(dev, "device", None), "compute_capability", None)
    table = {"device": plat.name, "compute_capability": cc, "batch": int(next(iter(
        feeds.values())).shape[0]), "layers": {k: min(t, key=t.get) for k, t in layers.items()}}
    return {"variants": rows, "layer_ms": {k: {v: s * 1e3 for v, s in t.items()}
                                           for k, t in layers.items()}, "table": table}


# ---------------------------------------------------------------- 3. results

def _f(v, fmt):
    return "unknown" if v is None else format(v, fmt)


def markdown(r):
    d, g, m = r["device"], r.get("gemm", {}), r.get("model", {})
    yes = {True: "yes", False: "NO"}
    peak = r["int8_dense_peak_tops"]
    lines = [f"# GPU benchmark: {d['name']} (bench/bench_gpu.py)", "",
             f"- command: `{r['command']}`, {r['date']}",
             "- device: " + ", ".join(f"{k} {v}" for k, v in d.items()),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
             "- int8 dense tensor-core peak: " + (
                 f"{peak} TOPS (datasheet, no sparsity)" if peak
                 else f"unknown (none on file for {d['name']!r})")]
    if "synapse" in g:
        clock = ("the CPU clock (dry run)" if r["dry_run"] else
                 "CUDA events, L2 flushed before each run,")
        lines += ["", f"## int8 GEMM {g['M']}x{g['N']}x{g['K']} ({g['ops'] / 1e9:.4g} GOP)", "",
                  f"Exactness on {g['checked_rows']} sampled rows (Synapse: int8 vs "
                  "reference/dense.py; torch: int32 vs the exact product). Kernel time from "
                  f"{clock} around the launch, median; exe.run "
                  "adds the upload of x and the download of y.", "",
                  "| engine | exact | kernel ms | GOP/s | % of int8 peak | exe.run ms |",
                  "|---|---|---|---|---|---|"]
        for s in g["synapse"]:
            lines.append(f"| Synapse {s['variant']} | {yes[s['bit_exact']]} | {s['kernel_ms']:.3f} "
                         f"| {s['gops']:.1f} | {_f(s['peak_pct'], '.3f')} | {s['run_ms']:.3f} |")
        t = g["torch_int_mm"]
        if t["available"]:
            lines.append(f"| torch._int_mm ({t['device']}, int32 out) | {yes[t['exact']]} | "
                         f"{t['ms']:.3f} | {t['tops'] * 1e3:.1f} = {t['tops']:.2f} TOPS | "
                         f"{_f(t['peak_pct'], '.1f')} | |")
        else:
            lines.append(f"\ntorch._int_mm: not available: {t['reason']}")
    if "batches" in m:
        o = m["onnxruntime"]
        ort = o.get("provider", "onnxruntime")
        lines += ["", f"## {m['name']} ({m['file']}, {m['nodes']} nodes)", "",
                  f"Synapse GPU int8 logits == Synapse CPU, bit for bit, on {m['checked_images']} "
                  f"images, alone and inside the largest batch: {yes[m['bit_exact_vs_cpu']]}. "
                  f"float32 images in, logits out; {m['timing']}.", "",
                  f"| batch | Synapse img/s | Synapse ms | {ort} img/s | {ort} ms | "
                  "Synapse/ORT throughput |", "|---|---|---|---|---|---|"]
        for b in m["batches"]:
            ratio = None if b["ort_img_s"] is None else b["synapse_img_s"] / b["ort_img_s"]
            lines.append(f"| {b['batch']} | {b['synapse_img_s']:.1f} | {b['synapse_ms']:.2f} | "
                         f"{_f(b['ort_img_s'], '.1f')} | {_f(b['ort_ms'], '.2f')} | "
                         f"{_f(ratio, '.2f')} |")
        if o["available"]:
            lines.append(f"\nonnxruntime {o['onnxruntime']} ({ort}) vs Synapse, largest batch: "
                         f"{o['identical_int8_logits']:.1%} identical int8 logits, top-1 agree "
                         f"{o['top1_agree']:.0%}")
        else:
            lines.append(f"\nonnxruntime: not available: {o['reason']}")
    cg = m.get("cuda_graphs")
    if cg:
        where = "the emulated device (dry run)" if r["dry_run"] else d["name"]
        lines += ["", f"## Batch-{cg['batch']} latency: CUDA graph replay ({m['name']})", "",
                  f"exe.run on int8 feeds, {cg['launches']} launches per run, on {where}; both "
                  f"== the CPU backend bit for bit: {yes[cg['bit_exact_vs_cpu']]}. Graph "
                  f"executable: {cg['graph']}.", "",
                  "| launches | exe.run ms | plain / graph |", "|---|---|---|"]
        if "plain_ms" in cg:
            lines += [f"| plain (one per node) | {cg['plain_ms']:.3f} | 1.00 |",
                      f"| CUDA graph replay | {cg['graph_ms']:.3f} | {cg['speedup']:.2f} |",
                      f"\n{cg['timing']}."]
    kv = m.get("kernel_variants")
    if kv:
        lines += ["", f"## Kernel variants ({m['name']}, batch {kv['table']['batch']})", "",
                  "Each variant forced on every conv/dense layer it applies to (others run "
                  "v1), checked bit-exact against the CPU backend before timing; kernel "
                  "time = the sum of all launches, median.", "",
                  "| forced | layers ran | bit-exact | kernel ms |", "|---|---|---|---|"]
        for v in kv["variants"]:
            lines.append(f"| {v['variant']} | {', '.join(v['ran'])} | {yes[v['bit_exact']]} | "
                         f"{_f(v.get('kernel_ms'), '.3f')} |")
        wins = {}
        for best in kv["table"]["layers"].values():
            wins[best] = wins.get(best, 0) + 1
        lines.append(f"\nFastest variant per layer shape ({len(kv['table']['layers'])} shapes): "
                     + ", ".join(f"{v} {n}" for v, n in sorted(wins.items()))
                     + "; table written next to this file (cuda_variants_*.json).")
    if r["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in r["errors"]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repetitions, GEMM 2048 unless --gemm is given")
    ap.add_argument("--gemm", type=int, help="M = N = K (default 4096; 2048 with --quick)")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: host-compiled kernels, CPU clocks, tiny sizes")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--models", default=os.path.join(tempfile.gettempdir(), "synapse_resnet50"),
                    help="where the quantized ResNet-50 is built (reused when present)")
    args = ap.parse_args()
    if args.dry_run:
        plat = DryRun()
        size, batches, reps, torch_reps, rounds, model_reps = args.gemm or 64, (1, 8), 2, 3, 1, 2
    else:
        try:
            plat = Gpu()
        except DeviceError as e:
            sys.exit(f"bench_gpu: {e}\n(--dry-run runs the script on the host without a GPU)")
        size = args.gemm or (2048 if args.quick else 4096)
        batches = (1, 64)
        reps, torch_reps, rounds, model_reps = (3, 20, 2, 2) if args.quick else (5, 50, 3, 3)
    peak = peak_tops(plat.name)
    print(f"device: {plat.info}; int8 dense peak: {peak or 'unknown'} TOPS", flush=True)
    r = {"schema": "synapse-gpu-bench/1", "dry_run": plat.dry_run,
         "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
         "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "device": plat.info,
         "versions": versions(), "int8_dense_peak_tops": peak, "errors": []}

    def part(key, fn):  # a failing part is recorded; the others still run and are written
        try:
            r[key] = fn()
        except Exception as e:
            traceback.print_exc()
            r["errors"].append(f"{key}: {type(e).__name__}: {e}")

    part("gemm", lambda: bench_gemm(plat, size, reps, torch_reps, peak))
    part("model", lambda: bench_model(plat, *model_case(plat, args.models, max(batches)),
                                      batches, rounds, model_reps))

    checks = [s["bit_exact"] for s in r.get("gemm", {}).get("synapse", [])]
    checks += [r["gemm"]["torch_int_mm"].get("exact", True)] if "gemm" in r else []
    checks += [r["model"]["bit_exact_vs_cpu"]] if "model" in r else []
    checks += [r["model"]["cuda_graphs"]["bit_exact_vs_cpu"]] if "cuda_graphs" in r.get("model", {}) else []
    checks += [v["bit_exact"] for v in r.get("model", {}).get("kernel_variants", {})
               .get("variants", [])]
    slug = re.sub(r"[^a-z0-9]+", "-", plat.name.lower()).strip("-")
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, f"gpu_{slug}")
    text = markdown(r)
    with open(base + ".md", "w") as f:
        f.write(text)
    with open(base + ".json", "w") as f:
        json.dump(r, f, indent=2)
    if "kernel_variants" in r.get("model", {}):  # SYNAPSE_CUDA_VARIANT_TABLE reads it
        with open(os.path.join(args.out_dir, f"cuda_variants_{slug}.json"), "w") as f:
            json.dump(r["model"]["kernel_variants"]["table"], f, indent=2)
    print("\n" + text + f"\nwritten: {base}.md, {base}.json", flush=True)
    return 0 if all(checks) and not r["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
