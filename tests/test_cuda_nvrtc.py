"""Every CUDA family compiles with NVRTC exactly as CuPy will compile it, for every
target architecture, with no register spills and no local memory in the v1 kernels
(the naive ones, layout.cu's conversions), the v5 kernels and v6 (cp.async-fed tensor cores: a
spill there would undo what the asynchronous copy buys); other variants are only reported, by
bench/ptxas_report.py.

The source is the backend's own (kernel_source: the .cu with its includes inlined),
the options CuPy's (nvrtc.cupy_options: the backend's NVRTC_OPTIONS, -ftz=true,
--gpu-architecture=sm_XX; ptxas runs as CuPy's cubin compile runs it), plus
--ptxas-options=-v for the figures. NVRTC comes from the `nvidia-cuda-nvrtc` wheel
of the test extra (no GPU, no toolkit needed); skipped where it is absent.
bench/ptxas_report.py writes the same figures to bench/results/ptxas-v1.md.
"""
from concurrent.futures import ThreadPoolExecutor

import pytest

from synapse_gpu.backends import cuda
from synapse_gpu.backends.cuda_source import _kernel_files

from cuda_host import nvrtc

pytestmark = pytest.mark.skipif(nvrtc.library() is None, reason="NVRTC not installed")


@pytest.fixture(scope="module")
def compiled():
    """{(family, arch): Result}, every family for every architecture, two at a time."""
    jobs = [(f, a) for f in cuda.FAMILIES for a in nvrtc.ARCHS]

    def one(job):
        family, arch = job
        opts = nvrtc.cupy_options(cuda.NVRTC_OPTIONS, arch) + ("--ptxas-options=-v",)
        return job, nvrtc.compile_source(cuda.kernel_source(family), opts, f"{family}.cu")

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, jobs))


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
@pytest.mark.parametrize("family", cuda.FAMILIES)
def test_family_compiles_without_spills_or_local_memory(compiled, family, arch):
    r = compiled[family, arch]
    assert r.ok, f"NVRTC rejected {family}.cu for sm_{arch}:\n{r.log}"
    assert r.cubin[:4] == b"\x7fELF"
    figures = nvrtc.ptxas_figures(r.log)
    kernels = sorted(k for k, (f, _) in cuda.kernel_signatures().items() if f == family)
    assert sorted(figures) == kernels
    for k, fig in figures.items():
        if not k.endswith(("_v1", "_v5", "_v6")):  # other variants may trade registers for local memory
            continue
        assert fig["spill_stores"] == fig["spill_loads"] == 0, (k, arch, fig)
        assert fig["stack"] == 0, f"{k} uses {fig['stack']} bytes of local memory on sm_{arch}"


@pytest.mark.parametrize("header", ["<cstdint>", "<stdint.h>", "<climits>", "<algorithm>"])
def test_host_only_header_fails(header):
    """nvcc finds the host's headers; NVRTC (what CuPy runs) does not."""
    src = f"#include {header}\n" + cuda.kernel_source("elementwise")
    r = nvrtc.compile_source(src, nvrtc.cupy_options(cuda.NVRTC_OPTIONS, 80))
    assert not r.ok and "open source file" in r.log


def test_warp_matrix_header_compiles_for_every_architecture():
    """synapse_warp.cuh's inline PTX (mma.sync, ldmatrix) passes ptxas for each target."""
    src = (_kernel_files() / "synapse_warp.cuh").read_text() + r"""
extern "C" __global__ void probe(const signed char* a, int* d) {
    __shared__ __align__(16) signed char s[512];
    for (int k = threadIdx.x; k < 512; k += 32) s[k] = a[k];
    __syncwarp();
    unsigned fa[4], fb[4];
    syn_ldmatrix_x4(fa, s + (threadIdx.x % 16) * 32);
    syn_ldmatrix_x4_trans(fb, s + (threadIdx.x % 16) * 32);
    int c[4] = {0, 0, 0, 0}, out[4];
    syn_mma_m16n8k32_s8(out, fa, fb, c);
    for (int q = 0; q < 4; ++q) d[threadIdx.x * 4 + q] = out[q];
}
"""
    for arch in nvrtc.ARCHS:
        r = nvrtc.compile_source(src, nvrtc.cupy_options(cuda.NVRTC_OPTIONS, arch))
        assert r.ok, f"sm_{arch}:\n{r.log}"
