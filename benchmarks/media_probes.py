"""How much of the shared attributes the raw media carry: linear probes on face crops and voices.

Run after the ``synth``, ``manifest``, ``faces`` and ``voice`` stages::

    python -m benchmarks.media_probes

For every clip it builds raw-input features:

- face crops (the ``faces`` stage's JPEGs) downsampled to 16x16 and 32x32 pixels, grey and RGB,
  averaged over the clip's frames;
- voice: the log-mel filterbank (the ``voice`` params' front end, *without* the per-utterance
  normalisation the stage applies) of the clip's speech segments, mean and std per bin;
- for reference, the ground-truth face and voice rendering parameters (what the oracle reads).

Each representation is standardised with training statistics and probed linearly: L2 logistic
regression (torch LBFGS) for gender and nationality, ridge regression for age and build, the
regularisation picked by 5-fold cross-validation over training identities. Probes are trained on
the manifest's ``train`` clips and scored on ``test_unseen`` clips (identities never seen).
Finally, 1:2 V->F matching on unseen identities (U: any impostor) with no learning of the pairing
at all: a voice is matched to the face whose *predicted attributes* (gender, nationality, age,
build, each predicted from that side's raw input) are closest to the voice's.

``--quick`` skips the video pipeline for the faces: it renders one frame per video straight from
:mod:`pipeline.synth` (mouth closed, the video's camera noise), runs MTCNN and crops it as the
``faces`` stage does. Seconds instead of minutes, for iterating on the renderer; the identities and
splits (and the voice features) come from the last full run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.evaluate.scoring import Embeddings, match_accuracy
from pipeline.evaluate.trials import TrialSpec, generate_trials
from pipeline.preprocess.jpeg import decode_jpeg
from pipeline.schema import FACE_FRAMES, MANIFEST, SYNTH_IDENTITIES, VOICE_FEATURES, read_table
from pipeline.synth.people import FACE_PARAM_COLUMNS, NATIONALITIES, VOICE_PARAM_COLUMNS

LOGREG_GRID = (3e-3, 1e-2, 3e-2, 1e-1, 1.0)
RIDGE_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)  # x n_train


# ---------------------------------------------------------------- features


def _read_shards(folder: Path, prefix: str, spec: object) -> pd.DataFrame:
    files = sorted(folder.glob(f"{prefix}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no {prefix}-*.parquet shards")
    return pd.concat([read_table(f, spec) for f in files], ignore_index=True)  # type: ignore[arg-type]


def crop_features(crops: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Mean over a clip's crops of the 16x16 / 32x32 grey and RGB pixels (area downsampling)."""
    out: dict[str, list[np.ndarray]] = {}
    for img in crops:
        pil = Image.fromarray(img)
        for s in (16, 32):
            small = np.asarray(pil.resize((s, s), Image.Resampling.BOX), dtype=np.float32) / 255
            out.setdefault(f"face{s}_rgb", []).append(small.reshape(-1))
            out.setdefault(f"face{s}_grey", []).append(small.mean(-1).reshape(-1))
    return {k: np.mean(v, axis=0) for k, v in out.items()}


