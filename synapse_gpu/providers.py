"""onnxruntime's execution providers mapped onto Synapse's backends.

CUDAExecutionProvider -> the CUDA backend (its device_id honoured), CPUExecutionProvider
-> the CPU backend. As in onnxruntime, the first available provider of the list wins
and an unavailable CUDA provider is skipped with a warning. Unlike onnxruntime, a
provider Synapse does not have (TensorRT, DirectML, OpenVINO...) is an error rather
than a silent substitute: those are float engines, and a session that asked for one
should not quietly become something else.
"""
from __future__ import annotations

import collections.abc
import warnings

from . import backends
from .errors import DeviceError, ProviderError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
OFFERED = (CUDA, CPU)

# Provider options that tune float kernels, allocators or streams Synapse does not have:
# accepted, with no effect on what runs or on any output bit.
_NEUTRAL = {
    CUDA: {"arena_extend_strategy", "cudnn_conv_algo_search", "cudnn_conv_use_max_workspace",
           "cudnn_conv1d_pad_to_nc1d", "do_copy_in_default_stream", "enable_cuda_graph",
           "enable_skip_layer_norm_strict_mode", "use_tf32", "prefer_nhwc", "fuse_conv_bias",
           "tunable_op_enable", "tunable_op_tuning_enable", "tunable_op_max_tuning_duration_ms",
           "use_ep_level_unified_stream", "sdpa_kernel"},
    CPU: {"use_arena"},
}
_HONOURED = {CUDA: {"device_id"}, CPU: set()}
_REFUSED = {  # option -> why Synapse cannot honour it
    "gpu_mem_limit": "Synapse sizes its device memory from the model's buffer plan and cannot cap it",
    "user_compute_stream": "Synapse launches on a stream of its own",
    "has_user_compute_stream": "Synapse launches on a stream of its own",
    "gpu_external_alloc": "Synapse allocates through CuPy",
    "gpu_external_free": "Synapse allocates through CuPy",
    "gpu_external_empty_cache": "Synapse allocates through CuPy",
}


def get_available_providers():
    """The providers a session can use on this machine, in onnxruntime's preference order."""
    return [CUDA, CPU] if backends.cuda_status()[0] else [CPU]


def get_device():
    """'GPU' when the CUDA backend is usable, else 'CPU' (onnxruntime.get_device's values)."""
    return "GPU" if backends.cuda_status()[0] else "CPU"


def _normalize(providers, provider_options):
    """[(name, {str: str})] from onnxruntime's two argument forms, or ProviderError."""
    if isinstance(providers, str) or not isinstance(providers, collections.abc.Sequence):
        raise ProviderError(f"providers={providers!r}: give a list, e.g. [{CUDA!r}, {CPU!r}]")
    if provider_options is not None:
        if (not isinstance(provider_options, collections.abc.Sequence)
                or len(provider_options) != len(providers)
                or not all(isinstance(o, dict) for o in provider_options)
                or not all(isinstance(p, str) for p in providers)):
            raise ProviderError("provider_options: give one dict per provider name, in the "
                                "same order as providers (and only names in providers)")
        pairs = list(zip(providers, provider_options))
    else:
        pairs = []
        for p in providers:
            if isinstance(p, str):
                pairs.append((p, {}))
            elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict):
                pairs.append(p)
            else:
                raise ProviderError(f"providers entry {p!r}: give a name or a (name, options dict) tuple")
    out = {}
    for name, opts in pairs:
        if name not in OFFERED:
            raise ProviderError(f"providers: {name!r} is not offered by Synapse; it offers "
                                f"{list(OFFERED)} (same bits on both; see docs/from_onnxruntime.md)")
        opts = {str(k): str(v) for k, v in opts.items()}
        for k in opts:
            if k in _REFUSED:
                raise ProviderError(f"provider option {name}.{k}: not supported ({_REFUSED[k]})")
            if k not in _HONOURED[name] | _NEUTRAL[name]:
                raise ProviderError(f"provider option {name}.{k}: unknown; {name} accepts "
                                    f"{sorted(_HONOURED[name] | _NEUTRAL[name])}")
        out.setdefault(name, opts)  # onnxruntime ignores a repeated provider too
    return list(out.items())


def choose(providers, provider_options, no_cpu_fallback=False):
    """(backend device "cpu"/"cuda", device_id or None, (name, options)) for the first
    available provider of the list; onnxruntime's implicit CPU fallback when none is,
    unless no_cpu_fallback (session.disable_cpu_ep_fallback = "1")."""
    pairs = _normalize(providers, provider_options)
    for name, opts in pairs:
        if name == CPU:
            return "cpu", None, (name, opts)
        ok, reason = backends.cuda_status()
        if ok:
            try:
                device_id = int(opts.get("device_id", 0))
            except ValueError:
                raise ProviderError(f"provider option {CUDA}.device_id={opts['device_id']!r}: "
                                    "give an integer") from None
            return "cuda", device_id, (name, dict(opts, device_id=str(device_id)))
        warnings.warn(f"synapse_gpu: {CUDA} is not usable ({reason}); trying the next provider",
                      RuntimeWarning, stacklevel=4)
    if no_cpu_fallback:
        raise DeviceError(f"none of the providers {[n for n, _ in pairs]} is usable and "
                          "session.disable_cpu_ep_fallback is set")
    if pairs:
        warnings.warn("synapse_gpu: no listed provider is usable; running on the CPU "
                      "(same bits, slower)", RuntimeWarning, stacklevel=4)
    return "cpu", None, (CPU, {})


def resolve(device, providers, provider_options, no_cpu_fallback=False):
    """(backend device for backends.select, device_id or None, (provider, options) or None)
    from Synapse's device= or onnxruntime's providers=, which exclude each other."""
    if providers:
        if device is not None:
            raise ProviderError(f"device={device!r} and providers=: give one of them")
        return choose(providers, provider_options, no_cpu_fallback)
    if provider_options is not None:
        raise ProviderError("provider_options given without providers")
    return device or "auto", None, None


def preload_dlls(cuda=True, cudnn=True, msvc=True, directory=None):
    """onnxruntime's; nothing to do: CuPy loads the CUDA libraries, and Synapse uses no cuDNN."""
