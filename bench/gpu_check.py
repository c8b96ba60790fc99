"""The one-command GPU check (bench/gpu_check.sh runs this): GPU suite, compute-sanitizer,
benchmark, one report, in at most 8 minutes.

1. the GPU test suite (tests/test_cuda_gpu.py without the `slow` ResNet-50 test: the
   benchmark checks ResNet-50 bit for bit; tests/test_cuda_variants.py, the conv/dense
   kernel variants; tests/test_cuda_graphs.py, CUDA graph replay) on the real GPU;
2. compute-sanitizer memcheck and racecheck over the whole-model tests, where the
   tool exists (PATH or /usr/local/cuda*/bin);
3. bench/bench_gpu.py --quick (GEMM and ResNet-50, its own bit-exactness checks);
4. bench/results/gpu-<device>-<date>.md: device, driver, CUDA, CuPy, tests passed,
   sanitizer summaries, the benchmark's figures.
Each step has a share of the 8 minutes and is stopped at its end; the report says so.

--dry-run does all of it on a machine without a GPU: the suite (a small part of it)
on the emulated device (tests/emucuda), the benchmark's --dry-run, the sanitizer
step only where compute-sanitizer exists. Its report is marked as a dry run.
Exit status 0 only when every step ran and passed.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_S = 8 * 60
# Shares of the budget in seconds, in order; a step may use what earlier ones left.
BUDGET = {"suite": 170, "memcheck": 70, "racecheck": 50, "bench": 170}
SUITE = ["tests/test_cuda_gpu.py", "tests/test_cuda_variants.py", "tests/test_cuda_graphs.py"]
DRY_SUITE_FILTER = "relu-zx0-zy0 or tiny_cnn"
SANITIZED = "model_matches_cpu_with_trace or many_blocks"


def sh(cmd, timeout, env=None):
    """(return code or 'timeout', seconds, combined output)."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=max(1, timeout))
        return p.returncode, time.monotonic() - t0, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", time.monotonic() - t0, out


def device_info(dry):
    if dry:
        return {"name": "dry-run-emulated", "note": "no GPU: the emulated device (tests/emucuda)"}
    code = ("import json, cupy as cp; d = cp.cuda.Device(); p = cp.cuda.runtime.getDeviceProperties(d.id);"
            "n = p['name']; n = n.decode() if isinstance(n, bytes) else n;"
            "v = lambda x: f'{x // 1000}.{x % 1000 // 10}';"
            "print(json.dumps({'name': n, 'compute_capability': d.compute_capability,"
            "'cuda_runtime': v(cp.cuda.runtime.runtimeGetVersion()),"
            "'cuda_driver_api': v(cp.cuda.runtime.driverGetVersion()), 'cupy': cp.__version__}))")
    rc, _, out = sh([sys.executable, "-c", code], 60)
    info = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {"name": "unknown",
                                                                       "error": out[-500:]}
    if shutil.which("nvidia-smi"):
        rc, _, out = sh(["nvidia-smi", "--query-gpu=driver_version,memory.total",
                         "--format=csv,noheader"], 30)
        if rc == 0:
            info["driver"], info["memory"] = [s.strip() for s in out.splitlines()[0].split(",")][:2]
    return info


def junit_counts(path):
    try:
        s = ET.parse(path).getroot()
        s = s if s.tag == "testsuite" else s.find("testsuite")
        total, fail, err, skip = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        return {"passed": total - fail - err - skip, "failed": fail + err, "skipped": skip}
    except (OSError, ET.ParseError, AttributeError):
        return None


