"""The media ceiling: privileged (attribute-supervised) but media-based voice-face matching.

The parameter oracle (:mod:`pipeline.evaluate.oracle`) reads the synthetic corpus's rendering
parameters, which no method could see. This ceiling sees only what the methods see, the training
split's face crops and log-mel features (:func:`pipeline.train.pairs.load_pairs`), but is *told*
each clip's latent attributes (:mod:`pipeline.evaluate.attributes`): it bounds what an encoder that
recovers the shared latents from the media achieves.

- Each modality's default encoder (``build_face_encoder`` / ``build_voice_encoder``) gets a
  multi-task head (ReLU, linear) predicting ``[gender logit, nationality logits (K), age,
  build]``: binary cross-entropy on gender, cross-entropy on nationality, MSE on age and build
  z-scored with the training clips' statistics; missing labels are masked out. Both encoders
  train in one seeded loop on the same batches (one random face frame, randomly mirrored, and
  one ``voice_frames`` crop per clip, as the methods' loop samples).
- A clip's representation is its prediction vector (nationality logits centred, the softmax's
  free constant removed): the face side averages the predictions of every frame and its mirror
  image (as :func:`pipeline.train.loop.embed_clips` averages embeddings), the voice side reads
  the whole utterance.
- The voice-to-face map is the oracle's (:func:`pipeline.evaluate.oracle.fit_oracle`): both sides
  z-scored with training statistics, a ridge map from voice to face predictions, the face side the
  z-scored face prediction, cosine score.
- **Cross-fitting** (``folds`` K >= 2): the oracle's map is fitted on parameters it was not
  trained on, so the ceiling's must be too. A network's predictions on its own training clips are
  near perfect (it memorises 100-odd identities), and a map fitted on them trusts every attribute
  fully, even those it reads poorly on new people. So the training identities are split into K
  folds; K networks each train on K - 1 folds and predict the held-out fold (out-of-fold
  predictions, on which the map and the probes are fitted) and the test clips (averaged over the
  K networks). ``folds: 1`` is one network and a map fitted on its own training predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.evaluate.oracle import Oracle, fit_oracle
from pipeline.evaluate.probes import embedding_probes, r2_score
from pipeline.evaluate.scoring import Embeddings
from pipeline.train.encoders import build_face_encoder, build_voice_encoder
from pipeline.train.loop import TrainConfig
from pipeline.train.pairs import PairData, sample_batch, select_clips


@dataclass(frozen=True)
class CeilingConfig:
    """The ceiling's training run, ``train``: the methods' :class:`TrainConfig` (encoders, batch,
    crops, augmentation) with the ceiling's own epochs, learning rate, weight decay and seed; plus
    what only the ceiling has."""

    train: TrainConfig
    #: loss weights of gender, nationality, age, build
    weights: tuple[float, float, float, float]
    ridge: float
    probe_l2: float
    #: cross-fitting folds of the training identities (1: none)
    folds: int = 1


@dataclass(frozen=True)
class Targets:
    """Per clip training labels: gender (1 = "m", 0 = "f", -1 missing), nationality index
    (-1 missing), age and build z-scored with ``*_mean`` / ``*_std`` (NaN missing)."""

    gender: torch.Tensor  # (C,) int64
    nationality: torch.Tensor  # (C,) int64
    age: torch.Tensor  # (C,) float32
    build: torch.Tensor  # (C,) float32
    nationalities: list[str]
    age_mean: float
    age_std: float
    build_mean: float
    build_std: float

    @property
    def width(self) -> int:
        """Length of a prediction vector: gender, K nationalities, age, build."""
        return 3 + len(self.nationalities)


def _z_stats(values: np.ndarray) -> tuple[float, float]:
    known = values[~np.isnan(values)]
    if not len(known):
        return 0.0, 1.0
    std = float(known.std())
    return float(known.mean()), std if std > 1e-12 else 1.0


def make_targets(attrs: pd.DataFrame) -> Targets:
    """Training labels from attribute rows (:func:`pipeline.evaluate.attributes.clip_attributes`
    rows in the training clips' order)."""
    gender = attrs["gender"].map({"m": 1, "f": 0}).fillna(-1).to_numpy(dtype=np.int64)
    nats = sorted({str(v) for v in attrs["nationality"].dropna()})
    index = {k: i for i, k in enumerate(nats)}
    nat = np.array(
        [index[str(v)] if isinstance(v, str) else -1 for v in attrs["nationality"]], np.int64
    )
    age = attrs["age_years"].to_numpy(dtype=np.float64)
    build = attrs["build"].to_numpy(dtype=np.float64)
    am, asd = _z_stats(age)
    bm, bsd = _z_stats(build)
    return Targets(
        torch.from_numpy(gender),
        torch.from_numpy(nat),
        torch.from_numpy(((age - am) / asd).astype(np.float32)),
        torch.from_numpy(((build - bm) / bsd).astype(np.float32)),
        nats,
        am,
        asd,
        bm,
        bsd,
    )


class AttributeNet(nn.Module):
    """An encoder with the multi-task attribute head: input -> (B, 3 + K)."""

    def __init__(self, encoder: nn.Module, dim: int, width: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(dim, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(x))
        return out


class CeilingModel(nn.Module):
    def __init__(self, cfg: CeilingConfig, width: int) -> None:
        super().__init__()
        t = cfg.train
        self.face = AttributeNet(
            build_face_encoder(t.face_encoder, t.embed_dim), t.embed_dim, width
        )
        self.voice = AttributeNet(
            build_voice_encoder(t.voice_encoder, t.embed_dim), t.embed_dim, width
        )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not bool(mask.any()):
        return values.sum() * 0.0
    return values[mask].mean()


def attribute_loss(
    out: torch.Tensor, targets: Targets, clips: torch.Tensor, weights: tuple[float, ...]
) -> dict[str, torch.Tensor]:
    """The weighted multi-task loss of (B, 3 + K) predictions for training clips ``clips``."""
    k = len(targets.nationalities)
    g, n = targets.gender[clips].to(out.device), targets.nationality[clips].to(out.device)
    a, b = targets.age[clips].to(out.device), targets.build[clips].to(out.device)
    gm, nm = g >= 0, n >= 0
    terms = {
        "gender": _masked_mean(
            nn.functional.binary_cross_entropy_with_logits(
                out[:, 0], g.clamp(min=0).float(), reduction="none"
            ),
            gm,
        ),
        "nationality": (
            _masked_mean(
                nn.functional.cross_entropy(out[:, 1 : 1 + k], n.clamp(min=0), reduction="none"),
                nm,
            )
            if k
            else out.sum() * 0.0
        ),
        "age": _masked_mean((out[:, 1 + k] - a.nan_to_num()) ** 2, ~a.isnan()),
        "build": _masked_mean((out[:, 2 + k] - b.nan_to_num()) ** 2, ~b.isnan()),
    }
    names = ("gender", "nationality", "age", "build")
    terms["loss"] = sum(
        (w * terms[key] for w, key in zip(weights, names, strict=True)), start=out.sum() * 0.0
    )
    return terms


def train_ceiling(
    data: PairData,
    targets: Targets,
    cfg: CeilingConfig,
    device: torch.device,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> tuple[CeilingModel, list[dict[str, float]]]:
    """Train both attribute networks on ``data`` (the training clips, rows of ``targets``)."""
    if len(targets.gender) != len(data):
        raise ValueError(f"{len(targets.gender)} label rows for {len(data)} clips")
    t = cfg.train
    torch.manual_seed(t.seed)
    model = CeilingModel(cfg, targets.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    gen = torch.Generator().manual_seed(t.seed)
    n = len(data)
    steps = max(1, n // t.batch_size)
    history: list[dict[str, float]] = []
    for epoch in range(t.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        for s in range(steps):
            clips = perm[s * t.batch_size : (s + 1) * t.batch_size]
            faces, voices = sample_batch(data, clips, t.voice_frames, gen, t.mirror_flip)
            tf = attribute_loss(model.face(faces.to(device)), targets, clips, cfg.weights)
            tv = attribute_loss(model.voice(voices.to(device)), targets, clips, cfg.weights)
            loss = tf["loss"] + tv["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            for side, terms in (("face", tf), ("voice", tv)):
                for k, v in terms.items():
                    key = f"{side}_{k}"
                    sums[key] = sums.get(key, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        row = {"epoch": float(epoch + 1), **{k: v / steps for k, v in sums.items()}}
        history.append(row)
        if progress is not None:
            progress(row)
    return model, history


def _representation(out: torch.Tensor, k: int) -> torch.Tensor:
    """Predictions with the nationality logits centred (softmax ignores their common shift)."""
    nat = out[:, 1 : 1 + k]
    return torch.cat([out[:, :1], nat - nat.mean(1, keepdim=True), out[:, 1 + k :]], dim=1)


@torch.inference_mode()
def predict(
    model: CeilingModel, data: PairData, k: int, device: torch.device, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Per clip (C, 3 + K) face and voice prediction vectors (float64): the face side averaged
    over the clip's frames and their mirror images, the voice side from the whole utterance."""
    model.eval()
    frames = []
    for i in range(0, len(data.faces), batch):
        x = data.faces[i : i + batch].float().to(device) / 255.0
        frames.append(0.5 * (model.face(x) + model.face(x.flip(-1))))
    per_frame = _representation(torch.cat(frames), k)
    off = data.face_offsets
    face = torch.stack([per_frame[off[c] : off[c + 1]].mean(0) for c in range(len(data))])
    voice = torch.cat(
        [
            model.voice(
                data.voices[data.voice_offsets[c] : data.voice_offsets[c + 1]]
                .float()
                .T[None]
                .to(device)
            )
            for c in range(len(data))
        ]
    )
    return (
        face.cpu().numpy().astype(np.float64),
        _representation(voice, k).cpu().numpy().astype(np.float64),
    )


Predictions = tuple[np.ndarray, np.ndarray]  # (C, 3 + K) face and voice prediction vectors


def cross_fit(
    train_data: PairData,
    targets: Targets,
    test_data: PairData,
    cfg: CeilingConfig,
    device: torch.device,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> tuple[Predictions, Predictions, list[dict[str, float]]]:
    """Predictions of the training clips (out-of-fold with ``cfg.folds`` >= 2) and of the test
    clips (the mean of the fold networks'), and the training history (``fold`` per row).

    Training identities go to folds in a random order drawn from the training seed; fold i's
    network trains with seed ``seed + i``."""
    k = len(targets.nationalities)
    if cfg.folds < 2:
        model, rows = train_ceiling(train_data, targets, cfg, device, progress)
        return predict(model, train_data, k, device), predict(model, test_data, k, device), rows
    n_ids = len(train_data.identities)
    if n_ids < cfg.folds:
        raise ValueError(f"{n_ids} training identities for {cfg.folds} cross-fitting folds")
    order = np.random.default_rng(cfg.train.seed).permutation(n_ids)
    fold_of = np.empty(n_ids, dtype=np.int64)
    fold_of[order] = np.arange(n_ids) % cfg.folds
    fold = fold_of[train_data.identity.numpy()]
    width = targets.width
    oof = (np.zeros((len(train_data), width)), np.zeros((len(train_data), width)))
    test = (np.zeros((len(test_data), width)), np.zeros((len(test_data), width)))
    history: list[dict[str, float]] = []
    for i in range(cfg.folds):
        fit, held = np.flatnonzero(fold != i), np.flatnonzero(fold == i)
        rows_fit = torch.from_numpy(fit)
        sub = select_clips(train_data, rows_fit)
        sub_targets = replace(
            targets,
            gender=targets.gender[rows_fit],
            nationality=targets.nationality[rows_fit],
            age=targets.age[rows_fit],
            build=targets.build[rows_fit],
        )
        fold_cfg = replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + i))
        model, rows = train_ceiling(sub, sub_targets, fold_cfg, device, progress)
        history += [{**row, "fold": float(i + 1)} for row in rows]
        face, voice = predict(model, select_clips(train_data, torch.from_numpy(held)), k, device)
        oof[0][held], oof[1][held] = face, voice
        face, voice = predict(model, test_data, k, device)
        test[0][:] += face / cfg.folds
        test[1][:] += voice / cfg.folds
    return oof, test, history


def fit_map(voice_train: np.ndarray, face_train: np.ndarray, ridge: float) -> Oracle:
    """The oracle's voice-to-face ridge map, fitted on training clips' prediction vectors."""
    return fit_oracle(voice_train, face_train, ridge)


def head_scores(pred: np.ndarray, attrs: pd.DataFrame, targets: Targets) -> dict[str, Any]:
    """The heads' own figures on clips ``attrs`` (rows of ``pred``): gender and nationality
    accuracy (with the majority-class chance), age and build R²."""
    k = len(targets.nationalities)
    out: dict[str, Any] = {}
    g = attrs["gender"].to_numpy(dtype=object)
    known = np.array([isinstance(v, str) for v in g])
    if known.any():
        guess = np.where(pred[known, 0] > 0, "m", "f")
        counts = pd.Series(g[known]).value_counts()
        out["gender"] = {
            "accuracy": round(float(np.mean(guess == g[known])), 4),
            "chance": round(float(counts.iloc[0] / known.sum()), 4),
            "test_clips": int(known.sum()),
        }
    nat = attrs["nationality"].to_numpy(dtype=object)
    known = np.array([isinstance(v, str) for v in nat])
    if known.any() and k:
        guess = np.array(targets.nationalities)[np.argmax(pred[known, 1 : 1 + k], axis=1)]
        counts = pd.Series(nat[known]).value_counts()
        out["nationality"] = {
            "accuracy": round(float(np.mean(guess == nat[known])), 4),
            "chance": round(float(counts.iloc[0] / known.sum()), 4),
            "test_clips": int(known.sum()),
        }
    for col, j, mean, std in (
        ("age_years", 1 + k, targets.age_mean, targets.age_std),
        ("build", 2 + k, targets.build_mean, targets.build_std),
    ):
        y = attrs[col].to_numpy(dtype=np.float64)
        known = ~np.isnan(y)
        if known.sum() >= 2:
            r2 = r2_score(y[known], pred[known, j] * std + mean)
            if np.isfinite(r2):
                out[col] = {"r2": round(r2, 4), "chance": 0.0, "test_clips": int(known.sum())}
    return out


@dataclass(frozen=True)
class CeilingResult:
    embeddings: Embeddings  # of the evaluated clips
    attributes: dict[str, Any]  # heads' and probes' figures on test_unseen
    history: list[dict[str, float]]
    train_clips: int


def run_ceiling(
    train_data: PairData,
    train_attrs: pd.DataFrame,
    test_data: PairData,
    test_attrs: pd.DataFrame,
    test_split: np.ndarray,
    cfg: CeilingConfig,
    device: torch.device,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> CeilingResult:
    """Train on ``train_data``, embed ``test_data`` (whose clips' splits are ``test_split``) and
    measure the attribute figures on its ``test_unseen`` clips.

    ``*_attrs``: attribute rows aligned with the data's clips.
    """
    targets = make_targets(train_attrs)
    (face_tr, voice_tr), (face_te, voice_te), history = cross_fit(
        train_data, targets, test_data, cfg, device, progress
    )
    mapping = fit_map(voice_tr, face_tr, cfg.ridge)
    emb = Embeddings(
        list(test_data.clip_keys),
        mapping.embed_face(face_te).astype(np.float32),
        mapping.embed_voice(voice_te).astype(np.float32),
    )
    unseen = np.asarray(test_split) == "test_unseen"
    attrs_u = test_attrs[unseen]
    attributes = {
        "split": "test_unseen",
        "heads": {
            "face": head_scores(face_te[unseen], attrs_u, targets),
            "voice": head_scores(voice_te[unseen], attrs_u, targets),
        },
        "probes": embedding_probes(
            face_tr,
            voice_tr,
            train_attrs,
            face_te[unseen],
            voice_te[unseen],
            attrs_u,
            cfg.probe_l2,
        ),
    }
    return CeilingResult(emb, attributes, history, len(train_data))
