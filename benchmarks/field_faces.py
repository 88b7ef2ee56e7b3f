"""Benchmark of the ``faces`` stage against the field's way: ffmpeg to JPEG, then per-image MTCNN.

``python -m benchmarks.field_faces --set real --clips 200`` (or ``--set synth``). On the same
clips and the same number of workers (``--workers``, default every core), in one run, it times

- **the field-style baseline**: per clip, ``ffmpeg -i CLIP -vf fps=1 -q:v 2 OUT/%05d.jpg`` (the
  ffmpeg CLI when one is found: ``ffmpeg`` on the PATH or the ``imageio_ffmpeg`` package's; else
  PyAV decodes every frame and writes the first frame at or after each whole second as a
  quality-95 JPEG with PIL, and the output says so), then facenet-pytorch ``MTCNN`` with its
  default settings (image_size 160, margin 0, min_face_size 20, thresholds 0.6/0.7/0.7, factor
  0.709, post_process, keep_all False, CPU) on one ``PIL.Image.open`` image at a time. A frame
  has a face when MTCNN returns a probability. A pool of ``--workers`` processes (spawned, one
  torch thread each) takes one clip at a time. Timed: pool start-up, torch import and model load
  in every worker, decoding, JPEG writing and reading, detection. Not timed: deleting the JPEGs.
- **the faces stage, whole**: ``python -m stages.faces`` as a subprocess in a throwaway project
  (the repo's ``params.yaml`` with ``data.layout: generic``, ``data.root`` the clip folder and
  ``data.meta`` a clip list), ``VOXFACE_WORKERS`` = ``--workers``. Timed: the interpreter, the
  imports, the Prefect server (a temporary one started by the stage, unless ``PREFECT_API_URL``
  is set, which the output reports), decoding at ``face.rate_fps``, batched MTCNN, track
  selection, crops, JPEG and Parquet writing, the report. Not timed: building the manifest (done
  in this process with :func:`pipeline.preprocess.manifest.build_manifest`, the manifest stage
  without its preflight checks, which a 12-clip set can fail and which the faces stage does not
  need).

Frames with a face are not the same measure on both sides: the baseline counts every sampled
frame where MTCNN finds any face at min_face_size 20; the stage counts frames whose best face
passes its params (``face.min_face_size_px``, ``face.min_prob``), and also, as the baseline's
measure, every frame where MTCNN returned a face before ``face.min_prob``. Face recall is frames
with a face / frames sampled on each side.

The two sides sample different frame counts at the same rate: ffmpeg's ``fps`` filter rounds a
clip's duration to the nearest period, the stage keeps whole periods only (centred instants,
:func:`pipeline.preprocess.media.sample_times`), so on 2-4 s clips the stage detects on fewer
frames. The ratio of sampled frames per wall second is printed beside the clip-s/s ratio: it
counts the work each side did.

Fixed cost and cost per added clip: both sides run again, whole, on the set's first
``--fixed-clips`` clips (default 4; 0 skips it). Their wall there is each side's fixed cost (pool
or server start-up, imports, model loads, a few clips), and ``(wall on all clips - wall on the
few) / (clips - few)`` its wall seconds per added clip: the ratio of those is what the
clip-s/s ratio tends to on many more clips, where start-up no longer counts. The output also
says what the stage's wall would have to be for a given speed-up (``--target``, default 3) and
sets its fixed cost beside it.

Sets: ``real`` is every video of ``../shared/realdata/manifest.csv`` (``has_video``), cycled to
``--clips`` clips; ``synth`` is the first ``--clips`` video clips (in clip-key order) of the
synthetic corpus's manifest, cycled likewise if there are fewer. Every clip is a symlink of its
own name in a temporary folder, so a repeated file is decoded and detected again by both sides.
Throughput is clip-seconds of media (container duration, PyAV) per wall second.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

#: The field's settings for facenet-pytorch MTCNN (its defaults).
FIELD_MTCNN: dict[str, Any] = {
    "image_size": 160,
    "margin": 0,
    "min_face_size": 20,
    "thresholds": [0.6, 0.7, 0.7],
    "factor": 0.709,
    "post_process": True,
    "keep_all": False,
    "device": "cpu",
}


@dataclass(frozen=True)
class Clip:
    """One benchmark clip: its own name (unique), the media file and the identity."""

    name: str  # relative path inside the clip folder: <identity>/<NNNNN>_<stem><ext>
    source: Path
    identity: str


# ---------------------------------------------------------------- the sets


def real_sources(realdata: Path = REALDATA) -> list[tuple[Path, str]]:
    """The videos of ``realdata/manifest.csv`` (``has_video`` True): (path, identity), in order."""
    import pandas as pd

    m = pd.read_csv(realdata / "manifest.csv")
    m = m[m["has_video"].astype(str).str.lower() == "true"]
    return [(realdata / f, str(i)) for f, i in zip(m["file"], m["identity"], strict=True)]


def synth_sources(corpus: Path, manifest: Path, n: int) -> list[tuple[Path, str]]:
    """The first ``n`` video clips (clip-key order) of the synthetic corpus: (path, identity)."""
    from pipeline.schema import MANIFEST, read_table

    m = read_table(manifest, MANIFEST)
    m = m[m["media_kind"] == "video"].sort_values("clip_key").iloc[:n]
    return [(corpus / p, str(i)) for p, i in zip(m["media_path"], m["identity"], strict=True)]


def cycle_clips(sources: list[tuple[Path, str]], n: int) -> list[Clip]:
    """``n`` clips cycling through ``sources``; each gets its own name (repeats included)."""
    if not sources:
        raise SystemExit("error: the set has no video files")
    out = []
    for i in range(n):
        src, ident = sources[i % len(sources)]
        out.append(Clip(f"{ident}/{i:05d}_{src.stem}{src.suffix}", src.resolve(), ident))
    return out


def materialise(clips: list[Clip], folder: Path) -> Path:
    """Symlink every clip under ``folder`` by its name; write the clip list; return its path."""
    import csv

    for c in clips:
        link = folder / c.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(c.source)
    listing = folder.parent / "clips.csv"
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([c.name, c.identity] for c in clips)
    return listing


def media_seconds(path: Path) -> float:
    """The clip's duration (container, else its video stream), in seconds."""
    import av

    with av.open(str(path)) as c:
        if c.duration is not None:
            return float(c.duration) / av.time_base
        s = c.streams.video[0]
        return float(s.duration * s.time_base) if s.duration and s.time_base else 0.0


