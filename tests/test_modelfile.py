"""The canonical model file: stable id, round trips, clean failures on damage."""
import json
import struct

import numpy as np
import pytest

from synapse_gpu import errors
from synapse_gpu.examples.tiny import tiny_cnn
from synapse_gpu.modelfile import load_model, model_id, save_model, to_bytes


@pytest.fixture
def saved(tmp_path):
    g = tiny_cnn(seed=3)
    p = tmp_path / "m.syn"
    return g, p, save_model(g, p)


def test_round_trip_keeps_id_bytes_and_structure(saved, tmp_path):
    g, p, mid = saved
    g2 = load_model(p)
    assert model_id(g2) == mid == model_id(g)
    assert g2.structure_json() == g.structure_json()
    for k, a in g.buffers.items():
        np.testing.assert_array_equal(g2.buffers[k], a)
        assert g2.buffers[k].dtype == a.dtype
    p2 = tmp_path / "again.syn"
    save_model(g2, p2)
    assert p2.read_bytes() == p.read_bytes()  # canonical bytes
    assert to_bytes(g) == p.read_bytes()


def test_id_changes_with_any_parameter(saved):
    g, _, mid = saved
    bid = next(iter(g.buffers))
    g.buffers[bid] = g.buffers[bid].copy()
    g.buffers[bid].reshape(-1)[0] ^= 1
    assert model_id(g) != mid


def test_truncated_file_fails_cleanly(saved, tmp_path):
    _, p, _ = saved
    data = p.read_bytes()
    for cut in (0, 4, 8, 100, len(data) // 2, len(data) - 1):
        t = tmp_path / f"cut{cut}.syn"
        t.write_bytes(data[:cut])
        with pytest.raises(errors.ModelFormatError):
            load_model(t)


def _flipped(data, pos, bit, tmp_path):
    """A copy of the file with one bit flipped at byte ``pos``."""
    bad = bytearray(data)
    bad[pos] ^= bit
    t = tmp_path / "flip.syn"
    t.write_bytes(bytes(bad))
    return t


def test_every_flipped_data_byte_is_detected(saved, tmp_path):
    _, p, _ = saved
    data = bytearray(p.read_bytes())
    header_len = struct.unpack("<Q", bytes(data[:8]))[0]
    rng = np.random.default_rng(0)
    positions = rng.choice(np.arange(8 + header_len, len(data)), size=20, replace=False)
    for pos in positions:
        with pytest.raises(errors.ChecksumError):
            load_model(_flipped(data, pos, 0x10, tmp_path))


def test_flipped_header_byte_fails_cleanly(saved, tmp_path):
    _, p, _ = saved
    data = bytearray(p.read_bytes())
    header_len = struct.unpack("<Q", bytes(data[:8]))[0]
    for pos in range(8, 8 + header_len, max(1, header_len // 40)):
        with pytest.raises(errors.ModelFormatError):
            load_model(_flipped(data, pos, 0x01, tmp_path))


def _raw_file(tmp_path, header: dict, payload=b"", declared_len=None):
    h = json.dumps(header).encode()
    t = tmp_path / "hostile.syn"
    t.write_bytes(struct.pack("<Q", declared_len or len(h)) + h + payload)
    return t


def test_hostile_header_is_refused_without_allocating(tmp_path):
    huge = {"w": {"dtype": "I8", "shape": [1 << 40], "data_offsets": [0, 1 << 40]},
            "__metadata__": {"synapse": "{}"}}
    with pytest.raises(errors.ModelFormatError):
        load_model(_raw_file(tmp_path, huge, b"\0" * 16))
    with pytest.raises(errors.ModelFormatError):  # a header length of 2^60 bytes
        load_model(_raw_file(tmp_path, {"__metadata__": {}}, declared_len=1 << 60))


def test_foreign_or_future_files_rejected(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"a": np.zeros(3, np.int8)}, str(p))
    with pytest.raises(errors.ModelFormatError, match="not a Synapse model file"):
        load_model(p)
    meta = json.dumps({"format": "synapse-gpu", "version": 99})
    save_file({"a": np.zeros(3, np.int8)}, str(p), metadata={"synapse": meta})
    with pytest.raises(errors.ModelFormatError, match="version 99"):
        load_model(p)
    with pytest.raises(errors.ModelFormatError, match="cannot read"):
        load_model(tmp_path / "absent.syn")
