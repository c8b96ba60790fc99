"""The emulated kernels under AddressSanitizer and UndefinedBehaviorSanitizer.

A child process (ASan must be loaded first: LD_PRELOAD) runs op cases of every
kernel family and a whole model on the emulated device with runtime and kernels
built with -fsanitize=address,undefined and device memory as exact-size mallocs:
an out-of-bounds read or write, or signed overflow, shift overflow and the like
in a kernel, aborts it. A planted out-of-bounds read and a planted signed overflow
must be caught.
Marked `sanitizer`; skipped where g++ has no ASan runtime.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sanitizer, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent

CHILD = r"""
import sys
from cuda_host import cases, gpu_checks
from emucuda import cupy_standin

with cupy_standin.installed():
    for name in sys.argv[1:]:
        if name in cases.MODELS:
            gpu_checks.check_model_trace(name, batch=5)
        else:
            gpu_checks.check_op(name, 0, 0)
            gpu_checks.check_op(name, -128, 127)
print("sanitized run ok")
"""

PLANTED = r"""
import sys
import numpy as np
from emucuda import cupy_standin
code = {
    "overread": "y[threadIdx.x] = x[threadIdx.x + 1];",
    "overflow": "y[threadIdx.x] = x[threadIdx.x] + 2147483647;",
}[sys.argv[1]]
code = 'extern "C" __global__ void k(const int* x, int* y) { ' + code + ' }'
with cupy_standin.installed() as cp:
    x, y = cp.asarray(np.arange(4, dtype=np.int32)), cp.empty(4, np.int32)
    cp.RawModule(code=code).get_function("k")((1,), (4,), (x, y))
    y.get()
"""


def _asan_runtime():
    if shutil.which("g++") is None:
        return None
    p = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = p.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    asan = _asan_runtime()
    if asan is None:
        pytest.skip("no AddressSanitizer runtime for g++")
    return dict(os.environ, EMUCUDA_SANITIZE="address,undefined", LD_PRELOAD=asan,
                ASAN_OPTIONS="detect_leaks=0", PYTHONPATH=str(TESTS),
                EMUCUDA_CACHE_DIR=str(tmp_path_factory.mktemp("emucuda_asan")))


def test_kernels_are_clean_under_asan_and_ubsan(env):
    ops = ["conv_2d_3x3_same", "dense_rank2_trans", "matmul_4d_broadcast", "add_same",
           "mul_se_broadcast", "softmax_last_axis", "avg_pool_2d_include_pad", "max_pool_3d",
           "global_avg_pool_2d", "transpose_5d", "concat_channels", "pad_reflect", "prelu_4d",
           "batchnorm_4d", "lut", "requantize_huge", "kitchen_sink", "attention"]
    from cuda_host import cases

    missing = [n for n in ops if n not in cases.OP_CASES and n not in cases.MODELS]
    assert not missing, missing
    p = subprocess.run([sys.executable, "-c", CHILD, *ops], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0 and "sanitized run ok" in p.stdout, p.stdout[-3000:] + p.stderr[-6000:]


@pytest.mark.parametrize("bug,report", [("overread", "heap-buffer-overflow"),
                                        ("overflow", "signed integer overflow")])
def test_planted_bug_is_caught(env, bug, report):
    p = subprocess.run([sys.executable, "-c", PLANTED, bug], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode != 0 and report in p.stderr, p.stderr[-3000:]