# ---------------------------------------------------------------- the field-style baseline


def ffmpeg_exe() -> str | None:
    """The ffmpeg CLI: on the PATH, else ``imageio_ffmpeg``'s when installed, else None."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def extract_ffmpeg(exe: str, clip: Path, out: Path) -> None:
    """The field's command: one JPEG per second of video, ``-q:v 2``."""
    cmd = [exe, "-nostdin", "-loglevel", "error", "-i", str(clip)]
    cmd += ["-vf", "fps=1", "-q:v", "2", str(out / "%05d.jpg")]
    subprocess.run(cmd, check=True)


def extract_pyav(clip: Path, out: Path) -> None:
    """Without ffmpeg: decode every frame, write the first at or after each whole second
    (PIL JPEG, quality 95)."""
    import av

    n, next_t = 0, 0.0
    with av.open(str(clip)) as c:
        for frame in c.decode(video=0):
            t = frame.time
            if t is None or t + 1e-6 < next_t:
                continue
            n += 1
            frame.to_image().save(  # type: ignore[no-untyped-call]
                out / f"{n:05d}.jpg", quality=95
            )
            next_t = float(int(t + 1e-6)) + 1.0


_MTCNN: Any = None
_FFMPEG: str | None = None


def _init_worker(ffmpeg: str | None) -> None:
    """Pool initializer: one torch thread, the field's MTCNN loaded (timed with the baseline)."""
    global _MTCNN, _FFMPEG
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(1)
    _MTCNN = MTCNN(**FIELD_MTCNN)
    _FFMPEG = ffmpeg


