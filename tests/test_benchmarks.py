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


def test_pipeline_benchmark_prints_each_step_against_the_floor_and_the_goal():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--quick"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = re.findall(r"^(plan|aggregate|no-op): .*?\s([\d.]+) s\s+([\d.]+)x floor\s+([\d.]+) of goal$",
                      result.stdout, re.MULTILINE)
    assert [r[0] for r in rows] == ["plan", "aggregate", "no-op", "no-op"], result.stdout
    assert "400 runs" in result.stdout
    print(result.stdout)


def test_study_benchmark_runs_the_smoke_study_end_to_end():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study.py"), "--quick", "--cores", "2"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^study smoke.yaml: 61 runs, 2 cores$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^end to end .* [\d.]+ s\s+[\d.]+ of goal$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^\s+train_pack\s+[\d.]+ s$", result.stdout, re.MULTILINE), result.stdout
    print(result.stdout)
