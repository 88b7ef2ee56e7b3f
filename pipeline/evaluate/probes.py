"""Linear attribute probes: how much of each latent attribute an embedding carries linearly.

Per attribute (:data:`pipeline.evaluate.attributes.ATTRIBUTES`), a probe is fitted on the training
clips' embeddings and scored on the test clips':

- ``gender``, ``nationality``: L2-regularised multinomial logistic regression on features
  standardised with the training statistics, minimising
  ``mean cross-entropy + l2 / 2 * ||W||²`` (bias unpenalised) by L-BFGS in float64 (a strictly
  convex problem: one optimum, reached deterministically). Scored by test accuracy; chance is the
  majority class's share of the test clips (a test label unseen in training counts as wrong).
- ``age_years``, ``build``: ridge regression on standardised features, minimising
  ``mean squared error + l2 * ||w||²`` (intercept unpenalised), closed form. Scored by R² on the
  test clips (against the test mean); chance is 0.

Clips with a missing (NaN) label are left out of that attribute's probe. An attribute with fewer
than :data:`MIN_TRAIN` labelled training clips, :data:`MIN_TEST` labelled test clips, a single
training class or a constant target is reported ``{"available": false, "reason": ...}``.
numpy and torch only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.evaluate.attributes import CATEGORICAL, CONTINUOUS

MIN_TRAIN = 10
MIN_TEST = 4


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(0)
    std = train.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def _unavailable(reason: str, n_train: int, n_test: int) -> dict[str, Any]:
    return {"available": False, "reason": reason, "train_clips": n_train, "test_clips": n_test}


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> np.ndarray:
    """Multinomial logistic regression on (N, d) features and (N,) class indices.

    Returns (d + 1, K) weights (last row: bias) minimising mean cross-entropy +
    ``l2 / 2 * ||W||²`` (bias not penalised).
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    for _ in range(4):  # L-BFGS restarts until converged (each call stops at max_iter)
        opt.step(closure)  # type: ignore[no-untyped-call]
        with torch.no_grad():
            if w.grad is not None and b.grad is not None:
                g = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
                if g < 1e-7:
                    break
    out: np.ndarray = torch.cat([w.detach(), b.detach()[None]]).numpy()
    return out


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Ridge regression of (N,) ``y`` on (N, d) ``x``: (w, intercept) minimising
    ``mean((y - x w - b)²) + l2 * ||w||²`` (the intercept not penalised)."""
    n, d = x.shape
    xm, ym = x.mean(0), float(y.mean())
    xc, yc = x - xm, y - ym
    if d <= n:
        w = np.linalg.solve(xc.T @ xc + n * l2 * np.eye(d), xc.T @ yc)
    else:  # the dual form: an (N, N) system instead of (d, d)
        w = xc.T @ np.linalg.solve(xc @ xc.T + n * l2 * np.eye(n), yc)
    return w, ym - float(xm @ w)


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot around ``y``'s own mean (NaN when ``y`` is constant)."""
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


def classification_probe(
    train_x: np.ndarray,
    train_y: pd.Series | np.ndarray,
    test_x: np.ndarray,
    test_y: pd.Series | np.ndarray,
    l2: float,
) -> dict[str, Any]:
    """Accuracy of a logistic probe for one categorical attribute (NaN labels left out)."""
    ytr, yte = pd.Series(np.asarray(train_y, dtype=object)), pd.Series(np.asarray(test_y, object))
    ktr, kte = ytr.notna().to_numpy(), yte.notna().to_numpy()
    n_tr, n_te = int(ktr.sum()), int(kte.sum())
    if n_tr < MIN_TRAIN or n_te < MIN_TEST:
        return _unavailable(f"too few labelled clips (need {MIN_TRAIN} / {MIN_TEST})", n_tr, n_te)
    classes = sorted(set(ytr[ktr].astype(str)))
    if len(classes) < 2:
        return _unavailable("one class in the training clips", n_tr, n_te)
    index = {c: i for i, c in enumerate(classes)}
    xtr, xte = _standardise(
        np.asarray(train_x, np.float64)[ktr], np.asarray(test_x, np.float64)[kte]
    )
    w = fit_logistic(xtr, np.array([index[c] for c in ytr[ktr].astype(str)]), len(classes), l2)
    pred = np.argmax(xte @ w[:-1] + w[-1], axis=1)
    truth = np.array([index.get(c, -1) for c in yte[kte].astype(str)])
    majority = float(yte[kte].astype(str).value_counts().iloc[0]) / n_te
    return {
        "available": True,
        "accuracy": round(float(np.mean(pred == truth)), 4),
        "chance": round(majority, 4),
        "classes": len(classes),
        "train_clips": n_tr,
        "test_clips": n_te,
    }


