"""Child process of ``tests/test_reproducible.py``: render a few clips, or run the ``faces`` and
``voice`` shard functions on them, and print the MD5 of every file written (JSON); or train each
method a few epochs on a toy problem, as the training stages set torch up, and print the MD5 of
each model's weights.

Imports ``stages._pinned`` first, as the stages do, so that it runs under the same pins.
``--ffmpeg-flags N`` forces FFmpeg's CPU flags to ``N`` before anything is encoded, which is how
``ffmpeg -cpuflags`` emulates another CPU; numpy's and torch's are emulated by the caller's
environment (``NPY_DISABLE_CPU_FEATURES``, ``ATEN_CPU_CAPABILITY`` ...).
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401

# isort: on
import argparse
import hashlib
import json
from pathlib import Path


def _md5s(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _train_md5s(root: Path) -> dict[str, str]:
    """Each method trained as the ``train`` stage trains it (its registry entry, torch set up
    with ``train.threads``), on the toy pairs of ``tests/test_train.py`` with the toy-sized params
    of ``tests/test_registry.py`` (clustering and re-weighting included), whatever the
    environment's thread settings: the MD5 of its weights."""
    import torch

    from pipeline.train.methods.registry import train_method
    from stages._runtime import setup_torch
    from tests.test_registry import small_params
    from tests.test_train import toy_pairs

    params = small_params()
    params = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 3})})
    setup_torch(params.train.threads)
    data = toy_pairs(n_ids=12, clips_per_id=4)
    out = {}
    for name in ("cid", "wen2021", "cmpc", "bipseudo"):
        _, (enc, _, _) = train_method(name, params, data, 7, root / name, torch.device("cpu"))
        h = hashlib.md5()
        for key, val in enc.state_dict().items():
            h.update(key.encode() + val.detach().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["synth", "shards", "train"])
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--ffmpeg-flags", type=int)
    args = ap.parse_args()
    if args.ffmpeg_flags is not None:
        from pipeline.cpu_pin import force_ffmpeg_flags

        force_ffmpeg_flags("av", args.ffmpeg_flags)
    if args.what == "train":
        print(json.dumps(_train_md5s(args.root)))
        return
    if args.what == "synth":
        from tests.helpers import render_corpus, small_spec

        # Seed 17: long, curly and long hair (curls are float32 sines in the renderer); without
        # the FFmpeg pin one of its three clips gets other AAC bytes under `--ffmpeg-flags 0`.
        render_corpus(args.root, small_spec(seed=17, identities=3, videos=1, dur=1.5))
        print(json.dumps(_md5s(args.root)))
        return
    from pipeline.preprocess.detector import DetectorConfig
    from pipeline.preprocess.face_tracks import FaceConfig, face_shard
    from pipeline.preprocess.filterbank import FeatureConfig
    from pipeline.preprocess.shards import ClipRef
    from pipeline.preprocess.vad import VadConfig
    from pipeline.preprocess.voice_features import VoiceConfig, voice_shard

    clips = [
        ClipRef(
            str(p.relative_to(args.root).with_suffix("")),
            str(p.relative_to(args.root)),
            "video",
            None,
        )
        for p in sorted(args.root.rglob("*.mp4"))
    ]
    faces = FaceConfig(1.0, DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32), 0.8, 0.2, 112, 90)
    face_shard(clips, args.root, faces, args.out / "faces.parquet", 60.0)
    voice = VoiceConfig(
        16000, VadConfig(2, 30, 300, 35.0), FeatureConfig("fbank", 64, 25.0, 10.0, True), 0.3
    )
    voice_shard(clips, args.root, voice, args.out / "voice.parquet", 60.0)
    print(json.dumps(_md5s(args.out)))


if __name__ == "__main__":
    main()
