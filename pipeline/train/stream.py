"""Training and evaluation data streamed from the feature shards, in bounded memory.

:func:`pipeline.train.pairs.load_pairs` decodes every clip's crops and features into memory:
right for the default corpus, impossible for VoxCeleb2 (on the order of 100 GB of face crops
and as much of log-mel features). :class:`StreamData` keeps in memory only the clip index (keys,
identity and video indices: bytes per clip) and reads the shards one *unit* at a time: a unit is
one ``faces-*.parquet`` shard's clips of the wanted splits, joined with their rows of the
``voice-*.parquet`` shards that hold them (content-defined shards of both stages cover runs of
clip keys, so a unit needs one or two voice shards).

An epoch (:meth:`StreamData.batches`) from an epoch seed drawn from the training generator:

- the units in a seeded random order, dealt round-robin to ``workers`` DataLoader processes
  (``0``: in the training process);
- per unit, a seeded generator draws the clips' order, one face frame (mirrored with p = 1/2),
  and one ``voice_frames`` crop of each, as :func:`pipeline.train.pairs.sample_batch` does;
- the samples pass a shuffle buffer of ``buffer_clips`` clips per worker, from which batches of
  ``batch_size`` are drawn at random (a worker's last partial batch is dropped, as the in-memory
  epoch drops its remainder).

So results are a function of the seed, the shards and ``workers`` (not of timing): the DataLoader
takes batches from its workers in turn. Peak memory is the buffer plus one unit per worker (and
``cache_mb`` of decoded units kept between epochs in the training process, for corpora that fit),
whatever the corpus size. Every method trains from it: batches carry the clips' global indices
(bipseudo's per-clip memory) and their identity and video indices (Wen's identity labels, CMPC's
per-video memory). :func:`embed_stream` embeds clips unit by unit for evaluation.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.schema import FACE_FRAMES, MANIFEST, VOICE_FEATURES, TableSchema, read_table
from pipeline.train.pairs import PairData, assemble, label_clips, load_pairs, sample_batch

if TYPE_CHECKING:
    from pipeline.params import TrainParams
    from pipeline.train.loop import Encoders

#: One batch of the stream: global clip indices (B,), faces (B, 3, S, S) in [0, 1], voices
#: (B, n_mels, voice_frames).
StreamBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _keys_of(path: Path, spec: TableSchema) -> np.ndarray:
    """The distinct clip keys of a shard, reading only that column (name and version checked as
    :func:`pipeline.schema.read_table` does)."""
    meta = pq.read_schema(path).metadata or {}
    if meta.get(b"voxface.table", b"").decode() != spec.name:
        raise ValueError(f"{path}: not a {spec.name!r} table")
    keys = pq.read_table(path, columns=["clip_key"]).column("clip_key").to_numpy()
    return np.unique(keys.astype(str))


def _read_rows(path: Path, spec: TableSchema, keys: list[str]) -> pd.DataFrame:
    """The rows of ``keys`` in one shard."""
    table = read_table(path, spec)
    return table[table["clip_key"].isin(keys)]


@dataclass(frozen=True)
class Unit:
    """One faces shard's wanted clips (global indices, ascending) and the voice shards that
    hold their features."""

    faces_file: Path
    voice_files: tuple[Path, ...]
    clips: np.ndarray


class StreamData:
    """The clips of ``splits`` with a face track and voice features, read unit by unit.

    ``clip_keys``, ``identity``, ``video``, ``identities``, ``videos`` and ``len()`` as
    :class:`pipeline.train.pairs.PairData` (the same clips in the same order: clip-key order);
    no crop or feature is read until :meth:`unit` or :meth:`batches`.
    """

    def __init__(
        self,
        manifest: Path,
        faces_dir: Path,
        voice_dir: Path,
        splits: tuple[str, ...],
        face_size: int,
        *,
        workers: int = 0,
        buffer_clips: int = 1024,
        cache_mb: float = 0.0,
    ) -> None:
        m = read_table(manifest, MANIFEST)
        m = m[m["split"].isin(splits)]
        face_files = sorted(Path(faces_dir).glob("faces-*.parquet"))
        voice_files = sorted(Path(voice_dir).glob("voice-*.parquet"))
        for folder, files in ((faces_dir, face_files), (voice_dir, voice_files)):
            if not files:
                raise FileNotFoundError(f"{folder}: no shards (*.parquet)")
        face_keys = {f: _keys_of(f, FACE_FRAMES) for f in face_files}
        voice_of: dict[str, Path] = {}
        for f in voice_files:
            for k in _keys_of(f, VOICE_FEATURES):
                voice_of[str(k)] = f
        have_face = set().union(*(set(k.tolist()) for k in face_keys.values()))
        keys = sorted(set(m["clip_key"]) & have_face & set(voice_of))
        if not keys:
            raise ValueError(f"no clip of splits {splits} has both faces and voice features")
        meta = m.set_index("clip_key").loc[keys]
        self.identities, self.videos, self.identity, self.video = label_clips(meta)
        self.clip_keys = keys
        self.face_size = face_size
        self.workers, self.buffer_clips = workers, buffer_clips
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, PairData] = OrderedDict()
        index = {k: i for i, k in enumerate(keys)}
        units = []
        for f in face_files:
            clips = np.array(sorted(index[k] for k in face_keys[f].tolist() if k in index))
            if len(clips):
                vfiles = tuple(sorted({voice_of[keys[c]] for c in clips}))
                units.append(Unit(f, vfiles, clips))
        self.units = units

    def __len__(self) -> int:
        return len(self.clip_keys)

    def digest(self) -> bytes:
        """What the stream's batches depend on besides the seed: the settings, the shards (their
        names are digests of their recipe and clips) and sizes, and the clips used."""
        h = hashlib.sha256(repr((self.face_size, self.workers, self.buffer_clips)).encode())
        for u in self.units:
            for f in (u.faces_file, *u.voice_files):
                h.update(f"{f.name}:{f.stat().st_size}".encode())
            h.update(u.clips.tobytes())
        h.update("\n".join(self.clip_keys).encode())
        h.update(self.identity.numpy().tobytes() + self.video.numpy().tobytes())
        return h.digest()

    def unit(self, u: int) -> PairData:
        """Unit ``u``'s clips decoded (identity and video indices global)."""
        if u in self._cache:
            self._cache.move_to_end(u)
            return self._cache[u]
        spec = self.units[u]
        keys = [self.clip_keys[c] for c in spec.clips]
        faces = _read_rows(spec.faces_file, FACE_FRAMES, keys)
        voices = pd.concat([_read_rows(f, VOICE_FEATURES, keys) for f in spec.voice_files])
        clips = torch.from_numpy(spec.clips)
        data = assemble(
            keys,
            faces,
            voices.set_index("clip_key"),
            self.identity[clips],
            self.video[clips],
            self.identities,
            self.videos,
            self.face_size,
        )
        if self.cache_bytes > 0 and get_worker_info() is None:
            self._cache[u] = data
            while sum(_nbytes(d) for d in self._cache.values()) > self.cache_bytes:
                self._cache.popitem(last=False)
        return data

    def batches(
        self, seed: int, batch_size: int, voice_frames: int, flip: bool
    ) -> Iterator[StreamBatch]:
        """One epoch of batches from the epoch seed ``seed`` (see the module docstring)."""
        epoch = _Epoch(self, seed, batch_size, voice_frames, flip)
        if self.workers == 0:
            yield from epoch
            return
        loader = DataLoader(
            epoch, batch_size=None, num_workers=self.workers, multiprocessing_context=_workers()
        )
        yield from loader

    def __getstate__(self) -> dict[str, object]:
        """What a DataLoader worker receives: everything but the training process's cache."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state


def _workers() -> multiprocessing.context.BaseContext:
    """The start method of the stream's DataLoader workers: ``forkserver``, whose server is a
    fresh process that has imported this module, never a fork of the training process. A fork
    copies the training process's threads' locks in whatever state they are (Prefect's and Dask's
    threads run there); forked workers died with exit code 1 after such threads had run."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _nbytes(d: PairData) -> int:
    return int(d.faces.nbytes + d.voices.nbytes)


