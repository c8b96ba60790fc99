"""bench/gpu_check.sh --dry-run: the one-command GPU check runs end to end here, on the
emulated device, and writes its report; its step budgets fit the 8 minutes."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found (the emulated device)")
def test_dry_run_writes_a_passing_report(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, SYNAPSE_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out-dir",
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (report,) = tmp_path.glob("gpu-dry-run-emulated-*.md")
    text = report.read_text()
    assert text.startswith("# GPU check: dry-run-emulated (DRY RUN") and "**PASS**" in text
    suite = next(line for line in text.splitlines() if line.startswith("| GPU suite"))
    assert "rc 0:" in suite and " 0 failed" in suite and " 0 passed" not in suite
    assert "| compute-sanitizer memcheck | rc not run" in text
    assert "### GPU benchmark: dry-run-host" in text and "| Synapse dense_v1" in text


def test_step_budgets_fit_eight_minutes(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_check

    assert gpu_check.TOTAL_S == 480 and sum(gpu_check.BUDGET.values()) <= gpu_check.TOTAL_S - 20
