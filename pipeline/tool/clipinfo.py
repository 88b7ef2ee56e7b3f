"""What the ``faces`` and ``voice`` shards hold for one clip, or why it failed; a contact sheet of
its face crops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from pipeline.atomic import atomic_path
from pipeline.preprocess.jpeg import decode_jpeg
from pipeline.schema import FACE_FRAMES, FAILURES, VOICE_FEATURES, TableSchema, read_table
from pipeline.tool.embed import ToolError


def _rows(folder: Path, prefix: str, spec: TableSchema, key: str) -> pd.DataFrame | None:
    """The rows of ``key`` in the ``<prefix>-*.parquet`` shards of ``folder`` (None: none)."""
    shards = sorted(folder.glob(f"{prefix}-*.parquet"))
    if not shards:
        raise ToolError(f"{folder}: no {prefix}-*.parquet shards")
    expected = spec.with_metadata().metadata
    for shard in shards:
        meta = pq.read_schema(shard).metadata or {}
        if any(meta.get(k) != v for k, v in expected.items()):
            raise ToolError(f"{shard}: not a {spec.name!r} v{spec.version} table")
        table = pq.read_table(shard, filters=[("clip_key", "==", key)])
        if table.num_rows:
            return table.to_pandas()
    return None


def _failure(folder: Path, key: str) -> str | None:
    path = folder / "failures.parquet"
    if not path.is_file():
        return None
    f = read_table(path, FAILURES)
    f = f[f["clip_key"] == key]
    if f.empty:
        return None
    r = f.iloc[0]
    return f"failed ({r['reason']}, {r['error_type']}): {r['message']}"


def _face_lines(rows: pd.DataFrame) -> Iterator[str]:
    rows = rows.sort_values("frame_index")
    yield f"faces: {len(rows)} frames with the clip's face, crops {rows['crop_size_px'].iloc[0]} px"
    yield "  time_s  frame_index  prob    n_faces  box_px (x1 y1 x2 y2)"
    for r in rows.itertuples(index=False):
        box = " ".join(f"{v:.1f}" for v in r.box_px)
        yield f"  {r.time_s:6.2f}  {r.frame_index:11d}  {r.prob:.4f}  {r.n_faces:7d}  {box}"


def _voice_lines(r: pd.Series) -> Iterator[str]:
    segs = list(zip(r["segment_start_s"], r["segment_end_s"], strict=True))
    yield (
        f"voice: {r['duration_s']:.2f} s of audio at {r['sample_rate_hz']} Hz, "
        f"{r['speech_s']:.2f} s of speech in {len(segs)} segments"
    )
    yield "  segments (s): " + ", ".join(f"{a:.2f}-{b:.2f}" for a, b in segs)
    yield (
        f"  features: {r['front_end']}, {r['n_frames']} frames x {r['n_bins']} bins "
        f"({r['hop_ms']:g} ms hop)"
    )


def describe(key: str, faces_dir: Path, voice_dir: Path) -> tuple[list[str], pd.DataFrame | None]:
    """Lines describing ``key`` in both stages' outputs, and its face rows (None: none)."""
    faces = _rows(faces_dir, "faces", FACE_FRAMES, key)
    voice = _rows(voice_dir, "voice", VOICE_FEATURES, key)
    face_failure, voice_failure = _failure(faces_dir, key), _failure(voice_dir, key)
    if faces is None and voice is None and face_failure is None and voice_failure is None:
        raise ToolError(f"{key}: no such clip in {faces_dir} or {voice_dir}")
    lines = [f"clip {key}"]
    if faces is not None:
        lines += _face_lines(faces)
    else:
        lines.append(f"faces: {face_failure or 'no rows (audio-only clip?)'}")
    if voice is not None:
        lines += _voice_lines(voice.iloc[0])
    else:
        lines.append(f"voice: {voice_failure or 'no rows'}")
    return lines, faces


def contact_sheet(rows: pd.DataFrame, out: Path, columns: int = 8) -> Path:
    """The clip's face crops in time order, each labelled with its time and probability; written
    as PNG atomically."""
    rows = rows.sort_values("frame_index")
    crops = [decode_jpeg(bytes(j)) for j in rows["crop_jpeg"]]
    side, label = crops[0].shape[0], 14
    n_cols = min(columns, len(crops))
    n_rows = -(-len(crops) // n_cols)
    sheet = Image.new("RGB", (n_cols * side, n_rows * (side + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (crop, t, p) in enumerate(zip(crops, rows["time_s"], rows["prob"], strict=True)):
        x, y = (i % n_cols) * side, (i // n_cols) * (side + label)
        sheet.paste(Image.fromarray(np.ascontiguousarray(crop)), (x, y))
        draw.text((x + 2, y + side + 1), f"{t:.2f}s p{p:.2f}", fill="black")
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
