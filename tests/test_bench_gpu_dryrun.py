"""bench/bench_gpu.py without a GPU: --dry-run runs every code path of the GPU
benchmark on the host (the CUDA backend on tests/cuda_host's HostDevice, CPU
clocks, tiny sizes), so the one-command GPU run is not its first run."""
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ort_helpers import ort_u8s8_exact

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found (the host device needs it)")
def test_dry_run_writes_checked_results(tmp_path):
    env = dict(os.environ, SYNAPSE_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--dry-run",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads((tmp_path / "gpu_dry-run-host.json").read_text())
    assert r["dry_run"] is True and r["errors"] == []
    assert r["device"]["name"] == "dry-run-host" and r["int8_dense_peak_tops"] is None
    assert {"python", "numpy", "synapse_gpu", "cupy", "torch", "onnxruntime"} <= set(r["versions"])

    g = r["gemm"]
    assert (g["M"], g["N"], g["K"], g["ops"], g["checked_rows"]) == (64, 64, 64, 2 * 64**3, 64)
    # v1 and v2 per layout (v3 and v5 run as v2 on the host device: no tensor cores)
    assert [(s["trans_w"], s["variant"][:9]) for s in g["synapse"]] == [
        (1, "dense_v1,"), (1, "dense_v2,"), (0, "dense_v1,"), (0, "dense_v2,"),
        (None, "matmul_v1"), (None, "matmul_v2")]
    for s in g["synapse"]:
        assert s["bit_exact"] and s["mismatches"] == 0
        assert s["kernel_ms"] > 0 and s["run_ms"] > 0 and s["gops"] > 0 and s["peak_pct"] is None
    t = g["torch_int_mm"]
    if t["available"]:
        assert t["exact"] and t["device"] == "cpu" and t["tops"] > 0
    else:
        assert t["reason"]

    m = r["model"]
    assert m["file"] == "digits_int8.onnx" and m["bit_exact_vs_cpu"] is True
    assert [b["batch"] for b in m["batches"]] == [1, 8]
    o = m["onnxruntime"]
    assert o["available"] and o["provider"] == "CPUExecutionProvider"
    if ort_u8s8_exact():  # else its QDQ run saturates on this CPU (tests/ort_helpers.py)
        assert o["identical_int8_logits"] > 0.9 and o["top1_agree"] > 0.9
    for b in m["batches"]:
        assert b["synapse_img_s"] > 0 and b["ort_img_s"] > 0

    md = (tmp_path / "gpu_dry-run-host.md").read_text()
    assert "## int8 GEMM 64x64x64" in md
    assert "| Synapse dense_v1, w (N, K), trans_w=1 | yes |" in md
    assert "| 8 | " in md and "identical int8 logits" in md
    cg = m["cuda_graphs"]  # batch-1 latency: the emulated device captures and replays
    assert cg["batch"] == 1 and cg["bit_exact_vs_cpu"] and cg["graph"].startswith("CUDA graph of")
    assert cg["plain_ms"] > 0 and cg["graph_ms"] > 0 and cg["launches"] >= m["nodes"]
    assert "## Batch-1 latency: CUDA graph replay" in md and "| CUDA graph replay | " in md
    kv = m["kernel_variants"]
    assert [v["variant"] for v in kv["variants"]] == ["v1", "v2", "v3", "v4", "v5", "v6"]
    assert all(v["bit_exact"] and v["kernel_ms"] > 0 for v in kv["variants"])
    table = json.loads((tmp_path / "cuda_variants_dry-run-host.json").read_text())
    assert table["batch"] == 8 and set(table["layers"].values()) <= {"v1", "v2", "v3", "v4", "v5"}
    assert "## Kernel variants" in md


def test_peak_by_name_and_unavailable_provider(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bg = importlib.import_module("bench_gpu")
    assert bg.peak_tops("NVIDIA H100 80GB HBM3") == 1979
    assert bg.peak_tops("NVIDIA H200") == 1979
    assert bg.peak_tops("NVIDIA H100 PCIe") == 1513
    assert bg.peak_tops("NVIDIA H200 NVL") == 1671
    assert bg.peak_tops("NVIDIA A100-SXM4-80GB") is None
    from synapse_gpu.examples.demo import example_path

    sess, info = bg.ort_session(str(example_path("digits_int8.onnx")), "NoSuchExecutionProvider")
    assert sess is None and not info["available"] and "NoSuchExecutionProvider" in info["reason"]
