"""``voxface``: use a trained model on your own clips.

    voxface embed --model models/cid/s1/model.pt clip.mp4 face.jpg voice.wav --out emb.parquet
    voxface match --model M --voice clip.mp4 --faces faces/      (or --face img.jpg --voices dir/)
    voxface index build emb.parquet --out idx/
    voxface index query idx/ --voice clip.mp4 --model M -k 5
    voxface index query idx/ --embedding-from emb.parquet --clip clip.mp4 -k 5
    voxface inspect id00012/abc/00001 [--faces data/faces --voice data/voice] [--sheet s.png]

Files are preprocessed by the ``faces`` and ``voice`` stages' own code with ``params.yaml``'s
settings (``--params``), and embedded as evaluation embeds the test clips
(:mod:`pipeline.tool.embed`). Bad input (a missing or unreadable file, no face, no speech, a
model file of another format or method, or one that carries code) is one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from pipeline.tool.embed import Model


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="voxface", description=(__doc__ or "").split("\n\n")[0].removeprefix("``voxface``: ")
    )
    sub = ap.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("--model", required=required, help="a trained model.pt")
        p.add_argument("--params", default="params.yaml", help="face/voice preprocessing settings")
        p.add_argument("--aligned", action="store_true", help="face images are face crops already")

    e = sub.add_parser("embed", help="embed videos, face images and audio files")
    model_args(e)
    e.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    e.add_argument("--out", required=True, help="the embeddings Parquet file")
    e.add_argument("--modality", choices=("face", "voice", "both"), default="both")

    m = sub.add_parser("match", help="rank faces for a voice, or voices for a face")
    model_args(m)
    probe = m.add_mutually_exclusive_group(required=True)
    probe.add_argument("--voice", help="a video or audio file")
    probe.add_argument("--face", help="a face image or a video")
    m.add_argument("--faces", nargs="+", help="face images or videos (files or folders)")
    m.add_argument("--voices", nargs="+", help="audio files or videos (files or folders)")

    i = sub.add_parser("index", help="a faiss index of exported embeddings")
    isub = i.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="index an embeddings file")
    b.add_argument("embeddings", help="a file written by voxface embed")
    b.add_argument("--out", required=True, help="the index folder")
    q = isub.add_parser("query", help="the nearest clips of the other modality")
    q.add_argument("index", help="an index folder")
    model_args(q, required=False)
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--voice", help="a video or audio file (needs --model)")
    what.add_argument("--face", help="a face image or a video (needs --model)")
    what.add_argument("--embedding-from", help="an embeddings file (with --clip)")
    q.add_argument("--clip", help="the clip of --embedding-from")
    q.add_argument("--modality", choices=("face", "voice"), help="of --clip, when it has both")
    q.add_argument("-k", type=int, default=5, help="how many (default 5)")

    s = sub.add_parser("inspect", help="what the faces and voice shards hold for a clip")
    s.add_argument("clip", metavar="CLIP_KEY")
    s.add_argument("--faces", default="data/faces", help="the faces stage's folder")
    s.add_argument("--voice", default="data/voice", help="the voice stage's folder")
    s.add_argument("--sheet", help="write a contact sheet PNG of the face crops")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2: bad input, said in one line on stderr)."""
    args = parser().parse_args(argv)
    # First, before numpy and torch load: the data stages' pinned kernels (pipeline.cpu_pin), so
    # that a clip's crops and features are the bytes the stages would write.
    # isort: off
    import stages._pinned  # noqa: F401

    # isort: on
    from pipeline.tool.embed import ToolError

    try:
        _run(args)
    except ToolError as e:
        print(f"voxface: error: {e}", file=sys.stderr)
        return 2
    return 0


def _probe(args: argparse.Namespace) -> tuple[str, str]:
    """(modality, file) of a ``--voice`` / ``--face`` probe."""
    return ("voice", args.voice) if args.voice else ("face", args.face)


def _run(args: argparse.Namespace) -> None:
    if args.command == "embed":
        _embed(args)
    elif args.command == "match":
        _match(args)
    elif args.command == "index":
        _index(args)
    else:
        _inspect(args)


