"""Constant int8 tables read without arithmetic: ``embedding`` and ``constant``.

``embedding``: an integer lookup of token ids in a constant int8 table.

    y[n, s..., :] = table[id[n, s...], :]

Token ids enter the graph as an int64 input (ONNX Gather on a constant embedding
table). Inside the graph every activation is int8, so an id travels as the 4
little-endian bytes of its int32 value, read as int8: the tensor (N, S..., 4)
(``pack_ids``). The boundary (the session) range-checks every id per run against
the table's rows V <= 2^31 - 1 and packs it; the run digest covers these bytes.
No arithmetic on the values: the table was requantized once at import to the
output's scale and zero point (reference/boundary.py's float32 Q(DQ(.)) rule), so
the output is exact rows of it, and each sample reads only its own ids.

``constant``: y[n] = value for every sample n of x (x gives only the batch size): a
quantized constant operand that is neither a scalar nor per channel (a positional
embedding (S, D), a bias along the last axis) becomes an activation, so the existing
two-activation rules (add: onnxruntime's QLinearAdd) apply to it unchanged.
"""
import numpy as np

ID_BYTES = 4  # an id is an int32, stored as 4 int8 codes (little-endian)
MAX_VOCAB = (1 << 31) - 1


def pack_ids(ids):
    """int ids (N, S...) in [0, 2^31) -> int8 (N, S..., 4): the bytes of each int32."""
    ids = np.ascontiguousarray(ids, dtype="<i4")
    return ids.view(np.int8).reshape(*ids.shape, ID_BYTES)


def unpack_ids(x):
    """int8 (N, S..., 4) -> int64 ids (N, S...)."""
    x = np.ascontiguousarray(x, dtype=np.int8)
    return x.view("<i4").reshape(x.shape[:-1]).astype(np.int64)


def out_of_range(ids, vocab):
    """The first id outside [0, vocab) as (index, value), else None. ONNX Gather's negative
    ids (counted from the end) are refused too: no tokenizer emits them, so one is a bug."""
    ids = np.asarray(ids)
    bad = (ids < 0) | (ids >= vocab)
    if not bad.any():
        return None
    i = np.unravel_index(int(np.argmax(bad)), ids.shape)
    return tuple(int(v) for v in i), int(ids[i])


def embedding(x, *, table):
    """y = table[ids] with ids = unpack_ids(x) in [0, V); shape (N, S..., D)."""
    ids = unpack_ids(x)
    table = np.asarray(table, dtype=np.int8)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise ValueError(f"embedding: token id outside [0, {table.shape[0]}) (the session "
                         "range-checks ids before a run)")
    return table[ids]


def constant(x, *, value):
    """y = value repeated for each of x's samples; shape (N, *value.shape)."""
    value = np.asarray(value, dtype=np.int8)
    return np.ascontiguousarray(np.broadcast_to(value, (np.shape(x)[0], *value.shape)))
