"""Linear attribute probes: logistic accuracy on known cases, ridge R² against the closed form,
unavailable attributes, determinism; clip attributes from the manifest and the ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.probes import attribute_probes, embedding_probes, fit_logistic, fit_ridge


def _attrs(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "gender": rng.choice(["m", "f"], n),
            "nationality": rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2]),
            "age_years": rng.uniform(20, 70, n),
            "build": rng.normal(size=n),
        }
    )


def test_separable_labels_give_accuracy_one() -> None:
    rng = np.random.default_rng(0)
    attrs = _attrs(200, rng)
    x = rng.normal(size=(200, 5))
    x[:, 0] += np.where(attrs["gender"] == "m", 4.0, -4.0)  # margin 8 sd: separable
    nat = attrs["nationality"].map({"A": 0, "B": 1, "C": 2}).to_numpy()
    x[:, 1] += 8.0 * nat
    res = attribute_probes(x[:150], attrs[:150], x[150:], attrs[150:], l2=1e-3)
    assert res["gender"]["accuracy"] == 1.0 and res["nationality"]["accuracy"] == 1.0
    assert res["gender"]["train_clips"] == 150 and res["gender"]["test_clips"] == 50
    assert res["nationality"]["classes"] == 3
    test = attrs[150:]
    assert res["gender"]["chance"] == pytest.approx(test["gender"].value_counts().iloc[0] / 50)


def test_labels_independent_of_features_score_near_chance() -> None:
    rng = np.random.default_rng(1)
    attrs = _attrs(4000, rng)
    x = rng.normal(size=(4000, 4))
    res = attribute_probes(x[:2000], attrs[:2000], x[2000:], attrs[2000:], l2=1e-2)
    for col in ("gender", "nationality"):
        assert res[col]["accuracy"] == pytest.approx(res[col]["chance"], abs=0.03), col
    for col in ("age_years", "build"):
        assert abs(res[col]["r2"]) < 0.02 and res[col]["chance"] == 0.0


def test_logistic_solution_is_the_regularised_optimum() -> None:
    # The gradient of mean CE + l2/2 ||W||² vanishes at the returned weights.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3))
    y = rng.integers(0, 3, 60)
    l2 = 0.1
    wb = fit_logistic(x, y, 3, l2)
    w, b = wb[:-1], wb[-1]
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[y]
    grad_w = x.T @ (p - onehot) / 60 + l2 * w
    grad_b = (p - onehot).mean(0)
    assert np.abs(grad_w).max() < 1e-6 and np.abs(grad_b).max() < 1e-6


def test_ridge_r2_matches_the_closed_form() -> None:
    rng = np.random.default_rng(3)
    n_tr, n_te, d, l2 = 40, 25, 3, 0.05
    x = rng.normal(size=(n_tr + n_te, d)) * [1.0, 3.0, 0.5] + [2.0, -1.0, 0.0]
    attrs = _attrs(n_tr + n_te, rng)
    attrs["build"] = x @ [0.5, -0.2, 1.0] + rng.normal(scale=0.5, size=n_tr + n_te)
    res = attribute_probes(x[:n_tr], attrs[:n_tr], x[n_tr:], attrs[n_tr:], l2=l2)
    # By hand: standardise with the training statistics, append sqrt(n l2) I rows to the centred
    # system (ridge as least squares), intercept = the training mean of y.
    mean, std = x[:n_tr].mean(0), x[:n_tr].std(0)
    xtr, xte = (x[:n_tr] - mean) / std, (x[n_tr:] - mean) / std
    y = attrs["build"].to_numpy()
    ytr, yte = y[:n_tr], y[n_tr:]
    a = np.vstack([xtr - xtr.mean(0), np.sqrt(n_tr * l2) * np.eye(d)])
    t = np.concatenate([ytr - ytr.mean(), np.zeros(d)])
    w = np.linalg.lstsq(a, t, rcond=None)[0]
    pred = [ytr.mean() + sum((xte[i, j] - xtr[:, j].mean()) * w[j] for j in range(d))
            for i in range(n_te)]  # fmt: skip
    ss_res = sum((yte[i] - pred[i]) ** 2 for i in range(n_te))
    ss_tot = sum((yte[i] - yte.mean()) ** 2 for i in range(n_te))
    assert res["build"]["r2"] == pytest.approx(1 - ss_res / ss_tot, abs=1e-4)
    assert res["build"]["r2"] > 0.5


def test_ridge_dual_form_when_features_outnumber_clips() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 20)), rng.normal(size=8)
    w, b = fit_ridge(x, y, 0.3)
    xc = x - x.mean(0)
    primal = np.linalg.solve(xc.T @ xc + 8 * 0.3 * np.eye(20), xc.T @ (y - y.mean()))
    np.testing.assert_allclose(w, primal, atol=1e-10)
    assert b == pytest.approx(y.mean() - x.mean(0) @ primal)


def test_unavailable_attributes() -> None:
    rng = np.random.default_rng(5)
    attrs = _attrs(30, rng)
    attrs["gender"] = "m"  # one class
    attrs.loc[:, "nationality"] = np.nan  # nothing labelled (a dataset without nationality)
    attrs["age_years"] = np.nan
    attrs.loc[:3, "age_years"] = 30.0
    x = rng.normal(size=(30, 3))
    res = attribute_probes(x[:20], attrs[:20], x[20:], attrs[20:].drop(columns="build"))
    assert res["gender"] == {
        "available": False,
        "reason": "one class in the training clips",
        "train_clips": 20,
        "test_clips": 10,
    }
    assert not res["nationality"]["available"] and res["nationality"]["train_clips"] == 0
    assert not res["age_years"]["available"] and "too few" in res["age_years"]["reason"]
    assert res["build"]["reason"] == "attribute not in the metadata"
    with pytest.raises(ValueError, match="disagree"):
        attribute_probes(x[:20], attrs[:19], x[20:], attrs[20:])


def test_probes_are_deterministic_and_cover_both_modalities() -> None:
    rng = np.random.default_rng(6)
    attrs = _attrs(120, rng)
    f, v = rng.normal(size=(120, 6)), rng.normal(size=(120, 4))
    f[:, 0] += (attrs["gender"] == "m") * 1.5
    runs = [
        embedding_probes(f[:80], v[:80], attrs[:80], f[80:], v[80:], attrs[80:]) for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"face", "voice"}
    assert set(runs[0]["face"]) == {"gender", "nationality", "age_years", "build"}
    assert runs[0]["face"]["gender"]["accuracy"] > runs[0]["voice"]["gender"]["accuracy"]
