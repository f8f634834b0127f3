"""The paper's claims as data: each one a rule over the numbers of one architecture (or of the whole study),
its named thresholds, the macro stem of its verdict, and the rule in words, formatted from those thresholds.

A rule answers with a *margin*: a number above 0 where the claim holds on the numbers it is given, at or
below 0 where it does not (a difference against the rule's threshold, in the rule's own units), or
:class:`Untestable` with the reason. Judged on the study and on every bootstrap resample of its seeds
(batchlab.uncertainty), the margin's interval makes the verdict three-valued: *holds* where it lies above 0,
*does not hold* where it lies at or below 0, *inconclusive* where it contains 0.

:mod:`batchlab.numbers` gathers the evidence (a mapping of named numbers per architecture) and
:func:`macros` turns it into three macros per claim: ``<Stem>`` the verdict (a :class:`Margins` until
batchlab.numbers resolves it over the resamples into "holds for 2 of 3 architectures (1-D CNN, MLP);
inconclusive for logistic regression (about 9 seeds would decide it)"), ``<Stem>Rule`` the rule sentence the
paper prints, and ``<Stem>Untested`` the architectures the study cannot test, with the reason ("" when it
tests them all). Changing a threshold changes the verdict and the sentence together; adding a claim is one
more entry in :data:`CLAIMS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from batchlab import models
from batchlab.formatting import finite, num
from batchlab.uncertainty import FAILS, HOLDS, INCONCLUSIVE, Judgement

Evidence = Mapping[str, float]


@dataclass(frozen=True)
class Untestable:
    """A rule's answer where the study cannot test it ("n/a"), with the reason in words."""

    reason: str


Result = float | Untestable | None  # None: untested, reason unknown (as a caller of :func:`verdict` may pass)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    ``rule(evidence, thresholds)`` answers with the margin (above 0: holds) or :class:`Untestable`;
    ``sentence`` says the rule in LaTeX, with ``{threshold}`` or ``{threshold:fmt}`` where a threshold goes
    (``fmt`` a format spec, or ``%`` for a fraction in percentage points); ``short`` names the claim in the
    verdict table. ``per_arch`` claims are judged per architecture; the others get ``{arch: evidence}`` and
    answer once for the study.
    """

    name: str
    stem: str
    rule: Callable[..., float | Untestable]
    sentence: str
    thresholds: Mapping[str, float] = field(default_factory=dict)
    per_arch: bool = True
    short: str = ""

    def text(self) -> str:
        """The rule sentence with its thresholds filled in."""
        def fill(match: re.Match) -> str:
            key, fmt = match.group(1), match.group(2) or "g"
            if key not in self.thresholds:  # a LaTeX group such as \mathrm{simple}
                return match.group(0)
            value = self.thresholds[key]
            return num(100 * value, "g") if fmt == "%" else num(value, fmt)
        return re.sub(r"\{(\w+)(?::([^{}]*))?\}", fill, self.sentence)

    def judge(self, evidence: Mapping[str, Evidence]) -> dict[str, float | Untestable]:
        """The rule's margin per architecture of ``evidence`` (its order kept), or under "study"."""
        if not self.per_arch:
            return {"study": self.rule(evidence, self.thresholds)}
        return {arch: self.rule(e, self.thresholds) for arch, e in evidence.items()}


@dataclass(frozen=True)
class Margins:
    """A claim's margins on one table (the study, or a resample of its seeds): ``results`` per architecture
    (or under "study"), and ``absent``, why no architecture has evidence. batchlab.numbers resolves it into
    the verdict text (:func:`verdict`) once every resample is judged."""

    claim: str
    results: Mapping[str, float | Untestable]
    absent: str = ""


def state_of(result: Result | bool | Judgement) -> str | None:
    """The verdict state of one answer: a :class:`~batchlab.uncertainty.Judgement`'s own, a margin's on the
    study alone (above 0 holds), a bool's; None where untested."""
    if result is None or isinstance(result, Untestable):
        return None
    if isinstance(result, Judgement):
        return result.state
    if isinstance(result, bool):
        return HOLDS if result else FAILS
    return HOLDS if result > 0 else FAILS


def _seeds_note(judgements: list) -> str:
    """' (about 9 seeds would decide it)' for the inconclusive answers that say how many seeds they need."""
    needed = sorted({int(j.seeds_needed) for j in judgements
                     if isinstance(j, Judgement) and math.isfinite(j.seeds_needed)})
    if not needed:
        return ""
    count = " and ".join(str(n) for n in needed) if len(needed) <= 2 else f"{needed[0]} to {needed[-1]}"
    return f" (about {count} seeds would decide {'it' if len(judgements) == 1 else 'them'})"


