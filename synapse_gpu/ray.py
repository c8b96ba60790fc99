"""Synapse on Ray (the optional extra: pip install "synapse-gpu[ray]"; docs/ray.md).

Two ways in:
- SynapsePredictor: a callable class for your own Ray Data pipeline,
      ds.map_batches(SynapsePredictor, fn_constructor_kwargs={"model": path}, batch_size=256,
                     compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1)
  one InferenceSession per actor; each output row carries its record digest, and
  job_digest(ds, model_id) reduces an "id" + "digest" dataset to the job digest.
- run_job (`synapse run MODEL --input X --ray [ADDRESS] -o DIR`): shards of records
  computed by actors, written as resumable files (synapse_gpu/shards.py); each
  worker hashes its shard's records into a subtree root and the driver combines the
  roots (synapse_gpu/jobdigest.py).
A record's digest depends on its input and the model only (batch invariance), so
the job digest equals the single-process one for every batch size, shard size,
worker count and retry.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

from .digest import record_digests
from .errors import InputError, SynapseError


class RayNotInstalledError(SynapseError, ImportError):
    """synapse_gpu.ray without Ray: the extra is optional, so say how to get it."""


try:
    import ray
    import ray.data
except ImportError as e:
    raise RayNotInstalledError(f"synapse_gpu.ray needs Ray ({e}): pip install 'synapse-gpu[ray]'") from None

from .jobdigest import JobDigestBuilder, check_shard_size, combine, job_digest as _job_digest, merkle_root
from .modelfile import model_id
from .session import InferenceSession, load_any
from .shards import InputSource, Shard, open_manifest, read_shard, write_manifest, write_shard


def _digested(sess, feeds):
    """Run one batch: (int8 outputs by name, the records' 32-byte digests)."""
    r = sess.run_full(None, feeds, output_type="int8")
    g = sess.graph
    return r.int8_outputs, record_digests(sess.model_id, [(t.name, r.int8_inputs[t.name]) for t in g.inputs],
                                          [(t.name, r.int8_outputs[t.name]) for t in g.outputs])


class SynapsePredictor:
    """Ray Data callable class: loads the model once per actor, runs numpy batches.

    A batch holds one column per model input (float32 or int8, axis 0 the record);
    the result holds the id column (passed through when present), one int8 column per
    model output and the digest column (hex). device: "auto", "cpu" or "cuda".
    """

    def __init__(self, model, device="auto", *, strict=True, id_column="id", digest_column="digest"):
        self.sess = InferenceSession(model, device=device, strict=strict)
        self.id_column, self.digest_column = id_column, digest_column

    def __call__(self, batch):
        names = [t.name for t in self.sess.graph.inputs]
        missing = [k for k in names if k not in batch]
        if missing:
            raise InputError(f"the batch has columns {sorted(batch)}; the model needs {names}")
        outputs, digests = _digested(self.sess, {k: np.asarray(batch[k]) for k in names})
        out = {self.id_column: batch[self.id_column]} if self.id_column in batch else {}
        out.update(outputs)
        out[self.digest_column] = np.array([d.hex() for d in digests])
        return out


def job_digest(ds, model_id_hex, *, id_column="id", digest_column="digest"):
    """The job digest of a dataset of record ids 0..n-1 and their digests (in any order).

    Its blocks travel to the driver: pass ds.select_columns(["id", "digest"]) of the
    lazy pipeline to move 40 bytes a record, or a materialized dataset whose outputs
    you also keep (the pipeline then runs once).
    """
    ids, digests = [], []
    for b in ds.iter_batches(batch_format="numpy"):
        ids.append(np.asarray(b[id_column]))
        digests += list(b[digest_column])
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    builder = JobDigestBuilder(model_id_hex, len(ids))
    builder.add(ids, digests)
    return builder.finish()


class _ShardWorker:
    """One actor: the model loaded once; per call, one shard verified or computed."""

    def __init__(self, graph, source, out_dir, shard_size, batch_size, device, strict, crash_once):
        self.sess = InferenceSession(graph, device=device, strict=strict)
        self.source, self.out_dir = source, out_dir
        self.shard_size, self.batch_size = shard_size, batch_size
        self.crash_once = crash_once

    def _verified(self, s, start, q_in):
        """The stored shard if its outputs hash, with these inputs, to its digests."""
        old = read_shard(self.out_dir, s)
        g = self.sess.graph
        if (old is None or old.start != start or sorted(old.outputs) != sorted(t.name for t in g.outputs)
                or any(len(v) != len(q_in[g.inputs[0].name]) for v in old.outputs.values())):
            return None
        again = record_digests(self.sess.model_id, [(t.name, q_in[t.name]) for t in g.inputs],
                               [(t.name, old.outputs[t.name]) for t in g.outputs])
        return old if again == old.digests and merkle_root(again) == old.root else None

    def __call__(self, batch):
        s = int(batch["id"][0])
        start = s * self.shard_size
        feeds = self.source.read(start, min(start + self.shard_size, self.source.n))
        shard = self._verified(s, start, self.sess.quantize_feeds(feeds))
        computed = shard is None
        if computed:
            outs, digests = {}, []
            for a in range(0, len(next(iter(feeds.values()))), self.batch_size):
                o, d = _digested(self.sess, {k: v[a:a + self.batch_size] for k, v in feeds.items()})
                digests += d
                for k, v in o.items():
                    outs.setdefault(k, []).append(v)
            shard = Shard(start, {k: np.concatenate(v) for k, v in outs.items()}, digests,
                          merkle_root(digests))
            self._maybe_crash(s)
            write_shard(self.out_dir, s, shard)
        return {"shard": [s], "root": [shard.root.hex()], "records": [len(shard.digests)],
                "computed": [computed], "device": [self.sess.device]}

    def _maybe_crash(self, s):
        """Fault injection for the tests: die once, hard, mid-shard (crash_once = (s, marker))."""
        if self.crash_once and self.crash_once[0] == s and not os.path.exists(self.crash_once[1]):
            open(self.crash_once[1], "w").close()
            os._exit(1)


@dataclass
class JobResult:
    digest: str  # the job digest (hex)
    model_id: str
    records: int
    shards: int
    computed: int  # shards computed in this run (the rest were verified and reused)
    devices: list  # the workers' devices


def connect(address=None):
    """Join the cluster at address (None: RAY_ADDRESS or a new local one); True if we
    started Ray here, so the caller shuts it down."""
    if ray.is_initialized():
        return False
    ray.init(address=address, logging_level=logging.WARNING, configure_logging=True)
    return True


def run_job(model, input_path, out_dir, *, address=None, workers=None, shard_size=4096,
            batch_size=256, device="auto", strict=True, progress=False, _crash_once=None):
    """Run model over every record of input_path on a Ray cluster.

    Shards already in out_dir that verify are reused; missing or damaged ones (a dead
    worker's) are computed; each record counts exactly once. address: the cluster to
    join if Ray is not initialized (see connect(); one started here is shut down at
    the end). workers: actors (default one per GPU, or one per CPU). Returns a
    JobResult; the digest is also written to out_dir/job.json.
    """
    check_shard_size(shard_size)
    if batch_size < 1 or (workers is not None and workers < 1):
        raise InputError(f"batch size {batch_size}, workers {workers}: each must be at least 1")
    # every check the driver can make comes before Ray starts: bad jobs fail in seconds
    graph = load_any(model)
    probe = InferenceSession(graph, device="cpu", strict=strict)
    source = InputSource(input_path, [t.name for t in graph.inputs])
    probe.quantize_feeds(source.read(0, 1))
    mid = model_id(graph)
    out_dir = os.path.abspath(out_dir)
    manifest = open_manifest(out_dir, mid, source, shard_size)
    started = connect(address)
    try:
        n_shards = -(-source.n // shard_size)
        roots, computed, devices = _execute(
            n_shards, source.n, workers, progress, device,
            dict(graph=graph, source=source, out_dir=out_dir, shard_size=shard_size,
                 batch_size=batch_size, strict=strict, crash_once=_crash_once))
    finally:
        if started:
            ray.shutdown()
    digest = _job_digest(mid, source.n, combine([roots[s] for s in range(n_shards)]))
    write_manifest(out_dir, dict(manifest, job_digest=digest))
    return JobResult(digest, mid, source.n, n_shards, computed, devices)


def _execute(n_shards, n, workers, progress, device, worker_kwargs):
    """The Ray Data pipeline: one row per shard in, one (shard, root) row per shard out."""
    from tqdm import tqdm

    res = ray.cluster_resources()
    gpus = 1 if device == "cuda" or (device == "auto" and res.get("GPU", 0) >= 1) else 0
    workers = workers or max(1, int(res.get("GPU", 0) if gpus else res.get("CPU", 1)))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts records, not Ray's blocks
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # from_items, not range(): no read tasks that would wait for CPUs the actors hold
    ds = ray.data.from_items([{"id": s} for s in range(n_shards)], override_num_blocks=n_shards)
    ds = ds.map_batches(
        _ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, n_shards)),
        num_cpus=0 if gpus else 1, num_gpus=gpus,
        fn_constructor_kwargs=dict(worker_kwargs, device=device if gpus else "cpu"))
    roots, computed, devices = {}, 0, set()
    with tqdm(total=n, unit="record", disable=not progress, file=sys.stderr, leave=False) as bar:
        for row in ds.iter_rows():
            # a retried shard reports once; if it ever reported twice, the content is the same
            if row["shard"] not in roots:
                bar.update(row["records"])
                computed += bool(row["computed"])
            roots[row["shard"]] = bytes.fromhex(row["root"])
            devices.add(row["device"])
    if sorted(roots) != list(range(n_shards)):
        raise InputError(f"shards {sorted(set(range(n_shards)) - set(roots))[:5]} never reported")
    return roots, computed, sorted(devices)


def cli_run(args):
    """`synapse run ... --ray [ADDRESS]`: the job on a cluster, output shards in --output."""
    if args.trace:
        raise InputError("--trace is for single-process runs: drop --ray to trace a record")
    if not args.output:
        raise InputError("--ray writes resumable output shards: give an output directory with -o DIR")
    r = run_job(args.model, args.input, args.output, address=args.ray or None, workers=args.workers,
                shard_size=args.shard_size, batch_size=args.batch_size, device=args.device,
                strict=not args.no_strict, progress=not args.quiet)
    print(f"wrote {args.output}: {r.shards} shards ({r.computed} computed, "
          f"{r.shards - r.computed} verified and reused)")
    print(f"devices: {', '.join(r.devices)}  records: {r.records}  model id: {r.model_id}")
    print(f"job digest: {r.digest}")
    return 0
