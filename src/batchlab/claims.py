"""The paper's claims as data: each one a rule over the numbers of one architecture (or of the whole study),
its named thresholds, the macro stem of its verdict, and the rule in words, formatted from those thresholds.

:mod:`batchlab.numbers` gathers the evidence (a mapping of named numbers per architecture) and
:func:`macros` turns it into three macros per claim: ``<Stem>`` the verdict ("holds for 2 of 3
architectures (not for MLP)"), ``<Stem>Rule`` the rule sentence the paper prints, and ``<Stem>Untested``
the architectures the study cannot test, with the reason ("" when it tests them all). Changing a threshold
changes the verdict and the sentence together; adding a claim is one more entry in :data:`CLAIMS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from batchlab import models
from batchlab.formatting import finite, num

Evidence = Mapping[str, float]


@dataclass(frozen=True)
class Untestable:
    """A rule's answer where the study cannot test it ("n/a"), with the reason in words."""

    reason: str


Result = bool | Untestable | None  # None: untested, reason unknown (as a caller of :func:`verdict` may pass)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    ``rule(evidence, thresholds)`` answers True, False or :class:`Untestable`; ``sentence`` says the rule in
    LaTeX, with ``{threshold}`` or ``{threshold:fmt}`` where a threshold goes (``fmt`` a format spec, or
    ``%`` for a fraction in percentage points). ``per_arch`` claims are judged per architecture; the others
    get ``{arch: evidence}`` and answer once for the study.
    """

    name: str
    stem: str
    rule: Callable[..., bool | Untestable]
    sentence: str
    thresholds: Mapping[str, float] = field(default_factory=dict)
    per_arch: bool = True

    def text(self) -> str:
        """The rule sentence with its thresholds filled in."""
        def fill(match: re.Match) -> str:
            key, fmt = match.group(1), match.group(2) or "g"
            if key not in self.thresholds:  # a LaTeX group such as \mathrm{simple}
                return match.group(0)
            value = self.thresholds[key]
            return num(100 * value, "g") if fmt == "%" else num(value, fmt)
        return re.sub(r"\{(\w+)(?::([^{}]*))?\}", fill, self.sentence)

    def judge(self, evidence: Mapping[str, Evidence]) -> dict[str, Result]:
        """The rule's answer per architecture of ``evidence`` (its order kept), or under "study"."""
        if not self.per_arch:
            return {"study": self.rule(evidence, self.thresholds)}
        return {arch: self.rule(e, self.thresholds) for arch, e in evidence.items()}


def verdict(results: Mapping[str, Result]) -> str:
    """'holds for all 3 architectures', 'holds for 2 of 3 architectures (not for MLP)', 'does not hold', ...;
    untestable architectures (None or :class:`Untestable`) are left out."""
    known = {a: bool(r) for a, r in results.items() if r is not None and not isinstance(r, Untestable)}
    if not known:
        return "cannot be tested on this study"
    yes = [a for a, r in known.items() if r]
    no = [models.label(a) for a, r in known.items() if not r]
    n = len(known)
    if len(yes) == n:
        return "holds" if n == 1 else "holds for both architectures" if n == 2 else f"holds for all {n} architectures"
    if not yes:
        return ("does not hold" if n == 1 else "does not hold for either architecture" if n == 2
                else f"does not hold for any of the {n} architectures")
    return f"holds for {len(yes)} of {n} architectures (not for {', '.join(no)})"


def untested(results: Mapping[str, Result]) -> str:
    """The architectures a rule could not test, grouped by reason: '; n/a for MLP, CNN (one learning rate in
    the grid)', or '' when it tested them all."""
    by_reason: dict[str, list[str]] = {}
    for arch, r in results.items():
        if isinstance(r, Untestable):
            by_reason.setdefault(r.reason, []).append(models.label(arch))
    return "".join(f"; n/a for {', '.join(archs)} ({reason})" for reason, archs in by_reason.items())


def macros(name: str, evidence: Mapping[str, Evidence], absent: str = "") -> dict[str, str]:
    """The verdict, rule sentence and untested-note macros of claim ``name`` of :data:`CLAIMS`; ``absent``
    says why, where no architecture has evidence."""
    claim = CLAIMS[name]
    results = claim.judge(evidence)
    if claim.per_arch:
        text, note = verdict(results), untested(results)
        note = note if evidence or not absent else f" ({absent})"
    else:
        result = results["study"]
        text = (f"cannot be tested on this study ({result.reason})" if isinstance(result, Untestable)
                else verdict({"ranking": result}))
        note = ""
    return {claim.stem: text, f"{claim.stem}Rule": claim.text(), f"{claim.stem}Untested": note}


