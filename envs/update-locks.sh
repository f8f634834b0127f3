#!/usr/bin/env bash
# Rewrite batchlab's pip locks from the pins in pyproject.toml: every package batchlab, its tests and the SLURM
# executor plugin install, transitive ones too, pinned to one version with the SHA-256 of each of its files.
#
#   requirements.lock       torch's CPU build (2.13.0+cpu, from PyTorch's CPU wheel index): laptops, CI, CPU clusters
#   requirements-cuda.lock  torch's CUDA build from PyPI, with the NVIDIA libraries it brings: GPU machines
#
# Both are resolved for Python 3.11 on x86-64 Linux whatever machine runs this, so they come out the same
# everywhere. Needs uv (`pip install ".[lock]"`). The CPU build comes from PyTorch's CPU index unless
# TORCH_CPU_WHEELS names a folder that holds the wheel (offline, or behind a proxy that blocks that index).
set -euo pipefail
cd "$(dirname "$0")/.."

common=(pyproject.toml --extra test --generate-hashes --python-version 3.11
        --python-platform x86_64-manylinux_2_28 --custom-compile-command "envs/update-locks.sh")
if [[ -n "${TORCH_CPU_WHEELS:-}" ]]; then
    cpu_torch=(--find-links "$TORCH_CPU_WHEELS")
else
    cpu_torch=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
uv pip compile --quiet "${common[@]}" "${cpu_torch[@]}" -o requirements.lock
uv pip compile --quiet "${common[@]}" -o requirements-cuda.lock
