"""Synapse on a local Ray cluster (2 CPUs, one per module): every test asserts that the
distributed job digest equals the single-process one."""
import os
import shutil
import signal
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ray")
import ray  # noqa: E402

import synapse_gpu as sg  # noqa: E402
from synapse_gpu.cli import main  # noqa: E402
from synapse_gpu.errors import InputError, ShapeError  # noqa: E402
from synapse_gpu.examples.tiny import tiny_cnn  # noqa: E402
from synapse_gpu.jobdigest import job_digest_of  # noqa: E402
from synapse_gpu.modelfile import save_model  # noqa: E402
from synapse_gpu.ray import SynapsePredictor, job_digest, run_job  # noqa: E402
from synapse_gpu.shards import read_outputs, read_shard, shard_path, write_shard  # noqa: E402

N = 300  # records: several shards of 64, a short last one


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def deadline():
    """A stuck cluster fails its test instead of hanging CI."""
    def stuck(*_):
        raise TimeoutError("Ray job did not finish in 300 s")

    before = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A model, its records (one .npy; a directory of two .npz) and the single-process run."""
    d = tmp_path_factory.mktemp("rayjob")
    model = str(d / "m.syn")
    save_model(tiny_cnn(seed=5), model)
    x = np.random.default_rng(0).uniform(0, 1, (N, 1, 8, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    os.mkdir(d / "parts")
    np.savez(d / "parts" / "a.npz", input=x[:111])
    np.savez(d / "parts" / "b.npz", input=x[111:])
    sess = sg.InferenceSession(model, device="cpu")
    r = sess.run_full(None, {"input": x}, output_type="int8")
    want = job_digest_of(sess.model_id, [("input", r.int8_inputs["input"])],
                         [("logits", r.int8_outputs["logits"])])
    return SimpleNamespace(dir=d, model=model, x=x, model_id=sess.model_id,
                           logits=r.int8_outputs["logits"], want=want)


def test_map_batches_job_digest_equals_single_process(cluster, job):
    ds = ray.data.from_items([{"id": i, "input": job.x[i]} for i in range(N)], override_num_blocks=4)
    out = ds.map_batches(SynapsePredictor, fn_constructor_kwargs={"model": job.model, "device": "cpu"},
                         batch_size=16, compute=ray.data.ActorPoolStrategy(size=2),
                         num_cpus=1).materialize()
    assert job_digest(out, job.model_id) == job.want
    rows = out.to_pandas()
    got = np.stack(rows.sort_values("id")["logits"].to_numpy())
    np.testing.assert_array_equal(got, job.logits)


@pytest.mark.parametrize("src,shard_size,batch_size,workers", [
    ("x.npy", 64, 7, 2),
    ("parts", 128, 256, 1),  # a directory of .npz files: shards straddle the files
])
def test_sharded_job_digest_equals_single_process(cluster, job, tmp_path, src, shard_size,
                                                  batch_size, workers):
    r = run_job(job.model, job.dir / src, tmp_path / "out", workers=workers, shard_size=shard_size,
                batch_size=batch_size, device="cpu")
    assert (r.digest, r.records, r.computed) == (job.want, N, -(-N // shard_size))
    np.testing.assert_array_equal(read_outputs(tmp_path / "out")["logits"], job.logits)


@pytest.fixture(scope="module")
def crashed(cluster, job, tmp_path_factory):
    """A job whose worker dies hard (os._exit) on shard 2, after computing it, before writing it."""
    out = tmp_path_factory.mktemp("crash") / "out"
    marker = out.parent / "crashed"
    r = run_job(job.model, job.dir / "x.npy", out, workers=2, shard_size=64, batch_size=32, device="cpu",
                _crash_once=(2, str(marker)))
    return r, out, marker


def test_a_worker_killed_mid_job_changes_nothing(job, crashed):
    r, out, marker = crashed
    assert marker.exists()  # the worker did die
    assert r.digest == job.want
    names = sorted(os.listdir(out))
    assert names == ["job.json"] + [os.path.basename(shard_path(out, s)) for s in range(5)]
    shards = [read_shard(out, s) for s in range(5)]
    assert [s.start for s in shards] == [0, 64, 128, 192, 256]  # every record exactly once
    assert sum(len(s.digests) for s in shards) == N
    np.testing.assert_array_equal(read_outputs(out)["logits"], job.logits)


def test_rerun_recomputes_only_missing_or_damaged_shards(job, crashed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(crashed[1], out)
    os.remove(shard_path(out, 0))
    bad = read_shard(out, 3)
    bad.outputs["logits"] = bad.outputs["logits"].copy()
    bad.outputs["logits"][5, 0] ^= 1  # a flipped bit; its stored digests still look fine
    write_shard(out, 3, bad)
    r = run_job(job.model, job.dir / "x.npy", out, workers=1, shard_size=64, device="cpu")
    assert (r.digest, r.computed) == (job.want, 2)
    np.testing.assert_array_equal(read_outputs(out)["logits"], job.logits)
    with pytest.raises(InputError, match="another job.*shard_size"):
        run_job(job.model, job.dir / "x.npy", out, shard_size=128, device="cpu")


def test_a_changed_input_record_recomputes_its_shard(job, crashed, tmp_path):
    x = job.x.copy()
    x[70] = 1 - x[70]  # record 70 is in shard 1; the file keeps its name and size
    np.save(tmp_path / "x.npy", x)
    shutil.copytree(crashed[1], tmp_path / "out")
    r = run_job(job.model, tmp_path / "x.npy", tmp_path / "out", workers=1, shard_size=64,
                device="cpu")
    sess = sg.InferenceSession(job.model, device="cpu")
    q = sess.run_full(None, {"input": x}, output_type="int8")
    want = job_digest_of(sess.model_id, [("input", q.int8_inputs["input"])],
                         [("logits", q.int8_outputs["logits"])])
    assert (r.digest, r.computed) == (want, 1) and want != job.want


def test_bad_jobs_fail_on_the_driver_with_library_errors(cluster, job, tmp_path):
    with pytest.raises(InputError, match="power of two"):
        run_job(job.model, job.dir / "x.npy", tmp_path / "o", shard_size=100)
    with pytest.raises(InputError, match="at least 1"):
        run_job(job.model, job.dir / "x.npy", tmp_path / "o", workers=0)
    with pytest.raises(InputError, match="does not exist"):
        run_job(job.model, job.dir / "nope.npy", tmp_path / "o")
    np.save(tmp_path / "wrong.npy", np.zeros((4, 1, 7, 7), np.float32))
    with pytest.raises(ShapeError):
        run_job(job.model, tmp_path / "wrong.npy", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_ray_prints_the_job_digest_of_a_plain_run(cluster, job, tmp_path, capsys):
    assert main(["run", job.model, "-i", str(job.dir / "x.npy"), "--digest", "--device", "cpu", "-q"]) == 0
    assert f"job digest: {job.want}" in capsys.readouterr().out
    args = ["run", job.model, "-i", str(job.dir / "x.npy"), "--ray", "-o", str(tmp_path / "out"),
            "--shard-size", "128", "--batch-size", "50", "--device", "cpu", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"job digest: {job.want}" in out and "3 shards (3 computed" in out
    assert main(["run", job.model, "-i", str(job.dir / "x.npy"), "--ray"]) != 0
    err = capsys.readouterr().err
    assert "-o DIR" in err and len(err.strip().splitlines()) == 1
