"""batchlab.schedules: linear warm-up, then constant, cosine or step decay."""

from __future__ import annotations

import math

import pytest

from batchlab.schedules import lr_factor

NO_WARMUP = {"fraction": 0.0, "start_factor": 0.03125}
CONSTANT = {"kind": "constant"}


def factors(total, warmup, schedule):
    return [lr_factor(step, total, warmup, schedule) for step in range(total + 1)]


def test_constant_without_warmup_is_one():
    assert factors(50, NO_WARMUP, CONSTANT) == [1.0] * 51


def test_warmup_starts_at_start_factor_rises_linearly_and_reaches_one():
    warmup = {"fraction": 0.1, "start_factor": 0.25}
    total = 100  # 10 warm-up steps
    f = factors(total, warmup, CONSTANT)
    assert f[0] == 0.25
    for step in range(10):
        assert f[step] == pytest.approx(0.25 + 0.75 * step / 10)
    diffs = [f[s + 1] - f[s] for s in range(9)]
    assert diffs == pytest.approx([0.075] * 9)  # linear: equal increments
    assert all(f[s] < 1.0 for s in range(10))
    assert f[10] == 1.0  # the end of warm-up
    assert f[10:] == [1.0] * (total - 9)


def test_warmup_length_is_rounded_fraction_of_total():
    warmup = {"fraction": 0.25, "start_factor": 0.5}
    f = factors(10, warmup, CONSTANT)  # round(2.5) = 2 warm-up steps
    assert f[:3] == [0.5, 0.75, 1.0]


def test_cosine_from_one_to_final_factor():
    schedule = {"kind": "cosine", "final_factor": 0.1}
    total = 40
    f = factors(total, NO_WARMUP, schedule)
    assert f[0] == 1.0
    assert f[total // 2] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: mean of peak and final
    assert f[total] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f, f[1:]))  # monotone decreasing
    assert min(f) == pytest.approx(0.1)
    for step in (7, 13, 29):
        assert f[step] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))


def test_cosine_to_zero_after_warmup():
    warmup = {"fraction": 0.2, "start_factor": 0.1}
    schedule = {"kind": "cosine", "final_factor": 0.0}
    total = 50  # 10 warm-up steps, then 40 of cosine
    f = factors(total, warmup, schedule)
    assert f[0] == pytest.approx(0.1)
    assert max(f) == f[10] == 1.0
    assert f[30] == pytest.approx(0.5)  # half-way through the cosine part
    assert f[total] == pytest.approx(0.0, abs=1e-12)


def test_step_multiplies_by_gamma_at_milestones():
    schedule = {"kind": "step", "milestones": [0.5, 0.75], "gamma": 0.1}
    f = factors(100, NO_WARMUP, schedule)
    assert f[:50] == [1.0] * 50
    assert f[50:75] == pytest.approx([0.1] * 25)
    assert f[75:] == pytest.approx([0.01] * 26)


def test_step_milestones_count_after_warmup():
    schedule = {"kind": "step", "milestones": [0.5], "gamma": 0.5}
    warmup = {"fraction": 0.2, "start_factor": 0.5}
    f = factors(20, warmup, schedule)  # 4 warm-up steps, then 16 steps with the milestone at 4 + 8
    assert f[4:12] == [1.0] * 8
    assert f[12:] == [0.5] * 9


def test_single_step_run():
    assert lr_factor(0, 1, {"fraction": 0.5, "start_factor": 0.1}, CONSTANT) == 1.0  # round(0.5) = 0: no warm-up
    assert lr_factor(0, 1, NO_WARMUP, {"kind": "cosine", "final_factor": 0.0}) == 1.0
