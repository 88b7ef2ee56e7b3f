"""Scoring embeddings on the stored trial lists: every method (and the oracle) on identical trials.

Embeddings (as in Nagrani et al. 2018 and Wen et al. 2021): a voice is embedded from its whole
VAD-cleaned utterance; a face is the
mean over the clip's sampled frames, each averaged with its horizontal flip
(:func:`pipeline.train.loop.embed_clips`). Score = cosine similarity.

:func:`score` turns one set of embeddings and the TRIALS table into the metrics file's nested
``protocol → direction → constraint → split`` values, the plot tables (1:N curve, ROC) and a few
ranked retrievals for the report. The oracle (synthetic corpus only) embeds the ground-truth
rendering parameters (:func:`oracle_embeddings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from pipeline.evaluate import metrics
from pipeline.evaluate.oracle import clip_parameters, fit_oracle
from pipeline.evaluate.trials import TrialSpec, generate_trials
from pipeline.schema import (
    FACE_FRAMES,
    MANIFEST,
    OUTCOMES,
    SYNTH_CLIPS,
    SYNTH_IDENTITIES,
    VOICE_FEATURES,
    read_table,
)
from pipeline.train.loop import Encoders, embed_clips
from pipeline.train.stream import open_pairs

if TYPE_CHECKING:
    from pipeline.params import TrainParams

EVAL_SPLITS = ("test_unseen", "test_seen")
CHANCE = {"match_1to2": 0.5, "match_1to10": 0.1, "verify_auc": 0.5, "verify_eer": 0.5}


@dataclass(frozen=True)
class Embeddings:
    """Per clip (rows in ``clip_keys`` order): L2-normalised face and voice embeddings."""

    clip_keys: list[str]
    face: np.ndarray  # (C, d) float32
    voice: np.ndarray  # (C, d) float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {k: i for i, k in enumerate(self.clip_keys)})

    def rows(self, keys: list[str] | pd.Series) -> np.ndarray:
        """Row indices of clip keys (ValueError for a clip without embeddings)."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        try:
            return np.array([index[k] for k in keys], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"trial clip {e.args[0]!r} has no embedding") from e


