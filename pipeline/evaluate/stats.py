"""Uncertainty of a result: intervals over seeds, a bootstrap over test identities, paired verdicts.

A method's figure varies with two things the pipeline controls neither of: the training run (seed:
initialisation, batch order, k-means) and which identities happen to be in the test split. Each
has its own interval here.

- **Over seeds** (:func:`seed_interval`): the mean of the per-seed values and the Student-t 95 %
  interval of that mean, ``mean ± t(0.975, n−1) · s / √n``. It says how far another set of
  training runs on the *same* trials could move the mean. Undefined for one seed.
- **Over test identities** (:func:`identity_bootstrap`): a percentile bootstrap that resamples the
  test *identities* with replacement (never single trials: the trials of one person are not
  independent) and recomputes the seed-averaged metric from each trial weighted by how often its
  probe's identity was drawn. It says how far another draw of test people could move the figure,
  and it exists for a single-seed run too.
- **Paired comparison** (:func:`paired_difference`): method A minus method B on the *same* trials.
  The identity part is a paired bootstrap of the difference (A and B see the same resampled
  identities, so the test set's difficulty cancels); the seed part is Welch's t half-width over the
  two methods' per-seed values. The two independent half-widths are added in quadrature. The
  verdict is ``better`` / ``worse`` when that 95 % interval excludes 0, else
  ``not distinguishable``. With one seed per method the seed part is unknown: the verdict then rests
  on the identity bootstrap alone and says so (``seed_part: false``).

Trial-level inputs are per-identity sufficient statistics, so a bootstrap replicate costs one
matrix product: for 1:N matching, each identity's sum of trial outcomes and its trial count; for
verification AUC, the scores and labels with each pair's probe identity (weighted Mann–Whitney).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Two-sided 95 % Student-t quantiles t(0.975, df) for small df (exact to 4 decimals); larger df
#: use the Cornish–Fisher expansion below, accurate to < 1e-3 for df > 30.
_T975 = {
    1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060,
    9: 2.2622, 10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314,
    16: 2.1199, 17: 2.1098, 18: 2.1009, 19: 2.0930, 20: 2.0860, 25: 2.0595, 30: 2.0423,
}  # fmt: skip
Z975 = 1.959964


def t975(df: float) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (df may be fractional,
    as Welch's is: interpolated linearly between tabulated integers)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df > 30:
        z = Z975
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        return z + g1 / df + g2 / df**2
    keys = sorted(_T975)
    lo = max(k for k in keys if k <= df)
    hi = min(k for k in keys if k >= df)
    if lo == hi:
        return _T975[lo]
    w = (df - lo) / (hi - lo)
    return (1 - w) * _T975[lo] + w * _T975[hi]


@dataclass(frozen=True)
class SeedInterval:
    """Mean over seeds with its 95 % t-interval (``half_width`` None for one seed)."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (ddof 1)
    half_width: float | None

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def seed_interval(values: np.ndarray | list[float]) -> SeedInterval:
    """Mean, sample sd and the 95 % t-interval half-width of per-seed values."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"need a non-empty list of per-seed values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"per-seed values must be finite, got {x.tolist()}")
    n = len(x)
    if n == 1:
        return SeedInterval(1, float(x[0]), None, None)
    sd = float(x.std(ddof=1))
    return SeedInterval(n, float(x.mean()), sd, t975(n - 1) * sd / math.sqrt(n))


def welch_half_width(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float | None:
    """95 % half-width of mean(a) − mean(b) for independent samples (Welch–Satterthwaite df);
    None when either side has a single value."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = vx + vy
    if se2 == 0:
        return 0.0
    df = se2**2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return float(t975(max(df, 1.0)) * math.sqrt(se2))


# ------------------------------------------------------------------ trial-level statistics


