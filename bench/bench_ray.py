"""Throughput of a sharded Ray job (1 and 2 workers) against the single-process run.

    PYTHONPATH=. python bench/bench_ray.py [--records 8192] [--out bench/results/ray_cpu.md]

One local Ray cluster (num_cpus=2) on this machine. Every configuration must give
the single-process job digest, or the benchmark fails. Reported per configuration:
wall seconds and records/s for the whole job (actor start and model load included),
and the wall seconds of the same job on 64 records (the fixed cost of a job). The
load average is printed with the table: on a shared 2-core machine it decides what
the figures mean.
"""
import argparse
import os
import tempfile
import time

import numpy as np

import synapse_gpu as sg  # noqa: E402
from synapse_gpu.examples.tiny import tiny_cnn  # noqa: E402
from synapse_gpu.jobdigest import job_digest_of  # noqa: E402
from synapse_gpu.modelfile import save_model  # noqa: E402


def single_process(model, x, batch):
    """Seconds and job digest of the plain loop (inference, then the record digests)."""
    sess = sg.InferenceSession(model, device="cpu")
    t = time.perf_counter()
    q_in, q_out = [], []
    for s in range(0, len(x), batch):
        r = sess.run_full(None, {"input": x[s:s + batch]}, output_type="int8")
        q_in.append(r.int8_inputs["input"])
        q_out.append(r.int8_outputs["logits"])
    infer = time.perf_counter() - t
    digest = job_digest_of(sess.model_id, [("input", np.concatenate(q_in))],
                           [("logits", np.concatenate(q_out))])
    return infer, time.perf_counter() - t, digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=8192)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", help="write the markdown table here")
    a = ap.parse_args()
    import ray

    from synapse_gpu.ray import run_job

    d = tempfile.mkdtemp(prefix="bench_ray_")
    model = os.path.join(d, "m.syn")
    save_model(tiny_cnn(seed=0, channels=16, size=16), model)
    x = np.random.default_rng(0).uniform(0, 1, (a.records, 1, 16, 16)).astype(np.float32)
    np.save(os.path.join(d, "x.npy"), x)
    np.save(os.path.join(d, "small.npy"), x[:64])

    load0 = os.getloadavg()[0]
    infer, total, want = single_process(model, x, a.batch_size)
    rows = [("single process, inference only", infer, None, a.records / infer),
            ("single process, inference + record digests", total, None, a.records / total)]
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    init = time.perf_counter() - t
    for w in (1, 2):
        t = time.perf_counter()
        run_job(model, os.path.join(d, "small.npy"), os.path.join(d, f"small{w}"), workers=w,
                shard_size=64, device="cpu")
        fixed = time.perf_counter() - t
        out = os.path.join(d, f"out{w}")
        t = time.perf_counter()
        r = run_job(model, os.path.join(d, "x.npy"), out, workers=w, shard_size=a.shard_size,
                    batch_size=a.batch_size, device="cpu")
        wall = time.perf_counter() - t
        assert r.digest == want, (w, r.digest, want)
        rows.append((f"Ray, {w} worker{'s' * (w > 1)}", wall, fixed, a.records / wall))
        if w == 2:  # a rerun over finished shards: verification (hashing) only, no inference
            t = time.perf_counter()
            r = run_job(model, os.path.join(d, "x.npy"), out, workers=w, shard_size=a.shard_size,
                        device="cpu")
            wall = time.perf_counter() - t
            assert r.digest == want and r.computed == 0
            rows.append(("Ray, 2 workers, rerun: every shard verified", wall, fixed, a.records / wall))
    ray.shutdown()
    load1 = os.getloadavg()[0]

    lines = [f"records: {a.records} of 1x16x16 (tiny_cnn, 16 channels), shard {a.shard_size}, "
             f"batch {a.batch_size}; {os.cpu_count()} CPUs, ray.init(num_cpus=2) took {init:.1f} s",
             f"load average (1 min) {load0:.1f} at the start, {load1:.1f} at the end",
             f"job digest (every row): {want}", "",
             "| run | wall s | records/s | same job on 64 records, wall s |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {w:.1f} | {rps:.0f} | {'' if f is None else f'{f:.1f}'} |" for n, w, f, rps in rows]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