def field_clip(job: tuple[str, str]) -> tuple[int, int]:
    """One clip the field's way: frames to JPEG files, then MTCNN image by image.
    Returns (frames sampled, frames with a face)."""
    from PIL import Image

    clip, out_dir = Path(job[0]), Path(job[1])
    out_dir.mkdir(parents=True)
    if _FFMPEG:
        extract_ffmpeg(_FFMPEG, clip, out_dir)
    else:
        extract_pyav(clip, out_dir)
    sampled = with_face = 0
    for jpg in sorted(out_dir.glob("*.jpg")):
        img = Image.open(jpg)
        _, prob = _MTCNN(img, return_prob=True)
        sampled += 1
        with_face += prob is not None
    return sampled, with_face


def run_baseline(clips: list[Path], workers: int, scratch: Path) -> dict[str, Any]:
    """The field-style pipeline over ``clips`` with ``workers`` processes, timed whole."""
    exe = ffmpeg_exe()
    jobs = [(str(c), str(scratch / f"{i:05d}")) for i, c in enumerate(clips)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(exe,)) as pool:
        counts = pool.map(field_clip, jobs, chunksize=1)
    wall = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "extractor": f"ffmpeg CLI ({exe})" if exe else "PyAV + PIL JPEG 95 (no ffmpeg CLI found)",
        "wall_s": wall,
        "frames_sampled": sum(s for s, _ in counts),
        "frames_with_face": sum(f for _, f in counts),
    }


# ---------------------------------------------------------------- the faces stage


def stage_project(params: Path, clip_root: Path, clip_list: Path, project: Path) -> Path:
    """A throwaway project: the params with the generic layout on the clip folder, and the
    manifest (built in-process, untimed). Returns the manifest's path."""
    from ruamel.yaml import YAML

    from pipeline.params import load_params
    from pipeline.preprocess.manifest import build_manifest
    from pipeline.schema import MANIFEST, write_table

    yaml = YAML(typ="safe")
    raw = yaml.load(params.read_text())
    raw["data"].update(layout="generic", root=str(clip_root), meta=str(clip_list))
    raw["data"].update(split_file=None, faces_dir=None)
    p_out = project / "params.yaml"
    with p_out.open("w") as f:
        yaml.dump(raw, f)
    p = load_params(p_out)
    result = build_manifest(p.data, p.manifest, p.base.seed)
    if len(result.skipped):
        raise SystemExit(f"error: the manifest skipped clips:\n{result.skipped.head()}")
    return write_table(result.clips, project / "clips.parquet", MANIFEST)