@dataclass(frozen=True)
class MatchStats:
    """1:N matching outcomes of one model, summed per probe identity.

    ``sums[i]``: the sum of trial outcomes (1 right, 0.5 tie, 0 wrong) of identity ``i``'s probes;
    ``counts[i]``: its number of trials (identical for every model scored on the same trials).
    """

    sums: np.ndarray  # (I,)
    counts: np.ndarray  # (I,)

    @staticmethod
    def from_trials(
        outcome: np.ndarray, probe_identity: np.ndarray, n_identities: int
    ) -> MatchStats:
        """``probe_identity``: integer code in [0, n_identities) of each trial's probe."""
        sums = np.bincount(probe_identity, weights=outcome, minlength=n_identities)
        counts = np.bincount(probe_identity, minlength=n_identities).astype(np.float64)
        return MatchStats(sums, counts)

    def value(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        """Accuracy; with ``weights`` (B, I) identity multiplicities, one accuracy per row."""
        if weights is None:
            return float(self.sums.sum() / self.counts.sum())
        out: np.ndarray = (weights @ self.sums) / np.maximum(weights @ self.counts, 1e-300)
        return out


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (Mann–Whitney, ties count one half) with per-pair weights; ``weights`` is (B, P)
    for B replicates at once. Equals :func:`pipeline.evaluate.metrics.roc_auc` for unit weights."""
    w = np.atleast_2d(weights).astype(np.float64)
    y = labels.astype(bool)
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], y[order], w[:, order]
    # Blocks of tied scores: each positive beats every negative below its block, half of its own.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    neg_w = np.where(~y, w, 0.0)
    pos_w = np.where(y, w, 0.0)
    neg_block = np.add.reduceat(neg_w, starts, axis=1)  # (B, nblocks)
    pos_block = np.add.reduceat(pos_w, starts, axis=1)
    neg_below = np.cumsum(neg_block, axis=1) - neg_block
    wins = (pos_block * (neg_below + 0.5 * neg_block)).sum(axis=1)
    total = pos_block.sum(axis=1) * neg_block.sum(axis=1)
    out: np.ndarray = wins / np.maximum(total, 1e-300)
    return out


@dataclass(frozen=True)
class VerifyStats:
    """Verification pairs of one model: scores, labels, and each pair's probe identity code."""

    scores: np.ndarray
    labels: np.ndarray
    probe_identity: np.ndarray

    def value(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        if weights is None:
            return float(weighted_auc(self.scores, self.labels, np.ones(len(self.scores)))[0])
        return weighted_auc(self.scores, self.labels, weights[:, self.probe_identity])


Stats = MatchStats | VerifyStats


def identity_draws(n_identities: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, I) multiplicities of each identity in ``n_boot`` resamples with replacement."""
    rng = np.random.default_rng(seed)
    draws: np.ndarray = rng.multinomial(
        n_identities, np.full(n_identities, 1.0 / n_identities), size=n_boot
    ).astype(np.float64)
    return draws


def _seed_average(per_seed: list[Stats], weights: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.mean([np.asarray(s.value(weights)) for s in per_seed], axis=0)
    return out


@dataclass(frozen=True)
class BootInterval:
    """A point value with its percentile-bootstrap 95 % interval."""

    value: float
    low: float
    high: float


def identity_bootstrap(per_seed: list[Stats], draws: np.ndarray) -> BootInterval:
    """The seed-averaged metric and its 95 % percentile interval over identity resamples."""
    if not per_seed:
        raise ValueError("need at least one seed's trial outcomes")
    value = float(np.mean([s.value() for s in per_seed]))
    reps = _seed_average(per_seed, draws)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return BootInterval(value, float(lo), float(hi))


VERDICTS = ("better", "worse", "not distinguishable")


@dataclass(frozen=True)
class PairedDifference:
    """mean(A) − mean(B) with its 95 % interval and the verdict for A against B."""

    difference: float
    half_width: float
    identity_half_width: float
    seed_half_width: float | None  # None: one seed on a side, training variance not included

    @property
    def low(self) -> float:
        return self.difference - self.half_width

    @property
    def high(self) -> float:
        return self.difference + self.half_width

    @property
    def verdict(self) -> str:
        return verdict(self.low, self.high)


def verdict(low: float, high: float) -> str:
    """``better`` when the interval of A − B lies above 0, ``worse`` below, else a tie."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "not distinguishable"


def paired_difference(a: list[Stats], b: list[Stats], draws: np.ndarray) -> PairedDifference:
    """A − B on the same trials: the identity part from the paired bootstrap (the central 95 %
    of the replicates' differences, as a half-width about their spread), the seed part from
    Welch's t over the per-seed values, added in quadrature."""
    va = np.array([s.value() for s in a])
    vb = np.array([s.value() for s in b])
    diff = float(va.mean() - vb.mean())
    reps = _seed_average(a, draws) - _seed_average(b, draws)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    hw_id = float(hi - lo) / 2
    hw_seed = welch_half_width(va, vb)
    hw = math.sqrt(hw_id**2 + (hw_seed or 0.0) ** 2)
    return PairedDifference(diff, hw, hw_id, hw_seed)
