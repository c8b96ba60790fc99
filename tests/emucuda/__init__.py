"""emucuda: an emulated CUDA device for tests (not a user-facing backend).

device.py compiles real .cu sources for the host as NVRTC sees them and runs
every thread of a launch (runtime.cpp: fibers, barriers, warp collectives, mma
and ldmatrix); cupy_standin.py is the `cupy` module the project's CUDA code uses,
on that device. See tests/test_emucuda.py for what it guarantees.
"""