PHRASES = {HOLDS: "holds", FAILS: "does not hold", INCONCLUSIVE: "inconclusive"}


def verdict(results: Mapping[str, Result | bool | Judgement]) -> str:
    """'holds for all 3 architectures', 'holds for 2 of 3 architectures (1-D CNN, MLP); inconclusive for
    logistic regression (about 9 seeds would decide it)', 'does not hold', ...; untestable architectures (None
    or :class:`Untestable`) are left out. Answers are :class:`~batchlab.uncertainty.Judgement` (three-valued),
    margins or bools (two-valued, as on the study alone)."""
    known = {a: r for a, r in results.items() if state_of(r) is not None}
    if not known:
        return "cannot be tested on this study"
    n = len(known)
    groups = {s: [a for a, r in known.items() if state_of(r) == s] for s in PHRASES}
    for s, archs in groups.items():
        if len(archs) == n:
            note = _seeds_note([known[a] for a in archs]) if s == INCONCLUSIVE else ""
            every = "" if n == 1 else " for both architectures" if n == 2 else f" for all {n} architectures"
            if s == FAILS and n > 1:
                every = " for either architecture" if n == 2 else f" for any of the {n} architectures"
            return PHRASES[s] + every + note
    parts = []
    for s, archs in groups.items():
        if archs:
            labels = ", ".join(models.label(a) for a in archs)
            note = _seeds_note([known[a] for a in archs]) if s == INCONCLUSIVE else ""
            parts.append(f"{PHRASES[s]} for {len(archs)} of {n} architectures ({labels}){note}" if s == HOLDS
                         else f"{PHRASES[s]} for {labels}{note}")
    return "; ".join(parts)


def untested(results: Mapping[str, Result]) -> str:
    """The architectures a rule could not test, grouped by reason: '; n/a for MLP, CNN (one learning rate in
    the grid)', or '' when it tested them all."""
    by_reason: dict[str, list[str]] = {}
    for arch, r in results.items():
        if isinstance(r, Untestable):
            by_reason.setdefault(r.reason, []).append(models.label(arch))
    return "".join(f"; n/a for {', '.join(archs)} ({reason})" for reason, archs in by_reason.items())


def macros(name: str, evidence: Mapping[str, Evidence], absent: str = "") -> dict[str, object]:
    """The verdict, rule sentence and untested-note macros of claim ``name`` of :data:`CLAIMS`; ``absent``
    says why, where no architecture has evidence. The verdict is the claim's :class:`Margins`, to be
    resolved over the resamples (:func:`resolve`)."""
    claim = CLAIMS[name]
    results = claim.judge(evidence)
    note = ""
    if claim.per_arch:
        note = untested(results) if evidence or not absent else f" ({absent})"
    return {claim.stem: Margins(name, results, absent), f"{claim.stem}Rule": claim.text(),
            f"{claim.stem}Untested": note}


def resolve(margins: Margins, judgements: Mapping[str, Judgement | Untestable | None]) -> str:
    """The verdict text of a claim from its answers, three-valued where judged over resamples."""
    claim = CLAIMS[margins.claim]
    if claim.per_arch:
        return verdict(judgements)
    result = judgements.get("study")
    if isinstance(result, Untestable):
        return f"cannot be tested on this study ({result.reason})"
    return verdict({"ranking": result})


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


def _log2(x: float) -> float:
    return math.log2(x) if x > 0 else -math.inf


