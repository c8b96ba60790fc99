"""A plain (non-editable) wheel holds the reference and the .cu sources and runs."""
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "synapse"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "tests", "bench"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], check=True)
    (whl,) = out.glob("synapse_gpu-*.whl")
    return whl


def test_wheel_contains_reference_and_kernels(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in sorted((ROOT / "reference").glob("*.py")):
        assert f"synapse_gpu/reference/{f.name}" in names
    cu = sorted((ROOT / "cuda_kernels").glob("*.cu")) + sorted((ROOT / "cuda_kernels").glob("*.cuh"))
    assert cu, "no CUDA sources in the tree"
    for f in cu:
        assert f"synapse_gpu/cuda_kernels/{f.name}" in names
    assert "synapse_gpu/cli.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_wheel_installs_and_runs_in_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    # system site-packages provide numpy/onnx/...: the test is about our package's files
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    help_out = subprocess.run([str(target / "bin" / "synapse"), "--help"], env=env, check=True,
                              capture_output=True, text=True, cwd=tmp_path).stdout
    assert "inspect" in help_out
    code = ("import synapse_gpu, synapse_gpu.reference.conv as c, numpy as np;"
            "from synapse_gpu.examples.tiny import tiny_cnn;"
            "s = synapse_gpu.InferenceSession(tiny_cnn(), device='cpu');"
            "s.run(None, {'input': np.ones((1, 1, 8, 8), np.float32)});"
            "print(synapse_gpu.__file__, c.__file__)")
    out = subprocess.run([str(py), "-c", code], env=env, check=True, capture_output=True,
                         text=True, cwd=tmp_path).stdout
    assert str(target) in out and str(ROOT) not in out