def _shard_keys(folder: Path, prefix: str, spec: Any) -> set[str]:
    files = sorted(folder.glob(f"{prefix}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no {prefix}-*.parquet shards")
    keys: set[str] = set()
    for f in files:
        keys |= set(read_table(f, spec)["clip_key"])
    return keys


def evaluable_clips(
    manifest: Path, faces_dir: Path, voice_dir: Path, splits: tuple[str, ...] = EVAL_SPLITS
) -> pd.DataFrame:
    """Manifest rows of ``splits`` whose clip has both face crops and voice features."""
    m = read_table(manifest, MANIFEST)
    keys = _shard_keys(faces_dir, "faces", FACE_FRAMES) & _shard_keys(
        voice_dir, "voice", VOICE_FEATURES
    )
    out = m[m["split"].isin(splits) & m["clip_key"].isin(keys)]
    return out.reset_index(drop=True)


def model_embeddings(
    encoders: Encoders,
    manifest: Path,
    faces_dir: Path,
    voice_dir: Path,
    train: TrainParams,
    device: torch.device,
    splits: tuple[str, ...] = EVAL_SPLITS,
) -> Embeddings:
    """Every clip of ``splits`` embedded by ``encoders``, its data read as ``train.loader`` says
    (in memory, or shard by shard)."""
    data = open_pairs(manifest, faces_dir, voice_dir, splits, train)
    f, v = embed_clips(encoders, data, device)
    return Embeddings(
        list(data.clip_keys), f.numpy().astype(np.float32), v.numpy().astype(np.float32)
    )


def oracle_embeddings(
    corpus: Path, manifest: Path, clip_keys: list[str], ridge: float = 1.0
) -> Embeddings:
    """The oracle's embeddings of ``clip_keys``: a ridge map (L2 penalty ``ridge``, the
    ``oracle.ridge`` param) from voice to face ground-truth parameters fitted on the training
    split's clips (never on test clips)."""
    ident = read_table(corpus / "ground_truth" / "identities.parquet", SYNTH_IDENTITIES)
    clips = read_table(corpus / "ground_truth" / "clips.parquet", SYNTH_CLIPS)
    m = read_table(manifest, MANIFEST)
    by_path = clips.set_index("path")
    missing = sorted(set(m["media_path"]) - set(by_path.index))
    if missing:
        raise ValueError(f"{corpus}: no ground truth for {len(missing)} clips, e.g. {missing[0]}")
    m = m.assign(**{"row": by_path.index.get_indexer(m["media_path"])})
    voice, face = clip_parameters(ident, clips)
    train_rows = m.loc[m["split"] == "train", "row"].to_numpy()
    oracle = fit_oracle(voice[train_rows], face[train_rows], ridge)
    rows = m.set_index("clip_key").loc[clip_keys, "row"].to_numpy()
    return Embeddings(
        list(clip_keys),
        oracle.embed_face(face[rows]).astype(np.float32),
        oracle.embed_voice(voice[rows]).astype(np.float32),
    )


def _nest(out: dict[str, Any], keys: tuple[str, ...], value: float) -> None:
    for k in keys[:-1]:
        out = out.setdefault(k, {})
    out[keys[-1]] = round(float(value), 4)


def _sides(emb: Embeddings, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(probe, candidate) embedding matrices of a direction."""
    return (emb.voice, emb.face) if direction == "v2f" else (emb.face, emb.voice)


def _match_index(emb: Embeddings, g: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """Embedding rows of match trials: the probes (T,) and each trial's candidates."""
    return emb.rows(g["probe"]), [emb.rows(list(c)) for c in g["candidates"]]


def _credit_1to2(
    emb: Embeddings, direction: str, probes: np.ndarray, cands: list[np.ndarray]
) -> np.ndarray:
    """Per match trial, the 1:2 credit on its first two candidates
    (:mod:`pipeline.evaluate.metrics`)."""
    probe_emb, cand_emb = _sides(emb, direction)
    pairs = np.array([[p, c[0], c[1]] for p, c in zip(probes, cands, strict=True)])
    credit: np.ndarray = metrics.matching_credit(probe_emb, cand_emb, pairs)[:, 0]
    return credit


def match_accuracy(
    emb: Embeddings, trials: pd.DataFrame, split: str, constraint: str, direction: str = "v2f"
) -> float | None:
    """1:2 accuracy of the TRIALS table's match trials of (split, constraint, direction): what
    :func:`score` reports as ``match_1to2``; None when the table has no such trial."""
    g = trials[
        (trials["protocol"] == "match")
        & (trials["split"] == split)
        & (trials["constraint"] == constraint)
        & (trials["direction"] == direction)
    ]
    if not len(g):
        return None
    probes, cands = _match_index(emb, g)
    return float(_credit_1to2(emb, direction, probes, cands).mean())


def quick_match(
    emb: Embeddings,
    clips: pd.DataFrame,
    split: str,
    n_match: int,
    seed: int,
    constraints: tuple[str, ...] = ("U", "G"),
    direction: str = "v2f",
) -> dict[str, float | None]:
    """1:2 accuracy per constraint on trials drawn by
    :func:`pipeline.evaluate.trials.generate_trials` (``n_match`` trials of two candidates, from
    ``seed``) over ``split``'s clips that have embeddings. ``clips``: manifest-like rows (the trial
    generator's columns). A constraint the split cannot make trials for (e.g. one person of some
    gender under ``G``, or a split of fewer than two identities) is None."""
    part = clips[(clips["split"] == split) & clips["clip_key"].isin(emb.clip_keys)]
    if part["identity"].nunique() < 2:
        return dict.fromkeys(constraints)
    trials, _ = generate_trials(part, TrialSpec(n_match, 2, seed, candidates=2), (split,))
    return {c: match_accuracy(emb, trials, split, c, direction) for c in constraints}


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, Any]  # the nested metrics-file content
    match_curve: pd.DataFrame  # n, v2f, f2v (test_unseen, U)
    roc: pd.DataFrame  # fpr, tpr (test_unseen, U)
    ranked: list[dict[str, Any]]
    outcomes: pd.DataFrame  # per match / verify trial (schema.OUTCOMES): for the bootstrap


def score(
    emb: Embeddings, trials: pd.DataFrame, identity: dict[str, str], n_ranked: int = 6
) -> Scores:
    """Every protocol of the TRIALS table on these embeddings.

    ``identity``: clip_key -> identity (for retrieval relevance and the ranked examples).
    1:2 accuracy uses every match trial's first two candidates; the 1:N curve uses the trials
    that have all K candidates (N = 2..K; K < 10 only when a split has fewer than 10
    identities), and ``match_1to10`` is its value at N = 10 when K >= 10.
    """
    out: dict[str, Any] = {}
    curve: dict[str, np.ndarray] = {}
    roc = pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})
    gallery: dict[str, Any] = {}
    chance_map: dict[str, float] = {}
    ranked: list[dict[str, Any]] = []
    counts = {"match": 0, "verify": 0}
    parts: list[pd.DataFrame] = []

    def keep(g: pd.DataFrame, value: np.ndarray, label: Any = None) -> None:
        parts.append(
            pd.DataFrame(
                {
                    "split": g["split"].to_numpy(),
                    "protocol": g["protocol"].to_numpy(),
                    "constraint": g["constraint"].to_numpy(),
                    "direction": g["direction"].to_numpy(),
                    "trial": g["trial"].to_numpy(),
                    "identity": [identity[k] for k in g["probe"]],
                    "value": value.astype(np.float64),
                    "label": label if label is not None else pd.array([None] * len(g), "boolean"),
                }
            )
        )

    for (split, protocol, constraint, direction), g in trials.groupby(
        ["split", "protocol", "constraint", "direction"], sort=True
    ):
        if protocol == "match":
            probe_emb, cand_emb = _sides(emb, direction)
            probes, cands = _match_index(emb, g)
            credit2 = _credit_1to2(emb, direction, probes, cands)
            _nest(out, ("match_1to2", direction, constraint, split), credit2.mean())
            keep(g, credit2)
            k = max(len(c) for c in cands)
            full = np.array([[p, *c] for p, c in zip(probes, cands, strict=True) if len(c) == k])
            if len(full):
                acc = metrics.matching_curve(probe_emb, cand_emb, full)  # N = 2..K
                if k >= 10:
                    _nest(out, ("match_1to10", direction, constraint, split), acc[8])
                if split == "test_unseen" and constraint == "U":
                    curve[direction] = acc  # up to N = K when a split has < 10 identities
            counts["match"] += len(g)
        elif protocol == "verify":
            v = emb.voice[emb.rows(g["probe"])]
            f = emb.face[emb.rows([c[0] for c in g["candidates"]])]
            s = np.einsum("nd,nd->n", v, f)
            y = g["label"].to_numpy(dtype=bool)
            keep(g, s, y)
            _nest(out, ("verify_auc", "vf", constraint, split), metrics.roc_auc(s, y))
            _nest(out, ("verify_eer", "vf", constraint, split), metrics.equal_error_rate(s, y))
            if split == "test_unseen" and constraint == "U":
                fpr, tpr = metrics.roc_curve(s, y)
                roc = pd.DataFrame({"fpr": fpr.round(5), "tpr": tpr.round(5)})
            counts["verify"] += len(g)
        elif protocol == "retrieve":
            rows = emb.rows(g["probe"])
            labels = np.array([identity[k] for k in g["probe"]])
            for d in ("v2f", "f2v"):
                probe_emb, cand_emb = _sides(emb, d)
                value = metrics.retrieval_map(probe_emb[rows], labels, cand_emb[rows], labels)
                _nest(out, ("retrieve_map", d, "U", split), value)
            gallery[split] = {"clips": len(rows), "identities": len(set(labels))}
            chance_map[split] = round(metrics.expected_random_map(labels, labels), 4)
            if split == "test_unseen":
                ranked = _ranked(emb, g["probe"].tolist(), identity, n_ranked)
    out["chance"] = {**CHANCE, "retrieve_map": chance_map}
    out["retrieve_gallery"] = gallery
    out["trials"] = counts
    n = min((len(c) for c in curve.values()), default=0)
    table = pd.DataFrame({"n": np.arange(2, 2 + n)})
    for d in ("v2f", "f2v"):
        table[d] = curve[d][:n].round(4) if d in curve else np.full(n, np.nan)
    columns = [f.name for f in OUTCOMES.schema]
    outcomes = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return Scores(out, table, roc, ranked, outcomes)


