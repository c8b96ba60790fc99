"""CLI user mistakes (issue 15): each is one line on stderr naming what, which file and what
to do, exit code 2, never a traceback; input headers are checked before any allocation."""
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from synapse_gpu.cli import main
from synapse_gpu.modelfile import save_model
from synapse_gpu.npyio import load_feeds
from tests.test_hostile_syn import base_graph


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_cli")
    save_model(base_graph(), d / "m.syn")
    np.save(d / "x.npy", np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32))
    (d / "empty.npz").write_bytes(b"")
    (d / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    np.savez(d / "none.npz")
    np.savez(d / "wrong_name.npz", a=np.zeros((2, 1, 8, 8), np.float32), b=np.zeros(3))
    np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "i64.npy", np.zeros((2, 1, 8, 8), np.int64))
    np.save(d / "scalar.npy", np.float32(1))
    # a 128-byte .npy whose header declares 238 GiB
    with open(d / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (1_000_000_000, 1, 8, 8)})
        f.write(b"\0" * 64)
    with zipfile.ZipFile(d / "huge.npz", "w") as z:  # the same lie inside an archive
        z.write(d / "huge.npy", "x.npy")
    (d / "unreadable.syn").write_bytes(b"x")
    os.chmod(d / "unreadable.syn", 0)
    (d / "adir.syn").mkdir()
    return d


def _one_line_error(capsys, argv, match):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("synapse: error: ") and "Traceback" not in err, err
    assert match in err, err


@pytest.mark.parametrize("argv, match", [
    (["run", "{d}/missing.syn", "-i", "{d}/x.npy"], "missing.syn"),
    (["inspect", "{d}/missing.syn"], "missing.syn"),
    (["run", "{d}/adir.syn", "-i", "{d}/x.npy"], "adir.syn"),
    (["inspect", "{d}/adir.syn"], "adir.syn"),
    (["inspect", "{d}/missing.onnx"], "missing.onnx"),
    (["run", "{d}/m.syn", "-i", "{d}/missing.npy"], "missing.npy"),
    (["run", "{d}/m.syn", "-i", "{d}/empty.npz"], "not a .npy or .npz file"),
    (["run", "{d}/m.syn", "-i", "{d}/junk.npz"], "not a readable .npz"),
    (["run", "{d}/m.syn", "-i", "{d}/none.npz"], "holds arrays []"),
    (["run", "{d}/m.syn", "-i", "{d}/wrong_name.npz"], "holds arrays ['a', 'b']; the model's inputs are ['x']"),
    (["run", "{d}/m.syn", "-i", "{d}/obj.npy"], "dtype object is not accepted"),
    (["run", "{d}/m.syn", "-i", "{d}/i64.npy"], "dtype int64 is not accepted"),
    (["run", "{d}/m.syn", "-i", "{d}/scalar.npy"], "same batch axis 0"),
    (["run", "{d}/m.syn", "-i", "{d}/huge.npy"], "declares 256000000000 bytes"),
    (["run", "{d}/m.syn", "-i", "{d}/huge.npz"], "declares 256000000000 bytes"),
    (["run", "{d}/m.syn", "-i", "{d}/x.npy", "--batch-size", "0"], "'0' is not a positive integer"),
    (["run", "{d}/m.syn", "-i", "{d}/x.npy", "--batch-size", "-3"], "not a positive integer"),
    (["run", "{d}/m.syn", "-i", "{d}/x.npy", "-o", "{d}/no/such/dir/y.npz"], "does not exist"),
    (["run", "{d}/m.syn"], "required: --input"),
    (["frobnicate"], "invalid choice"),
    (["run", "{d}/m.syn", "-i", "{d}/x.npy", "--device", "tpu"], "invalid choice"),
])
def test_user_mistakes_are_one_line_and_exit_2(d, capsys, argv, match):
    if "unreadable" in str(argv) and os.geteuid() == 0:
        pytest.skip("root reads any file")
    _one_line_error(capsys, [a.format(d=d) for a in argv] + (
        ["--device", "cpu"] if argv[0] == "run" and "--device" not in argv else []), match)


def test_unreadable_model(d, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    _one_line_error(capsys, ["inspect", str(d / "unreadable.syn")], "unreadable.syn")


def test_headers_are_checked_before_allocation(d):
    tracemalloc.start()
    try:
        for f in ("huge.npy", "huge.npz"):
            with pytest.raises(Exception, match="declares 256000000000 bytes"):
                load_feeds(str(d / f), ["x"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_npy_is_memory_mapped_and_runs(d, capsys):
    feeds = load_feeds(str(d / "x.npy"), ["x"])
    assert isinstance(feeds["x"], np.memmap) and feeds["x"].shape == (5, 1, 8, 8)
    assert main(["run", str(d / "m.syn"), "-i", str(d / "x.npy"), "--device", "cpu", "-q",
                 "--batch-size", "2", "-o", str(d / "y.npz")]) == 0
    assert np.load(d / "y.npz")["y"].shape == (5, 2, 8, 8)
