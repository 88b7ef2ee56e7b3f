"""Intervals, the identity bootstrap and paired verdicts against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.evaluate import metrics
from pipeline.evaluate.stats import (
    MatchStats,
    VerifyStats,
    identity_bootstrap,
    identity_draws,
    paired_difference,
    seed_interval,
    t975,
    verdict,
    weighted_auc,
    welch_half_width,
)


def test_t_quantiles() -> None:
    assert t975(2) == pytest.approx(4.3027, abs=1e-4)
    assert t975(4) == pytest.approx(2.7764, abs=1e-4)
    assert t975(1000) == pytest.approx(1.9623, abs=1e-3)
    assert t975(40) == pytest.approx(2.0211, abs=1e-3)
    assert t975(2) > t975(2.5) > t975(3)
    with pytest.raises(ValueError):
        t975(0.5)


def test_seed_interval_by_hand() -> None:
    # values 0.60, 0.62, 0.64: mean 0.62, s = 0.02, half-width = 4.3027 * 0.02 / sqrt(3)
    iv = seed_interval([0.60, 0.62, 0.64])
    assert iv.n == 3
    assert iv.mean == pytest.approx(0.62)
    assert iv.std == pytest.approx(0.02)
    assert iv.half_width == pytest.approx(4.3027 * 0.02 / math.sqrt(3), rel=1e-4)
    assert iv.low == pytest.approx(0.62 - iv.half_width)
    one = seed_interval([0.7])
    assert one.half_width is None and one.std is None and one.low is None
    with pytest.raises(ValueError):
        seed_interval([])
    with pytest.raises(ValueError):
        seed_interval([0.5, float("nan")])


def test_welch_by_hand() -> None:
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    va, vb = 1.0 / 3, (20.0 / 3) / 4  # sample variances / n
    se2 = va + vb
    df = se2**2 / (va**2 / 2 + vb**2 / 3)
    assert welch_half_width(a, b) == pytest.approx(t975(df) * math.sqrt(se2))
    assert welch_half_width([1.0], b) is None
    assert welch_half_width([1.0, 1.0], [2.0, 2.0]) == 0.0


def test_match_stats_weights() -> None:
    outcome = np.array([1.0, 0.0, 0.5, 1.0, 1.0])
    ident = np.array([0, 0, 1, 2, 2])
    st = MatchStats.from_trials(outcome, ident, 3)
    assert st.value() == pytest.approx(3.5 / 5)
    # identity 0 twice, identity 2 once, identity 1 never: (2*1 + 2) / (2*2 + 2)
    w = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    np.testing.assert_allclose(st.value(w), [4.0 / 6.0, 0.5])


def test_weighted_auc_matches_plain_loop_and_metrics() -> None:
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=60), 1)  # ties on purpose
    y = rng.random(60) < 0.5
    w = rng.integers(0, 3, size=60).astype(float)
    num = den = 0.0
    for i, j in itertools.product(range(60), range(60)):
        if y[i] and not y[j]:
            num += w[i] * w[j] * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
            den += w[i] * w[j]
    assert weighted_auc(s, y, w)[0] == pytest.approx(num / den)
    assert weighted_auc(s, y, np.ones(60))[0] == pytest.approx(metrics.roc_auc(s, y))


def _match(rng: np.random.Generator, p: np.ndarray, per_id: int = 50) -> MatchStats:
    ident = np.repeat(np.arange(len(p)), per_id)
    outcome = (rng.random(len(ident)) < p[ident]).astype(float)
    return MatchStats.from_trials(outcome, ident, len(p))


def test_identity_bootstrap_interval_covers_and_shrinks() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.4, 0.9, 40)  # identities differ in difficulty
    st = _match(rng, p)
    draws = identity_draws(40, 2000, seed=3)
    iv = identity_bootstrap([st], draws)
    assert iv.low < iv.value < iv.high
    # the bootstrap sd is close to the textbook sd of a ratio of identity means
    acc_i = st.sums / st.counts
    textbook = acc_i.std(ddof=1) / math.sqrt(40)
    assert (iv.high - iv.low) / (2 * 1.96) == pytest.approx(textbook, rel=0.15)
    # identical identities: no identity variance beyond the trials' own
    flat = MatchStats(np.full(40, 30.0), np.full(40, 50.0))
    iv0 = identity_bootstrap([flat], draws)
    assert iv0.low == pytest.approx(0.6) and iv0.high == pytest.approx(0.6)


def test_paired_verdict_clearly_better_and_clearly_equal() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.5, 0.8, 40)
    draws = identity_draws(40, 1000, seed=4)
    base = [_match(rng, p) for _ in range(3)]
    better = [_match(rng, np.clip(p + 0.15, 0, 1)) for _ in range(3)]
    d = paired_difference(better, base, draws)
    assert d.difference > 0.1 and d.verdict == "better" and d.seed_half_width is not None
    assert paired_difference(base, better, draws).verdict == "worse"
    same = [_match(rng, p) for _ in range(3)]
    e = paired_difference(same, base, draws)
    assert e.verdict == "not distinguishable" and e.low < 0 < e.high
    # a model against itself: zero difference; no identity part, only the seeds' spread
    z = paired_difference(base, base, draws)
    assert z.difference == 0 and z.identity_half_width == pytest.approx(0.0, abs=1e-12)
    assert z.verdict == "not distinguishable"


def test_seed_noise_widens_the_paired_interval() -> None:
    # Two methods identical on every identity, but one method's seeds disagree a lot.
    counts = np.full(10, 100.0)
    a = [MatchStats(counts * v, counts) for v in (0.55, 0.75, 0.65)]
    b = [MatchStats(counts * 0.6, counts) for _ in range(3)]
    draws = identity_draws(10, 200, seed=0)
    d = paired_difference(a, b, draws)
    assert d.identity_half_width == pytest.approx(0.0, abs=1e-12)
    assert d.seed_half_width == pytest.approx(welch_half_width([0.55, 0.75, 0.65], [0.6] * 3))
    assert d.difference == pytest.approx(0.05) and d.verdict == "not distinguishable"
    # One seed per side: the seed part is unknown and left out.
    one = paired_difference(a[:1], b[:1], draws)
    assert one.seed_half_width is None and one.verdict == "worse"


def test_verify_stats_bootstrap() -> None:
    rng = np.random.default_rng(5)
    n = 400
    ident = rng.integers(0, 20, n)
    y = rng.random(n) < 0.5
    s = y * 1.0 + rng.normal(size=n)
    st = VerifyStats(s, y, ident)
    assert st.value() == pytest.approx(metrics.roc_auc(s, y))
    iv = identity_bootstrap([st], identity_draws(20, 300, seed=1))
    assert iv.low < iv.value < iv.high and 0.6 < iv.value < 0.9


def test_verdict_boundaries() -> None:
    assert verdict(0.01, 0.03) == "better"
    assert verdict(-0.03, -0.01) == "worse"
    assert verdict(0.0, 0.02) == "not distinguishable"
