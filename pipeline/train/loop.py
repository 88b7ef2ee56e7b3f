"""The training loop shared by every method: seeded, checkpointed each epoch, resumable.

A method is a ``torch.nn.Module`` whose ``forward(face, voice, batch)`` returns a dict of loss
terms with ``"loss"`` the one to minimise, plus an optional ``on_epoch_start(ctx)`` hook
(clustering, re-weighting). The loop owns the encoders, the optimiser, the sampling generator
and the history; a checkpoint holds all of them, so a killed run resumes where it stopped and
ends with the same weights as an uninterrupted one. A checkpoint of other settings, other data
or other code is never resumed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.cpu_pin import kernel_settings
from pipeline.train import distributed
from pipeline.train import encoders as encoders_module
from pipeline.train import methods as methods_package
from pipeline.train import pairs as pairs_module
from pipeline.train import stream as stream_module
from pipeline.train.encoders import build_face_encoder, build_head, build_voice_encoder
from pipeline.train.pairs import PairData, sample_batch
from pipeline.train.stream import StreamBatch, StreamData, embed_stream

#: Training data: decoded in memory (:func:`pipeline.train.pairs.load_pairs`) or streamed from
#: the shards (:class:`pipeline.train.stream.StreamData`).
TrainData = PairData | StreamData

if TYPE_CHECKING:
    from pipeline.params import TrainParams


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    embed_dim: int
    face_encoder: str
    voice_encoder: str
    voice_frames: int
    seed: int
    head: str = "none"  # set by the method (bipseudo: "shared_residual"), not a user param
    mirror_flip: bool = True  # train.mirror_flip: training crops mirrored with p = 1/2

    @classmethod
    def of(cls, train: TrainParams, seed: int, **changes: Any) -> TrainConfig:
        """The ``train`` params section's settings with the training ``seed``; ``changes``
        override fields (a method's ``head``, the ceiling's own epochs and learning rate)."""
        return replace(
            cls(
                train.epochs,
                train.batch_size,
                train.lr,
                train.weight_decay,
                train.embed_dim,
                train.face_encoder,
                train.voice_encoder,
                train.voice_frames,
                seed,
                mirror_flip=train.mirror_flip,
            ),
            **changes,
        )

    def digest(self, method_params: object, data: TrainData, method: nn.Module) -> str:
        """Identifies a run: this config, the method's params, the training data's content, the
        source of the code that trains it (loop, encoders, pairs, the method's module) and the
        numerics it runs under (:func:`numerics`)."""
        # The process count: N processes sum BatchNorm statistics and gradients in another order.
        setup = [asdict(self), repr(method_params), distributed.world_size(), numerics()]
        h = hashlib.sha256(json.dumps(setup, sort_keys=True).encode())
        for module in (
            sys.modules[__name__],
            encoders_module,
            pairs_module,
            stream_module,
            distributed,
            sys.modules[type(method).__module__],
        ):
            h.update(Path(inspect.getfile(module)).read_bytes())
        # The shared method pieces (InfoNCE, k-means, memory banks) every method may import.
        for shared in sorted(Path(inspect.getfile(methods_package)).parent.glob("*.py")):
            h.update(shared.read_bytes())
        if isinstance(data, StreamData):
            h.update(data.digest())
            return h.hexdigest()[:16]
        for t in (
            data.faces,
            data.face_offsets,
            data.voices,
            data.voice_offsets,
            data.identity,
            data.video,
        ):
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]


def numerics() -> dict[str, Any]:
    """What, besides code, config and data, decides a CPU run's floats: torch's thread count, the
    kernels torch runs and the pins (a checkpoint made under other ones is not resumed: it would
    not end with the weights this run would)."""
    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **kernel_settings(),
    }


@dataclass
class Batch:
    """What a method sees besides the embeddings: the clips' identity and video indices."""

    clips: torch.Tensor  # (B,) indices into the training data's clips
    identity: torch.Tensor  # (B,)
    video: torch.Tensor  # (B,)


class Encoders(nn.Module):
    """Both encoders and the head shared by both modalities (identity for most methods)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.face = build_face_encoder(cfg.face_encoder, cfg.embed_dim)
        self.voice = build_voice_encoder(cfg.voice_encoder, cfg.embed_dim)
        self.head = build_head(cfg.head, cfg.embed_dim)

    def embed_face(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, d)."""
        out: torch.Tensor = self.head(self.face(x), "face")
        return out

    def embed_voice(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, d)."""
        out: torch.Tensor = self.head(self.voice(x), "voice")
        return out


def _save(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to ``path`` atomically, the same bytes for the same state: given a file
    name, torch names the zip archive inside after it (here a random temporary name, so equal
    weights would hash differently and DVC would rerun everything downstream); given an open
    file, it always writes ``archive/``."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(state, f)


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be loaded (safely); the one-line message names it."""


def load_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The dict saved in a ``model.pt`` or checkpoint, read with ``weights_only=True``: tensors,
    dicts, lists, strings and numbers only. A file that holds anything else (a pickled object
    whose loading would call code) is refused before any of it runs."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise ModelFileError(
            f"{path}: refused: it holds objects other than tensors and plain data{what}, "
            "whose loading could run code"
        ) from e
    except Exception as e:  # torch raises KeyError, EOFError, RuntimeError... for other files
        raise ModelFileError(f"{path}: not a PyTorch file ({type(e).__name__})") from e
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, not a dict of state")
    return state