def _smaller_at_large_batch(key: str, larger: bool = False, what: str = "") -> Callable[..., float | Untestable]:
    """A rule: the evidence's ``<key>_large`` (at the largest batch size) is below ``<key>_small`` (at the
    smallest), or above with ``larger``; its margin is the difference. ``what`` names the number in the
    reason when one is missing."""
    def rule(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
        if why := _grid_lacks(e):
            return why
        small, large = e[f"{key}_small"], e[f"{key}_large"]
        if not finite(small, large):
            return Untestable(f"no {what or key} at the smallest or the largest batch size")
        return float(large - small) if larger else float(small - large)
    return rule


def _stable_range_narrows(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    return _grid_lacks(e, lrs=2) or float(e["stable_small"] - e["stable_large"])


def _best_at_small_batch(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    # in doublings of the batch size (half an example above max_batch, so that B = max_batch holds)
    return _grid_lacks(e) or _log2((t["max_batch"] + 0.5) / e["top_batch"])


def _slopes(e: Evidence, key: str, what: str) -> tuple[float, float] | Untestable:
    small, large = e[f"{key}_slope_small"], e[f"{key}_slope_large"]
    return (small, large) if finite(small, large) else Untestable(f"fewer than 3 batch sizes {what}")


def _lr_scales_then_flattens(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if why := _grid_lacks(e, batch_sizes=3, lrs=2):
        return why
    slopes = _slopes(e, "lr", "with a best learning rate")
    if isinstance(slopes, Untestable):
        return slopes
    small, large = slopes
    return min(small - t["low"], t["high"] - small, small - large)


def _steps_scale_then_flatten(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if why := _grid_lacks(e, batch_sizes=3):
        return why
    if not finite(e["steps_target"]):
        return Untestable("no target reached at half the batch sizes")
    slopes = _slopes(e, "steps", "reach the target")
    if isinstance(slopes, Untestable):
        return slopes
    small, large = slopes
    return min(small - t["low"], t["high"] - small, large - small)


def _retuning_helps(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if why := _grid_lacks(e, lrs=2):
        return why
    if not finite(e["fixed_acc"], e["acc_large"]):
        return Untestable("no run at the largest batch size with the learning rate best at the smallest")
    return float(e["acc_large"] - e["fixed_acc"] - t["margin"])


def _alike_at_equal_temperature(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if why := _grid_lacks(e):
        return why
    if not finite(e["temp_within"], e["temp_across"]):
        return Untestable("no two stable settings of equal temperature or of equal batch size")
    return float(t["ratio"] * e["temp_across"] - e["temp_within"])


def _noise_grows(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if not finite(e["noise_rho"]):
        return Untestable("the noise scale was not measured" if not e["noise_measured"]
                          else "too few measurements of the noise scale")
    return float(-e["noise_rho"])


def _critical_batch_near_noise_scale(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    """In decades: how far inside the factor B_crit / B_simple lies. Where the fitted trade-off does not
    follow the steps to the target (``crit_fit_good`` false) or B_crit lies outside the grid's batch sizes
    (``crit_extrapolated``: the fit cannot place it), the margin is NaN: inconclusive, whatever the ratio."""
    b_crit, b_simple, factor = e["b_crit"], e["b_simple"], t["factor"]
    if not finite(e["crit_target"]):
        return Untestable("no target reached at half the batch sizes")
    if not finite(b_simple) or b_simple <= 0:
        return Untestable("no noise scale where the runs reach the target")
    if math.isnan(b_crit):
        return Untestable("too few batch sizes reach the target")
    if not e.get("crit_fit_good", True) or e.get("crit_extrapolated", not finite(b_crit)):
        return math.nan
    return math.log10(factor) - abs(math.log10(b_crit / b_simple)) if b_crit > 0 else -math.inf


def _steeper_on_large_batch_side(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if not finite(e["rise_small"], e["rise_large"]):
        return Untestable("no interpolation between its solutions")
    return float(e["rise_large"] - e["rise_small"])


def _growth_matches_decay(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if not finite(e["decay_acc"], e["growth_acc"], e["decay_steps"], e["growth_steps"]):
        return Untestable("no batch-growth and learning-rate-decay variant runs")
    # accuracy in points, updates as a fraction of the decay's: both must be above 0
    return min(e["growth_acc"] - e["decay_acc"] + t["tolerance"], 1 - e["growth_steps"] / e["decay_steps"])


def _more_updates_help(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if not finite(e["epochs_gap"], e["steps_gap"]):
        return Untestable("no fixed-step variant runs at two batch sizes")
    return float(e["epochs_gap"] - e["steps_gap"])


def _soonest_below_fit(e: Evidence, t: Mapping[str, float]) -> float | Untestable:
    if not finite(e["fastest_batch"], e["max_fit_batch"]):
        return Untestable("no batch size that fits reaches the target")
    return _log2(e["max_fit_batch"] / e["fastest_batch"])


RANKING = ("cnn1d", "mlp", "logreg")


def _ranking(evidence: Mapping[str, Evidence], t: Mapping[str, float]) -> float | Untestable:
    if any(a not in evidence for a in RANKING):
        return Untestable("it needs logreg, mlp and cnn1d")
    accs = [evidence[a]["best_acc"] for a in RANKING]
    if not finite(*accs):
        return Untestable("an architecture has no finite accuracy")
    return min(accs[0] - accs[1], accs[1] - accs[2])


AT_BEST = "At the best learning rate, "
CLAIMS: dict[str, Claim] = {c.name: c for c in [
    Claim("one_acc", "ClaimOneAcc", _smaller_at_large_batch("acc", what="test accuracy"),
          AT_BEST + "test accuracy at $B=\\MaxBatch$ is below that at $B=\\MinBatch$",
          short="large $B$: lower test accuracy"),
    Claim("one_gap", "ClaimOneGap", _smaller_at_large_batch("gap", larger=True, what="train--test gap"),
          AT_BEST + "the train--test gap at $B=\\MaxBatch$ exceeds that at $B=\\MinBatch$",
          short="large $B$: wider train--test gap"),
    Claim("two_narrows", "ClaimTwoNarrows", _stable_range_narrows,
          "Fewer grid learning rates train without divergence at $B=\\MaxBatch$ than at $B=\\MinBatch$",
          short="stable learning rates narrow with $B$"),
    Claim("two_small_best", "ClaimTwoSmallBest", _best_at_small_batch,
          "The best setting has $B\\le {max_batch}$", {"max_batch": 32},
          short="best results at small $B$"),
    Claim("three", "ClaimThree", _lr_scales_then_flattens,
          "The log-log slope of the best learning rate over the smaller half of batch sizes lies between {low} "
          "and {high}, and is smaller over the larger half", {"low": 0.5, "high": 1.5},
          short="best lr $\\propto B$, then flattens"),
    Claim("four", "ClaimFour", _alike_at_equal_temperature,
          "Over the stable settings with $B$ up to the median batch size, the spread of test accuracy across "
          "batch sizes at equal temperature is less than {ratio} times its spread across temperatures at equal "
          "batch size", {"ratio": 0.5},
          short="equal $\\mathrm{lr}/B$, alike"),
    Claim("five", "ClaimFive", _growth_matches_decay,
          "Growing $B$ ends within {tolerance:%} point of the test accuracy of the learning-rate decay it "
          "replaces, in fewer updates", {"tolerance": 0.01},
          short="growing $B$ matches decaying lr"),
    Claim("six", "ClaimSix", _steps_scale_then_flatten,
          "The log-log slope of the steps to the target over the smaller half of batch sizes lies between "
          "{low} and {high}, and the slope over the larger half is larger (flatter)", {"low": -1.5, "high": -0.5},
          short="steps to target: slope $-1$, then flat"),
    Claim("seven", "ClaimSeven", _retuning_helps,
          "At $B=\\MaxBatch$, the best learning rate beats the base learning rate that was best at "
          "$B=\\MinBatch$ by more than {margin:%} points", {"margin": 0.005},
          short="re-tuning shrinks the large-$B$ gap"),
    Claim("seven_steps", "ClaimSevenSteps", _more_updates_help,
          "At the fixed step budget, the accuracy lost between the smallest and the largest batch size is "
          "smaller than at fixed epochs",
          short="more updates shrink the large-$B$ gap"),
    Claim("eight", "ClaimEight", _smaller_at_large_batch("sharp", larger=True, what="sharpness"),
          "The sharpness at the best learning rate is larger at $B=\\MaxBatch$ than at $B=\\MinBatch$",
          short="large-$B$ solutions are sharper"),
    Claim("eight_interp", "ClaimEightInterp", _steeper_on_large_batch_side,
          "Along the interpolation, a step of \\InterpDelta{} in $\\alpha$ beyond the large-batch solution "
          "raises the seed-mean train loss more than the same step beyond the small-batch one",
          short="interpolation steeper on the large-$B$ side"),
    Claim("nine", "ClaimNine", _smaller_at_large_batch("dist", what="final distance"),
          "The final distance at the best learning rate is smaller at $B=\\MaxBatch$ than at $B=\\MinBatch$",
          short="large $B$ ends closer to the start"),
    Claim("ten", "ClaimTen", _noise_grows,
          "The rank correlation between train loss and $B_\\mathrm{simple}$ is negative",
          short="noise scale grows as loss falls"),
    Claim("ten_crit", "ClaimTenCrit", _critical_batch_near_noise_scale,
          "The critical batch size and $B_\\mathrm{simple}$ at the target agree within a factor of {factor}",
          {"factor": 10},
          short="$B_\\mathrm{crit}$ of the order of $B_\\mathrm{simple}$"),
    Claim("eleven", "ClaimEleven", _ranking,
          "The best accuracies rank CNN, MLP, logistic regression", per_arch=False,
          short="CNN $>$ MLP $>$ logistic regression"),
    Claim("hw_soonest", "HwSoonestBelowFit", _soonest_below_fit,
          "The batch size that reaches the target soonest is smaller than the largest batch that fits (the "
          "practitioner's choice)",
          short="the fastest batch is below the largest that fits"),
]}
