"""``make bench`` runs every benchmark, prints every figure, and fails at the end if one missed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_bench_runs_every_benchmark_and_fails_at_the_end(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "bench_a.py").write_text("import sys\nprint('figure a: 1.0x')\nsys.exit(1)\n")
    (bench / "bench_b.py").write_text("print('figure b: 2.0x')\n")
    venv_bin = Path(sys.executable).parent
    # -o: treat the test environment as built (this copy has no lock files to build it from)
    out = subprocess.run(
        ["make", "bench", f"VENV={venv_bin.parent}", "-o", f"{venv_bin}/.test"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert "figure a: 1.0x" in out.stdout
    assert "figure b: 2.0x" in out.stdout  # the benchmark after the failing one still ran
    assert "bench_a.py" in out.stdout.split("missed a goal or failed:")[1]
    assert out.returncode != 0

    (bench / "bench_a.py").write_text("print('figure a: 1.0x')\n")
    out = subprocess.run(
        ["make", "bench", f"VENV={venv_bin.parent}", "-o", f"{venv_bin}/.test"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every benchmark met its goals" in out.stdout
