"""Linear attribute probes on the raw inputs: how much of each latent attribute a linear read-out
of the media themselves carries (a sanity check for the media ceiling, ``stages/ceiling.py``).

Face: the clip's crops (``train.face_size_px``) average-pooled to ``--face-px`` and averaged over
frames; voice: the per-bin mean and standard deviation of the clip's log-mel features. Probes
(:func:`pipeline.evaluate.probes.embedding_probes`) are fitted on the training clips and scored on
the
unseen-unheard test clips. Example::

    python -m benchmarks.raw_probes --manifest data/manifest/clips.parquet --faces data/faces \\
        --voice data/voice --corpus data/synth
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from pipeline.evaluate.attributes import clip_attributes
from pipeline.evaluate.probes import embedding_probes
from pipeline.params import load_params
from pipeline.train.pairs import PairData, load_pairs


def raw_features(data: PairData, face_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, 3 * face_px²) pooled face pixels and (C, 2 * n_mels) voice statistics."""
    frames = torch.nn.functional.adaptive_avg_pool2d(data.faces.float() / 255.0, face_px)
    off = data.face_offsets
    face = torch.stack([frames[off[c] : off[c + 1]].mean(0).flatten() for c in range(len(data))])
    vo = data.voice_offsets
    voice = torch.stack(
        [
            torch.cat([x.mean(0), x.std(0)])
            for x in (data.voices[vo[c] : vo[c + 1]].float() for c in range(len(data)))
        ]
    )
    return face.numpy().astype(np.float64), voice.numpy().astype(np.float64)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", type=Path, default=Path("data/manifest/clips.parquet"))
    ap.add_argument("--faces", type=Path, default=Path("data/faces"))
    ap.add_argument("--voice", type=Path, default=Path("data/voice"))
    ap.add_argument("--corpus", type=Path, default=Path("data/synth"))
    ap.add_argument("--face-px", type=int, default=16)
    ap.add_argument("--l2", type=float, default=1.0)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    size = params.train.face_size_px
    attrs = clip_attributes(args.manifest, params.data.layout, args.corpus)
    train = load_pairs(args.manifest, args.faces, args.voice, ("train",), size)
    test = load_pairs(args.manifest, args.faces, args.voice, ("test_unseen",), size)
    ftr, vtr = raw_features(train, args.face_px)
    fte, vte = raw_features(test, args.face_px)
    res = embedding_probes(
        ftr, vtr, attrs.loc[train.clip_keys], fte, vte, attrs.loc[test.clip_keys], args.l2
    )
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
