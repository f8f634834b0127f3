"""The benchmark scripts run (in their quick mode) and print their ratios, so they cannot rot. They assert
nothing about time: that is for a person reading their output on a quiet machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def test_engine_benchmark_prints_a_ratio_per_setting():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine.py"), "--quick", "--members", "4"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"^(mlp|cnn1d)\s+\d+", line)]
    assert len(rows) == 6, result.stdout
    for row in rows:
        fields = row.split()
        assert fields[-2] in ("batched", "sequential") and re.fullmatch(r"\d+\.\d+x", fields[-1]), row
    print(result.stdout)
