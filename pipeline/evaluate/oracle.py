"""The oracle: a voice-face scorer that reads the corpus's ground-truth rendering parameters.

It is the ceiling a learned method is compared with on the synthetic corpus (the ``oracle`` stage
scores it on the stored trials, :func:`pipeline.evaluate.scoring.oracle_embeddings`). Both sides are
z-scored with training statistics; a ridge-regression map, fitted on training identities, predicts
the face parameters from the voice parameters; a voice and a face score the cosine between the
predicted and the actual face parameters. Nothing here is read by any training stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.synth.people import FACE_PARAM_COLUMNS, VOICE_PARAM_COLUMNS


def _unit(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)
    return out


@dataclass(frozen=True)
class Oracle:
    """A fitted linear voice-to-face map on z-scored parameters."""

    voice_mean: np.ndarray  # (Dv,)
    voice_std: np.ndarray  # (Dv,)
    face_mean: np.ndarray  # (Df,)
    face_std: np.ndarray  # (Df,)
    weights: np.ndarray  # (Dv, Df)

    def embed_voice(self, voice: np.ndarray) -> np.ndarray:
        """(N, Dv) voice parameters -> (N, Df) unit vectors in the face-parameter space."""
        return _unit((voice - self.voice_mean) / self.voice_std @ self.weights)

    def embed_face(self, face: np.ndarray) -> np.ndarray:
        """(N, Df) face parameters -> (N, Df) unit vectors."""
        return _unit((face - self.face_mean) / self.face_std)


def fit_oracle(voice: np.ndarray, face: np.ndarray, ridge: float = 1.0) -> Oracle:
    """Fit the map on paired (N, Dv) voice and (N, Df) face parameters of training clips."""
    if voice.shape[0] != face.shape[0] or voice.shape[0] < 2:
        raise ValueError(
            f"need >= 2 paired rows, got {voice.shape[0]} voices, {face.shape[0]} faces"
        )
    vm, vs = voice.mean(0), voice.std(0).clip(1e-9)
    fm, fs = face.mean(0), face.std(0).clip(1e-9)
    x = (voice - vm) / vs
    y = (face - fm) / fs
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    return Oracle(vm, vs, fm, fs, w)


def clip_parameters(identities: pd.DataFrame, clips: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: (voice, face) ground-truth parameter matrices, rows in ``clips`` order.

    The voice side carries the utterance's own pitch offset (``f0_factor``).
    """
    merged = clips[["identity", "f0_factor"]].merge(identities, on="identity", how="left")
    if merged[list(VOICE_PARAM_COLUMNS)].isna().any().any():
        raise ValueError("clips reference identities missing from the ground truth")
    voice = merged[list(VOICE_PARAM_COLUMNS)].to_numpy(dtype=np.float64).copy()
    voice[:, VOICE_PARAM_COLUMNS.index("f0_log2")] += np.log2(merged["f0_factor"].to_numpy())
    face = merged[list(FACE_PARAM_COLUMNS)].to_numpy(dtype=np.float64)
    return voice, face


def main(argv: list[str] | None = None) -> None:
    """Print the oracle stage's 1:2 matching accuracy on the unseen test identities, read from
    its metrics file (the report's trials and metric functions; run ``dvc repro`` first)."""
    import argparse
    import json
    import sys
    from pathlib import Path

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--metrics", type=Path, default=Path("reports/metrics/oracle.json"))
    ap.add_argument("--trials-summary", type=Path, default=Path("reports/trials.json"))
    args = ap.parse_args(argv)
    for f in (args.metrics, args.trials_summary):
        if not f.is_file():
            print(f"{f}: not found; run `dvc repro` first", file=sys.stderr)
            raise SystemExit(2)
    m = json.loads(args.metrics.read_text())
    if m.get("available", True) is False:
        print(json.dumps({"available": False, "reason": m.get("reason", "")}, indent=2))
        return
    split = "test_unseen"
    out: dict[str, object] = {
        f"oracle_1to2_{d}_{c}": m.get("match_1to2", {}).get(d, {}).get(c, {}).get(split)
        for d in ("v2f", "f2v")
        for c in ("U", "G")
    }
    summary = json.loads(args.trials_summary.read_text())
    out["test_identities"] = summary["splits"][split]["identities"]
    out["trials_per_direction_and_constraint"] = summary["n_match"]
    out["source"] = str(args.metrics)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
