"""Fuzz campaign: `python -m tests.fuzz.run --syn 10000 --onnx 20000 [--seed 15] [--workers 2]`.

Every case is a deterministic function of (seed, kind, index): a seed model and a
mutation. Workers are forked processes with an address-space limit (--mem-gb); the
parent kills a worker whose case runs past --timeout, records "timeout", and starts a
new worker after that case. A worker that dies records "crash". Findings (anything but
accepted / refused:*) are written to --findings as replayable files and summarised.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from . import check, mutate_onnx, mutate_syn, seeds  # noqa: E402

KINDS = {"syn": 0, "onnx": 1}
_STANDIN = None


def case_bytes(kind, seed, i):
    """(seed model name, mutated file bytes) of case i."""
    rng = np.random.default_rng([seed, KINDS[kind], i])
    if kind == "syn":
        pool = seeds.syn_seeds()
        name = sorted(pool)[i % len(pool)]
        return name, mutate_syn.mutate(pool[name], rng)
    pool = seeds.onnx_seeds()
    name = sorted(pool)[i % len(pool)]
    return name, mutate_onnx.mutate(pool[name], rng)


def run_case(kind, seed, i):
    _, data = case_bytes(kind, seed, i)
    return (check.check_syn_bytes if kind == "syn" else check.check_onnx_bytes)(data, i)


def is_finding(outcome):
    return not outcome.startswith(("accepted", "refused:"))


def _emulated_cuda():
    """Install the emulated CUDA device (tests/emucuda) for this process and compile its
    kernels on the seeds once, before any case is timed."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from emucuda import cupy_standin

    global _STANDIN
    _STANDIN = cupy_standin.installed()  # referenced: collecting it would uninstall the device
    _STANDIN.__enter__()  # for the worker's lifetime
    check.DEVICES.append("cuda")
    for g in seeds.syn_seeds().values():
        check.outcome(check.run_graph, g, 0)


def _worker(cases, log, mem_bytes, emulated_cuda):
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    warnings.simplefilter("ignore")  # numpy overflow notes on hostile scales are expected
    if emulated_cuda:
        _emulated_cuda()
    with open(log, "a") as f:
        for kind, seed, i in cases:
            f.write(json.dumps(["start", kind, i, time.time()]) + "\n")
            f.flush()
            f.write(json.dumps(["done", kind, i, run_case(kind, seed, i)]) + "\n")
            f.flush()


def _read(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def campaign(n_syn, n_onnx, seed=15, workers=2, timeout=30.0, mem_gb=4.0, emulated_cuda=False):
    """Run every case; returns {(kind, i): outcome}."""
    workdir = tempfile.mkdtemp(prefix="synapse-fuzz-")  # the workers' logs
    seeds.syn_seeds(), seeds.onnx_seeds()  # built once, inherited by the forked workers
    from synapse_gpu.backends import cpu_engines

    for k in (4096, 8192, 16384, 32768, 65536):  # the CPU engines' one-off self-tests: untimed
        cpu_engines.choose(k)
    cases = [("syn", seed, i) for i in range(n_syn)] + [("onnx", seed, i) for i in range(n_onnx)]
    shares = [cases[w::workers] for w in range(workers)]
    results, ctx = {}, mp.get_context("fork")
    running = {}  # worker slot -> (process, log, remaining cases)
    started = 0

    def spawn(slot, todo):
        nonlocal started
        started += 1
        log = os.path.join(workdir, f"w{slot}-{started}.jsonl")
        p = ctx.Process(target=_worker, args=(todo, log, int(mem_gb * (1 << 30)), emulated_cuda), daemon=True)
        p.start()
        running[slot] = (p, log, todo)

    for w, share in enumerate(shares):
        if share:
            spawn(w, share)
    while running:
        time.sleep(0.2)
        for slot, (p, log, todo) in list(running.items()):
            lines = _read(log)
            done = {(k, i): o for tag, k, i, o in lines if tag == "done"}
            results.update(done)
            last = lines[-1] if lines else None
            stuck = last and last[0] == "start" and time.time() - last[3] > timeout
            if p.is_alive() and not stuck:
                continue
            if stuck:
                p.kill()
            p.join()
            done = {(k, i): o for tag, k, i, o in _read(log) if tag == "done"}  # lines written last
            results.update(done)
            del running[slot]
            left = [c for c in todo if (c[0], c[2]) not in done]
            if left:
                k, _, i = left[0]
                results[(k, i)] = "timeout" if stuck else (
                    "memory" if p.exitcode == -9 else f"crash:exit{p.exitcode}")
                if left[1:]:
                    spawn(slot, left[1:])
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syn", type=int, default=10000)
    ap.add_argument("--onnx", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    ap.add_argument("--mem-gb", type=float, default=4.0, help="address-space limit per worker")
    ap.add_argument("--findings", default="/tmp/synapse-fuzz/findings")
    ap.add_argument("--emulated-cuda", action="store_true",
                    help="also compare the CUDA backend on the emulated device (tests/emucuda)")
    a = ap.parse_args(argv)
    t0 = time.time()
    results = campaign(a.syn, a.onnx, a.seed, a.workers, a.timeout, a.mem_gb, a.emulated_cuda)
    for kind in KINDS:
        c = collections.Counter(o for (k, _), o in results.items() if k == kind)
        print(f"{kind}: {sum(c.values())} cases: " + ", ".join(f"{o} {n}" for o, n in c.most_common()))
    findings = sorted((k, i, o) for (k, i), o in results.items() if is_finding(o))
    os.makedirs(a.findings, exist_ok=True)
    for k, i, o in findings:
        name, data = case_bytes(k, a.seed, i)
        path = os.path.join(a.findings, f"{k}-{a.seed}-{i}-{o.replace(':', '_')}.{k}")
        with open(path, "wb") as f:
            f.write(data)
        print(f"finding: {o} {k} case {i} (seed model {name}) -> {path}")
    print(f"{len(results)} cases, {len(findings)} findings, {time.time() - t0:.0f} s")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
