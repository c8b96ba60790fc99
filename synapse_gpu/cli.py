"""The `synapse` command line: run, inspect, compile, quantize."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from . import __version__
from .errors import InputError, SynapseError


def _load_inputs(path, sess):
    """.npy feeds the single input; .npz maps input names to arrays (headers checked first)."""
    from .npyio import load_feeds

    feeds = load_feeds(path, [t.name for t in sess.graph.inputs],
                       any(t.dtype == "int64" for t in sess.graph.inputs))
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in feeds.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise InputError(f"{path}: every input needs the same batch axis 0; got shapes "
                         f"{ {k: list(v.shape) for k, v in feeds.items()} }")
    return feeds


def _check_output_dir(path):
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise InputError(f"--output {path}: directory {d} does not exist; create it first")


def _progress(total, enabled):
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", disable=not enabled, file=sys.stderr, leave=False)


def cmd_run(args):
    if args.ray is not None:  # the distributed path lives in the optional extra
        from .ray import cli_run

        return cli_run(args)
    from .digest import run_digest
    from .session import InferenceSession, _token_feed

    sess = InferenceSession(args.model, device=args.device, strict=not args.no_strict,
                            verbose=args.verbose, max_cost=args.max_cost)
    if args.output:
        _check_output_dir(args.output)
    feeds = _load_inputs(args.input, sess)
    sess.quantize_feeds({k: v[:1] for k, v in feeds.items()})  # fail fast on names/shapes/dtypes
    for t in sess.graph.inputs:  # every token id, so an error names its row in the file
        if t.dtype == "int64":
            _token_feed(feeds[t.name], t, sess._vocab[t.name])
    n = len(next(iter(feeds.values())))
    outs = {t.name: [] for t in sess.graph.outputs}
    q_in = {t.name: [] for t in sess.graph.inputs}
    trace = None
    # Batch invariance makes the split irrelevant to the bits; it bounds memory.
    with _progress(n, n > args.batch_size and not args.quiet) as bar:
        for s in range(0, n, args.batch_size):
            chunk = {k: v[s:s + args.batch_size] for k, v in feeds.items()}
            r = sess.run_full(None, chunk, output_type="int8", trace=args.trace and trace is None)
            trace = trace or r.trace
            for k in q_in:
                q_in[k].append(r.int8_inputs[k])
            for k in outs:
                outs[k].append(r.int8_outputs[k])
            bar.update(len(next(iter(chunk.values()))))
    q_out = {k: np.concatenate(v) for k, v in outs.items()}
    digest = run_digest(sess.model_id, [(k, np.concatenate(v)) for k, v in q_in.items()],
                        [(t.name, q_out[t.name]) for t in sess.graph.outputs])
    if args.output:
        from .reference.boundary import dequantize

        save = {k: (v if args.int8 else dequantize(v, *sess.graph.quant[k])) for k, v in q_out.items()}
        np.savez(args.output, **save)
        print(f"wrote {args.output}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in save.items()))
    else:
        for t in sess.graph.outputs:
            v = q_out[t.name]
            print(f"{t.name}: shape {list(v.shape)} int8, first values {v.reshape(-1)[:8].tolist()}")
    print(f"device: {sess.device}  samples: {n}  model id: {sess.model_id}")
    if args.trace and trace:
        print(f"trace (first batch, {len(trace)} nodes):")
        for e in trace:
            print(f"  [{e.index:4d}] {e.node:<32} {e.op:<16} {str(list(e.shape)):<20} {e.digest}")
    if args.digest:
        from .jobdigest import job_digest_of  # what `--ray` prints for the same records

        print(f"digest: {digest}")
        print("job digest: " + job_digest_of(sess.model_id, [(k, np.concatenate(v)) for k, v in q_in.items()],
                                            [(t.name, q_out[t.name]) for t in sess.graph.outputs]))
    return 0


def cmd_inspect(args):
    from .session import load_any
    from .modelfile import model_id
    from .validate import DEFAULT_LIMITS, Limits, validate
    from .cost import WEIGHTS, model_cost

    g = load_any(args.model)
    rep = validate(g, strict=False, limits=Limits(None, None))  # report the resources, refuse nothing
    cost = model_cost(g, rep.traversal.shapes, rep.traversal.order)
    print(f"model id: {model_id(g)}")
    for k, v in sorted(g.metadata.items()):
        print(f"{k}: {v}")
    for t in g.inputs:
        print(f"input  {t.name}: {list(t.shape[:-1])} int64 token ids (4 bytes each inside)"
              if t.dtype == "int64" else
              f"input  {t.name}: {list(t.shape)} int8 (scale {t.scale:.6g}, zero point {t.zero_point})")
    for t in g.outputs:
        print(f"output {t.name}: {list(t.shape)} int8 (scale {t.scale:.6g}, zero point {t.zero_point})")
    print(f"{'node':<32} {'op':<16} {'output shape':<22} {'params':>9} {'acc bound':>12} {'terms':>7} {'cost':>11}")
    for i, c in zip(rep.nodes, cost.nodes):
        bound = "" if i.acc_bound is None else f"{i.acc_bound / 2**31:.2%}"
        print(f"{i.name[:32]:<32} {i.op:<16} {str(list(i.out_shape)):<22} {i.n_params:>9} "
              f"{bound:>12} {'' if i.reduction is None else i.reduction:>7} {c.total:>11}")
    ops = {}
    for i in rep.nodes:
        ops[i.op] = ops.get(i.op, 0) + 1
    print("ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())))
    print(f"parameters: {sum(i.n_params for i in rep.nodes)}  depth: {rep.depth} layers  "
          f"(acc bound: worst case as a share of 2^31)")
    over = [f"{k} {v} > default limit {lim}" for k, v, lim in (
        ("activation bytes", rep.activation_bytes, DEFAULT_LIMITS.activation_bytes),
        ("work", rep.work, DEFAULT_LIMITS.work)) if v > lim]
    print(f"per sample: activations {rep.activation_bytes} bytes, work {rep.work}; "
          + ("OVER the default limits: " + "; ".join(over) if over else "within the default limits"))
    print(f"cost: {cost.per_sample} per sample ({cost.version}: "
          + ", ".join(f"{k} x{w}" for k, w in WEIGHTS.items()) + "; docs/SPEC.md)")
    k_max = max((i.reduction or 0 for i in rep.nodes if i.op in ("conv1d", "conv2d", "dense")), default=0)
    if k_max:  # the engine this machine admits for conv/dense (self-test, cached per process)
        from .backends.cpu_engines import choose
        print("cpu engine: " + "; ".join(choose(k_max)[1]))
    if rep.within_limits:
        print("Synapse limits: OK")
    else:
        print("Synapse limits: VIOLATED (loads only with --no-strict)")
        for kind, msg in rep.violations:
            print(f"  {kind}: {msg}")
    return 0


def cmd_compile(args):
    from .modelfile import save_model
    from .onnx.importer import import_onnx
    from .validate import validate

    g = import_onnx(args.model)
    validate(g, strict=not args.no_strict)
    mid = save_model(g, args.output)
    print(f"wrote {args.output} ({len(g.nodes)} nodes), model id {mid}")
    return 0


def cmd_quantize(args):
    from .onnx.quantize import run_quantize

    onnx_out = run_quantize(args)
    if str(args.output).endswith(".syn"):
        from .modelfile import save_model
        from .onnx.importer import import_onnx
        from .validate import validate

        g = import_onnx(onnx_out)
        validate(g, strict=False)
        mid = save_model(g, args.output)
        print(f"wrote {args.output}, model id {mid}")
    return 0


def cmd_demo(args):
    from .examples.demo import run_demo

    return run_demo(args.device)


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line and exit 2 (argparse would print the whole usage first);
    subcommand parsers inherit the class."""

    def error(self, message):
        print(f"synapse: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _positive_int(v):
    if not v.strip().isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"{v!r} is not a positive integer")
    return int(v)


