"""A faiss index of exported embeddings: exact inner product on L2-normalised vectors (cosine, the
evaluation's score), one index per modality, the clip names and the model beside them.

A query searches the other modality: a voice finds faces, a face finds voices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_dir
from pipeline.tool.embed import MODALITIES, ToolError, matrix

INDEX_VERSION = 1


def _normalised(x: np.ndarray) -> np.ndarray:
    import faiss

    out = np.ascontiguousarray(x, dtype=np.float32).copy()
    faiss.normalize_L2(out)
    return out


def build(frame: pd.DataFrame, out: Path) -> dict[str, int]:
    """Write the index folder ``out`` (replaced whole, atomically): ``<modality>.faiss`` and
    ``index.json`` (clip names per modality, the model). Returns the rows per modality."""
    import faiss

    if frame.empty:
        raise ToolError("no embeddings to index")
    models = frame[["model", "method", "model_sha256"]].drop_duplicates()
    if len(models) > 1:
        raise ToolError(f"embeddings of {len(models)} different models: index one model's")
    meta: dict[str, Any] = {"version": INDEX_VERSION, **models.iloc[0].to_dict(), "clips": {}}
    counts = {}
    with atomic_dir(out) as tmp:
        for modality in MODALITIES:
            clips, x = matrix(frame, modality)
            if not clips:
                continue
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(_normalised(x))
            faiss.write_index(index, str(tmp / f"{modality}.faiss"))
            meta["clips"][modality] = clips
            counts[modality] = len(clips)
        (tmp / "index.json").write_text(json.dumps(meta, indent=1) + "\n")
    return counts


@dataclass(frozen=True)
class Hit:
    clip: str
    score: float


def query(folder: Path, vector: np.ndarray, modality: str, sha256: str, k: int) -> list[Hit]:
    """The ``k`` clips of the other modality nearest to ``vector`` (of ``modality``), best
    first; ToolError when the index is of another model than ``sha256``'s."""
    import faiss

    try:
        meta = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError) as e:
        raise ToolError(f"{folder}: not an index folder (no readable index.json)") from e
    if meta.get("version") != INDEX_VERSION:
        raise ToolError(f"{folder}: index version {meta.get('version')!r}, not {INDEX_VERSION}")
    if meta["model_sha256"] != sha256:
        raise ToolError(
            f"{folder}: built from embeddings of {meta['model']} (sha256 "
            f"{meta['model_sha256'][:12]}), the query's model differs ({sha256[:12]})"
        )
    target = "face" if modality == "voice" else "voice"
    if target not in meta["clips"]:
        raise ToolError(f"{folder}: holds no {target} embeddings to search with a {modality}")
    index = faiss.read_index(str(folder / f"{target}.faiss"))
    scores, rows = index.search(_normalised(vector[None]), min(k, index.ntotal))
    clips = meta["clips"][target]
    return [Hit(clips[r], float(s)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]
