"""batchlab.claims: the rule sentences come from the same thresholds the rules read; untestable
architectures are left out of the verdict and named with their reason."""

from __future__ import annotations

import dataclasses
import math

import pytest

from batchlab import claims, uncertainty
from batchlab.claims import Untestable

GRID = {"batch_sizes": 4, "lrs": 3, "stable": 10}


def test_every_claim_has_a_unique_stem_and_a_sentence_with_its_thresholds_filled_in():
    stems = [c.stem for c in claims.CLAIMS.values()]
    assert len(set(stems)) == len(stems)
    for claim in claims.CLAIMS.values():
        text = claim.text()
        assert text[0].isupper() and not text.endswith(".")
        assert not any(f"{{{key}" in text for key in claim.thresholds), claim.name


def test_a_threshold_moves_the_verdict_and_the_sentence_together():
    three = claims.CLAIMS["three"]
    e = {**GRID, "lr_slope_small": 1.7, "lr_slope_large": 0.2}
    assert three.judge({"mlp": e}) == {"mlp": pytest.approx(-0.2)}  # 1.7 is 0.2 above the upper bound
    assert "between 0.5 and 1.5" in three.text()
    wider = dataclasses.replace(three, thresholds={"low": 0.5, "high": 2.0})
    assert wider.judge({"mlp": e})["mlp"] > 0
    assert "between 0.5 and 2" in wider.text()
    assert "more than 0.5 points" in claims.CLAIMS["seven"].text()  # a fraction in percentage points
    assert "$-1.5$" not in claims.CLAIMS["six"].text() and "\\ensuremath{-1.5}" in claims.CLAIMS["six"].text()


@pytest.mark.parametrize("grid, reason", [
    ({"batch_sizes": 1, "lrs": 3, "stable": 10}, "one batch size"),
    ({"batch_sizes": 2, "lrs": 3, "stable": 10}, "fewer than 3 batch sizes"),
    ({"batch_sizes": 4, "lrs": 1, "stable": 10}, "one learning rate in the grid"),
    ({"batch_sizes": 1, "lrs": 1, "stable": 0}, "every run diverged"),
])
def test_a_grid_too_thin_answers_untestable_with_the_reason(grid, reason):
    e = {**grid, "lr_slope_small": 1.0, "lr_slope_large": 0.5}
    assert claims.CLAIMS["three"].rule(e, claims.CLAIMS["three"].thresholds) == Untestable(reason)


def test_macros_leave_untestable_architectures_out_and_name_them():
    e = {**GRID, "acc_small": 0.8, "acc_large": 0.6}
    values = claims.macros("one_acc", {"mlp": e, "cnn1d": {**e, "batch_sizes": 1},
                                       "logreg": {**e, "acc_large": math.nan}})
    assert values["ClaimOneAcc"].results["mlp"] == pytest.approx(0.2)  # the margin: 0.8 - 0.6
    assert claims.resolve(values["ClaimOneAcc"], values["ClaimOneAcc"].results) == "holds"
    assert values["ClaimOneAccUntested"] == ("; n/a for 1-D CNN (one batch size); n/a for logistic regression "
                                             "(no test accuracy at the smallest or the largest batch size)")
    assert values["ClaimOneAccRule"] == claims.CLAIMS["one_acc"].text()
    none = claims.macros("five", {}, absent="the study has no variant runs")
    assert none == {"ClaimFive": claims.Margins("five", {}, "the study has no variant runs"),
                    "ClaimFiveRule": claims.CLAIMS["five"].text(), "ClaimFiveUntested": " (the study has no variant runs)"}
    assert claims.resolve(none["ClaimFive"], {}) == "cannot be tested on this study"


def _text(name: str, evidence: dict) -> str:
    """A claim's verdict on the study alone (two-valued: its margins as they are)."""
    margins = claims.macros(name, evidence)[claims.CLAIMS[name].stem]
    return claims.resolve(margins, margins.results)


def test_the_study_wide_ranking():
    best = lambda acc: {**GRID, "best_acc": acc}  # noqa: E731
    assert _text("eleven", {"cnn1d": best(0.9), "mlp": best(0.7), "logreg": best(0.3)}) == "holds"
    assert _text("eleven", {"cnn1d": best(0.6), "mlp": best(0.7), "logreg": best(0.3)}) == "does not hold"
    assert _text("eleven", {"mlp": best(0.7)}) == "cannot be tested on this study (it needs logreg, mlp and cnn1d)"


@pytest.mark.parametrize("evidence, holds", [
    ({"acc_small": 0.8, "acc_large": 0.6}, True),
    ({"acc_small": 0.6, "acc_large": 0.8}, False),
    ({"acc_small": 0.7, "acc_large": 0.7}, False),  # equal: the rule is strict
])
def test_a_margin_is_above_zero_exactly_where_the_rule_holds(evidence, holds):
    assert (claims.CLAIMS["one_acc"].judge({"mlp": {**GRID, **evidence}})["mlp"] > 0) is holds


@pytest.mark.parametrize("top, holds", [(32, True), (33, False), (16, True), (64, False)])
def test_best_at_small_batch_counts_the_threshold_itself(top, holds):
    e = {**GRID, "top_batch": top}
    assert (claims.CLAIMS["two_small_best"].judge({"mlp": e})["mlp"] > 0) is holds


@pytest.mark.parametrize("extra, state", [
    ({"b_crit": 200.0}, "holds"),  # ratio 2, within a factor of 10
    ({"b_crit": 200.0, "crit_fit_good": False}, "inconclusive"),  # the fit does not follow the steps
    ({"b_crit": math.inf}, "inconclusive"),  # beyond the grid: the fit cannot place it
    ({"b_crit": 200.0, "crit_extrapolated": True}, "inconclusive"),
    ({"b_crit": 5000.0, "crit_extrapolated": False}, "does not hold"),  # ratio 50
])
def test_a_poor_or_extrapolated_critical_batch_fit_is_inconclusive(extra, state):
    e = {"crit_target": 0.8, "b_simple": 100.0, "batch_max": 512, **extra}
    margin = claims.CLAIMS["ten_crit"].judge({"mlp": e})["mlp"]
    judged = uncertainty.judge(margin, [margin] * 3, [1 / 3] * 3, 0.95, 3)
    assert judged.state == state
