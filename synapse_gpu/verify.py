"""Known-answer tests (`synapse verify`): golden vectors that any machine can check.

The package ships, in synapse_gpu/conformance/: one .syn file per conformance
case (conformance/cases.py: every op kind and shape class) and the bundled tiny
CNN, and golden.json with one golden vector per case and per bundled model
(the digits CNN is examples/digits.syn). Golden file layout (docs/SPEC.md):
    {"format": "synapse-golden", "version": 1, "batch": 3,
     "cases": [{"id": str, "model": path relative to the synapse_gpu package,
                "trace": a trace document (tracefile.py: model id, input, output
                         and per-node digests)}]}
Inputs are not stored: input NAME of case ID is generated_int8("ID/input/NAME",
(batch, *shape)), and its digest in the trace pins it. A case passes when the
model file still has the recorded model id, every node's digest matches, and
each sample run alone gives its row of the batch run (batch invariance).

A user's golden vector (`synapse verify MODEL --input X --record FILE`) is a
trace file of that run; `--check FILE` reruns and compares node by node.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import tracefile
from .compare import DIFFERS, MISSING, compare_traces
from .conformance.cases import CASES, build_case, generated_int8
from .errors import DeviceError, InputError, ModelFormatError, SynapseError

GOLDEN_FORMAT, GOLDEN_VERSION, BATCH = "synapse-golden", 1, 3
_PKG = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(_PKG, "conformance", "golden.json")
BUNDLED = {"model/digits": "examples/digits.syn", "model/tiny_cnn": "conformance/tiny_cnn.syn"}


@dataclass
class CaseResult:
    case: str
    ops: dict = field(default_factory=dict)  # op -> nodes checked
    failures: list = field(default_factory=list)  # (op kind, message)

    @property
    def passed(self):
        return not self.failures


def golden_inputs(graph, case, batch=BATCH):
    """int8 codes; token ids (an int64 input) from the same bytes: (code + 128) mod vocab."""
    from .session import _token_vocab

    vocab = _token_vocab(graph)
    return {t.name: (generated_int8(f"{case}/input/{t.name}", (batch, *t.shape[1:-1]))
                     .astype(np.int64) + 128) % vocab[t.name] if t.dtype == "int64" else
            generated_int8(f"{case}/input/{t.name}", (batch, *t.shape[1:]))
            for t in graph.inputs}


def check_run(case, sess, feeds, golden):
    """Rerun `sess` on `feeds` and compare with the golden Trace: a CaseResult."""
    res = CaseResult(case)
    for s in golden.steps:
        res.ops[s.op] = res.ops.get(s.op, 0) + 1
    if sess.model_id != golden.model_id:
        res.failures.append(("model file", f"{case}: model id {sess.model_id[:16]}... is not the "
                                           f"recorded {golden.model_id[:16]}... (a deliberate "
                                           "change: python -m synapse_gpu.verify --regenerate)"))
        return res
    trace = tracefile.record(sess, feeds)
    bad_inputs = [k for k, (_, d) in golden.inputs.items() if trace.inputs.get(k, (0, ""))[1] != d]
    if bad_inputs:
        raise InputError(f"{case}: input {bad_inputs[0]!r} is not the one the golden vector "
                         "was recorded with (its digest differs)")
    c = compare_traces(trace, golden, ("this run", "golden"))
    for n in c.nodes:
        if n.status == DIFFERS and n.cause != "propagated":
            res.failures.append((n.op, f"{case}: node {n.node} ({n.op}) differs from the golden "
                                       "vector with identical inputs"))
    missing = [n.node for n in c.nodes if n.status == MISSING]
    if missing or len(c.nodes) != len(golden.steps):
        res.failures.append(("model file", f"{case}: the run's nodes do not match the golden "
                                           f"vector's ({len(c.nodes)} vs {len(golden.steps)})"))
    batch = len(next(iter(feeds.values())))
    if batch > 1:
        whole = sess.run_full(None, feeds, output_type="int8").int8_outputs
        for i in range(batch):
            one = sess.run_full(None, {k: v[i:i + 1] for k, v in feeds.items()},
                                output_type="int8").int8_outputs
            if any(not np.array_equal(one[k], whole[k][i:i + 1]) for k in whole):
                res.failures.append(("batch invariance", f"{case}: sample {i} alone differs from "
                                                         "its row of the batch run"))
                break
    return res


def load_shipped(path=SHIPPED):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise InputError(f"cannot read golden file {path}: {e.strerror}") from None
    except ValueError as e:
        raise ModelFormatError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != GOLDEN_FORMAT or \
            doc.get("version") != GOLDEN_VERSION:
        raise ModelFormatError(f"{path} is not a version-{GOLDEN_VERSION} {GOLDEN_FORMAT} file")
    return doc


def verify_shipped(device="cpu", path=SHIPPED, progress=None):
    """Check every shipped golden vector on `device`; a list of CaseResult."""
    from .modelfile import load_model
    from .session import InferenceSession

    doc = load_shipped(path)
    results = []
    for case in doc["cases"]:
        golden = tracefile.from_doc(case["trace"], f"{path}: case {case['id']}")
        try:  # a shipped model this version cannot load fails its case; a bad device is an error
            graph = load_model(os.path.join(_PKG, case["model"]))
            sess = InferenceSession(graph, device=device, strict=False)
        except DeviceError:
            raise
        except SynapseError as e:
            results.append(CaseResult(case["id"], {}, [("model file", f"{case['id']}: {e}")]))
            continue
        results.append(check_run(case["id"], sess, golden_inputs(graph, case["id"], doc["batch"]),
                                 golden))
        if progress:
            progress(results[-1])
    return results


def summarize(results):
    """(lines, passed): PASS/FAIL per op kind, then batch invariance and model files."""
    ops, fails = {}, {}
    for r in results:
        for op, n in r.ops.items():
            ops[op] = ops.get(op, 0) + n
        for kind, msg in r.failures:
            fails.setdefault(kind, []).append(msg)
    lines = [f"  {'op kind':<18} {'result':<6} {'nodes':>6}"]
    for op in sorted(ops):
        f = fails.get(op, [])
        lines.append(f"  {op:<18} {'FAIL' if f else 'PASS':<6} {ops[op]:>6}" +
                     (f"   {f[0]}" + (f" (+{len(f) - 1} more)" if len(f) > 1 else "") if f else ""))
    for kind in ("batch invariance", "model file"):
        f = fails.get(kind, [])
        lines.append(f"  {kind:<18} {'FAIL' if f else 'PASS':<6} {len(results):>6}" +
                     (f"   {f[0]}" if f else ""))
    failed = sorted(fails)
    n_kinds = len(ops)
    if failed:
        lines.append(f"VERDICT: FAIL: {', '.join(failed)} ({len([k for k in failed if k in ops])} "
                     f"of {n_kinds} op kinds failed; {sum(not r.passed for r in results)} of "
                     f"{len(results)} golden vectors)")
    else:
        lines.append(f"VERDICT: PASS: {n_kinds} op kinds, {len(results)} golden vectors, every "
                     "node bit-identical")
    return lines, not failed


def regenerate(device="cpu"):
    """Rewrite the shipped conformance models and golden.json (maintainers; after a
    deliberate change of a rule or a model, with a note of why in the commit)."""
    from .examples.tiny import tiny_cnn
    from .modelfile import load_model, save_model
    from .session import InferenceSession

    out = os.path.join(_PKG, "conformance")
    models = {}
    for name, _, _ in CASES:
        models[f"conformance/{name}"] = f"conformance/{name}.syn"
        save_model(build_case(name), os.path.join(_PKG, models[f"conformance/{name}"]))
    save_model(tiny_cnn(), os.path.join(_PKG, BUNDLED["model/tiny_cnn"]))
    models.update(BUNDLED)
    cases = []
    for case, rel in models.items():
        graph = load_model(os.path.join(_PKG, rel))
        sess = InferenceSession(graph, device=device, strict=False)
        t = tracefile.record(sess, golden_inputs(graph, case))
        cases.append({"id": case, "model": rel, "trace": tracefile.to_doc(t)})
    with open(os.path.join(out, "golden.json"), "w", encoding="utf-8") as f:
        f.write(tracefile.dumps({"format": GOLDEN_FORMAT, "version": GOLDEN_VERSION,
                                 "batch": BATCH, "cases": cases}) + "\n")
    return len(cases)


def run_cli(args):
    """`synapse verify`: shipped vectors, a user's --record/--check, or --engine onnxruntime."""
    if args.engine:
        from .ort_audit import run_cli as audit

        return audit(args)
    if args.model is None:
        if args.record or args.check or args.input:
            raise InputError("--record/--check/--input need a MODEL")
        print(f"synapse verify: device {args.device}, shipped golden vectors "
              f"({len(CASES)} conformance cases, {len(BUNDLED)} bundled models)")
        results = verify_shipped(args.device, progress=(lambda r: print(
            f"  {r.case:<40} {'PASS' if r.passed else 'FAIL'}")) if args.verbose else None)
        lines, ok = summarize(results)
        print("\n".join(lines))
        return 0 if ok else 1
    from .cli import _load_inputs
    from .session import InferenceSession

    if not (args.record or args.check) or not args.input:
        raise InputError("with MODEL, give --input X and --record FILE or --check FILE "
                         "(or --engine onnxruntime)")
    sess = InferenceSession(args.model, device=args.device, strict=not args.no_strict)
    feeds = _load_inputs(args.input, sess)
    if args.record:
        t = tracefile.record(sess, feeds)
        tracefile.save(t, args.record)
        print(f"recorded {args.record}: {len(t.steps)} nodes, model id {t.model_id[:16]}..., "
              f"run digest {t.run_digest}")
        return 0
    golden = tracefile.load(args.check)
    lines, ok = summarize([check_run(os.path.basename(args.model), sess,
                                     sess.quantize_feeds(feeds), golden)])
    print(f"synapse verify: {args.model} on {sess.device} against {args.check}")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m synapse_gpu.verify --regenerate")
    print(f"wrote {regenerate()} golden vectors to {SHIPPED}")
