"""Job digests (synapse_gpu/jobdigest.py) and per-record digests: pure Python, no Ray."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest

import synapse_gpu as sg
from synapse_gpu.digest import record_digests
from synapse_gpu.errors import InputError
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.jobdigest import (JobDigestBuilder, Tree, check_shard_size, combine, descend,
                                   job_digest, merkle_root)
from synapse_gpu.shards import Shard, differing_records, write_manifest, write_shard

MID = "5a" * 32


def _digests(n, seed=0):
    return [bytes(r) for r in np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)]


def _mth(d):
    """RFC 6962's definition, written out independently of jobdigest.py."""
    if len(d) == 1:
        return hashlib.sha256(b"\0" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\1" + _mth(d[:k]) + _mth(d[k:])).digest()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 100])
def test_root_is_rfc6962(n):
    d = _digests(n)
    assert merkle_root(d) == _mth(d)


def test_job_digest_byte_layout():
    d = _digests(3)
    want = hashlib.sha256(b"synapse-job-v1\0" + bytes.fromhex(MID) + (3).to_bytes(8, "little")
                          + _mth(d)).hexdigest()
    assert job_digest(MID, 3, merkle_root(d)) == want


@pytest.mark.parametrize("n", [1, 7, 16, 17, 100, 257])
@pytest.mark.parametrize("shard", [1, 4, 16, 64])
def test_shard_roots_combine_to_the_whole_root(n, shard):
    d = _digests(n, seed=n)
    roots = [merkle_root(d[s:s + shard]) for s in range(0, n, shard)]
    assert combine(roots) == merkle_root(d)


def test_shard_size_must_be_a_power_of_two():
    check_shard_size(1024)
    for bad in (0, 3, 1000):
        with pytest.raises(InputError, match="power of two"):
            check_shard_size(bad)


def test_builder_takes_any_order_and_refuses_lost_or_repeated_records():
    d = _digests(10)
    b = JobDigestBuilder(MID, 10)
    perm = np.random.default_rng(1).permutation(10)
    b.add(perm[:6], [d[i] for i in perm[:6]])
    b.add(perm[6:], [d[i].hex() for i in perm[6:]])  # raw bytes or hex
    assert b.finish() == job_digest(MID, 10, merkle_root(d))

    b = JobDigestBuilder(MID, 10)
    b.add(range(9), d[:9])
    with pytest.raises(InputError, match="never arrived"):
        b.finish()
    with pytest.raises(InputError, match="twice"):
        b.add([8, 9], d[8:10])
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        b.add([10], d[:1])
    with pytest.raises(InputError):
        JobDigestBuilder(MID, 0)


@pytest.mark.parametrize("changed", [[0], [99], [3, 64, 65], list(range(40, 48))])
def test_descend_finds_exactly_the_changed_records(changed):
    a = _digests(100)
    b = list(a)
    for i in changed:
        b[i] = hashlib.sha256(b[i]).digest()
    ta, tb = Tree(a), Tree(b)
    assert ta.node(0, 100) == merkle_root(a) and tb.node(0, 100) == merkle_root(b)
    asked = []
    found = descend(100, ta.node, lambda lo, hi: asked.append((lo, hi)) or tb.node(lo, hi))
    assert found == changed
    assert len(asked) <= 2 * len(changed) * 8  # O(d log n): never every node
    assert descend(100, ta.node, ta.node) == []


@pytest.fixture(scope="module")
def digits():
    sess = sg.InferenceSession(tiny_cnn(seed=5), device="cpu")
    x = np.random.default_rng(0).uniform(0, 1, (97, 1, 8, 8)).astype(np.float32)
    return sess, x


def test_record_digest_is_the_run_digest_of_the_record_alone(digits):
    sess, x = digits
    r = sess.run_full(None, {"input": x}, output_type="int8")
    got = record_digests(sess.model_id, [("input", r.int8_inputs["input"])],
                         [("logits", r.int8_outputs["logits"])])
    for i in (0, 13, 96):
        sess.run(None, {"input": x[i:i + 1]})
        assert got[i].hex() == sess.last_result.digest


@pytest.mark.parametrize("batch", [1, 5, 32, 97])
def test_record_digests_do_not_depend_on_the_batch(digits, batch):
    """Batch invariance: the same record digests (and so job digest) for any split."""
    sess, x = digits
    ds = []
    for s in range(0, len(x), batch):
        r = sess.run_full(None, {"input": x[s:s + batch]}, output_type="int8")
        ds += record_digests(sess.model_id, [("input", r.int8_inputs["input"])],
                             [("logits", r.int8_outputs["logits"])])
    whole = sess.run_full(None, {"input": x}, output_type="int8")
    assert ds == record_digests(sess.model_id, [("input", whole.int8_inputs["input"])],
                                [("logits", whole.int8_outputs["logits"])])


def test_the_core_never_imports_ray():
    code = ("import sys, synapse_gpu.cli, synapse_gpu.session, synapse_gpu.jobdigest, "
            "synapse_gpu.shards; synapse_gpu.cli.build_parser(); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'ray'], 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_ray_the_extra_says_how_to_install_it():
    code = ("import sys; sys.modules['ray'] = None\n"
            "try:\n    import synapse_gpu.ray\n"
            "except ImportError as e:\n"
            "    from synapse_gpu.errors import SynapseError\n"
            "    assert isinstance(e, SynapseError) and 'synapse-gpu[ray]' in str(e), e\n"
            "else:\n    raise SystemExit('imported')")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_differing_records_of_two_job_directories(tmp_path):
    def job(name, digests):
        d = tmp_path / name
        d.mkdir()
        write_manifest(d, {"records": len(digests), "shard_size": 4})
        for s in range(0, len(digests), 4):
            part = digests[s:s + 4]
            write_shard(d, s // 4, Shard(s, {"y": np.zeros((len(part), 2), np.int8)}, part,
                                         merkle_root(part)))
        return d

    a = _digests(10)
    b = list(a)
    b[6] = b[7] = bytes(32)
    assert differing_records(job("a", a), job("b", b)) == [6, 7]
    assert differing_records(tmp_path / "a", tmp_path / "a") == []
    with pytest.raises(InputError, match="not the same job"):
        differing_records(tmp_path / "a", job("c", a[:9]))
    (tmp_path / "b" / "shard-0000001.npz").unlink()
    with pytest.raises(InputError, match="missing or damaged"):
        differing_records(tmp_path / "a", tmp_path / "b")
