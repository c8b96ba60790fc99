"""Token models, graph level: the embedding and constant ops (reference/embedding.py), the
int64 token-id graph input (packed bytes, range check per run), its refusals, the model
file and the CLI. The CUDA kernels: tests/test_cuda_embedding.py; ONNX: test_onnx_tokens.py."""
import re

import numpy as np
import pytest

from synapse_gpu import InferenceSession, build
from synapse_gpu.cli import main
from synapse_gpu.errors import DtypeError, InputError, ModelFormatError, ShapeError
from synapse_gpu.graph import BATCH, GraphBuilder, TensorSpec
from synapse_gpu.modelfile import load_model, model_id, save_model
from synapse_gpu.reference.elementwise import add
from synapse_gpu.reference.embedding import (ID_BYTES, constant, embedding, pack_ids,
                                             unpack_ids)

from ort_helpers import rand_i8, rng_for
from token_models import random_ids


def token_graph(vocab, seq, dim, z_table=-128, z_pos=127, seed=0):
    """ids (N, *seq) -> embedding -> + positional constant (*seq, dim) -> output: the
    embedding part of a transformer, with zero points at both ends."""
    rng = rng_for(seed, vocab, dim, *seq)
    b = GraphBuilder()
    t = b.add_input("tokens", (BATCH, *seq, ID_BYTES), 1.0, 0, dtype="int64")
    e = b.add_node("embedding", [t], params=dict(table=rand_i8(rng, (vocab, dim))),
                   out_quant=(0.05, z_table))
    p = b.add_node("constant", [e], params=dict(value=rand_i8(rng, (*seq, dim))),
                   out_quant=(0.02, z_pos))
    b.add_output(build.add(b, e, p, y_scale=0.07, y_zero_point=3), "y")
    return b.build()


def expected(graph, ids):
    """The graph's rule written out with loops over positions (an oracle apart from numpy
    fancy indexing): row ids[n, s] of the table, then the add rule with the constant."""
    emb, const, add_node = graph.nodes[:3]
    table = graph.param(emb, "table")
    value = graph.param(const, "value")
    rows = np.empty((*ids.shape, table.shape[1]), np.int8)
    for idx in np.ndindex(*ids.shape):
        rows[idx] = table[ids[idx]]
    pos = np.stack([value] * ids.shape[0])
    return add(rows, pos, **add_node.attrs)


def test_pack_ids_is_the_little_endian_int32_bytes():
    ids = np.array([[0, 1, 255, 256], [65535, 1 << 24, (1 << 31) - 1, 12345]], np.int64)
    x = pack_ids(ids)
    assert x.dtype == np.int8 and x.shape == (2, 4, ID_BYTES)
    assert x.tobytes() == ids.astype("<i4").tobytes()
    np.testing.assert_array_equal(unpack_ids(x), ids)


@pytest.mark.parametrize("seq,vocab,dim", [((1,), 1, 1), ((16,), 1000, 64), ((3, 5), 300, 24),
                                           ((7,), 70000, 5)])
def test_embedding_rows(seq, vocab, dim):
    rng = rng_for(vocab, dim, *seq)
    table = rand_i8(rng, (vocab, dim))
    ids = random_ids(rng, (3, *seq), vocab)
    y = embedding(pack_ids(ids), table=table)
    assert y.shape == (3, *seq, dim)
    for idx in np.ndindex(*ids.shape):
        np.testing.assert_array_equal(y[idx], table[ids[idx]])


@pytest.mark.parametrize("bad", [-1, 10, (1 << 31) - 1])
def test_embedding_reference_refuses_ids_outside_the_table(bad):
    ids = np.array([[0, bad]], np.int64)
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        embedding(pack_ids(ids), table=np.zeros((10, 2), np.int8))


def test_constant_repeats_the_value_per_sample():
    v = rand_i8(rng_for(1), (4, 3))
    y = constant(np.zeros((5, 2), np.int8), value=v)
    assert y.shape == (5, 4, 3)
    for n in range(5):
        np.testing.assert_array_equal(y[n], v)


@pytest.mark.parametrize("seq,vocab,dim", [((16,), 1000, 64), ((2, 9), 77, 40)])
@pytest.mark.parametrize("z", [(-128, 127), (127, -128)])
def test_session_runs_token_graph(seq, vocab, dim, z):
    g = token_graph(vocab, seq, dim, *z)
    sess = InferenceSession(g, device="cpu")
    (arg,) = sess.get_inputs()
    assert (arg.name, arg.shape, arg.type) == ("tokens", ["N", *seq], "tensor(int64)")
    ids = random_ids(rng_for(2, vocab, *seq), (5, *seq), vocab)
    y = sess.run(None, {"tokens": ids}, output_type="int8")[0]
    np.testing.assert_array_equal(y, expected(g, ids))
    np.testing.assert_array_equal(sess.last_result.int8_inputs["tokens"], pack_ids(ids))
    for i in range(5):  # batch invariance; int32 ids give the same bits as int64
        one = sess.run(None, {"tokens": ids[i:i + 1].astype(np.int32)}, output_type="int8")[0]
        np.testing.assert_array_equal(one, y[i:i + 1])