def _ranked(
    emb: Embeddings, keys: list[str], identity: dict[str, str], n: int, top: int = 5
) -> list[dict[str, Any]]:
    """The first voice clip of ``n`` evenly spaced identities, ranked against every face."""
    ids = sorted({identity[k] for k in keys})
    chosen = [ids[i] for i in np.linspace(0, len(ids) - 1, min(n, len(ids))).round().astype(int)]
    rows = emb.rows(keys)
    out = []
    for who in dict.fromkeys(chosen):
        probe = next(k for k in keys if identity[k] == who)
        s = emb.face[rows] @ emb.voice[emb.rows([probe])[0]]
        best = np.argsort(-s, kind="stable")[:top]
        out.append(
            {
                "probe": probe,
                "identity": who,
                "ranked": [
                    {
                        "clip_key": keys[j],
                        "identity": identity[keys[j]],
                        "score": round(float(s[j]), 4),
                        "true": identity[keys[j]] == who,
                    }
                    for j in best
                ],
            }
        )
    return out


def oracle_fraction(values: dict[str, Any], oracle: dict[str, Any]) -> dict[str, Any]:
    """Each metric as a fraction of the oracle's margin over chance: (m − c) / (o − c), for the
    metrics the oracle has (EER: lower is better, the same formula holds)."""
    out: dict[str, Any] = {}
    for protocol in ("match_1to2", "match_1to10", "verify_auc", "verify_eer", "retrieve_map"):
        if protocol in values and protocol in oracle:
            chance = values["chance"][protocol]
            for direction, by_c in values[protocol].items():
                for constraint, by_s in by_c.items():
                    for split, v in by_s.items():
                        o = oracle[protocol].get(direction, {}).get(constraint, {}).get(split)
                        c = chance[split] if isinstance(chance, dict) else chance
                        f = metrics.margin_fraction(v, o, c)
                        if f is not None:
                            _nest(out, (protocol, direction, constraint, split), f)
    return out
