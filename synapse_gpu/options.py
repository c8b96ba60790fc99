"""onnxruntime's SessionOptions and RunOptions, and what each field means in an exact engine.

Synapse's outputs are the same bits for every thread count, execution order and
"optimization" setting (docs/SPEC.md), so most of onnxruntime's knobs are accepted
and change nothing; the few that would change what Synapse does are honoured, and
the ones it cannot honour raise OptionError naming the field (docs/from_onnxruntime.md).
An onnxruntime.SessionOptions / RunOptions object is read the same way as ours.
"""
from __future__ import annotations

import enum
import os

from .errors import OptionError


class GraphOptimizationLevel(enum.IntEnum):
    """Accepted for compatibility: Synapse never rewrites a graph in float, at any level."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class ExecutionOrder(enum.IntEnum):
    DEFAULT = 0
    PRIORITY_BASED = 1
    MEMORY_EFFICIENT = 2


# onnxruntime's defaults (1.32). Every one of these is result-neutral here.
_SESSION_DEFAULTS = {
    "enable_cpu_mem_arena": True, "enable_mem_pattern": True, "enable_mem_reuse": True,
    "enable_profiling": False, "execution_mode": ExecutionMode.ORT_SEQUENTIAL,
    "execution_order": ExecutionOrder.DEFAULT,
    "graph_optimization_level": GraphOptimizationLevel.ORT_ENABLE_ALL,
    "inter_op_num_threads": 0, "intra_op_num_threads": 0, "log_severity_level": -1,
    "log_verbosity_level": 0, "logid": "", "optimized_model_filepath": "",
    "profile_file_prefix": "onnxruntime_profile_", "use_deterministic_compute": False,
    "use_per_session_threads": True,
}

# SessionOptions methods that would change the model or add code Synapse cannot prove.
_REFUSED_METHODS = {
    "add_initializer": "initializers come from the model file, whose id the digest pins",
    "add_external_initializers": "initializers come from the model file, whose id the digest pins",
    "add_free_dimension_override_by_name": "only the batch axis is free; the others are the model's",
    "add_free_dimension_override_by_denotation": "only the batch axis is free; the others are the model's",
    "register_custom_ops_library": "a custom op is code outside the proven integer graph",
    "add_provider": "pass providers= to InferenceSession",
    "add_provider_for_devices": "pass providers= to InferenceSession",
    "set_provider_selection_policy": "pass providers= to InferenceSession",
}

FALLBACK_KEY = "session.disable_cpu_ep_fallback"  # "1": no silent CPU fallback (honoured)
# Forces CUDA conv/dense/matmul kernel variants, as SYNAPSE_CUDA_VARIANT (backends/cuda_variants.py)
CUDA_VARIANT_KEY = "synapse.cuda_variant"
# "1": replay each batch size's launches as a CUDA graph, as SYNAPSE_CUDA_GRAPHS (backends/cuda.py)
CUDA_GRAPHS_KEY = "synapse.cuda_graphs"


class SessionOptions:
    """onnxruntime.SessionOptions' fields, with its defaults."""

    __slots__ = (*_SESSION_DEFAULTS, "_config")

    def __init__(self):
        for k, v in _SESSION_DEFAULTS.items():
            setattr(self, k, v)
        self._config = {}

    def add_session_config_entry(self, key, value):
        self._config[str(key)] = str(value)

    def get_session_config_entry(self, key):
        if key not in self._config:
            raise OptionError(f"SessionOptions: no config entry {key!r}")
        return self._config[key]

    def __getattr__(self, name):  # only reached for names that are not fields
        if name in _REFUSED_METHODS:
            def refuse(*args, **kwargs):
                raise OptionError(f"SessionOptions.{name}: not supported by Synapse "
                                  f"({_REFUSED_METHODS[name]})")
            return refuse
        raise AttributeError(f"SessionOptions has no field {name!r}")

    def __repr__(self):
        changed = {k: getattr(self, k) for k in _SESSION_DEFAULTS
                   if getattr(self, k) != _SESSION_DEFAULTS[k]}
        return f"SessionOptions({changed}, config={self._config})"