def _embed(args: argparse.Namespace) -> None:
    from pipeline.tool import embed as em

    model = em.open_model(Path(args.model))
    s = em.settings(Path(args.params))
    modalities = em.MODALITIES if args.modality == "both" else (args.modality,)
    paths = em.expand(args.inputs, ("video", "image", "audio"))
    frame = em.embed(model, em.prepare(paths, s, modalities, args.aligned))
    em.write_embeddings(frame, Path(args.out))
    n = frame["modality"].value_counts().to_dict()
    print(
        f"{args.out}: {n.get('face', 0)} face and {n.get('voice', 0)} voice embeddings of "
        f"{len(paths)} files ({model.method}, {model.path})"
    )


def _embed_files(
    args: argparse.Namespace, groups: Sequence[tuple[Sequence[Path], str]]
) -> tuple[Model, list[tuple[list[str], np.ndarray]]]:
    """The model of ``--model`` and, per (files, modality) of ``groups``, the files' embeddings
    of that modality: (clips, (N, d))."""
    from pipeline.tool import embed as em

    model = em.open_model(Path(args.model))
    s = em.settings(Path(args.params))
    out = []
    for paths, modality in groups:
        frame = em.embed(model, em.prepare(paths, s, (modality,), args.aligned))
        out.append(em.matrix(frame, modality))
    return model, out


def _match(args: argparse.Namespace) -> None:
    from pipeline.tool import embed as em

    modality, file = _probe(args)
    other = "face" if modality == "voice" else "voice"
    pool = args.faces if modality == "voice" else args.voices
    if not pool:
        raise em.ToolError(f"--{modality} needs --{other}s to rank")
    kinds = ("video", "image") if other == "face" else ("video", "audio")
    candidates = em.expand(pool, kinds)
    model, ((_, probe), (clips, x)) = _embed_files(
        args, [([Path(file)], modality), (candidates, other)]
    )
    scores = x @ probe[0]
    order = (-scores).argsort(
        kind="stable"
    )  # as evaluation ranks (pipeline.evaluate.scoring._ranked)
    print(f"{modality} {file}: {len(clips)} {other}s ranked by {model.method} ({model.path})")
    for rank, j in enumerate(order, 1):
        print(f"{rank:4d}  {scores[j]:+.4f}  {clips[j]}")


def _index(args: argparse.Namespace) -> None:
    from pipeline.tool import embed as em
    from pipeline.tool import index as ix

    if args.index_command == "build":
        counts = ix.build(em.read_embeddings(Path(args.embeddings)), Path(args.out))
        print(f"{args.out}: " + ", ".join(f"{n} {m} embeddings" for m, n in counts.items()))
        return
    if args.k < 1:
        raise em.ToolError("-k must be at least 1")
    if args.embedding_from:
        if not args.clip:
            raise em.ToolError("--embedding-from needs --clip NAME")
        frame = em.read_embeddings(Path(args.embedding_from))
        rows = frame[frame["clip"] == args.clip]
        if args.modality:
            rows = rows[rows["modality"] == args.modality]
        if rows.empty:
            raise em.ToolError(f"{args.embedding_from}: no embedding of clip {args.clip!r}")
        if len(rows) > 1:
            raise em.ToolError(f"{args.clip}: has a face and a voice embedding; give --modality")
        modality, name = str(rows["modality"].iloc[0]), args.clip
        vector, sha = rows["embedding"].iloc[0], str(rows["model_sha256"].iloc[0])
    else:
        if not args.model:
            raise em.ToolError("--voice / --face need --model (the model of the index)")
        modality, name = _probe(args)
        model, ((_, x),) = _embed_files(args, [([Path(name)], modality)])
        vector, sha = x[0], model.sha256
    hits = ix.query(Path(args.index), vector, modality, sha, args.k)
    print(f"{modality} {name}: the {len(hits)} nearest in {args.index}")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:4d}  {h.score:+.4f}  {h.clip}")


def _inspect(args: argparse.Namespace) -> None:
    from pipeline.tool import clipinfo

    lines, faces = clipinfo.describe(args.clip, Path(args.faces), Path(args.voice))
    print("\n".join(lines))
    if args.sheet:
        if faces is None:
            from pipeline.tool.embed import ToolError

            raise ToolError(f"{args.clip}: no face crops for a contact sheet")
        print(f"contact sheet: {clipinfo.contact_sheet(faces, Path(args.sheet))}")


if __name__ == "__main__":
    sys.exit(main())
