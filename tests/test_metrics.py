"""Evaluation metrics: hand-worked cases, plain-loop references, chance levels, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.evaluate import metrics
from pipeline.evaluate.metrics import (
    equal_error_rate,
    expected_random_ap,
    expected_random_map,
    matching_curve,
    retrieval_ap,
    retrieval_map,
    roc_auc,
    roc_curve,
)


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def _at(s: float) -> list[float]:
    """A 2-d unit vector whose inner product with (1, 0) is exactly ``s``."""
    return [s, math.sqrt(1.0 - s * s)]


# --- 1:N matching -----------------------------------------------------------------------------


def test_matching_curve_hand_case() -> None:
    probe = np.array([[1.0, 0.0]])
    cands = np.array([_at(0.8), _at(0.6), _at(1.0), _at(0.2)])  # scores 0.8, 0.6, 1.0, 0.2
    trials = np.array(
        [
            [0, 0, 1, 2],  # true 0.8 > 0.6 (N=2 right), < 1.0 (N=3 wrong)
            [0, 2, 0, 1],  # true 1.0 is best: right at N=2 and 3
            [0, 3, 0, 1],  # true 0.2 is worst: wrong everywhere
        ],
        dtype=np.int64,
    )
    np.testing.assert_allclose(matching_curve(probe, cands, trials), [2 / 3, 1 / 3])


def test_matching_curve_ties_count_expected_accuracy() -> None:
    probe = np.array([[1.0, 0.0]])
    cands = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # scores 1, 1, 1, 0, -1
    cases = {
        (0, 0, 1, 2): [1 / 2, 1 / 3],  # tied with 1, then with 2 impostors
        (0, 0, 3, 1): [1.0, 1 / 2],  # beats the first, ties the second
        (0, 3, 4, 0): [1.0, 0.0],  # beats -1, then 1 is above
        (0, 0, 3, 4): [1.0, 1.0],
    }
    for row, want in cases.items():
        got = matching_curve(probe, cands, np.array([row], dtype=np.int64))
        np.testing.assert_allclose(got, want, err_msg=str(row))
    both = np.array([(0, 0, 1, 2), (0, 0, 3, 1)], dtype=np.int64)
    np.testing.assert_allclose(matching_curve(probe, cands, both), [3 / 4, 5 / 12])


def test_matching_curve_k2_is_the_plain_1to2_accuracy() -> None:
    rng = np.random.default_rng(0)
    v, f = _unit(rng.normal(size=(50, 8))), _unit(rng.normal(size=(60, 8)))
    trials = np.stack([rng.integers(50, size=500), *rng.integers(60, size=(2, 500))], axis=1)
    got = matching_curve(v, f, trials)
    assert got.shape == (1,)
    v64, f64 = v.astype(np.float64), f.astype(np.float64)
    s_true = np.einsum("nd,nd->n", v64[trials[:, 0]], f64[trials[:, 1]])
    s_imp = np.einsum("nd,nd->n", v64[trials[:, 0]], f64[trials[:, 2]])
    assert got[0] == pytest.approx(np.mean(s_true > s_imp) + 0.5 * np.mean(s_true == s_imp))


def test_matching_curve_random_embeddings_are_at_chance() -> None:
    rng = np.random.default_rng(1)
    t, k = 20000, 10
    probe, cands = _unit(rng.normal(size=(t, 32))), _unit(rng.normal(size=(t * k, 32)))
    trials = np.c_[np.arange(t), np.arange(t * k).reshape(t, k)]  # every candidate used once
    curve = matching_curve(probe, cands, trials)
    chance = 1 / np.arange(2, k + 1)
    se = np.sqrt(chance * (1 - chance) / t)
    assert np.all(np.abs(curve - chance) < 4 * se), (curve, chance)
    assert np.all(np.diff(curve) < 0)


def test_matching_curve_rejects_bad_input() -> None:
    p, c = np.zeros((3, 4)), np.ones((5, 4))
    ok = np.array([[0, 1, 2]], dtype=np.int64)
    matching_curve(p, c, ok)
    bad = {
        "K >= 2": (p, c, np.array([[0, 1]])),
        "integer": (p, c, ok.astype(np.float64)),
        "probe index": (p, c, np.array([[3, 1, 2]])),
        "candidate index": (p, c, np.array([[0, 1, 5]])),
        "candidate index ": (p, c, np.array([[0, -1, 2]])),
        "dimension": (p, np.ones((5, 3)), ok),
        "non-finite": (p, np.full((5, 4), np.nan), ok),
        "float": (p, np.ones((5, 4), dtype=np.int64), ok),
    }
    for msg, args in bad.items():
        with pytest.raises(ValueError, match=msg.strip()):
            matching_curve(*args)


# --- Verification -----------------------------------------------------------------------------


def test_roc_hand_cases() -> None:
    # Scores .9 .8 .7 .6, labels 1 1 0 1 (P=3, N=1). Thresholds from the top:
    # (fpr, tpr) = (0,0) (0,1/3) (0,2/3) (1,2/3) (1,1). The one negative sits below two of the
    # three positives: AUC = 2/3. FAR - FRR: -1, -2/3, -1/3, 2/3, 1; crossing on the segment
    # (0, 2/3)-(1, 2/3), where FRR stays 1/3 and FAR goes 0 -> 1: EER = 1/3 (λ = 1/3).
    s, y = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 1])
    fpr, tpr = roc_curve(s, y)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    assert roc_auc(s, y) == pytest.approx(2 / 3)
    assert equal_error_rate(s, y) == pytest.approx(1 / 3)
    # Scores .9 .5 .5 .1, labels T T F F: the tie makes one step (0,.5) -> (.5,1).
    # AUC: pairs (.9,.5) (.9,.1) (.5,.1) won, (.5,.5) tied -> 3.5/4 = .875.
    # FAR - FRR at (0,.5) is -.5, at (.5,1) is +.5: midway, FAR = FRR = .25.
    s, yb = np.array([0.9, 0.5, 0.5, 0.1]), np.array([True, True, False, False])
    fpr, tpr = roc_curve(s, yb)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert roc_auc(s, yb) == pytest.approx(0.875)
    assert equal_error_rate(s, yb) == pytest.approx(0.25)
    # A ROC point exactly on FAR = FRR: scores .9 .8 .7 .6, labels 1 0 1 0 -> (.5, .5).
    assert equal_error_rate(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == 0.5


def test_auc_is_trapezoid_area_and_pair_count() -> None:
    rng = np.random.default_rng(2)
    for n in (7, 50, 400):
        y = rng.random(n) < 0.4
        y[:2] = [True, False]
        s = np.round(rng.normal(size=n) + y, 1)  # rounding makes many ties
        fpr, tpr = roc_curve(s, y)
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
        assert len(fpr) == len(np.unique(s)) + 1
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        auc = roc_auc(s, y)
        assert auc == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)
        pos, neg = s[y][:, None], s[~y][None, :]
        assert auc == pytest.approx(np.mean((pos > neg) + 0.5 * (pos == neg)), abs=1e-12)


def test_perfect_and_reversed_separation() -> None:
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    y = np.array([0, 0, 0, 1, 1])
    assert roc_auc(s, y) == 1.0 and equal_error_rate(s, y) == 0.0
    assert roc_auc(-s, y) == 0.0 and equal_error_rate(-s, y) == 1.0
    assert roc_auc(np.zeros(5), y) == 0.5  # all tied: chance
    assert equal_error_rate(np.zeros(5), y) == pytest.approx(0.5)


def test_eer_of_two_gaussians() -> None:
    # Unit-variance classes 2δ apart: the threshold midway gives FAR = FRR = Φ(-δ).
    rng = np.random.default_rng(3)
    n, delta = 200_000, 0.8
    s = np.r_[rng.normal(delta, 1, n), rng.normal(-delta, 1, n)]
    y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    want = 0.5 * math.erfc(delta / math.sqrt(2))
    assert equal_error_rate(s, y) == pytest.approx(want, abs=3e-3)
    assert roc_auc(s, y) == pytest.approx(0.5 * math.erfc(-delta), abs=3e-3)  # Φ(2δ/√2)


def test_verification_rejects_bad_input() -> None:
    s = np.array([0.1, 0.2, 0.3])
    bad = {
        "one class": (s, np.array([1, 1, 1])),
        "one class ": (s, np.zeros(3, bool)),
        "bool or 0/1": (s, np.array([0, 1, 2])),
        "shape": (s, np.array([0, 1])),
        "non-finite": (np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1])),
        "non-empty": (s[None, :], np.array([0, 1, 1])),
    }
    for fn in (roc_curve, roc_auc, equal_error_rate):
        for msg, (a, b) in bad.items():
            with pytest.raises(ValueError, match=msg.strip()):
                fn(a, b)


# --- Retrieval --------------------------------------------------------------------------------


def _ap_reference(scores: np.ndarray, rel: np.ndarray) -> float:
    """Plain-loop AP of one probe: numpy sort, then a loop over ranks; each tied block averaged
    over every placement of its relevant items (enumerated)."""
    order = np.argsort(-scores, kind="stable")
    s, r = scores[order], rel[order]
    total, hits, k = 0.0, 0, 0
    while k < len(s):
        e = k
        while e + 1 < len(s) and s[e + 1] == s[k]:
            e += 1
        n, a = e - k + 1, int(r[k : e + 1].sum())
        if a:
            places = list(itertools.combinations(range(n), a))
            block = 0.0
            for pl in places:
                for m, p in enumerate(pl):
                    block += (hits + m + 1) / (k + p + 1)
            total += block / len(places)
        hits += a
        k = e + 1
    return total / hits if hits else math.nan


def _ap_reference_all(
    probe: np.ndarray, pl: np.ndarray, gallery: np.ndarray, gl: np.ndarray
) -> np.ndarray:
    scores = probe.astype(np.float64) @ gallery.astype(np.float64).T
    return np.array([_ap_reference(scores[i], gl == pl[i]) for i in range(len(probe))])


def test_retrieval_hand_case() -> None:
    probe = np.array([[1.0, 0.0]] * 3, dtype=np.float32)
    gallery = np.array([_at(0.5), _at(0.9), _at(0.1), _at(0.7)], dtype=np.float32)
    g_lab = np.array(["a", "b", "a", "a"])
    p_lab = np.array(["a", "b", "c"])
    # Probe "a": ranking .9(b) .7(a) .5(a) .1(a): hits at ranks 2, 3, 4 ->
    # AP = (1/2 + 2/3 + 3/4) / 3 = 23/36. Probe "b": its one item is first -> 1. "c": no item.
    ap = retrieval_ap(probe, p_lab, gallery, g_lab)
    np.testing.assert_allclose(ap[:2], [23 / 36, 1.0])
    assert np.isnan(ap[2])
    assert retrieval_map(probe, p_lab, gallery, g_lab) == pytest.approx((23 / 36 + 1) / 2)
    assert retrieval_map(probe, p_lab, gallery, g_lab, batch=1) == pytest.approx((23 / 36 + 1) / 2)


def test_retrieval_ties_average_over_orders() -> None:
    probe = np.array([[1.0, 0.0]], dtype=np.float32)
    gallery = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)  # 3-way tie
    # One relevant of three tied: (1 + 1/2 + 1/3) / 3 = 11/18.
    assert retrieval_ap(probe, np.array([0]), gallery, np.array([0, 1, 1]))[0] == pytest.approx(
        11 / 18
    )
    # Two relevant of three tied: orders RRI, RIR, IRR give AP 1, 5/6, 7/12 -> mean 29/36.
    assert retrieval_ap(probe, np.array([0]), gallery, np.array([0, 1, 0]))[0] == pytest.approx(
        29 / 36
    )
    # Ties below the last relevant item change nothing: one item on top, then a tie.
    g2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    assert retrieval_ap(probe, np.array([0]), g2, np.array([0, 1, 1]))[0] == 1.0
    # Permuting the gallery never changes the result.
    g3 = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    lab3 = np.array([0, 1, 0, 1])
    for perm in itertools.permutations(range(4)):
        idx = list(perm)
        # Ranking: 1 (irrelevant), then a 3-way tie holding 2 relevant (o=1, c=0):
        # places 2, 3, 4 -> (2/3)·[1/2 + 1.5/3 + 2/4] / 2 = 1/2.
        got = retrieval_ap(probe, np.array([0]), g3[idx], lab3[idx])[0]
        assert got == pytest.approx(0.5)


def test_retrieval_matches_plain_loop_on_exact_scores() -> None:
    # Entries are multiples of 1/512 and D = 16: every inner product is exact in float32
    # whatever the summation order, so faiss and the float64 reference see identical scores,
    # ties included.
    rng = np.random.default_rng(4)
    n_id, per = 40, 10
    g = np.round(_unit(rng.normal(size=(n_id * per, 16))) * 512) / 512
    gl = np.repeat(np.arange(n_id), per)
    p = np.round(_unit(rng.normal(size=(300, 16))) * 512) / 512
    pl = rng.integers(n_id + 5, size=300)  # some probes have no match
    g, p = g.astype(np.float32), p.astype(np.float32)
    want = _ap_reference_all(p, pl, g, gl)
    got = retrieval_ap(p, pl, g, gl, batch=64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    # The tie path is exercised: some relevant item shares its score with another item.
    scores = p.astype(np.float64) @ g.astype(np.float64).T
    n_tied = sum(
        np.isin(scores[i, gl == pl[i]], scores[i, np.flatnonzero(gl != pl[i])]).any()
        or len(np.unique(scores[i, gl == pl[i]])) < (gl == pl[i]).sum()
        for i in range(300)
    )
    assert n_tied >= 3
    assert retrieval_map(p, pl, g, gl) == pytest.approx(np.nanmean(want), abs=1e-12)
    np.testing.assert_allclose(retrieval_ap(p, pl, g, gl, batch=7, threads=1), got)


def test_retrieval_matches_plain_loop_on_random_floats() -> None:
    rng = np.random.default_rng(5)
    g, p = _unit(rng.normal(size=(500, 32))), _unit(rng.normal(size=(200, 32)))
    gl = rng.integers(50, size=500)
    pl = gl[rng.integers(500, size=200)]
    p[:100] = _unit(p[:100] + 2 * g[np.argmax(gl[None, :] == pl[:100, None], 1)])  # better ranks
    want = _ap_reference_all(p, pl, g, gl)
    got = retrieval_ap(p, pl, g, gl, batch=50)
    # float32 scores from two BLAS paths can swap near-equal neighbours: a swap moves AP by
    # far less than 1e-3.
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert retrieval_map(p, pl, g, gl) == pytest.approx(np.mean(want), abs=1e-5)
    assert np.mean(want[:100]) > np.mean(want[100:]) + 0.1  # the check sees ranking quality


def _ap_formula(scores: np.ndarray, rel: np.ndarray) -> float:
    """Plain-loop AP of one probe from the tie formula: numpy sort, then for each tied block of n
    items at ranks o+1..o+n holding a relevant items with c relevant above, add
    (a/n) Σ_i (c + 1 + (i-1)(a-1)/(n-1)) / (o+i), place by place."""
    order = np.argsort(-scores, kind="stable")
    s, r = scores[order], rel[order]
    total, c, o = 0.0, 0, 0
    while o < len(s):
        n = 1
        while o + n < len(s) and s[o + n] == s[o]:
            n += 1
        a = int(r[o : o + n].sum())
        for i in range(1, n + 1):
            step = (a - 1) / (n - 1) if n > 1 else 0.0
            total += a / n * (c + 1 + (i - 1) * step) / (o + i)
        c += a
        o += n
    return total / c if c else math.nan


def _ap_formula_all(
    probe: np.ndarray, pl: np.ndarray, gallery: np.ndarray, gl: np.ndarray
) -> np.ndarray:
    scores = probe.astype(np.float64) @ gallery.astype(np.float64).T
    return np.array([_ap_formula(scores[i], gl == pl[i]) for i in range(len(probe))])


def _heavy_ties() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entries in {-1, -1/2, 0, 1/2, 1} and D = 5: every score is a multiple of 1/4 in [-5, 5]
    (exact in float32 in any order), so most scores tie. Labels: R from 1 to 30, and probes with
    no match."""
    rng = np.random.default_rng(9)
    r = np.array([1, 1, 2, 3, 5, 8, 13, 30, 1, 17])  # gallery items per label 0..9
    gl = rng.permutation(np.repeat(np.arange(len(r)), r))  # (G,) G = 81
    g = rng.integers(-2, 3, size=(len(gl), 5)) / 2
    p = rng.integers(-2, 3, size=(120, 5)) / 2
    p[:10] = 0.0  # an all-zero probe ties the whole gallery
    pl = rng.integers(len(r) + 3, size=120)  # labels 10..12: no match
    return p.astype(np.float32), pl, g.astype(np.float32), gl