def session_options(so):
    """A SessionOptions copy of ``so`` (ours, onnxruntime's, or None), checked.

    Raises OptionError for a field Synapse cannot honour.
    """
    out = SessionOptions()
    if so is None:
        return out
    if isinstance(so, str):  # Synapse's device used to be the second argument
        raise OptionError(f"sess_options={so!r}: the second argument is onnxruntime's "
                          f"sess_options; give the device as device={so!r}")
    for k in _SESSION_DEFAULTS:
        if not hasattr(so, k):
            raise OptionError(f"sess_options: {type(so).__name__} is not a SessionOptions "
                              f"(no field {k!r}); use synapse_gpu.SessionOptions()")
        setattr(out, k, getattr(so, k))
    if isinstance(so, SessionOptions):
        out._config = dict(so._config)
    else:  # onnxruntime's: no way to list its entries; read the one key that matters
        try:
            out._config[FALLBACK_KEY] = so.get_session_config_entry(FALLBACK_KEY)
        except Exception:
            pass
        if getattr(so, "has_providers", lambda: False)():
            raise OptionError("sess_options: providers added to the SessionOptions are not "
                              "supported; pass providers= to InferenceSession")
    if out.enable_profiling:
        raise OptionError("sess_options.enable_profiling: Synapse writes no profile; "
                          "run_full(..., trace=True) gives every node's output digest")
    path = out.optimized_model_filepath
    if path and not os.fspath(path).endswith(".syn"):
        raise OptionError(f"sess_options.optimized_model_filepath={path!r}: Synapse saves its "
                          "compiled model as a .syn file only (give a path ending in .syn)")
    return out


_RUN_DEFAULTS = {"log_severity_level": -1, "log_verbosity_level": 0, "logid": "",
                 "only_execute_path_to_fetches": False, "terminate": False}


class RunOptions:
    """onnxruntime.RunOptions' fields. ``terminate`` is honoured (the run does not start)."""

    __slots__ = (*_RUN_DEFAULTS, "_config")

    def __init__(self):
        for k, v in _RUN_DEFAULTS.items():
            setattr(self, k, v)
        self._config = {}

    def add_run_config_entry(self, key, value):
        self._config[str(key)] = str(value)

    def get_run_config_entry(self, key):
        if key not in self._config:
            raise OptionError(f"RunOptions: no config entry {key!r}")
        return self._config[key]


def check_run_options(ro):
    """Raise OptionError if ``ro`` (ours, onnxruntime's or None) asks to stop or is no RunOptions."""
    if ro is None:
        return
    if not hasattr(ro, "terminate"):
        raise OptionError(f"run_options: {type(ro).__name__} is not a RunOptions; "
                          "use synapse_gpu.RunOptions()")
    if ro.terminate:
        raise OptionError("run_options.terminate is set: the run was not started")


def check_session_kwargs(kwargs):
    """onnxruntime's InferenceSession **kwargs: the ones with no effect here are accepted;
    anything else raises OptionError naming it (never a TypeError)."""
    for k, v in kwargs.items():
        if k == "read_config_from_model" and v not in (0, "0"):
            raise OptionError("read_config_from_model=1: Synapse does not read onnxruntime "
                              "session options from the model; pass sess_options")
        if k not in ("disabled_optimizers", "enable_fallback", "read_config_from_model"):
            raise OptionError(f"InferenceSession: unknown argument {k!r} (onnxruntime's are "
                              "sess_options, providers, provider_options, disabled_optimizers, "
                              "enable_fallback, read_config_from_model; Synapse's own are in "
                              "help(synapse_gpu.InferenceSession))")


def set_default_logger_severity(level):
    """onnxruntime's; accepted (0 verbose .. 4 fatal). Synapse's notices are Python
    warnings: filter them with the warnings module; verbose output is InferenceSession's
    verbose= (or log_severity_level 0 in the session options)."""
    if int(level) not in range(5):
        raise OptionError(f"set_default_logger_severity({level!r}): give 0 (verbose) to 4 (fatal)")


def set_seed(seed):
    """onnxruntime's; accepted: nothing in Synapse draws a random number."""
    int(seed)