@pytest.mark.parametrize("bad,where", [(1000, "token id 1000 at index [1, 3]"),
                                       (-1, "token id -1 at index [1, 3]")])
def test_out_of_range_ids_are_input_errors(bad, where):
    sess = InferenceSession(token_graph(1000, (16,), 64), device="cpu")
    ids = random_ids(rng_for(3), (2, 16), 1000)
    ids[1, 3] = bad
    msg = f"input 'tokens': {where} is outside the vocabulary [0, 1000)"
    with pytest.raises(InputError, match=re.escape(msg)):
        sess.run(None, {"tokens": ids})


@pytest.mark.parametrize("feed,exc,match", [
    (np.zeros((2, 16), np.float32), DtypeError, "expected integer token ids"),
    (np.zeros((2, 16), bool), DtypeError, "expected integer token ids"),
    (np.zeros((2, 15), np.int64), ShapeError, r"expected \['N', 16\]"),
    (np.zeros((2, 16, 4), np.int64), ShapeError, r"expected \['N', 16\]"),
])
def test_token_feed_mistakes(feed, exc, match):
    sess = InferenceSession(token_graph(1000, (16,), 64), device="cpu")
    with pytest.raises(exc, match=match):
        sess.run(None, {"tokens": feed})


def test_token_inputs_are_read_by_embedding_only():
    g = token_graph(50, (4,), 8)
    g.nodes[0].op = "identity"  # a token input's bytes read as int8 codes
    g.nodes[0].params = {}
    with pytest.raises(ModelFormatError, match="token ids are read by embedding nodes only"):
        InferenceSession(g, device="cpu")
    g = token_graph(50, (4,), 8)
    g.inputs[0].dtype = "int8"  # an embedding reading int8 codes as ids
    with pytest.raises(ModelFormatError, match="an embedding reads only a token input"):
        InferenceSession(g, device="cpu")
    g = token_graph(50, (4,), 8)
    g.inputs.append(TensorSpec("unread", (BATCH, 4, ID_BYTES), 1.0, 0, "int64"))
    with pytest.raises(ModelFormatError, match="'unread': token ids that no embedding reads"):
        InferenceSession(g, device="cpu")
    for dtype, shape in (("float32", (BATCH, 4, 4)), ("int64", (BATCH, 4, 3))):
        g = token_graph(50, (4,), 8)
        g.inputs[0] = TensorSpec("tokens", shape, 1.0, 0, dtype)
        with pytest.raises(ModelFormatError, match=f"dtype '{dtype}' with shape"):
            InferenceSession(g, device="cpu")


def test_model_file_keeps_the_input_dtype(tmp_path):
    g = token_graph(50, (4,), 8)
    save_model(g, tmp_path / "t.syn")
    back = load_model(tmp_path / "t.syn")
    assert back.inputs[0].dtype == "int64" and model_id(back) == model_id(g)
    # an int8 input's JSON has no dtype key: the ids of existing models are unchanged
    assert "dtype" not in TensorSpec("x", (BATCH, 3), 0.5, 1).to_json()


def test_cli_runs_token_ids_and_refuses_bad_ones(tmp_path, capsys):
    g = token_graph(50, (4,), 8)
    save_model(g, tmp_path / "t.syn")
    ids = random_ids(rng_for(4), (6, 4), 50)
    np.save(tmp_path / "ids.npy", ids)
    assert main(["run", str(tmp_path / "t.syn"), "-i", str(tmp_path / "ids.npy"), "--device",
                 "cpu", "-q", "--int8", "--batch-size", "4", "-o", str(tmp_path / "y.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["y"], expected(g, ids))
    ids[5, 0] = 50  # in the second batch of the run: checked before the first one runs
    np.save(tmp_path / "bad.npy", ids)
    capsys.readouterr()
    assert main(["run", str(tmp_path / "t.syn"), "-i", str(tmp_path / "bad.npy"), "--device",
                 "cpu", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "InputError: input 'tokens': token id 50 at index [5, 0]" in err
    assert main(["inspect", str(tmp_path / "t.syn")]) == 0
    assert "input  tokens: [-1, 4] int64 token ids" in capsys.readouterr().out