def regression_probe(
    train_x: np.ndarray,
    train_y: pd.Series | np.ndarray,
    test_x: np.ndarray,
    test_y: pd.Series | np.ndarray,
    l2: float,
) -> dict[str, Any]:
    """Test R² of a ridge probe for one continuous attribute (NaN targets left out)."""
    ytr, yte = np.asarray(train_y, np.float64), np.asarray(test_y, np.float64)
    ktr, kte = ~np.isnan(ytr), ~np.isnan(yte)
    n_tr, n_te = int(ktr.sum()), int(kte.sum())
    if n_tr < MIN_TRAIN or n_te < MIN_TEST:
        return _unavailable(f"too few labelled clips (need {MIN_TRAIN} / {MIN_TEST})", n_tr, n_te)
    if np.ptp(ytr[ktr]) == 0 or np.ptp(yte[kte]) == 0:
        return _unavailable("constant target", n_tr, n_te)
    xtr, xte = _standardise(
        np.asarray(train_x, np.float64)[ktr], np.asarray(test_x, np.float64)[kte]
    )
    w, b = fit_ridge(xtr, ytr[ktr], l2)
    return {
        "available": True,
        "r2": round(r2_score(yte[kte], xte @ w + b), 4),
        "chance": 0.0,
        "train_clips": n_tr,
        "test_clips": n_te,
    }


def attribute_probes(
    train_x: np.ndarray,
    train_attrs: pd.DataFrame,
    test_x: np.ndarray,
    test_attrs: pd.DataFrame,
    l2: float = 1e-2,
) -> dict[str, Any]:
    """Every attribute's probe: ``{attribute: {...}}`` for the attributes of
    :mod:`pipeline.evaluate.attributes` (a column absent from ``*_attrs`` is unavailable).

    ``train_attrs`` / ``test_attrs`` rows are aligned with ``train_x`` / ``test_x`` rows.
    """
    if len(train_x) != len(train_attrs) or len(test_x) != len(test_attrs):
        raise ValueError(
            f"features and attributes disagree: {len(train_x)} / {len(train_attrs)} train rows, "
            f"{len(test_x)} / {len(test_attrs)} test rows"
        )
    out: dict[str, Any] = {}
    for col in (*CATEGORICAL, *CONTINUOUS):
        if col not in train_attrs.columns or col not in test_attrs.columns:
            out[col] = _unavailable("attribute not in the metadata", 0, 0)
            continue
        probe = classification_probe if col in CATEGORICAL else regression_probe
        out[col] = probe(train_x, train_attrs[col], test_x, test_attrs[col], l2)
    return out


def embedding_probes(
    face_train: np.ndarray,
    voice_train: np.ndarray,
    attrs_train: pd.DataFrame,
    face_test: np.ndarray,
    voice_test: np.ndarray,
    attrs_test: pd.DataFrame,
    l2: float = 1e-2,
) -> dict[str, Any]:
    """:func:`attribute_probes` of both modalities: ``{"face": {...}, "voice": {...}}``."""
    return {
        "face": attribute_probes(face_train, attrs_train, face_test, attrs_test, l2),
        "voice": attribute_probes(voice_train, attrs_train, voice_test, attrs_test, l2),
    }
