""".npy / .npz feeds read safely: every header is checked before any array exists.

np.load trusts a file's header: a 100-byte .npy declaring 238 GiB makes it try to
allocate 238 GiB, and an object array would need pickle. Here each header is read
first and refused (InputError, naming the file and the array) when its dtype is not
one a session takes, or when it declares more bytes than the file (or the zip
member) holds. A .npy is then memory-mapped (nothing is read before a batch needs
it); a .npz member is decompressed only after its declared size matched the zip's.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
from numpy.lib import format as npformat

from .errors import InputError

DTYPES = (np.float16, np.float32, np.float64, np.int8)  # what InferenceSession.run takes
ID_DTYPES = DTYPES + (np.int64, np.int32)  # and for a model with token-id inputs


def _memory_cap():
    """Half this machine's memory: a compressed array larger than that cannot be loaded."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 8 << 30
_NPY_MAGIC = b"\x93NUMPY"


def _header(fp, where, dtypes=DTYPES):
    """(shape, fortran_order, dtype, bytes of data) from a .npy header at fp's position."""
    try:
        version = npformat.read_magic(fp)
        read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, fortran, dtype = read(fp)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(f"{where}: not a readable .npy array ({str(e)[:120]})") from None
    if dtype.hasobject or dtype.type not in dtypes:
        raise InputError(f"{where}: dtype {dtype} is not accepted; save float32 (quantized by "
                         "the model) or int8 (already quantized)"
                         + ("" if dtypes is DTYPES else ", or int64 token ids"))
    return shape, fortran, dtype, int(np.prod(shape, dtype=object)) * dtype.itemsize


def _load_npy(path, dtypes):
    with open(path, "rb") as fp:
        shape, fortran, dtype, nbytes = _header(fp, path, dtypes)
        offset = fp.tell()
    held = os.path.getsize(path) - offset
    if nbytes != held:
        raise InputError(f"{path}: the header declares {nbytes} bytes of data ({dtype} "
                         f"{list(shape)}), the file holds {held}: truncated or forged")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype, "r", offset, shape, "F" if fortran else "C")


def _load_npz(path, wanted, dtypes):
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    with z:
        members = {i.filename[:-4]: i for i in z.infolist() if i.filename.endswith(".npy")}
        out = {}
        for name in wanted(list(members)):
            info, where = members[name], f"{path}, array {name!r}"
            try:
                with z.open(info) as fp:
                    shape, fortran, dtype, nbytes = _header(fp, where, dtypes)
                    if info.file_size != fp.tell() + nbytes:
                        raise InputError(f"{where}: the header declares {nbytes} bytes of data "
                                         f"({dtype} {list(shape)}), the archive holds "
                                         f"{info.file_size - fp.tell()}: truncated or forged")
                    if nbytes > _memory_cap():
                        raise InputError(f"{where}: {nbytes} bytes, more than half this machine's "
                                         "memory; save it as a .npy (memory-mapped) or split it")
                    a = np.frombuffer(fp.read(nbytes), dtype)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise InputError(f"{where}: cannot be read ({str(e)[:120]})") from None
            if a.nbytes != nbytes:
                raise InputError(f"{where}: holds fewer bytes than its header declares")
            out[name] = a.reshape(shape, order="F" if fortran else "C")
        return out, list(members)


def load_feeds(path, input_names, token_ids=False):
    """{input name: array} for a model's inputs from a .npy (one input) or .npz file;
    token_ids: the model takes int64 token ids (the session checks which input does)."""
    dtypes = ID_DTYPES if token_ids else DTYPES
    try:
        with open(path, "rb") as fp:
            magic = fp.read(6)
    except OSError as e:
        raise InputError(f"cannot read input file {path}: {e.strerror}") from None
    if magic == _NPY_MAGIC:
        if len(input_names) != 1:
            raise InputError(f"{path}: a .npy feeds one input; the model has {input_names} "
                             "(use .npz with one array per input name)")
        return {input_names[0]: _load_npy(path, dtypes)}
    if not magic.startswith(b"PK"):
        raise InputError(f"{path}: not a .npy or .npz file")

    def wanted(names):
        if all(n in names for n in input_names):
            return input_names
        if len(input_names) == 1 and len(names) == 1:  # one array under any name
            return names
        raise InputError(f"{path} holds arrays {names}; the model's inputs are {input_names}")

    arrays, names = _load_npz(path, wanted, dtypes)
    if list(arrays) != list(input_names):
        arrays = {input_names[0]: arrays[names[0]]}
    return arrays
