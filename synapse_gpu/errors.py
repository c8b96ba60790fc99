"""The library's exceptions: one base class, one subclass per kind of failure.

Every message names what failed (node, op, tensor, file), the limit or the
expectation, the value found, and what to do about it.
"""


class SynapseError(Exception):
    """Base class of every error raised on purpose by synapse_gpu."""


class ModelFormatError(SynapseError):
    """A model file or graph is malformed: truncated, corrupted, inconsistent."""


class ChecksumError(ModelFormatError):
    """A model file's content does not match the checksum it carries."""


class UnsupportedOpError(SynapseError):
    """An op, attribute or op configuration that has no integer implementation."""


class ShapeError(SynapseError):
    """Tensor shapes that do not fit together (inferred at load or fed at run)."""


class DtypeError(SynapseError):
    """A tensor or parameter of the wrong element type."""


class OverflowRiskError(SynapseError):
    """A layer whose worst-case int32 accumulator could overflow."""


class SynapseLimitError(SynapseError):
    """A model outside the Synapse limits (strict mode); see docs/SPEC.md."""


class InputError(SynapseError):
    """A bad feed at run time: unknown name, wrong shape or dtype, NaN."""


class DeviceError(SynapseError):
    """The requested device cannot be used (no CuPy, no GPU, broken CUDA)."""


class OnnxImportError(SynapseError):
    """An ONNX model that cannot be turned into an integer graph."""


class DepthLimitError(SynapseLimitError):
    """More layers on the longest path than the Synapse limit (200)."""


class ChannelLimitError(SynapseLimitError):
    """A tensor with more channels than the Synapse limit (4096)."""


class InputSizeLimitError(SynapseLimitError):
    """A graph input larger per sample than the Synapse limit (3x224x224)."""


class KernelSizeLimitError(SynapseLimitError):
    """A reduction (kernel size x input channels) of 2^16 terms or more."""


class ResourceLimitError(SynapseError):
    """A model whose static resource needs (activation bytes, work per sample) exceed the
    configured limits (validate.Limits), refused before any allocation."""


class CostLimitError(ResourceLimitError):
    """A model whose deterministic cost per sample exceeds the caller's budget (max_cost)."""


class OptionError(SynapseError):
    """An onnxruntime-style argument or option that Synapse cannot honour (named in the message)."""


class ProviderError(OptionError):
    """An execution provider that Synapse does not offer, or malformed providers/provider_options."""
