"""ptxas figures of every CUDA kernel for every target architecture, no GPU needed.

    PYTHONPATH=. python bench/ptxas_report.py          # writes bench/results/ptxas-v1.md

Each family's source as the backend hands it to CuPy, compiled by NVRTC with CuPy's
options plus --ptxas-options=-v (tests/cuda_host/nvrtc.py); per kernel: registers,
spill stores/loads, stack frame (local memory) and static shared memory, in bytes
per thread (shared: per block). tests/test_cuda_nvrtc.py gates the same figures.
"""
import argparse
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cuda_host import nvrtc  # noqa: E402

from synapse_gpu.backends import cuda  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ptxas-v1.md"))
    args = ap.parse_args()
    if nvrtc.library() is None:
        sys.exit("ptxas_report: NVRTC not found (pip install nvidia-cuda-nvrtc)")
    rows = []
    for family in cuda.FAMILIES:
        for arch in nvrtc.ARCHS:
            opts = nvrtc.cupy_options(cuda.NVRTC_OPTIONS, arch) + ("--ptxas-options=-v",)
            r = nvrtc.compile_source(cuda.kernel_source(family), opts, f"{family}.cu")
            if not r.ok:
                sys.exit(f"{family}.cu does not compile for sm_{arch}:\n{r.log}")
            for k, f in sorted(nvrtc.ptxas_figures(r.log).items()):
                rows.append(f"| {k} | sm_{arch} | {f.get('registers', 0)} | {f['spill_stores']} / "
                            f"{f['spill_loads']} | {f['stack']} | {f.get('smem', 0)} |")
    major, minor = nvrtc.version()
    text = "\n".join([
        "# ptxas figures of the CUDA kernels",
        "",
        f"NVRTC {major}.{minor}, CuPy's options ({' '.join(nvrtc.cupy_options(cuda.NVRTC_OPTIONS, 'XX'))})"
        f" plus --ptxas-options=-v; written by `bench/ptxas_report.py` on "
        f"{datetime.date.today().isoformat()} (no GPU involved).",
        "Stack frame = local memory per thread; the v1, v5 and v6 kernels must have no spills and "
        "no local memory (tests/test_cuda_nvrtc.py).",
        "",
        "| kernel | target | registers | spill stores / loads (bytes) | stack frame (bytes) "
        "| static shared (bytes) |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows, ""])
    Path(args.out).write_text(text)
    print(f"wrote {args.out} ({len(rows)} kernel x target rows)")


if __name__ == "__main__":
    main()
