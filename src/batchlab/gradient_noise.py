"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 over training, as the figures and the paper read it.

Each evaluation estimates |G|^2 and tr(Sigma) without bias from a few gradient pairs (batchlab.metrics), and
their ratio scatters by a factor of ten between neighbouring evaluations: the estimate of |G|^2 is small
and noisy, and a ratio of noisy numbers is noisier still. As McCandlish et al. (2018, App. A) do, numerator
and denominator are averaged separately over many steps before the ratio is taken: here a debiased
exponential moving average over each run's evaluations in step order (:func:`ema`, decay ``analysis.noise_ema``
of the config), then means over seeds at each evaluated step, then the ratio (:func:`curves`)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from batchlab import schema

KEYS = ["dataset", "arch", "batch_size"]
ESTIMATES = ["noise_grad_sq", "noise_trace"]  # the history's unbiased estimates of |G|^2 and tr(Sigma)
SMOOTHED = [f"{c}_ema" for c in ESTIMATES]
CURVE_COLUMNS = [*KEYS, "step", "progress", "train_loss", "test_acc", *ESTIMATES, "b_simple_raw", *SMOOTHED,
                 "b_simple"]


def analysis_default(name: str):
    """The schema's default of ``analysis.<name>`` (``noise_ema``, ``level``, ``resamples``, ``seed``): what a
    study that sets none uses, and what a figure drawn without the config uses."""
    return _analysis_schema()[name]["default"]


@functools.cache
def _analysis_schema() -> dict:
    return schema.load_schema()["properties"]["analysis"]["properties"]


def ema(values, decay: float) -> np.ndarray:
    """The debiased exponential moving average of ``values`` in their order: ``m_t = decay m_{t-1} + (1 -
    decay) x_t`` from ``m_0 = 0``, divided by ``1 - decay^t`` so that the start is not pulled towards 0 (the
    first value is the first average; a constant stays that constant). ``decay`` 0 returns the values."""
    x = np.asarray(values, float)
    return _ema_per_run(x, np.zeros(len(x), int), np.arange(len(x)), decay)  # one run


def ratio(trace, grad_sq) -> pd.Series:
    """B_simple = trace / grad_sq, NaN where the estimate of |G|^2 is not positive (no noise scale then)."""
    trace, grad_sq = pd.Series(trace, dtype=float), pd.Series(grad_sq, dtype=float)
    return (trace / grad_sq).where(grad_sq > 0)


def _ema_per_run(x: np.ndarray, run: np.ndarray, position: np.ndarray, decay: float) -> np.ndarray:
    """:func:`ema` of every run at once: ``x`` sorted by run and step, ``run`` each row's run (0, 1, ...),
    ``position`` its place in the run (0, 1, ...); one column of a runs-by-positions matrix at a time."""
    if not 0 <= decay < 1:
        raise ValueError(f"the decay of a moving average lies in [0, 1), not {decay}")
    if not len(x):
        return x.copy()
    table = np.full((run.max() + 1, position.max() + 1), np.nan)
    table[run, position] = x
    out, m = np.empty_like(table), np.zeros(len(table))
    for t in range(table.shape[1]):
        m = decay * m + (1 - decay) * table[:, t]
        out[:, t] = m / (1 - decay ** (t + 1))
    return out[run, position]


def smooth(rows: pd.DataFrame, decay: float | None = None) -> pd.DataFrame:
    """``rows`` of the history (the evaluations where the noise scale was measured) with the debiased moving
    averages of :data:`ESTIMATES` over each run's evaluations in step order (``<estimate>_ema``) and the
    run's own smoothed ``b_simple`` (their ratio); ``decay`` None takes the schema's default."""
    decay = float(analysis_default("noise_ema") if decay is None else decay)
    rows = rows.sort_values(["run_id", "step"]).reset_index(drop=True)
    run = rows["run_id"].to_numpy()
    starts = np.r_[True, run[1:] != run[:-1]] if len(rows) else np.zeros(0, bool)
    position = np.arange(len(rows)) - np.maximum.accumulate(np.where(starts, np.arange(len(rows)), 0))
    for raw, smoothed in zip(ESTIMATES, SMOOTHED):
        rows[smoothed] = _ema_per_run(rows[raw].to_numpy(float), np.cumsum(starts) - 1, position, decay)
    rows["b_simple"] = ratio(rows["noise_trace_ema"], rows["noise_grad_sq_ema"])
    return rows


def curves(smoothed: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, batch size) and evaluated step of :func:`smooth`'s rows: the means over seeds of
    the raw and the smoothed estimates, the train loss and the test accuracy, the fraction of training done,
    and two ratios of seed means: ``b_simple_raw`` (of the raw estimates, one evaluation alone) and
    ``b_simple`` (of the smoothed ones)."""
    if smoothed.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    out = smoothed.groupby([*KEYS, "step"], sort=True)[["train_loss", "test_acc", *ESTIMATES, *SMOOTHED]].mean()
    out = out.reset_index()
    out["progress"] = out["step"] / out.groupby(KEYS)["step"].transform("max")
    out["b_simple_raw"] = ratio(out["noise_trace"], out["noise_grad_sq"])
    out["b_simple"] = ratio(out["noise_trace_ema"], out["noise_grad_sq_ema"])
    return out[CURVE_COLUMNS]