def face_features(faces_dir: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """Per clip of ``keys`` (rows in that order): features of the face stage's crops."""
    faces = _read_shards(faces_dir, "faces", FACE_FRAMES)
    faces = faces[faces["clip_key"].isin(keys)]
    by_clip = {k: g["crop_jpeg"].tolist() for k, g in faces.groupby("clip_key")}
    rows = [crop_features([decode_jpeg(b) for b in by_clip[k]]) for k in keys]
    return {name: np.stack([r[name] for r in rows]) for name in rows[0]}


def voice_features(voice_dir: Path, root: Path, manifest: pd.DataFrame) -> np.ndarray:
    """Per manifest row: mean and std per bin of the un-normalised log-mel of its speech."""
    from pipeline.params import load_params
    from pipeline.preprocess.filterbank import FeatureConfig, log_mel
    from pipeline.preprocess.media import read_audio

    p = load_params().voice
    cfg = FeatureConfig(p.front_end, p.n_mels, p.win_ms, p.hop_ms, normalize=False)
    sr = p.sample_rate_hz
    segs = _read_shards(voice_dir, "voice", VOICE_FEATURES).set_index("clip_key")
    rows = []
    for key, path in zip(manifest["clip_key"], manifest["media_path"], strict=True):
        audio = read_audio(root / path, sr)
        seg = segs.loc[key]
        speech = np.concatenate(
            [
                audio[int(a * sr) : int(b * sr)]
                for a, b in zip(seg["segment_start_s"], seg["segment_end_s"], strict=True)
            ]
        )
        mel = log_mel(speech, sr, cfg)
        rows.append(np.concatenate([mel.mean(0), mel.std(0)]))
    return np.stack(rows)


def quick_face_features(manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """Render one frame per video from the current renderer, detect, crop like the face stage."""
    from pipeline.params import load_params
    from pipeline.preprocess.detector import DetectorConfig, FaceDetector
    from pipeline.preprocess.face_tracks import crop_face
    from pipeline.synth.corpus import CANVAS_PAD, CorpusSpec, face_look, plan_corpus, scene_of
    from pipeline.synth.face import render_face
    from pipeline.synth.people import Calibration

    p = load_params()
    preset, cal = p.synth.active(), p.synth.calibration
    assert preset is not None, "synth.preset is 'none'"
    spec = CorpusSpec(
        preset.identities,
        preset.videos_per_identity,
        preset.utterances_per_video,
        preset.min_duration_s,
        preset.max_duration_s,
        p.synth.frame_size_px,
        p.synth.fps,
        p.synth.sample_rate_hz,
        p.base.seed,
        Calibration(cal.face_noise, cal.voice_noise, cal.gender_strength),
    )
    ids, videos, _ = plan_corpus(spec)
    by_id = ids.set_index("identity")
    det = FaceDetector(DetectorConfig.of(p.face))
    size = spec.frame_size_px
    t0 = time.perf_counter()
    frames = []
    for v in videos.itertuples(index=False):
        video = pd.Series(v._asdict())
        look = face_look(by_id.loc[video.identity])
        img = render_face(
            look, scene_of(video), 0.0, size=size + 2 * CANVAS_PAD, seed=int(video.render_seed)
        )
        img = img[CANVAS_PAD : CANVAS_PAD + size, CANVAS_PAD : CANVAS_PAD + size] * 255
        rng = np.random.default_rng(int(video.render_seed))
        img += rng.normal(0, float(video.camera_noise), img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    t_render = time.perf_counter() - t0
    dets = det.detect(np.stack(frames))
    n_faces = np.array([len(d.probs) for d in dets])
    print(
        f"quick: rendered {len(frames)} frames in {t_render:.1f} s; MTCNN one face in "
        f"{(n_faces == 1).mean():.3f}, none in {(n_faces == 0).mean():.3f}"
    )
    feats: dict[str, dict[str, np.ndarray]] = {}
    crops = {}
    for vid, frame, d in zip(videos["video_id"], frames, dets, strict=True):
        if len(d.probs) == 0:
            continue
        k = int(np.argmax((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])))
        crop = crop_face(frame, d.boxes[k], p.face.margin, p.face.crop_size_px)
        crops[vid] = crop
        feats[vid] = crop_features([crop])
    np.save("/tmp/quick_crops.npy", np.stack(list(crops.values())))
    names = list(next(iter(feats.values())))
    blank = {n: np.full_like(next(iter(feats.values()))[n], np.nan) for n in names}
    return {n: np.stack([feats.get(v, blank)[n] for v in manifest["video_id"]]) for n in names}


# ---------------------------------------------------------------- probes


def _standardise(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, s = xtr.mean(0), xtr.std(0) + 1e-6
    return (xtr - m) / s, (xte - m) / s


def logreg(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, lam: float, k: int) -> np.ndarray:
    """Multinomial L2 logistic regression (LBFGS); class probabilities of ``xte``."""
    x = torch.from_numpy(xtr).double()
    y = torch.from_numpy(ytr).long()
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=150, tolerance_grad=1e-5, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + lam * (w**2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        p = torch.softmax(torch.from_numpy(xte).double() @ w + b, dim=1)
    out: np.ndarray = p.numpy()
    return out


def ridge(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, lam: float) -> np.ndarray:
    """Ridge regression with an unpenalised intercept (dual form when features > samples)."""
    ym = ytr.mean()
    n, d = xtr.shape
    if d > n:
        alpha = np.linalg.solve(xtr @ xtr.T + lam * np.eye(n), ytr - ym)
        w = xtr.T @ alpha
    else:
        w = np.linalg.solve(xtr.T @ xtr + lam * np.eye(d), xtr.T @ (ytr - ym))
    out: np.ndarray = xte @ w + ym
    return out


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def _cv_pick(
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], float],
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    grid: tuple[float, ...],
) -> float:
    """The grid value with the best mean score over 5 identity-grouped folds (``x`` standardised
    on all training rows)."""
    ids = np.unique(groups)
    fold_of = dict(zip(ids, np.random.default_rng(0).permutation(len(ids)) % 5, strict=True))
    fold = np.array([fold_of[g] for g in groups])
    best, best_lam = -np.inf, grid[0]
    for lam in grid:
        s = []
        for f in range(5):
            tr, va = fold != f, fold == f
            s.append(score(y[va], fit(x[tr], y[tr], x[va], lam)))
        if np.mean(s) > best:
            best, best_lam = float(np.mean(s)), lam
    return best_lam


def probe(
    x: np.ndarray, targets: dict[str, np.ndarray], groups: np.ndarray, is_tr: np.ndarray
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Train on ``is_tr`` rows, score the rest: scores and test predictions per attribute."""
    xtr, xte = _standardise(x[is_tr], x[~is_tr])
    if xtr.shape[1] > xtr.shape[0]:
        # An L2-penalised linear model's weights lie in the span of its training rows: rotating
        # onto that span (SVD) gives the same fits and predictions with at most n features.
        _, sv, vt = np.linalg.svd(xtr, full_matrices=False)
        v = vt[sv > sv[0] * 1e-9].T
        xtr, xte = xtr @ v, xte @ v
    scores: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}
    g = groups[is_tr]
    for name, y in targets.items():
        ytr, yte = y[is_tr], y[~is_tr]
        if name in ("gender", "nationality"):
            k = int(y.max()) + 1

            def fit_c(a: np.ndarray, b: np.ndarray, c: np.ndarray, lam: float, k: int = k) -> Any:
                return logreg(a, b, c, lam, k)

            def acc(t: np.ndarray, p: np.ndarray) -> float:
                return float((p.argmax(1) == t).mean())

            lam = _cv_pick(fit_c, acc, xtr, ytr, g, LOGREG_GRID)
            p = fit_c(xtr, ytr, xte, lam)
            scores[name] = acc(yte, p)
            preds[name] = p
        else:

            def fit_r(a: np.ndarray, b: np.ndarray, c: np.ndarray, lam: float) -> np.ndarray:
                return ridge(a, b, c, lam * len(a))

            lam = _cv_pick(fit_r, _r2, xtr, ytr, g, RIDGE_GRID)
            p = fit_r(xtr, ytr, xte, lam)
            scores[name] = _r2(yte, p)
            preds[name] = ((p - ytr.mean()) / ytr.std())[:, None]
    return scores, preds


def attribute_matching(
    voice: dict[str, np.ndarray],
    face: dict[str, np.ndarray],
    clip_keys: list[str],
    trials: pd.DataFrame,
    split: str,
) -> float:
    """1:2 V->F accuracy when a voice picks the face with the nearest predicted attributes.

    Scored by the evaluation's code on ``trials`` (a TRIALS table over ``clip_keys``, the rows
    of ``voice``/``face``): the negated squared distance is an inner product,
    ``-|v - f|^2 = [2v, -|v|^2, -1] . [f, 1, |f|^2]``.
    """
    v = np.concatenate([voice[k] for k in sorted(voice)], axis=1)
    f = np.concatenate([face[k] for k in sorted(face)], axis=1)
    one = np.ones((len(v), 1))
    vv = np.hstack([2 * v, -(v**2).sum(1, keepdims=True), -one])
    ff = np.hstack([f, one, (f**2).sum(1, keepdims=True)])
    acc = match_accuracy(Embeddings(clip_keys, ff, vv), trials, split, "U", "v2f")
    return float("nan") if acc is None else acc


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", type=Path, default=Path("data/manifest/clips.parquet"))
    ap.add_argument("--faces", type=Path, default=Path("data/faces"))
    ap.add_argument("--voice", type=Path, default=Path("data/voice"))
    ap.add_argument("--corpus", type=Path, default=Path("data/synth"))
    ap.add_argument("--quick", action="store_true", help="render faces directly (see docstring)")
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--inputs", default=None, help="comma-separated inputs to probe (default all)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    ids = read_table(args.corpus / "ground_truth" / "identities.parquet", SYNTH_IDENTITIES)
    m = read_table(args.manifest, MANIFEST)
    m = m[m["split"].isin(["train", "test_unseen"])]
    faces_have = set(_read_shards(args.faces, "faces", FACE_FRAMES)["clip_key"])
    voices_have = set(_read_shards(args.voice, "voice", VOICE_FEATURES)["clip_key"])
    m = m[m["clip_key"].isin(faces_have & voices_have)].sort_values("clip_key")
    m = m.reset_index(drop=True)
    meta = m[["identity"]].merge(ids, on="identity", how="left")
    targets = {
        "gender": (meta["gender"] == "m").to_numpy().astype(np.int64),
        "nationality": meta["nationality"].map(NATIONALITIES.index).to_numpy().astype(np.int64),
        "age": meta["age_years"].to_numpy(dtype=np.float64),
        "build": meta["build"].to_numpy(dtype=np.float64),
    }
    is_tr = (m["split"] == "train").to_numpy()
    groups = m["identity"].to_numpy()

    t0 = time.perf_counter()
    reps: dict[str, np.ndarray] = {
        "face_params": meta[list(FACE_PARAM_COLUMNS)].to_numpy(dtype=np.float64),
        "voice_params": meta[list(VOICE_PARAM_COLUMNS)].to_numpy(dtype=np.float64),
    }
    faces = quick_face_features(m) if args.quick else face_features(args.faces, list(m.clip_key))
    reps.update({k: v.astype(np.float64) for k, v in faces.items()})
    cache = args.voice / ".probe_logmel.npy"
    if cache.exists() and cache.stat().st_mtime > max(
        f.stat().st_mtime for f in args.voice.glob("voice-*.parquet")
    ):
        reps["voice_logmel"] = np.load(cache)
    else:
        reps["voice_logmel"] = voice_features(args.voice, args.corpus, m).astype(np.float64)
        np.save(cache, reps["voice_logmel"])
    t_feat = time.perf_counter() - t0

    keep = np.all(np.isfinite(np.column_stack([v for v in reps.values()])), axis=1)
    if not keep.all():
        print(f"dropping {int((~keep).sum())} clips without a face")
        m, groups, is_tr = m[keep].reset_index(drop=True), groups[keep], is_tr[keep]
        reps = {k: v[keep] for k, v in reps.items()}
        targets = {k: v[keep] for k, v in targets.items()}
    te = ~is_tr
    chance = {
        "gender": float(max(targets["gender"][te].mean(), 1 - targets["gender"][te].mean())),
        "nationality": float(np.bincount(targets["nationality"][te]).max() / te.sum()),
        "age": 0.0,
        "build": 0.0,
    }
    results: dict[str, dict[str, float]] = {"chance": chance}
    preds: dict[str, dict[str, np.ndarray]] = {}
    print(
        f"{int(is_tr.sum())} train clips ({len(set(groups[is_tr]))} identities), "
        f"{int(te.sum())} test_unseen clips ({len(set(groups[te]))} identities); "
        f"features {t_feat:.0f} s"
    )
    header = f"{'input':<14}{'dim':>6}{'gender':>9}{'nation':>9}{'age R2':>9}{'build R2':>9}"
    print(header)
    c = chance
    print(
        f"{'chance':<14}{'':>6}{c['gender']:>9.3f}{c['nationality']:>9.3f}"
        f"{c['age']:>9.2f}{c['build']:>9.2f}"
    )
    chosen = args.inputs.split(",") if args.inputs else list(reps)
    for name, x in reps.items():
        if name not in chosen:
            continue
        s, p = probe(x, targets, groups, is_tr)
        results[name], preds[name] = s, p
        print(
            f"{name:<14}{x.shape[1]:>6}{s['gender']:>9.3f}{s['nationality']:>9.3f}"
            f"{s['age']:>9.2f}{s['build']:>9.2f}",
            flush=True,
        )

    test = m[te].reset_index(drop=True)
    spec = TrialSpec(args.trials, 2, 0, candidates=2)
    trials, _ = generate_trials(test, spec, ("test_unseen",))
    keys = test["clip_key"].tolist()
    match: dict[str, float] = {}
    for vname in [k for k in preds if k.startswith("voice")]:
        for fname in [k for k in preds if k.startswith("face")]:
            match[f"{vname}->{fname}"] = attribute_matching(
                preds[vname], preds[fname], keys, trials, "test_unseen"
            )
    print("1:2 V->F U by predicted-attribute distance (no pairing learnt):")
    for k, v in match.items():
        print(f"  {k:<32}{v:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"probes": results, "matching_1to2_U": match}, indent=2))


if __name__ == "__main__":
    main()