def _unit_seed(seed: int, u: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{u}".encode()).digest()[:7], "big")


class _Epoch(IterableDataset[StreamBatch]):
    """One epoch of :meth:`StreamData.batches` (run by each DataLoader worker on its units)."""

    def __init__(
        self, data: StreamData, seed: int, batch_size: int, voice_frames: int, flip: bool
    ) -> None:
        self.data, self.seed, self.batch_size = data, seed, batch_size
        self.voice_frames, self.flip = voice_frames, flip

    def __iter__(self) -> Iterator[StreamBatch]:
        info = get_worker_info()
        w, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        order = torch.randperm(len(self.data.units), generator=_gen(_unit_seed(self.seed, -1)))
        mine = order[w::n_workers].tolist()
        pick = _gen(_unit_seed(self.seed, -2 - w))
        buf: list[torch.Tensor] = []
        for u in mine:
            data = self.data.unit(u)
            gen = _gen(_unit_seed(self.seed, u))
            local = torch.randperm(len(data), generator=gen)
            faces, voices = sample_batch(data, local, self.voice_frames, gen, self.flip)
            clips = torch.from_numpy(self.data.units[u].clips)[local]
            new = [clips, faces, voices]
            buf = new if not buf else [torch.cat([a, b]) for a, b in zip(buf, new, strict=True)]
            while len(buf[0]) >= self.data.buffer_clips + self.batch_size:
                out, buf = _draw(buf, self.batch_size, pick)
                yield out
        while buf and len(buf[0]) >= self.batch_size:
            out, buf = _draw(buf, self.batch_size, pick)
            yield out


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draw(
    buf: list[torch.Tensor], n: int, gen: torch.Generator
) -> tuple[StreamBatch, list[torch.Tensor]]:
    """``n`` random rows of the buffer, and the buffer without them."""
    take = torch.randperm(len(buf[0]), generator=gen)[:n]
    keep = torch.ones(len(buf[0]), dtype=torch.bool)
    keep[take] = False
    clips, faces, voices = (t[take] for t in buf)
    return (clips, faces, voices), [t[keep] for t in buf]


def embed_stream(
    encoders: Encoders, data: StreamData, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pipeline.train.loop.embed_clips` of every clip, unit by unit: (C, d), (C, d) in
    clip order, L2-normalised."""
    from pipeline.train.loop import embed_clips

    face = voice = None
    for u, spec in enumerate(data.units):
        f, v = embed_clips(encoders, data.unit(u), device)
        if face is None or voice is None:
            face = torch.zeros(len(data), f.shape[1])
            voice = torch.zeros(len(data), v.shape[1])
        face[spec.clips], voice[spec.clips] = f, v
    assert face is not None and voice is not None
    return face, voice


def open_pairs(
    manifest: Path, faces_dir: Path, voice_dir: Path, splits: tuple[str, ...], train: TrainParams
) -> PairData | StreamData:
    """The clips of ``splits`` as ``train.loader`` says: decoded in memory
    (:func:`pipeline.train.pairs.load_pairs`) or streamed (:class:`StreamData`)."""
    if train.loader == "stream":
        return StreamData(
            manifest,
            faces_dir,
            voice_dir,
            splits,
            train.face_size_px,
            workers=train.stream_workers,
            buffer_clips=train.stream_buffer_clips,
            cache_mb=train.stream_cache_mb,
        )
    return load_pairs(manifest, faces_dir, voice_dir, splits, train.face_size_px)
