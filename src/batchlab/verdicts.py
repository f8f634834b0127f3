"""The verdicts over seeds: the study's macros (batchlab.numbers.measure) judged against every bootstrap
resample of its seeds (batchlab.uncertainty), per dataset; the verdict texts, the verdict table and the
facts of the intervals as macros.

Each number that aggregates seeds is printed with its percentile interval; each claim's margin, judged on
the study and on every resample, becomes *holds*, *does not hold* or *inconclusive* (its interval above 0,
at or below 0, or across 0), with the seeds an inconclusive verdict would need at the observed effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from batchlab import claims, models, uncertainty
from batchlab.formatting import Quantity, macro_name, pct, with_interval
from batchlab.uncertainty import FAILS, HOLDS, INCONCLUSIVE, Judgement


def resampled(runs: pd.DataFrame, history: pd.DataFrame, interpolation: pd.DataFrame | None,
               drawn: tuple) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The tables of one resample of the seeds (batchlab.uncertainty.resample_table): the runs, their
    history (matched by run id) and the interpolation, each drawn seed's rows once per draw."""
    runs_r = uncertainty.resample_table(runs, drawn)
    seed_of = runs.set_index("run_id")["seed"]
    history = history.assign(seed=history["run_id"].map(seed_of))
    history_r = uncertainty.resample_table(history, drawn)
    inter_r = (uncertainty.resample_table(interpolation, drawn)
               if interpolation is not None and len(interpolation) and "seed" in interpolation else interpolation)
    return runs_r, history_r, inter_r


def judged(point: dict[str, object], samples: list[dict[str, object]], weights: list[float], level: float,
           n_seeds: int) -> tuple[dict[str, str], dict[str, dict]]:
    """The macros of :func:`measure` on the study (``point``) with what its resamples (``samples``, with
    their ``weights``) say: each Quantity printed with its interval at ``level``, each verdict three-valued
    (batchlab.uncertainty.judge). Returns the macros and, per claim, each architecture's judgement (or
    :class:`~batchlab.claims.Untestable`)."""
    out, verdicts = {}, {}
    for key, value in point.items():
        if isinstance(value, Quantity):
            drawn = [s[key].value if isinstance(s.get(key), Quantity) else math.nan for s in samples]
            out[key] = with_interval(value, *uncertainty.interval(drawn, weights, level))
        elif isinstance(value, claims.Margins):
            per = {}
            for arch, margin in value.results.items():
                if margin is None or isinstance(margin, claims.Untestable):
                    per[arch] = margin
                    continue
                drawn = [_margin_of(s.get(key), arch) for s in samples]
                per[arch] = uncertainty.judge(margin, drawn, weights, level, n_seeds)
            verdicts[value.claim] = per
            out[key] = claims.resolve(value, per)
        else:
            out[key] = value
    return out, verdicts


def _margin_of(margins: object, arch: str) -> float:
    m = margins.results.get(arch) if isinstance(margins, claims.Margins) else None
    return float(m) if isinstance(m, (int, float)) else math.nan


def verdict_texts(per_dataset: Mapping[str, dict[str, str]], verdicts: Mapping[str, dict],
                  labels: Mapping[str, str]) -> dict[str, str]:
    """Each claim's verdict macro (``<Stem>``) and untested note over every dataset: with one dataset, its
    own; with several, "on MNIST-1D: holds for all 3 architectures; on CIFAR-10: inconclusive for ...", each
    with its untested note (and ``<Stem>Untested`` then empty)."""
    if len(per_dataset) == 1:
        return {}
    out = {}
    for claim in claims.CLAIMS.values():
        parts = [f"on {labels[d]}: {values[claim.stem]}{values[claim.stem + 'Untested']}"
                 for d, values in per_dataset.items() if claim.stem in values]
        out[claim.stem], out[claim.stem + "Untested"] = "; ".join(parts), ""
    return out


CELLS = {HOLDS: "yes", FAILS: "no", INCONCLUSIVE: "?"}


def _cell(result: Judgement | claims.Untestable | None) -> str:
    """A verdict table cell: yes, no, ? with the seeds it would need, n/a (untestable), -- (not trained)."""
    if isinstance(result, claims.Untestable):
        return "n/a"
    if not isinstance(result, Judgement):
        return "--"
    if result.state == INCONCLUSIVE and math.isfinite(result.seeds_needed):
        return f"?\\,({int(result.seeds_needed)})"
    return CELLS[result.state]


