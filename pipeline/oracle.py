"""The oracle: a voice-face scorer that reads the corpus's ground-truth rendering parameters.

It is the ceiling a learned method is compared with on the synthetic corpus. Both sides are
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


def matching_trials(
    identity: np.ndarray,
    gender: np.ndarray,
    n_trials: int,
    constraint: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """1:2 trials over clips: (n_trials, 3) indices (probe, true candidate, impostor).

    The true candidate is another clip of the probe's identity (the probe's own clip when it has
    no other); ``constraint`` ``"U"`` draws any other identity as impostor, ``"G"`` one of the
    probe's gender.
    """
    if constraint not in ("U", "G"):
        raise ValueError(f"unknown constraint {constraint!r}; expected 'U' or 'G'")
    by_id: dict[str, np.ndarray] = {k: np.flatnonzero(identity == k) for k in np.unique(identity)}
    ids = np.array(sorted(by_id))
    id_gender = {k: gender[by_id[k][0]] for k in ids}
    out = np.empty((n_trials, 3), dtype=np.int64)
    for t in range(n_trials):
        probe = int(rng.integers(len(identity)))
        me = identity[probe]
        own = by_id[me]
        others = own[own != probe]
        true = int(rng.choice(others)) if len(others) else probe
        pool = [k for k in ids if k != me and (constraint == "U" or id_gender[k] == id_gender[me])]
        if not pool:
            raise ValueError(f"identity {me} has no impostor under constraint {constraint}")
        imp_id = pool[int(rng.integers(len(pool)))]
        out[t] = (probe, true, int(rng.choice(by_id[imp_id])))
    return out


def matching_accuracy(voice_emb: np.ndarray, face_emb: np.ndarray, trials: np.ndarray) -> float:
    """V->F 1:2 accuracy: a voice probe is right when its own face outscores the impostor's."""
    probe = voice_emb[trials[:, 0]]
    s_true = np.einsum("nd,nd->n", probe, face_emb[trials[:, 1]])
    s_imp = np.einsum("nd,nd->n", probe, face_emb[trials[:, 2]])
    return float(np.mean(s_true > s_imp) + 0.5 * np.mean(s_true == s_imp))


def evaluate_oracle(
    identities: pd.DataFrame,
    clips: pd.DataFrame,
    train_ids: set[str],
    test_ids: set[str],
    n_trials: int = 20000,
    seed: int = 0,
) -> dict[str, float]:
    """Fit on ``train_ids``' clips, score 1:2 V->F matching (U and G) on ``test_ids``' clips."""
    voice, face = clip_parameters(identities, clips)
    is_train = clips["identity"].isin(train_ids).to_numpy()
    is_test = clips["identity"].isin(test_ids).to_numpy()
    oracle = fit_oracle(voice[is_train], face[is_train])
    ve = oracle.embed_voice(voice[is_test])
    fe = oracle.embed_face(face[is_test])
    test = clips[is_test].merge(identities[["identity", "gender"]], on="identity", how="left")
    ident = test["identity"].to_numpy()
    gender = test["gender"].to_numpy()
    rng = np.random.default_rng(seed)
    return {
        c: matching_accuracy(ve, fe, matching_trials(ident, gender, n_trials, c, rng))
        for c in ("U", "G")
    }


def main(argv: list[str] | None = None) -> None:
    """Print the oracle's 1:2 V->F accuracy (U and G) on the manifest's unseen test identities."""
    import argparse
    import json
    from pathlib import Path

    from pipeline.schema import MANIFEST, SYNTH_CLIPS, SYNTH_IDENTITIES, read_table

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--corpus", type=Path, default=Path("data/synth"))
    ap.add_argument("--manifest", type=Path, default=Path("data/manifest/clips.parquet"))
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    identities = read_table(args.corpus / "ground_truth" / "identities.parquet", SYNTH_IDENTITIES)
    clips = read_table(args.corpus / "ground_truth" / "clips.parquet", SYNTH_CLIPS)
    manifest = read_table(args.manifest, MANIFEST)
    splits = dict(
        zip(
            manifest["identity"],
            manifest["split"].where(manifest["split"] != "test_seen", "train"),
            strict=False,
        )
    )
    train = {k for k, v in splits.items() if v == "train"}
    test = {k for k, v in splits.items() if v == "test_unseen"}
    acc = evaluate_oracle(identities, clips, train, test, args.trials, args.seed)
    print(
        json.dumps(
            {
                "oracle_1to2_v2f_U": round(acc["U"], 4),
                "oracle_1to2_v2f_G": round(acc["G"], 4),
                "train_identities": len(train),
                "test_identities": len(test),
                "trials": args.trials,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