def epoch_batches(data: TrainData, cfg: TrainConfig, gen: torch.Generator) -> Iterator[StreamBatch]:
    """One epoch's (clips, faces, voices) batches. In memory: a random permutation of the clips
    cut into ``len // batch_size`` batches (at least one), each sampled by
    :func:`pipeline.train.pairs.sample_batch` from ``gen``; streamed: an epoch seed drawn from
    ``gen``, then :meth:`pipeline.train.stream.StreamData.batches`."""
    if isinstance(data, StreamData):
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        yield from data.batches(seed, cfg.batch_size, cfg.voice_frames, cfg.mirror_flip)
        return
    n = len(data)
    perm = torch.randperm(n, generator=gen)
    for s in range(max(1, n // cfg.batch_size)):
        clips = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
        faces, voices = sample_batch(data, clips, cfg.voice_frames, gen, cfg.mirror_flip)
        yield clips, faces, voices


def _embed_batch(
    encoders: Encoders, faces: torch.Tensor, voices: torch.Tensor, ddp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both modalities' embeddings of a batch; across processes, each rank embeds its block and
    gathers the others' (:mod:`pipeline.train.distributed`)."""
    if not ddp:
        return encoders.embed_face(faces), encoders.embed_voice(voices)
    mine = distributed.local_rows(len(faces))
    return (
        distributed.gather_rows(encoders.embed_face(faces[mine])),
        distributed.gather_rows(encoders.embed_voice(voices[mine])),
    )


def train(
    data: TrainData,
    method: nn.Module,
    method_params: object,
    cfg: TrainConfig,
    out_dir: Path,
    device: torch.device,
    progress: Callable[[dict[str, float]], None] | None = None,
    init: dict[str, torch.Tensor] | None = None,
) -> tuple[Encoders, list[dict[str, float]]]:
    """Train ``method`` on ``data``; writes ``checkpoint.pt`` every epoch in ``out_dir``.

    ``init``: encoder weights to start from (fine-tuning); their content enters the run's digest.
    ``progress``: called after every epoch with its history row plus ``pairs_per_s`` (the speed is
    not kept in the history, which holds results only).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    digest = cfg.digest(method_params, data, method)
    if init is not None:
        h = hashlib.sha256(digest.encode())
        for k in sorted(init):
            h.update(k.encode() + init[k].cpu().numpy().tobytes())
        digest = h.hexdigest()[:16]
    torch.manual_seed(cfg.seed)
    encoders = Encoders(cfg).to(device)
    if init is not None:
        encoders.load_state_dict(init)
    method.to(device)
    ddp = distributed.active()
    if ddp:  # global-batch BatchNorm; every rank starts from rank 0's weights
        distributed.convert_batchnorm(encoders)
        distributed.broadcast_state(encoders)
        distributed.broadcast_state(method)
    params = [*encoders.parameters(), *method.parameters()]
    dtype = params[0].dtype  # float32, or float64 when that is torch's default dtype
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    start = 0
    if ckpt_path.is_file():
        state = load_state(ckpt_path, device)
        # Resume (or reuse, when finished) only a run of the same config, data and code: it
        # would end with the same weights anyway. Anything else starts from scratch.
        if state.get("digest") == digest:
            encoders.load_state_dict(state["encoders"])
            method.load_state_dict(state["method"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            history = state["history"]
            start = state["epoch"]
    for epoch in range(start, cfg.epochs):
        hook = getattr(method, "on_epoch_start", None)
        if hook is not None:
            hook(epoch=epoch, data=data, encoders=encoders, device=device, generator=gen)
            if ddp:  # one clustering (rank 0's) for every rank
                distributed.broadcast_state(method)
        encoders.train()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        steps = pairs = 0
        for clips, faces, voices in epoch_batches(data, cfg, gen):
            steps, pairs = steps + 1, pairs + len(clips)
            if ddp:  # whole blocks per rank: the batch's last (size mod ranks) clips are left out
                keep = len(clips) - len(clips) % distributed.world_size()
                clips, faces, voices = clips[:keep], faces[:keep], voices[:keep]
            batch = Batch(
                clips.to(device), data.identity[clips].to(device), data.video[clips].to(device)
            )
            faces, voices = faces.to(device, dtype), voices.to(device, dtype)
            f, v = _embed_batch(encoders, faces, voices, ddp)  # (B, d) x 2
            terms = method(f, v, batch)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if ddp:
                distributed.sync_grads(encoders.parameters(), method.parameters())
            opt.step()
            for k, val in terms.items():
                sums[k] = sums.get(k, 0.0) + float(val.detach())
        wall = time.perf_counter() - t0
        if steps == 0:
            raise ValueError(f"{len(data)} training clips give no batch of {cfg.batch_size}")
        row = {"epoch": float(epoch + 1), **{k: v / steps for k, v in sums.items()}}
        history.append(row)  # results only: the speed goes to ``progress``, never to a file
        if distributed.rank() == 0:
            _save(
                ckpt_path,
                {
                    "digest": digest,
                    "epoch": epoch + 1,
                    "encoders": encoders.state_dict(),
                    "method": method.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "history": history,
                },
            )
        if progress is not None:
            progress({**row, "pairs_per_s": pairs / wall})
    return encoders, history


#: What a method's training phases return: the final encoders, the (last phase's) per-epoch
#: history and extra metrics for the training report (e.g. wen2021's ``identities_kept``).
PhaseResult = tuple[Encoders, list[dict[str, float]], dict[str, Any]]


@dataclass(frozen=True)
class Run:
    """One method's training as its phases see it (:mod:`pipeline.train.methods.registry`): the
    data, the config, the state folder (each phase checkpoints in ``state/<phase>``), the device,
    ``rebuild`` (a fresh method module, seeded as the first one) and the progress callback."""

    data: TrainData
    cfg: TrainConfig
    state: Path
    device: torch.device
    rebuild: Callable[[], nn.Module]
    progress: Callable[[dict[str, float]], None] | None = None

    def train(
        self, method: nn.Module, method_params: object, phase: str, cfg: TrainConfig | None = None
    ) -> tuple[Encoders, list[dict[str, float]]]:
        """:func:`train` ``method`` in ``state/<phase>`` (with ``cfg``, default the run's)."""
        return train(
            self.data,
            method,
            method_params,
            cfg or self.cfg,
            self.state / phase,
            self.device,
            progress=self.progress,
        )


def single_phase(run: Run, method: nn.Module, params: object) -> PhaseResult:
    """The phases of most methods: one training run, in ``state/main``."""
    encoders, history = run.train(method, params, "main")
    return encoders, history, {}


@torch.inference_mode()
def embed_clips(
    encoders: Encoders, data: TrainData, device: torch.device, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: the face embedding (mean over its frames and their mirror images) and the voice
    embedding of its whole speech. Returns (C, d), (C, d) L2-normalised. Streamed data is embedded
    unit by unit (:func:`pipeline.train.stream.embed_stream`)."""
    if isinstance(data, StreamData):
        return embed_stream(encoders, data, device)
    return (
        embed_faces(encoders, data.faces, data.face_offsets, device, batch),
        embed_voices(encoders, data.voices, data.voice_offsets, device),
    )


@torch.inference_mode()
def embed_faces(
    encoders: Encoders,
    faces: torch.Tensor,
    offsets: torch.Tensor,
    device: torch.device,
    batch: int = 256,
) -> torch.Tensor:
    """Face embeddings of clips whose uint8 frames (F, 3, S, S) are ``faces``, clip c owning
    rows ``offsets[c]:offsets[c + 1]``: the mean over its frames and their mirror images.
    Returns (C, d) L2-normalised, on the CPU."""
    encoders.eval()
    f_all = []
    for i in range(0, len(faces), batch):
        x = faces[i : i + batch].float().to(device) / 255.0
        f_all.append(
            torch.nn.functional.normalize(
                encoders.embed_face(x) + encoders.embed_face(x.flip(-1)), dim=1
            )
        )
    frames = torch.cat(f_all)
    clips = torch.stack(
        [frames[offsets[c] : offsets[c + 1]].mean(0) for c in range(len(offsets) - 1)]
    )
    return torch.nn.functional.normalize(clips, dim=1).cpu()


@torch.inference_mode()
def embed_voices(
    encoders: Encoders, voices: torch.Tensor, offsets: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Voice embeddings of clips whose features (T, n_mels) are ``voices``, clip c owning rows
    ``offsets[c]:offsets[c + 1]``: one pass over its whole speech. (C, d) L2-normalised, CPU."""
    encoders.eval()
    clips = torch.stack(
        [
            encoders.embed_voice(voices[offsets[c] : offsets[c + 1]].float().T[None].to(device))[0]
            for c in range(len(offsets) - 1)
        ]
    )
    return torch.nn.functional.normalize(clips, dim=1).cpu()


def save_model(path: Path, cfg: TrainConfig, name: str, encoders: Encoders) -> None:
    """``model.pt``: what evaluation needs to rebuild the encoders (config, name, weights)."""
    _save(path, {"config": asdict(cfg), "method": name, "encoders": encoders.state_dict()})


#: The layout of ``model.pt`` that :func:`save_model` writes: ``config`` (TrainConfig's fields),
#: ``method`` (its name) and ``encoders`` (state dict). Files of this layout carry no ``format``
#: key; a later layout will store ``format`` with its number, which this code then refuses.
MODEL_FORMAT = 1


def model_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checked content of a ``model.pt`` (:func:`load_state`): its layout is
    :data:`MODEL_FORMAT` and its config has TrainConfig's fields (ModelFileError otherwise)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model")
    state = load_state(path, device)
    version = state.get("format", 1)
    if version != MODEL_FORMAT:
        raise ModelFileError(
            f"{path}: model file format {version!r}, this code reads format {MODEL_FORMAT}"
        )
    missing = [k for k in ("config", "method", "encoders") if k not in state]
    if missing:
        keys = ", ".join(sorted(map(str, state)))
        raise ModelFileError(f"{path}: not a model.pt (no {', '.join(missing)}; holds {keys})")
    try:
        TrainConfig(**state["config"])
    except TypeError as e:
        raise ModelFileError(f"{path}: its config does not fit this code's TrainConfig: {e}") from e
    return state


def load_model(path: Path, device: torch.device) -> tuple[Encoders, TrainConfig]:
    """The encoders (and shared head) of a ``model.pt``, in eval mode, and their config."""
    state = model_state(path, device)
    cfg = TrainConfig(**state["config"])
    enc = Encoders(cfg).to(device)
    enc.load_state_dict(state["encoders"])
    return enc.eval(), cfg
