"""Every CUDA source compiles for sm_80 and sm_90 with nvcc, with no float and no atomics.

What is compiled is exactly what the CUDA backend hands to CuPy (kernel_source:
the .cu with its local include inlined), and the PTX nvcc emits is inspected.
nvcc sees the host's headers, so it cannot tell what CuPy's runtime compiler will
reject: tests/test_cuda_nvrtc.py compiles with NVRTC itself for that. Needs nvcc
(not a GPU); skipped only where nvcc is absent. One nvcc call per family, two
-gencode, in parallel.
"""
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from synapse_gpu.backends.cuda import FAMILIES, kernel_signatures, kernel_source

NVCC = shutil.which("nvcc")
ARCHS = ("80", "90")
KERNELS = Path(__file__).resolve().parents[1] / "cuda_kernels"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{family: (completed process, {arch: PTX text})}, all families compiled once."""
    if NVCC is None:
        pytest.skip("nvcc not found on PATH")
    out = tmp_path_factory.mktemp("nvcc")

    def one(family):
        d = out / family
        d.mkdir()
        src = d / f"{family}.cu"
        src.write_text(kernel_source(family))
        gencode = [a for arch in ARCHS for a in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")]
        p = subprocess.run([NVCC, "-std=c++17", "-c", *gencode, "--keep", "--keep-dir", str(d),
                            "-Werror", "all-warnings", "-o", str(d / f"{family}.o"), str(src)],
                           capture_output=True, text=True)
        ptx = {arch: (d / f"{family}.compute_{arch}.ptx").read_text()
               for arch in ARCHS if (d / f"{family}.compute_{arch}.ptx").exists()}
        return family, (p, ptx)

    with ThreadPoolExecutor(max_workers=len(FAMILIES)) as pool:
        return dict(pool.map(one, FAMILIES))


@pytest.mark.parametrize("family", FAMILIES)
def test_compiles_for_sm80_and_sm90(compiled, family):
    p, ptx = compiled[family]
    assert p.returncode == 0, f"nvcc failed on {family}.cu:\n{p.stderr}"
    assert sorted(ptx) == sorted(ARCHS)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_is_emitted_without_float_or_atomics(compiled, family):
    _, ptx = compiled[family]
    names = [k for k, (f, _) in kernel_signatures().items() if f == family]
    assert names
    for arch, text in ptx.items():
        for k in names:  # extern "C": the PTX entry keeps the source name
            assert re.search(rf"\.entry {k}\(", text), f"{k} missing from sm_{arch} PTX"
        assert not re.search(r"\.f(16|32|64)\b", text), f"floating point in {family} sm_{arch}"
        assert not re.search(r"\b(atom|red)\.", text), f"atomics in {family} sm_{arch}"


def test_sources_have_no_float_types():
    """The contract is integers only: not even a float in a comment-free token."""
    for path in sorted(KERNELS.glob("*.cu")) + sorted(KERNELS.glob("*.cuh")):
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(), flags=re.S)
        assert not re.search(r"\b(float|double|__half|__nv_bfloat16)\b", code), path.name
        assert "atomic" not in code, path.name
