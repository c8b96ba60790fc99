"""Inputs read by record range, and a job's output shards on disk (no Ray needed).

A distributed job (synapse_gpu/ray.py) splits records 0..n-1 into shards of
shard_size records (a power of two, so each shard is a subtree of the job's Merkle
tree). Shard s is one file, OUT/shard-<s>.npz, holding its first record id, the
int8 outputs, the record digests and the shard's subtree root. Files appear by
atomic rename, so a worker that dies mid-write leaves no half shard; a shard that
exists is recomputed only if its content fails verification (its outputs hashed
again with the current inputs must give its digests). OUT/job.json names the job
(model id, record count, shard size, input file names and sizes), so a rerun resumes
the same job and refuses a directory that belongs to another.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .jobdigest import Tree, descend, merkle_root

MANIFEST = "job.json"
FORMAT = "synapse-job-shards-v1"


def _npz_shape(path, member):
    """A .npz member's shape from its header, without reading the data."""
    with zipfile.ZipFile(path) as z, z.open(member + ".npy") as f:
        fmt = np.lib.format
        header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
        return header(f)[0]


class InputSource:
    """The records of a .npy (memory-mapped), a .npz (by input name) or a directory of
    such files (name order), numbered consecutively along axis 0. Picklable: workers
    open the files themselves, so the path must be visible to every node."""

    def __init__(self, path, names):
        path = os.path.abspath(os.fspath(path))
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.endswith((".npy", ".npz")))
            if not files:
                raise InputError(f"{path}: no .npy or .npz files in this directory")
        elif os.path.isfile(path):
            files = [path]
        else:
            raise InputError(f"input {path} does not exist")
        self.names = list(names)
        self.parts, self.fingerprint = [], []
        for f in files:
            members = self._members(f)
            counts = {(self._shape(f, members[k]) or (0,))[0] for k in self.names}
            if len(counts) != 1 or 0 in counts:
                raise InputError(f"{f}: the inputs {self.names} need equal, non-empty axis 0")
            self.parts.append((f, members, counts.pop()))
            # no mtime: a copied input may resume, as each reused shard is rehashed with it
            self.fingerprint.append([os.path.basename(f), os.path.getsize(f)])
        self.n = sum(c for _, _, c in self.parts)
        self._open = (None, None)  # (file, loaded arrays): a worker's cache of its current file

    def _members(self, f):
        """input name -> .npz member name (None for a .npy file)."""
        if f.endswith(".npy"):
            if len(self.names) != 1:
                raise InputError(f"{f}: a .npy feeds one input; the model has {self.names} (use .npz)")
            return {self.names[0]: None}
        try:
            files = [m[:-4] for m in zipfile.ZipFile(f).namelist() if m.endswith(".npy")]
        except (OSError, zipfile.BadZipFile) as e:
            raise InputError(f"cannot read input file {f}: {e}") from None
        if all(k in files for k in self.names):
            return {k: k for k in self.names}
        if len(self.names) == 1 and len(files) == 1:  # one array under any name
            return {self.names[0]: files[0]}
        raise InputError(f"{f} holds {files}; the model's inputs are {self.names}")

    @staticmethod
    def _shape(f, member):
        try:
            if member is None:
                return np.load(f, mmap_mode="r").shape
            return _npz_shape(f, member)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"cannot read input file {f}: {e}") from None

    def _arrays(self, f, members):
        if self._open[0] != f:
            if f.endswith(".npy"):
                arrays = {self.names[0]: np.load(f, mmap_mode="r")}
            else:
                with np.load(f, allow_pickle=False) as z:
                    arrays = {k: z[m] for k, m in members.items()}
            self._open = (f, arrays)
        return self._open[1]

    def read(self, start, stop):
        """{input name: array} of records [start, stop), across file boundaries."""
        chunks, base = {k: [] for k in self.names}, 0
        for f, members, count in self.parts:
            lo, hi = max(start - base, 0), min(stop - base, count)
            if lo < hi:
                for k, a in self._arrays(f, members).items():
                    chunks[k].append(np.asarray(a[lo:hi]))
            base += count
        return {k: np.concatenate(v) for k, v in chunks.items()}


@dataclass
class Shard:
    start: int  # first record id
    outputs: dict  # output name -> int8 array
    digests: list  # 32-byte record digests
    root: bytes  # merkle_root(digests)


def shard_path(out_dir, s):
    return os.path.join(out_dir, f"shard-{s:07d}.npz")


def write_shard(out_dir, s, shard):
    """Write shard s atomically: a reader sees the whole file or none."""
    path = shard_path(out_dir, s)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, start=np.int64(shard.start), root=np.frombuffer(shard.root, np.uint8),
                 digests=np.frombuffer(b"".join(shard.digests), np.uint8).reshape(-1, 32),
                 **{"out." + k: v for k, v in shard.outputs.items()})
    os.replace(tmp, path)


def read_shard(out_dir, s):
    """Shard s as stored, or None when absent or unreadable (it is then recomputed)."""
    try:
        with np.load(shard_path(out_dir, s), allow_pickle=False) as z:
            digests = [bytes(d) for d in z["digests"]]
            return Shard(int(z["start"]), {k[4:]: z[k] for k in z.files if k.startswith("out.")},
                         digests, bytes(z["root"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def open_manifest(out_dir, model_id_hex, source, shard_size):
    """Create OUT/job.json, or check that the existing one describes this same job."""
    os.makedirs(out_dir, exist_ok=True)
    want = {"format": FORMAT, "model_id": model_id_hex, "records": source.n,
            "shard_size": shard_size, "inputs": source.fingerprint}
    path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(path):
        with open(path) as f:
            have = json.load(f)
        if {k: have.get(k) for k in want} != want:
            diff = [k for k in want if have.get(k) != want[k]]
            raise InputError(f"{out_dir} holds another job (other {', '.join(diff)}); "
                             "use a new output directory")
        return have
    write_manifest(out_dir, want)
    return want


def write_manifest(out_dir, manifest):
    path = os.path.join(out_dir, MANIFEST)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(path + ".tmp", path)


def _shards(out_dir):
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{out_dir} is not a job's output directory ({e})") from None
    shards = [read_shard(out_dir, s) for s in range(-(-m["records"] // m["shard_size"]))]
    if any(sh is None or merkle_root(sh.digests) != sh.root for sh in shards):
        raise InputError(f"{out_dir}: shards missing or damaged; rerun the job to complete it")
    return shards


def read_outputs(out_dir):
    """The job's int8 outputs in record order, concatenated from its shards."""
    shards = _shards(out_dir)
    return {k: np.concatenate([sh.outputs[k] for sh in shards]) for k in shards[0].outputs}


def differing_records(dir_a, dir_b):
    """Record ids whose digests differ between two finished jobs over the same records,
    found by descending the two Merkle trees from their roots."""
    a, b = ([d for sh in _shards(x) for d in sh.digests] for x in (dir_a, dir_b))
    if len(a) != len(b):
        raise InputError(f"{dir_a} has {len(a)} records, {dir_b} has {len(b)}: not the same job")
    return descend(len(a), Tree(a).node, Tree(b).node)
