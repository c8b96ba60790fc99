"""The numpy reference of every Synapse op: the executable spec and the CPU fallback.

Integers only between the boundary quantize and dequantize. Each function's
docstring states its integer rule and overflow bound; docs/SPEC.md collects them.
Installed as ``synapse_gpu.reference`` (the source tree keeps it at top level).
"""
