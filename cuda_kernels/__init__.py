"""CUDA C sources of the kernels (data files, loaded by synapse_gpu.backends.cuda)."""