def compute_sanitizer():
    found = shutil.which("compute-sanitizer")
    return found or next(iter(sorted(glob.glob("/usr/local/cuda*/bin/compute-sanitizer"))), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="no GPU: emulated device, bench --dry-run")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    start = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                    os.environ.get("PYTHONPATH")])))
    if args.dry_run:
        env["SYNAPSE_GPU_TESTS"] = "emulated"
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    steps, left = {}, lambda: TOTAL_S - (time.monotonic() - start)

    def budget(name):
        spent = sum(s["seconds"] for s in steps.values())
        planned = sum(v for k, v in BUDGET.items() if k in steps)
        return min(left() - 5, BUDGET[name] + max(0, planned - spent))

    info = device_info(args.dry_run)
    print(f"gpu_check: {info}", flush=True)

    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    suite = pytest + [f"--junitxml={work / 'suite.xml'}", *SUITE]
    if args.dry_run:
        suite = pytest + [f"--junitxml={work / 'suite.xml'}", SUITE[0], "-k", DRY_SUITE_FILTER]
    rc, secs, out = sh(suite, budget("suite"), env)
    steps["suite"] = {"rc": rc, "seconds": secs, "counts": junit_counts(work / "suite.xml"),
                      "tail": out.strip().splitlines()[-1:] or [""]}
    print(f"gpu_check: suite {steps['suite']['counts']} rc={rc} in {secs:.0f} s", flush=True)

    tool = compute_sanitizer()
    for kind in ("memcheck", "racecheck"):
        if tool is None or args.dry_run:
            steps[kind] = {"rc": "not run", "seconds": 0.0,
                           "summary": "compute-sanitizer not found" if tool is None
                           else "dry run: the emulated device has no compute-sanitizer"}
            continue
        cmd = [tool, "--tool", kind, "--error-exitcode", "97", *pytest, SUITE[0], "-k", SANITIZED]
        rc, secs, out = sh(cmd, budget(kind), env)
        summary = [ln for ln in out.splitlines() if "ERROR SUMMARY" in ln or "RACECHECK SUMMARY" in ln]
        steps[kind] = {"rc": rc, "seconds": secs, "summary": "; ".join(summary[-2:]) or out[-300:]}
        print(f"gpu_check: {kind} rc={rc} in {secs:.0f} s", flush=True)

    bench = [sys.executable, "bench/bench_gpu.py", "--out-dir", str(work / "bench")]
    bench += ["--dry-run"] if args.dry_run else ["--quick"]
    rc, secs, out = sh(bench, budget("bench"), env)
    md = sorted((work / "bench").glob("gpu_*.md"))
    steps["bench"] = {"rc": rc, "seconds": secs, "report": md[0].read_text() if md else out[-3000:]}
    print(f"gpu_check: bench rc={rc} in {secs:.0f} s", flush=True)

    ok = (steps["suite"]["rc"] == 0 and steps["bench"]["rc"] == 0
          and all(steps[k]["rc"] in (0, "not run") for k in ("memcheck", "racecheck")))
    slug = re.sub(r"[^a-z0-9]+", "-", info.get("name", "unknown").lower()).strip("-")
    os.makedirs(args.out_dir, exist_ok=True)
    path = Path(args.out_dir) / f"gpu-{slug}-{datetime.date.today().isoformat()}.md"
    path.write_text(report(info, steps, ok, time.monotonic() - start, args.dry_run))
    print(f"gpu_check: {'PASS' if ok else 'FAIL'} in {time.monotonic() - start:.0f} s; wrote {path}")
    return 0 if ok else 1


def report(info, steps, ok, seconds, dry):
    s = steps["suite"]
    c = s["counts"] or {}
    lines = [f"# GPU check: {info.get('name')}{' (DRY RUN: no GPU, not GPU figures)' if dry else ''}",
             "",
             f"`bash bench/gpu_check.sh{' --dry-run' if dry else ''}` on "
             f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: "
             f"**{'PASS' if ok else 'FAIL'}** in {seconds:.0f} s (budget {TOTAL_S} s).",
             "",
             "| | |", "| --- | --- |",
             *[f"| {k} | {v} |" for k, v in info.items()],
             "",
             "## Steps", "",
             "| step | result | seconds |", "| --- | --- | --- |",
             f"| GPU suite ({', '.join(SUITE) if not dry else SUITE[0] + ' -k ' + repr(DRY_SUITE_FILTER)}) "
             f"| rc {s['rc']}: {c.get('passed', '?')} passed, {c.get('failed', '?')} failed, "
             f"{c.get('skipped', '?')} skipped | {s['seconds']:.0f} |"]
    for k in ("memcheck", "racecheck"):
        lines.append(f"| compute-sanitizer {k} | rc {steps[k]['rc']}: {steps[k]['summary']} "
                     f"| {steps[k]['seconds']:.0f} |")
    lines += [f"| benchmark (bench/bench_gpu.py) | rc {steps['bench']['rc']} "
              f"| {steps['bench']['seconds']:.0f} |", "", "## Benchmark", "",
              ("\n" + steps["bench"]["report"]).replace("\n# ", "\n### ").lstrip("\n"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
