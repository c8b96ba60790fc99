"""The `synapse` command line, run in-process through its main()."""
import numpy as np
import pytest

from synapse_gpu import __version__
from synapse_gpu.cli import main
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.modelfile import model_id, save_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    g = tiny_cnn(seed=5)
    save_model(g, d / "m.syn")
    x = np.random.default_rng(0).uniform(0, 1, (150, 1, 8, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.savez(d / "x.npz", input=x)
    return d, model_id(g), x


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("run", "inspect", "compile", "quantize"):
        assert cmd in out


def test_run_writes_outputs_and_digest_matching_the_api(files, capsys):
    import synapse_gpu as sg

    d, mid, x = files
    assert main(["run", str(d / "m.syn"), "-i", str(d / "x.npy"), "-o", str(d / "y.npz"),
                 "--digest", "--int8", "--batch-size", "64", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    r = sg.InferenceSession(d / "m.syn", device="cpu").run_full(None, {"input": x})
    assert f"digest: {r.digest}" in out  # split into batches of 64, same digest as one run
    assert mid in out
    np.testing.assert_array_equal(np.load(d / "y.npz")["logits"], r.int8_outputs["logits"])
    assert main(["run", str(d / "m.syn"), "-i", str(d / "x.npz"), "--digest", "--device", "cpu",
                 "--trace"]) == 0
    out2 = capsys.readouterr().out
    assert f"digest: {r.digest}" in out2 and "trace" in out2 and "fc" in out2


def test_inspect_reports_model(files, capsys):
    d, mid, _ = files
    assert main(["inspect", str(d / "m.syn")]) == 0
    out = capsys.readouterr().out
    assert mid in out and "Synapse limits: OK" in out and "conv2d" in out and "acc bound" in out


def test_errors_are_one_line_not_tracebacks(files, capsys, tmp_path):
    d, _, _ = files
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 7, 8), np.float32))
    assert main(["run", str(d / "m.syn"), "-i", str(tmp_path / "bad.npy"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "ShapeError" in err and "Traceback" not in err
    (tmp_path / "junk.syn").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    assert main(["inspect", str(tmp_path / "junk.syn")]) == 2
    assert "ModelFormatError" in capsys.readouterr().err
