"""The benchmark scripts run (in their quick mode) and print their ratios, so they cannot rot. They assert
nothing about time: that is for a person reading their output on a quiet machine."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def test_engine_benchmark_prints_both_baselines_and_both_modes_per_setting():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine.py"), "--quick", "--members", "4"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"train only\s.*\|\s+with measurements", result.stdout), result.stdout
    rows = [line for line in result.stdout.splitlines() if re.match(r"^(mlp|cnn1d)\s+\d+", line)]
    assert len(rows) == 6, result.stdout
    seconds, ratio = r"\d+\.\d+", r"\d+\.\d+x"
    mode = rf"{seconds}\s+{seconds}\s+{seconds}\s+{ratio}\s+{ratio}"  # dataloader, tight, batchlab, 2 speed-ups
    for row in rows:
        assert re.fullmatch(rf"(mlp|cnn1d)\s+\d+\s+4\s+10\s+{mode}\s+\|\s+{mode}\s+(batched|sequential)", row), row
    print(result.stdout)


def test_measurements_benchmark_prints_each_part_against_training():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "measurements.py"), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^(mlp|cnn1d)\s+B=(\d+)\s.*training [\d.]+ s  evaluations [\d.]+ s \([\d.]+x\)  "
                      r"noise scale [\d.]+ s \([\d.]+x\)  sharpness [\d.]+ s \([\d.]+x\)$", result.stdout, re.MULTILINE)
    assert rows == [("cnn1d", "128"), ("cnn1d", "512"), ("mlp", "128"), ("mlp", "512")], result.stdout
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
    from batchlab import config, grid

    runs = len(grid.expand(config.load(ROOT / "configs" / "smoke.yaml")))  # its two datasets' grids and variants
    assert re.search(rf"^study smoke.yaml: {runs} runs, 2 cores$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^end to end .* [\d.]+ s\s+[\d.]+ of goal$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^\s+train_pack\s+[\d.]+ s$", result.stdout, re.MULTILINE), result.stdout
    # ...then the training jobs' time by phase (benchmarks/phases.py)
    for phase in ("startup", "train", "eval", "noise", "sharpness"):
        assert re.search(rf"^  {phase}\s+[\d.]+ s\s+[\d.]+%$", result.stdout, re.MULTILINE), phase
    print(result.stdout)


def test_gpu_benchmark_runs_its_cpu_parts_and_names_the_cuda_parts_it_skips(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--device", "cpu",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    summary = dict(re.findall(r"^(\d\. [A-Za-z ]+?)\s+(PASS|FAIL|SKIP)\b", out.split("== summary ==")[1], re.MULTILINE))
    assert summary == {"1. engines x precisions": "PASS", "2. kill and resume": "PASS", "3. throughput": "PASS",
                       "4. smoke study on the GPU": "SKIP"}, out
    assert "FAIL" not in out
    # the CPU parts ran: every precision's members, both engines resumed bitwise, both architectures measured
    for precision in ("fp32", "bf16", "fp16"):
        assert len(re.findall(rf"^  PASS cpu {precision} lr ", out, re.MULTILINE)) == 3, precision
    for engine in ("sequential", "batched"):
        assert re.search(rf"^  PASS cpu {engine} fp32: resumed equals uninterrupted \(bitwise\)$", out, re.MULTILINE)
    for arch in ("cnn_bn", "resnet_small"):
        assert len(re.findall(rf"^  PASS {arch} B \d+: measured$", out, re.MULTILINE)) == 3, arch
    # each section names the CUDA part it skipped, and why
    skips = re.findall(r"^  SKIP cuda[^:]*: (.+)$", out, re.MULTILINE)
    assert len(skips) == 4 and all("--device cpu" in reason for reason in skips), skips
    assert (tmp_path / "report.txt").read_text().count("PASS") == out.count("PASS")
    assert "samples_per_s" in (tmp_path / "measurements.json").read_text()
    print(out)


def test_stacking_benchmark_checks_every_form_then_prints_its_ratio_and_a_verdict():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stacking.py"), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.count("float64 check passed") == 2, out
    forms = ["alone", "alone-cl", "unfold", "grouped", "grouped-nodnn", "channels_last", "vmap"]
    for batch_size in (32, 128):
        block = out.split(f"B = {batch_size}  ")[1]
        rows = re.findall(r"^  (\S+)\s+[\d.]+ ms/step\s+(\d+\.\d+)x$", block, re.MULTILINE)[: len(forms)]
        assert [name for name, _ in rows] == forms and rows[0][1] == "1.00", block
    assert re.search(r"^verdict: ", out, re.MULTILINE) and "CPU_BATCHED_MAX_BATCH['conv1d']" in out, out
    print(out)


def test_phases_benchmark_reads_a_studys_logs_and_runs_table(tmp_path, mnist1d_npz):
    from batchlab import packs, tables
    from batchlab.logs import setup_logging
    from studies import tiny_specs

    specs = tiny_specs(architectures=["logreg", "mlp"], batch_sizes=[8, 32], budget={"steps": 10})
    log_dir = tmp_path / "logs" / "train_pack"
    log_dir.mkdir(parents=True)
    root, handlers, level = logging.getLogger(), logging.getLogger().handlers[:], logging.getLogger().level
    try:  # each pack's job log, as the train_pack rule writes it
        for arch, b in ((a, b) for a in ("logreg", "mlp") for b in (8, 32)):
            setup_logging(str(log_dir / f"pack_{arch}_b{b}.log"))
            pack = [s for s in specs if s["batch_size"] == b and s["arch"] == arch]
            packs.train_pack(pack, str(mnist1d_npz), str(tmp_path / "runs"))
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    tables.write([tmp_path / "runs" / s["run_id"] / "summary.json" for s in specs], tmp_path / "history.parquet",
                 tmp_path / "results" / "tables" / "runs.parquet")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "phases.py"), "--folder", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"{len(specs)} runs, 4 train_pack jobs (4 with a phase line)" in out, out
    for phase in ("startup", "train", "eval", "noise", "sharpness", "checkpoint", "write", "other"):
        assert re.search(rf"^  {phase}\s+[\d.]+ s\s+[\d.]+%$", out, re.MULTILINE), phase
    assert re.search(r"^\s+logreg\s+2\s", out, re.MULTILINE) and re.search(r"^\s+mlp\s+2\s", out, re.MULTILINE), out
    assert re.search(r"^\s+8\s+2\s", out, re.MULTILINE) and re.search(r"^\s+32\s+2\s", out, re.MULTILINE), out
    print(out)


def test_roofline_benchmark_prints_each_setting_against_the_matmul_peak():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "roofline.py"), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    peak = re.search(r"^matmul peak: ([\d.]+) GFLOP/s", result.stdout, re.MULTILINE)
    assert peak and float(peak.group(1)) > 0, result.stdout
    rows = re.findall(r"^(logreg|mlp|cnn1d) B=(\d+): ([\d.]+) GFLOP/s training = ([\d.e-]+) of the", result.stdout,
                      re.MULTILINE)
    assert [(r[0], r[1]) for r in rows] == [(a, b) for a in ("logreg", "mlp", "cnn1d") for b in ("2", "64", "1024")]
    assert all(float(r[2]) > 0 for r in rows)
    print(result.stdout)


def test_noise_decay_benchmark_prints_each_decay_per_architecture(tmp_path, small_tables):
    history, runs = small_tables
    folder = tmp_path / "results" / "tables"
    folder.mkdir(parents=True)
    runs.to_parquet(folder / "runs.parquet")
    history.to_parquet(folder / "history.parquet")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "noise_decay.py"), "--folder", str(tmp_path),
                             "--decay", "0", "--decay", "0.5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    assert {(line[0], line[1]) for line in lines} == {(d, a) for d in ("0", "0.5") for a in ("logreg", "mlp")}
    scatter = {(line[0], line[1]): float(line[2]) for line in lines}
    for arch in ("logreg", "mlp"):  # the moving average never scatters more than each evaluation alone
        assert scatter["0.5", arch] <= scatter["0", arch] + 1e-9, scatter