def run_stage(project: Path, manifest: Path, workers: int) -> dict[str, Any]:
    """``python -m stages.faces`` on the project, timed whole with its start-up."""
    env = {**os.environ, "VOXFACE_WORKERS": str(workers)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    metrics = project / "faces.json"
    cmd = [sys.executable, "-m", "stages.faces", "--params", str(project / "params.yaml")]
    cmd += ["--manifest", str(manifest), "--out", str(project / "faces")]
    cmd += ["--metrics", str(metrics)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: the faces stage exited with {proc.returncode}")
    rep = json.loads(metrics.read_text())
    timing = json.loads((project / "logs" / "timings" / "faces.json").read_text())
    return {
        "prefect": (
            f"existing server {os.environ['PREFECT_API_URL']} (its start-up not timed)"
            if os.environ.get("PREFECT_API_URL")
            else "temporary server started by the stage (timed)"
        ),
        "wall_s": wall,
        "flow_wall_s": timing.get("wall_s"),  # the flow alone, as the stage logs it
        "frames_sampled": int(rep["frames_sampled"]),
        "frames_with_face": int(rep["frames_with_face"]),
        # Frames where MTCNN returned a face at all (its own thresholds, as the baseline counts),
        # before the stage's face.min_prob drops the less confident ones.
        "frames_any_face": int(rep["frames_with_face"]) + int(rep["frames_low_confidence"]),
        "failures": int(rep["failures"]),
    }


# ---------------------------------------------------------------- the run


def summarise(side: dict[str, Any], media_s: float) -> dict[str, Any]:
    side = dict(side)
    side["clip_s_per_s"] = round(media_s / max(side["wall_s"], 1e-9), 2)
    side["face_recall"] = round(side["frames_with_face"] / max(side["frames_sampled"], 1), 4)
    side["frames_per_s"] = round(side["frames_sampled"] / max(side["wall_s"], 1e-9), 2)
    side["wall_s"] = round(side["wall_s"], 2)
    return side


def bench(
    clips: list[Clip],
    workers: int,
    params: Path,
    scratch: Path,
    skip_stage: bool = False,
    fixed_clips: int = 0,
) -> dict[str, Any]:
    """Both sides on ``clips`` (baseline first), then, when ``0 < fixed_clips < len(clips)``,
    both again on the first ``fixed_clips`` clips (:func:`fixed_and_marginal`); the figures."""
    clip_root = scratch / "clips"
    listing = materialise(clips, clip_root)
    paths = [clip_root / c.name for c in clips]
    media_s = sum(media_seconds(p) for p in paths)
    out: dict[str, Any] = {
        "clips": len(clips),
        "distinct_files": len({c.source for c in clips}),
        "media_s": round(media_s, 1),
        "workers": workers,
    }
    out["baseline"] = summarise(run_baseline(paths, workers, scratch / "jpeg"), media_s)
    few = 0 < fixed_clips < len(clips)
    if few:  # the first clips in a folder of their own (a layout lists every file it holds)
        few_root = scratch / "few" / "clips"
        few_listing = materialise(clips[:fixed_clips], few_root)
        few_paths = [few_root / c.name for c in clips[:fixed_clips]]
        base_few = run_baseline(few_paths, workers, scratch / "jpeg")
        out["fixed"] = {"clips": fixed_clips, "baseline_wall_s": base_few["wall_s"]}
    if not skip_stage:
        project = scratch / "project"
        project.mkdir()
        manifest = stage_project(params, clip_root, listing, project)
        out["stage"] = summarise(run_stage(project, manifest, workers), media_s)
        if few:
            small = scratch / "few" / "project"
            small.mkdir()
            few_manifest = stage_project(params, few_root, few_listing, small)
            out["fixed"]["stage_wall_s"] = run_stage(small, few_manifest, workers)["wall_s"]
            out |= fixed_and_marginal(out)
        out["stage_vs_baseline_clip_s_per_s"] = round(
            out["stage"]["clip_s_per_s"] / max(out["baseline"]["clip_s_per_s"], 1e-9), 2
        )
        out["stage_vs_baseline_frames_per_s"] = round(
            out["stage"]["frames_per_s"] / max(out["baseline"]["frames_per_s"], 1e-9), 2
        )
    return out


def fixed_and_marginal(r: dict[str, Any]) -> dict[str, Any]:
    """From a run with its ``fixed`` (few-clip) walls: each side's wall seconds per added clip,
    and their ratio (field-style over stage: the speed-up on many more clips)."""
    n, few = r["clips"], r["fixed"]
    per_clip = {
        side: (r[side]["wall_s"] - few[f"{side}_wall_s"]) / (n - few["clips"])
        for side in ("baseline", "stage")
    }
    return {
        "per_added_clip_s": {k: round(v, 5) for k, v in per_clip.items()},
        "stage_vs_baseline_per_added_clip": round(
            per_clip["baseline"] / max(per_clip["stage"], 1e-9), 2
        ),
    }


def report_lines(name: str, r: dict[str, Any], target: float = 3.0) -> list[str]:
    lines = [
        f"set {name}: {r['clips']} clips ({r['distinct_files']} distinct files), "
        f"{r['media_s']} clip-s of media, {r['workers']} workers"
    ]
    for side, label in (("baseline", "field-style"), ("stage", "faces stage")):
        if side not in r:
            continue
        s = r[side]
        how = s.get("extractor") or f"flow alone {s['flow_wall_s']} s; {s['prefect']}"
        lines.append(
            f"  {label:12s} {s['wall_s']:8.2f} s wall  {s['clip_s_per_s']:7.2f} clip-s/s  "
            f"faces in {s['frames_with_face']}/{s['frames_sampled']} frames "
            f"(recall {s['face_recall']:.3f})  [{how}]"
        )
        if "frames_any_face" in s:
            any_face = s["frames_any_face"] / max(s["frames_sampled"], 1)
            lines.append(
                f"  {'':12s} any face MTCNN returned, before face.min_prob (the baseline's "
                f"measure): {s['frames_any_face']}/{s['frames_sampled']} (recall {any_face:.3f})"
            )
    if "stage_vs_baseline_clip_s_per_s" in r:
        lines.append(f"  stage / field-style clip-s/s: {r['stage_vs_baseline_clip_s_per_s']:.2f}x")
        lines.append(
            f"  stage / field-style sampled frames/s: {r['stage_vs_baseline_frames_per_s']:.2f}x "
            f"({r['stage']['frames_sampled']} against {r['baseline']['frames_sampled']} frames)"
        )
    if "stage_vs_baseline_per_added_clip" in r:
        few, per = r["fixed"], r["per_added_clip_s"]
        lines.append(
            f"  fixed cost (the whole command on {few['clips']} clips): field-style "
            f"{few['baseline_wall_s']:.2f} s, faces stage {few['stage_wall_s']:.2f} s"
        )
        lines.append(
            f"  per added clip: field-style {per['baseline'] * 1000:.1f} ms, faces stage "
            f"{per['stage'] * 1000:.1f} ms -> {r['stage_vs_baseline_per_added_clip']:.2f}x "
            "(the ratio on many more clips)"
        )
        need = r["baseline"]["wall_s"] / target
        lines.append(
            f"  {target:g}x on this set needs the stage within {need:.2f} s; its fixed cost "
            f"alone is {few['stage_wall_s']:.2f} s"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--set", choices=("real", "synth"), action="append", dest="sets",
                    help="real and/or synth (repeatable; default both)")  # fmt: skip
    ap.add_argument("--clips", type=int, default=200, help="clips per set (default 200)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--realdata", type=Path, default=REALDATA)
    ap.add_argument("--corpus", type=Path, default=Path("data/synth"))
    ap.add_argument("--manifest", type=Path, default=Path("data/manifest/clips.parquet"))
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    ap.add_argument("--baseline-only", action="store_true", help="skip the stage (debugging)")
    ap.add_argument("--fixed-clips", type=int, default=4,
                    help="also run both sides on this many clips: fixed cost and cost per "
                    "added clip (0: skip)")  # fmt: skip
    ap.add_argument("--target", type=float, default=3.0,
                    help="the speed-up whose stage wall is printed (default 3)")  # fmt: skip
    args = ap.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    results: dict[str, Any] = {}
    for name in args.sets or ["real", "synth"]:
        if name == "real":
            sources = real_sources(args.realdata)
        else:
            sources = synth_sources(args.corpus, args.manifest, args.clips)
        clips = cycle_clips(sources, args.clips)
        with tempfile.TemporaryDirectory(prefix=f"field_faces_{name}_") as tmp:
            r = bench(
                clips,
                args.workers,
                args.params.resolve(),
                Path(tmp),
                args.baseline_only,
                args.fixed_clips,
            )
        results[name] = r
        print("\n".join(report_lines(name, r, args.target)), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