def build_parser():
    p = _Parser(
        prog="synapse", description="Deterministic int8 inference: the same output bits on every "
        "CPU and GPU. Models: .syn (canonical Synapse file) or .onnx (imported on load).")
    p.add_argument("--version", action="version", version=f"synapse-gpu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the bundled digits CNN: accuracy, digest, CPU/GPU equality")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="run a model on inputs from .npy/.npz",
                       description="Run MODEL on the arrays in --input; float32 inputs are "
                       "quantized at the boundary, int8 inputs are taken as quantized.")
    r.add_argument("model", help=".syn or .onnx model")
    r.add_argument("--input", "-i", required=True, help=".npy (single input) or .npz (by input name)")
    r.add_argument("--output", "-o", help="write outputs to this .npz (float32, or int8 with --int8)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--digest", action="store_true", help="print the run digest and the job digest (sha256)")
    r.add_argument("--trace", action="store_true", help="print each node's output digest")
    r.add_argument("--int8", action="store_true", help="save int8 outputs instead of float32")
    r.add_argument("--batch-size", type=_positive_int, default=64, help="samples per run (default 64)")
    r.add_argument("--no-strict", action="store_true", help="allow models outside the Synapse limits")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    r.add_argument("--max-cost", type=int, metavar="N", help="refuse a model whose deterministic "
                   "cost per sample exceeds N, before running (see `synapse inspect`)")
    r.add_argument("--verbose", "-v", action="store_true")
    r.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Ray cluster (ADDRESS, else RAY_ADDRESS or a new local one): "
                   "-o names a directory of resumable shards; prints the job digest (docs/ray.md)")
    r.add_argument("--workers", type=int, help="with --ray: actors (default one per GPU, else per CPU)")
    r.add_argument("--shard-size", type=int, default=4096,
                   help="with --ray: records per output shard, a power of two (default 4096)")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="ops, shapes, parameters, accumulator bounds, limits, model id")
    i.add_argument("model", help=".syn or .onnx model")
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("compile", help="import an int8 .onnx and write the canonical .syn file")
    c.add_argument("model", help="quantized .onnx (QDQ or QOperator)")
    c.add_argument("--output", "-o", required=True, help="output .syn path")
    c.add_argument("--no-strict", action="store_true", help="allow models outside the Synapse limits")
    c.set_defaults(func=cmd_compile)

    q = sub.add_parser("quantize", help="quantize a float .onnx with onnxruntime, then import it",
                       description="Static int8 quantization through onnxruntime.quantization "
                       "(quant_pre_process, then quantize_static). -o ending in .syn also imports "
                       "and writes the canonical model file.")
    try:
        from .onnx.quantize import add_quantize_arguments

        add_quantize_arguments(q)
    except ImportError:
        pass
    q.set_defaults(func=cmd_quantize)
    from .cli_verification import add_parsers

    add_parsers(sub)  # compare, trace, diff, verify
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"synapse: note: {message}", file=sys.stderr)  # one line, no source excerpt


def main(argv=None):
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except SynapseError as e:  # every user error: one line, exit 2
        msg = f"{type(e).__name__}: {e}"
    except OSError as e:  # a path that is missing, a directory or unreadable
        msg = f"{e.filename}: {e.strerror}" if e.filename else str(e)
    except MemoryError:
        msg = "out of memory: use a smaller --batch-size"
    print("synapse: error: " + " ".join(msg.split("\n")), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