def verdict_table(verdicts: Mapping[str, dict], archs: Mapping[str, list[str]],
                  labels: Mapping[str, str]) -> dict[str, str]:
    """``\\VerdictTable``: a tabular of every claim (rows, in :data:`batchlab.claims.CLAIMS`' order) against
    every dataset and architecture (columns): yes (holds), no (does not hold), ? (inconclusive, with about
    how many seeds would decide it), n/a (untestable here), -- (not in the study)."""
    columns = [(d, a) for d in verdicts for a in archs[d]]
    spec = "@{}l" + "c" * len(columns) + "@{}"
    head = " & ".join(f"\\multicolumn{{{len(archs[d])}}}{{c}}{{{labels[d]}}}" for d in verdicts)
    arch_row = " & ".join(models.label(a).replace("logistic regression", "log.\\ reg.") for _, a in columns)
    rows = []
    for claim in claims.CLAIMS.values():
        cells = []
        for d in verdicts:
            per = verdicts[d].get(claim.name, {})
            if claim.per_arch:
                cells += [_cell(per.get(a)) for a in archs[d]]
            else:
                cells.append(f"\\multicolumn{{{len(archs[d])}}}{{c}}{{{_cell(per.get('study'))}}}")
        rows.append(f"{claim.short} & " + " & ".join(cells) + " \\\\")
    body = (f"\\begin{{tabular}}{{{spec}}} \\toprule claim & {head} \\\\ & {arch_row} \\\\ \\midrule "
            + " ".join(rows) + " \\bottomrule \\end{tabular}")
    return {"VerdictTable": body}


# the numbers :func:`dataset_table` gives for every dataset and architecture: (macro stem, column head)
DATASET_COLUMNS = (("BestAcc", "best test acc.\\ (\\%)"), ("AccSmallB", "at $B_{\\min}$"), ("AccLargeB", "at $B_{\\max}$"),
                   ("GapSmallB", "gap at $B_{\\min}$"), ("GapLargeB", "gap at $B_{\\max}$"), ("BCrit", "$B_\\mathrm{crit}$"))


def dataset_table(per_dataset: Mapping[str, Mapping[str, str]], archs: Mapping[str, list[str]],
                  labels: Mapping[str, str]) -> dict[str, str]:
    """``\\DatasetTable``: the main numbers (:data:`DATASET_COLUMNS`, with their intervals) of every dataset
    and architecture, one row each, so a study of several datasets quotes each one's, not the first's
    alone."""
    head = " & ".join(title for _, title in DATASET_COLUMNS)
    rows = []
    for d, values in per_dataset.items():
        for k, arch in enumerate(archs[d]):
            cells = [values.get(macro_name(stem, arch), "--") for stem, _ in DATASET_COLUMNS]
            rows.append(f"{labels[d] if k == 0 else ''} & {models.label(arch)} & " + " & ".join(cells) + " \\\\")
    body = (f"\\begin{{tabular}}{{@{{}}ll{'r' * len(DATASET_COLUMNS)}@{{}}}} \\toprule dataset & architecture & {head} "
            "\\\\ \\midrule " + " ".join(rows) + " \\bottomrule \\end{tabular}")
    return {"DatasetTable": body}


def uncertainty_facts(runs: pd.DataFrame, settings: Mapping) -> dict[str, str]:
    """The intervals' facts for the text: the level, and the resamples (whether every distinct resample was
    taken, as batchlab.uncertainty.seed_resamples decides)."""
    n = int(runs.groupby("dataset")["seed"].nunique().min()) if len(runs) else 0
    exact = 0 < uncertainty.distinct_resamples(n) < settings["resamples"] if n else False
    return {
        "IntervalLevel": pct(settings["level"], 0),
        "IntervalResamples": (f"all {uncertainty.distinct_resamples(n)} distinct resamples of the seeds, each with "
                              "its probability" if exact else f"{settings['resamples']} random resamples of the seeds"),
    }


def settle(values: Mapping[str, object]) -> dict[str, str]:
    """The macros of batchlab.numbers.measure on the study alone, without resamples: each Quantity's value,
    each verdict two-valued from its margins (above 0 holds)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, Quantity):
            out[key] = value.fmt(value.value)
        elif isinstance(value, claims.Margins):
            out[key] = claims.resolve(value, value.results)
        else:
            out[key] = value
    return out
