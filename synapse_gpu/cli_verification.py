"""The verification commands of `synapse`: compare, trace, diff, verify.

Exit codes as diff(1): 0 identical / PASS, 1 differs / FAIL; errors are the
main CLI's (one line, no traceback).
"""
from __future__ import annotations


def _session_and_feeds(args):
    from .cli import _load_inputs
    from .session import InferenceSession

    sess = InferenceSession(args.model, device=args.device, strict=not args.no_strict)
    return sess, _load_inputs(args.input, sess)


def _print_comparison(c, all_nodes):
    for note in c.notes:
        print(f"note: {note}")
    if all_nodes or not c.identical:
        print(c.table(all_nodes=all_nodes, limit=None if all_nodes else 25))
    origins = c.origins
    if origins:
        print("where the runs part: " + ", ".join(f"{o.node} ({o.op}, {o.cause})" for o in origins[:8])
              + (f" and {len(origins) - 8} more" if len(origins) > 8 else ""))
    print(c.verdict())


def cmd_compare(args):
    from .compare import compare, plot_agreement

    sess, feeds = _session_and_feeds(args)
    options = None
    if args.against == "onnxruntime":
        from .ort_audit import session_options

        options = session_options(args.ort_optimization, 0)
    c = compare(sess, feeds, args.against, ort_options=options,
                onnx_model=args.model if args.against == "onnxruntime" else None)
    _print_comparison(c, args.all)
    if args.plot:
        plot_agreement(c, args.plot)
        print(f"wrote {args.plot}")
    return 0 if c.identical else 1


def cmd_trace(args):
    from . import tracefile

    sess, feeds = _session_and_feeds(args)
    t = tracefile.record(sess, feeds, keep_tensors=args.tensors)
    tracefile.save(t, args.output)
    print(f"wrote {args.output}: {len(t.steps)} nodes, device {t.device}, batch {t.batch}"
          + (" (+ tensors .npz)" if args.tensors else ""))
    print(f"model id: {t.model_id}\nrun digest: {t.run_digest}")
    return 0


def cmd_diff(args):
    from . import tracefile
    from .compare import compare_traces

    a, b = tracefile.load(args.a), tracefile.load(args.b)
    c = compare_traces(a, b, (args.a, args.b))
    _print_comparison(c, args.all)
    if not c.identical and not (a.tensors and b.tensors):
        print("to count differing elements: `synapse trace --tensors` on both machines, then "
              "diff again (or `synapse compare MODEL -i X --against B.json`)")
    return 0 if c.identical else 1


def cmd_verify(args):
    from . import verify

    return verify.run_cli(args)


def add_parsers(sub):
    """Register compare, trace, diff and verify on the main parser's subparsers."""
    def model_and_input(p):
        p.add_argument("model", help=".syn or .onnx model")
        p.add_argument("--input", "-i", required=True,
                       help=".npy (single input) or .npz (by input name)")
        p.add_argument("--device", default="cpu",
                       help="Synapse backend: cpu (default), cuda, or any device the session accepts")
        p.add_argument("--no-strict", action="store_true",
                       help="allow models outside the Synapse limits")

    c = sub.add_parser(
        "compare", help="compare every node's int8 output exactly with onnxruntime, another "
        "device or a trace", description="Run MODEL with Synapse and compare every node's int8 "
        "output exactly with onnxruntime (intermediate tensors marked as outputs of its optimized "
        "graph), another Synapse device, or a trace file. Prints the differing nodes (identical "
        "share, max difference in steps, first differing index, cause) and the first divergent "
        "node. Exit 0 identical, 1 different.")
    model_and_input(c)
    c.add_argument("--against", default="onnxruntime",
                   help="onnxruntime (MODEL must be .onnx; default), a device (cpu, cuda) or "
                   "TRACE.json from `synapse trace`")
    c.add_argument("--all", action="store_true",
                   help="list every node (default: the first 25 differing ones)")
    c.add_argument("--ort-optimization", default="all", choices=["disabled", "basic", "extended",
                                                                 "all"],
                   help="onnxruntime's graph optimization level (default all, as users run it)")
    c.add_argument("--plot", metavar="FILE.png",
                   help="draw agreement per node (needs matplotlib: the [plot] extra)")
    c.set_defaults(func=cmd_compare)

    t = sub.add_parser("trace", help="write every node's output digest of one run to a JSON file",
                       description="Run MODEL on --input and write a trace file (docs/SPEC.md): "
                       "every node's name, op, shape and sha256 digest. `synapse diff` finds the "
                       "first node where two machines' traces part.")
    model_and_input(t)
    t.add_argument("--output", "-o", required=True, help="trace file to write (.json)")
    t.add_argument("--tensors", action="store_true",
                   help="also keep every node's int8 tensor in FILE.npz beside the trace")
    t.set_defaults(func=cmd_trace)

    d = sub.add_parser("diff", help="first divergent node between two trace files",
                       description="Compare two trace files node by node (digests; element "
                       "counts where both kept tensors). Exit 0 identical, 1 different.")
    d.add_argument("a", help="trace file (.json)")
    d.add_argument("b", help="trace file (.json)")
    d.add_argument("--all", action="store_true", help="list every node, not only differing ones")
    d.set_defaults(func=cmd_diff)

    v = sub.add_parser(
        "verify", help="known-answer tests: shipped golden vectors, your model's, or an "
        "onnxruntime determinism audit",
        description="Without MODEL: run the shipped golden vectors (bundled models and a "
        "conformance set covering every op kind and shape class) and print PASS/FAIL per op "
        "kind. With MODEL --input X: --record GOLDEN.json or --check GOLDEN.json. With "
        "--engine onnxruntime MODEL.onnx: report which onnxruntime settings (optimization "
        "level, threads, batch size) change its own outputs. Exit 0 PASS, 1 FAIL.")
    v.add_argument("model", nargs="?", help="your model (.syn or .onnx)")
    v.add_argument("--input", "-i", help=".npy or .npz input for MODEL")
    v.add_argument("--device", default="cpu",
                   help="Synapse backend: cpu (default), cuda, or any device the session accepts")
    g = v.add_mutually_exclusive_group()
    g.add_argument("--record", metavar="GOLDEN.json", help="write MODEL's golden vector")
    g.add_argument("--check", metavar="GOLDEN.json", help="check MODEL against a golden vector")
    g.add_argument("--engine", choices=["onnxruntime"],
                   help="audit onnxruntime's own determinism on MODEL.onnx")
    v.add_argument("--no-strict", action="store_true", help="allow models outside the Synapse limits")
    v.add_argument("--verbose", "-v", action="store_true", help="one line per case")
    v.set_defaults(func=cmd_verify)