# -- the rules -------------------------------------------------------------------------------------------
# Each reads named numbers of one architecture's evidence (see batchlab.numbers) and answers True, False or
# Untestable with the reason. The grid facts every rule may need (batchlab.numbers.grid_facts): how many
# ``batch_sizes`` and grid ``lrs`` the architecture has, and how many of its runs are ``stable`` (did not
# diverge).


def _grid_lacks(e: Evidence, batch_sizes: int = 2, lrs: int = 1) -> Untestable | None:
    """Why the grid of ``e`` cannot test a rule that compares ``batch_sizes`` batch sizes and ``lrs``
    learning rates, or None."""
    if not e["stable"]:
        return Untestable("every run diverged")
    if e["batch_sizes"] < batch_sizes:
        return Untestable("one batch size" if e["batch_sizes"] < 2 else f"fewer than {batch_sizes} batch sizes")
    if e["lrs"] < lrs:
        return Untestable("one learning rate in the grid")
    return None


def _smaller_at_large_batch(key: str, larger: bool = False, what: str = "") -> Callable[..., bool | Untestable]:
    """A rule: the evidence's ``<key>_large`` (at the largest batch size) is below ``<key>_small`` (at the
    smallest), or above with ``larger``; ``what`` names the number in the reason when one is missing."""
    def rule(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
        if why := _grid_lacks(e):
            return why
        small, large = e[f"{key}_small"], e[f"{key}_large"]
        if not finite(small, large):
            return Untestable(f"no {what or key} at the smallest or the largest batch size")
        return bool(large > small) if larger else bool(large < small)
    return rule


def _stable_range_narrows(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    return _grid_lacks(e, lrs=2) or bool(e["stable_large"] < e["stable_small"])


def _best_at_small_batch(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    return _grid_lacks(e) or bool(e["top_batch"] <= t["max_batch"])


def _slopes(e: Evidence, key: str, what: str) -> tuple[float, float] | Untestable:
    small, large = e[f"{key}_slope_small"], e[f"{key}_slope_large"]
    return (small, large) if finite(small, large) else Untestable(f"fewer than 3 batch sizes {what}")


def _lr_scales_then_flattens(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if why := _grid_lacks(e, batch_sizes=3, lrs=2):
        return why
    slopes = _slopes(e, "lr", "with a best learning rate")
    if isinstance(slopes, Untestable):
        return slopes
    small, large = slopes
    return bool(t["low"] <= small <= t["high"] and large < small)


def _steps_scale_then_flatten(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if why := _grid_lacks(e, batch_sizes=3):
        return why
    if not finite(e["steps_target"]):
        return Untestable("no target reached at half the batch sizes")
    slopes = _slopes(e, "steps", "reach the target")
    if isinstance(slopes, Untestable):
        return slopes
    small, large = slopes
    return bool(t["low"] <= small <= t["high"] and large > small)


def _retuning_helps(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if why := _grid_lacks(e, lrs=2):
        return why
    if not finite(e["fixed_acc"], e["acc_large"]):
        return Untestable("no run at the largest batch size with the learning rate best at the smallest")
    return bool(e["acc_large"] > e["fixed_acc"] + t["margin"])


def _alike_at_equal_temperature(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if why := _grid_lacks(e):
        return why
    if not finite(e["temp_within"], e["temp_across"]):
        return Untestable("no two stable settings of equal temperature or of equal batch size")
    return bool(e["temp_within"] < t["ratio"] * e["temp_across"])


def _noise_grows(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if not finite(e["noise_rho"]):
        return Untestable("the noise scale was not measured" if not e["noise_measured"]
                          else "too few measurements of the noise scale")
    return bool(e["noise_rho"] < 0)


def _critical_batch_near_noise_scale(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    b_crit, b_simple, factor = e["b_crit"], e["b_simple"], t["factor"]
    if not finite(e["crit_target"]):
        return Untestable("no target reached at half the batch sizes")
    if not finite(b_simple) or (finite(b_crit) and b_simple <= 0):
        return Untestable("no noise scale where the runs reach the target")
    if finite(b_crit):
        return bool(1 / factor <= b_crit / b_simple <= factor)
    if b_crit == float("inf"):  # beyond the grid: at least its largest batch size
        return Untestable("the critical batch size lies beyond the grid") if factor * b_simple >= e["batch_max"] else False
    return Untestable("too few batch sizes reach the target")


def _steeper_on_large_batch_side(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if not finite(e["rise_small"], e["rise_large"]):
        return Untestable("no interpolation between its solutions")
    return bool(e["rise_large"] > e["rise_small"])


def _growth_matches_decay(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if not finite(e["decay_acc"], e["growth_acc"], e["decay_steps"], e["growth_steps"]):
        return Untestable("no batch-growth and learning-rate-decay variant runs")
    return bool(e["growth_acc"] >= e["decay_acc"] - t["tolerance"] and e["growth_steps"] < e["decay_steps"])


def _more_updates_help(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if not finite(e["epochs_gap"], e["steps_gap"]):
        return Untestable("no fixed-step variant runs at two batch sizes")
    return bool(e["steps_gap"] < e["epochs_gap"])


def _soonest_below_fit(e: Evidence, t: Mapping[str, float]) -> bool | Untestable:
    if not finite(e["fastest_batch"], e["max_fit_batch"]):
        return Untestable("no batch size that fits reaches the target")
    return bool(e["fastest_batch"] < e["max_fit_batch"])


RANKING = ("cnn1d", "mlp", "logreg")


def _ranking(evidence: Mapping[str, Evidence], t: Mapping[str, float]) -> bool | Untestable:
    if any(a not in evidence for a in RANKING):
        return Untestable("it needs logreg, mlp and cnn1d")
    accs = [evidence[a]["best_acc"] for a in RANKING]
    if not finite(*accs):
        return Untestable("an architecture has no finite accuracy")
    return bool(accs[0] > accs[1] > accs[2])


AT_BEST = "At the best learning rate, "
CLAIMS: dict[str, Claim] = {c.name: c for c in [
    Claim("one_acc", "ClaimOneAcc", _smaller_at_large_batch("acc", what="test accuracy"),
          AT_BEST + "test accuracy at $B=\\MaxBatch$ is below that at $B=\\MinBatch$"),
    Claim("one_gap", "ClaimOneGap", _smaller_at_large_batch("gap", larger=True, what="train--test gap"),
          AT_BEST + "the train--test gap at $B=\\MaxBatch$ exceeds that at $B=\\MinBatch$"),
    Claim("two_narrows", "ClaimTwoNarrows", _stable_range_narrows,
          "Fewer grid learning rates train without divergence at $B=\\MaxBatch$ than at $B=\\MinBatch$"),
    Claim("two_small_best", "ClaimTwoSmallBest", _best_at_small_batch,
          "The best setting has $B\\le {max_batch}$", {"max_batch": 32}),
    Claim("three", "ClaimThree", _lr_scales_then_flattens,
          "The log-log slope of the best learning rate over the smaller half of batch sizes lies between {low} "
          "and {high}, and is smaller over the larger half", {"low": 0.5, "high": 1.5}),
    Claim("four", "ClaimFour", _alike_at_equal_temperature,
          "Over the stable settings with $B$ up to the median batch size, the spread of test accuracy across "
          "batch sizes at equal temperature is less than {ratio} times its spread across temperatures at equal "
          "batch size", {"ratio": 0.5}),
    Claim("five", "ClaimFive", _growth_matches_decay,
          "Growing $B$ ends within {tolerance:%} point of the test accuracy of the learning-rate decay it "
          "replaces, in fewer updates", {"tolerance": 0.01}),
    Claim("six", "ClaimSix", _steps_scale_then_flatten,
          "The log-log slope of the steps to the target over the smaller half of batch sizes lies between "
          "{low} and {high}, and the slope over the larger half is larger (flatter)", {"low": -1.5, "high": -0.5}),
    Claim("seven", "ClaimSeven", _retuning_helps,
          "At $B=\\MaxBatch$, the best learning rate beats the base learning rate that was best at "
          "$B=\\MinBatch$ by more than {margin:%} points", {"margin": 0.005}),
    Claim("seven_steps", "ClaimSevenSteps", _more_updates_help,
          "At the fixed step budget, the accuracy lost between the smallest and the largest batch size is "
          "smaller than at fixed epochs"),
    Claim("eight", "ClaimEight", _smaller_at_large_batch("sharp", larger=True, what="sharpness"),
          "The sharpness at the best learning rate is larger at $B=\\MaxBatch$ than at $B=\\MinBatch$"),
    Claim("eight_interp", "ClaimEightInterp", _steeper_on_large_batch_side,
          "Along the interpolation, a step of \\InterpDelta{} in $\\alpha$ beyond the large-batch solution "
          "raises the seed-mean train loss more than the same step beyond the small-batch one"),
    Claim("nine", "ClaimNine", _smaller_at_large_batch("dist", what="final distance"),
          "The final distance at the best learning rate is smaller at $B=\\MaxBatch$ than at $B=\\MinBatch$"),
    Claim("ten", "ClaimTen", _noise_grows,
          "The rank correlation between train loss and $B_\\mathrm{simple}$ is negative"),
    Claim("ten_crit", "ClaimTenCrit", _critical_batch_near_noise_scale,
          "The critical batch size and $B_\\mathrm{simple}$ at the target agree within a factor of {factor}",
          {"factor": 10}),
    Claim("eleven", "ClaimEleven", _ranking,
          "The best accuracies rank CNN, MLP, logistic regression", per_arch=False),
    Claim("hw_soonest", "HwSoonestBelowFit", _soonest_below_fit,
          "The batch size that reaches the target soonest is smaller than the largest batch that fits (the "
          "practitioner's choice)"),
]}