def test_tie_formula_reference_equals_enumeration() -> None:
    # The formula reference against the placement-enumerating one, on small tie-heavy lists.
    rng = np.random.default_rng(10)
    for _ in range(200):
        scores = rng.integers(0, 4, size=9).astype(np.float64)
        rel = rng.random(9) < 0.4
        rel[rng.integers(9)] = True
        assert _ap_formula(scores, rel) == pytest.approx(_ap_reference(scores, rel), abs=1e-12)


@pytest.mark.parametrize("compare_max", [0, 2, 8, 10_000])
def test_retrieval_heavy_ties_match_formula(
    monkeypatch: pytest.MonkeyPatch, compare_max: int
) -> None:
    # compare_max 0: every probe bins its scores by binary search; 10_000: every probe compares
    # row by row; in between, a batch mixes the two. A tiny _TIE_PLACES splits the tie sums.
    monkeypatch.setattr(metrics, "_COMPARE_MAX", compare_max)
    monkeypatch.setattr(metrics, "_TIE_PLACES", 7)
    p, pl, g, gl = _heavy_ties()
    want = _ap_formula_all(p, pl, g, gl)
    assert np.isnan(want).sum() >= 10 and (~np.isnan(want)).sum() >= 80
    got = {b: retrieval_ap(p, pl, g, gl, batch=b) for b in (1, 7, 512)}
    np.testing.assert_allclose(got[512], want, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(got[1], got[512])
    np.testing.assert_array_equal(got[7], got[512])
    # The all-zero probes tie the whole gallery: AP is the chance level, exactly.
    for i in np.flatnonzero(~np.isnan(want[:10])):
        r = int((gl == pl[i]).sum())
        assert got[512][i] == pytest.approx(expected_random_ap(r, len(gl)), abs=1e-12)


@pytest.mark.parametrize("compare_max", [0, 10_000])
def test_retrieval_r_equals_g_and_r_one(monkeypatch: pytest.MonkeyPatch, compare_max: int) -> None:
    monkeypatch.setattr(metrics, "_COMPARE_MAX", compare_max)
    p, _, g, _ = _heavy_ties()
    # R = G: every ranking is perfect, ties or not.
    ap = retrieval_ap(p, np.zeros(len(p)), g, np.zeros(len(g)), batch=7)
    np.testing.assert_allclose(ap, 1.0, rtol=0, atol=1e-12)
    # R = 1 for every probe: AP = expected 1 / rank of the one item.
    gl = np.arange(len(g))
    pl = np.arange(len(p)) % (len(g) + 5)  # some probes match nothing
    want = _ap_formula_all(p, pl, g, gl)
    got = retrieval_ap(p, pl, g, gl, batch=7)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def test_retrieval_threads_argument_restores_setting() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    x = _unit(np.random.default_rng(6).normal(size=(20, 4)))
    lab = np.arange(20) % 4
    a = retrieval_ap(x, lab, x, lab, threads=1)
    assert blas_threads() == before
    np.testing.assert_allclose(a, retrieval_ap(x, lab, x, lab))


def test_retrieval_rejects_bad_input() -> None:
    x, lab = np.ones((4, 3), dtype=np.float32), np.arange(4)
    bad = {
        "dimension": (x, lab, np.ones((4, 2), dtype=np.float32), lab, {}),
        "probe_labels": (x, lab[:3], x, lab, {}),
        "gallery_labels": (x, lab, x, lab[:, None], {}),
        "non-empty": (x, lab, x[:0], lab[:0], {}),
        "non-finite": (np.full((4, 3), np.inf), lab, x, lab, {}),
        "batch": (x, lab, x, lab, {"batch": 0}),
        "threads": (x, lab, x, lab, {"threads": 0}),
        "overflow": (x * 1e19, lab, x * 1e19, lab, {}),
    }
    for msg, (a, b, c, d, kw) in bad.items():
        with pytest.raises(ValueError, match=msg):
            retrieval_ap(a, b, c, d, **kw)
    with pytest.raises(ValueError, match="undefined"):
        retrieval_map(x, lab, x, lab + 10)


# --- Chance level of retrieval ----------------------------------------------------------------


def _ap_of_ranks(rel_ranks: np.ndarray) -> np.ndarray:
    """(S, R) sorted 1-based ranks of the relevant items -> (S,) AP."""
    out: np.ndarray = np.mean(np.arange(1, rel_ranks.shape[1] + 1) / rel_ranks, axis=1)
    return out


def test_expected_random_ap_closed_cases_and_enumeration() -> None:
    for g in (1, 2, 7, 100):
        h = sum(1 / k for k in range(1, g + 1))
        assert expected_random_ap(1, g) == pytest.approx(h / g)
        assert expected_random_ap(g, g) == pytest.approx(1.0)
    # Every placement of R relevant items among G: the exact mean.
    for g, r in ((5, 2), (6, 3), (8, 4), (9, 1)):
        ranks = np.array(list(itertools.combinations(range(1, g + 1), r)), dtype=np.float64)
        assert expected_random_ap(r, g) == pytest.approx(_ap_of_ranks(ranks).mean(), abs=1e-12)


def test_expected_random_ap_against_simulation() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    for r, g in ((1, 10), (3, 40), (10, 200)):
        ranks = np.sort(rng.permuted(np.tile(np.arange(g), (n, 1)), axis=1)[:, :r], axis=1) + 1
        ap = _ap_of_ranks(ranks.astype(np.float64))
        se = ap.std(ddof=1) / math.sqrt(n)
        assert abs(ap.mean() - expected_random_ap(r, g)) < 3 * se, (r, g)


def test_expected_random_map_against_random_embeddings() -> None:
    rng = np.random.default_rng(8)
    aps, chance = [], []
    for _ in range(4):  # fresh galleries, so gallery geometry averages out too
        gl = np.repeat(np.arange(60), rng.integers(1, 8, size=60))  # uneven R per identity
        g = _unit(rng.normal(size=(len(gl), 64)))
        pl = rng.integers(70, size=1000)  # 10 of 70 labels have no gallery item
        p = _unit(rng.normal(size=(1000, 64)))
        ap = retrieval_ap(p, pl, g, gl)
        aps.append(ap[~np.isnan(ap)])
        chance.append(expected_random_map(pl, gl) * np.full((~np.isnan(ap)).sum(), 1.0))
    a, c = np.concatenate(aps), np.concatenate(chance)
    se = a.std(ddof=1) / math.sqrt(len(a))
    assert abs(a.mean() - c.mean()) < 3 * se


def test_expected_random_map_is_mean_over_matched_probes() -> None:
    gl = np.array(["x", "x", "y", "z", "z", "z"])
    pl = np.array(["x", "z", "w", "x"])
    want = (2 * expected_random_ap(2, 6) + expected_random_ap(3, 6)) / 3
    assert expected_random_map(pl, gl) == pytest.approx(want)
    with pytest.raises(ValueError, match="undefined"):
        expected_random_map(np.array(["w"]), gl)
    for r, g in ((0, 5), (6, 5)):
        with pytest.raises(ValueError, match="n_relevant"):
            expected_random_ap(r, g)
