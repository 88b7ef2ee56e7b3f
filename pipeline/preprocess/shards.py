"""What a preprocessing shard task gets (clip references) and gives back (counts, failures).

Shard functions decode every clip in an isolated child process (a hang or crash in native
decoding becomes a failure row, not a frozen stage), write one Parquet shard atomically, and
return a :class:`ShardResult`. Nothing here knows about Prefect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from pipeline.preprocess.isolate import CallTimeout, ChildDied, lease, prestart
from pipeline.preprocess.media import MediaError

T = TypeVar("T")


@dataclass(frozen=True)
class ClipRef:
    """What a shard task needs to know about one clip (from the manifest)."""

    clip_key: str
    media_path: str
    media_kind: str
    face_dir: str | None
    size_bytes: int = -1  # the media file's size (the manifest's), part of the shard's name


@dataclass
class ShardResult:
    """Counts of one shard, its failure rows (schema.FAILURES) and its flagged clips."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    #: Clips processed but flagged as doubtful: (clip_key, why), e.g. two faces competing.
    flagged: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, clip: ClipRef, reason: str, err: BaseException | str) -> None:
        self.failures.append(
            {
                "clip_key": clip.clip_key,
                "media_path": clip.media_path,
                "reason": reason,
                "error_type": type(err).__name__ if isinstance(err, BaseException) else "Check",
                "message": str(err),
            }
        )


def clip_refs(manifest: pd.DataFrame) -> list[ClipRef]:
    return [
        ClipRef(r.clip_key, r.media_path, r.media_kind, r.face_dir, int(r.size_bytes))
        for r in manifest.itertuples(index=False)
    ]


#: What a decoder child imports as it starts when prestarted (:func:`prestart_decoders`):
#: :mod:`pipeline.preprocess.media` imports decord lazily.
DECODERS = ("decord", "pipeline.preprocess.media")


def prestart_decoders(n: int, timeout_s: float, preload: tuple[str, ...] = ()) -> None:
    """Start ``n`` decoder children for :func:`decode_each` now, :data:`DECODERS` and
    ``preload`` imported (:func:`pipeline.preprocess.isolate.prestart`); returns without
    waiting."""
    prestart(n, timeout_s, DECODERS + preload)


def decode_each(
    res: ShardResult,
    items: list[tuple[ClipRef, Path, tuple[Any, ...]]],
    timeout_s: float,
    fn: Callable[..., T],
    preload: tuple[str, ...] = (),
) -> Iterator[tuple[ClipRef, T]]:
    """``fn(*args)`` for each ``(clip, path, args)`` in a decoder child process of its own
    (:func:`pipeline.preprocess.isolate.lease`; one it starts imports :data:`DECODERS` and
    ``preload``), the next clip decoding while the caller works on this one; yields
    ``(clip, result)``. A failure
    becomes a row instead: ``no_audio`` / ``no_video`` (the stream is missing), ``decode``
    (unreadable file), ``timeout`` (the decoder hung and was killed), ``crash`` (it died).
    """
    with lease(timeout_s, DECODERS + preload) as decoder:
        outputs = decoder.map(fn, [args for _, _, args in items])
        for (clip, path, _), out in zip(items, outputs, strict=True):
            if isinstance(out, MediaError):
                text = str(out)
                reason = "decode"
                if "no audio stream" in text:
                    reason = "no_audio"
                elif "no video stream" in text:
                    reason = "no_video"
                res.fail(clip, reason, out)
            elif isinstance(out, CallTimeout):
                res.fail(clip, "timeout", MediaError(f"{path}: decoding {out}"))
            elif isinstance(out, ChildDied):
                res.fail(clip, "crash", MediaError(f"{path}: {out}"))
            elif isinstance(out, BaseException):
                res.fail(clip, "decode", out)
            else:
                yield clip, out
