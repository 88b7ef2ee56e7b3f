"""Typed views of ``params.yaml``: one pydantic model per section, unknown keys rejected.

``params.yaml`` is the single source of truth for everything that changes results; there are no
hidden defaults here (every field is required unless it is genuinely optional, like a published
split file). Execution knobs (workers, device, server URL) come from the environment instead, so
that changing them does not invalidate DVC's caches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(_Section):
    seed: int


class DataParams(_Section):
    """Which dataset the pipeline reads."""

    layout: Literal["synth", "voxceleb2", "voxceleb1", "generic"]
    root: str
    #: The metadata CSV (VoxCeleb1/2 format), or for ``generic`` the clip list
    #: (:func:`pipeline.preprocess.manifest.read_clip_list`).
    meta: str
    #: Optional published identity split: a PINs ``identity_splits.txt`` or a folder holding the
    #: Wen split's ``vox1_{train,val,test}.csv``. ``null``: the manifest stage draws splits itself.
    split_file: str | None = None
    #: VoxCeleb1 only: folder of the 1 fps face crops (``unzippedFaces``), relative to ``root``.
    faces_dir: str | None = None


class SynthPreset(_Section):
    identities: int = Field(ge=4)
    videos_per_identity: int = Field(ge=1)
    utterances_per_video: int = Field(ge=1)
    min_duration_s: float = Field(gt=0.5)
    max_duration_s: float = Field(gt=0.5)

    @model_validator(mode="after")
    def _durations(self) -> SynthPreset:
        if self.max_duration_s < self.min_duration_s:
            raise ValueError("max_duration_s must be >= min_duration_s")
        return self


class SynthCalibration(_Section):
    face_noise: float = Field(ge=0)
    voice_noise: float = Field(ge=0)
    gender_strength: float = Field(gt=0)


class SynthParams(_Section):
    """The built-in synthetic corpus (:mod:`pipeline.synth`)."""

    preset: str
    presets: dict[str, SynthPreset]
    frame_size_px: int = Field(ge=64)
    fps: int = Field(ge=1)
    sample_rate_hz: Literal[8000, 16000, 32000, 48000]
    calibration: SynthCalibration

    @model_validator(mode="after")
    def _known_preset(self) -> SynthParams:
        if self.preset != "none" and self.preset not in self.presets:
            raise ValueError(
                f"preset {self.preset!r} is not one of {sorted(self.presets)} or 'none'"
            )
        return self

    def active(self) -> SynthPreset | None:
        """The selected preset, or ``None`` when generation is switched off (``preset: none``)."""
        return None if self.preset == "none" else self.presets[self.preset]


class ManifestParams(_Section):
    """How identities are split (when no published split file is given)."""

    train_fraction: float = Field(gt=0, lt=1)
    val_fraction: float = Field(ge=0, lt=1)
    seen_heard_videos: int = Field(ge=0)
    seen_heard_fraction: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _fractions(self) -> ManifestParams:
        if self.train_fraction + self.val_fraction >= 1:
            raise ValueError(
                "train_fraction + val_fraction must leave identities for the test split"
            )
        return self


class FaceStageParams(_Section):
    """The ``faces`` stage: frames sampled per clip, MTCNN detection, the clip's face cropped."""

    rate_fps: float = Field(gt=0)
    min_face_size_px: int = Field(ge=12)
    #: the smallest face searched for, as a share of the frame's shorter side (0: off)
    min_face_fraction: float = Field(0.0, ge=0, lt=1)
    thresholds: tuple[float, float, float]
    factor: float = Field(gt=0, lt=1)
    batch_size: int = Field(ge=1)
    min_prob: float = Field(ge=0, le=1)
    margin: float = Field(ge=0)
    crop_size_px: int = Field(ge=16)
    jpeg_quality: int = Field(ge=10, le=100)
    shard_clips: int = Field(ge=1)
    max_failure_fraction: float = Field(ge=0, le=1)


class VoiceStageParams(_Section):
    """The ``voice`` stage: VAD (webrtcvad + energy gate) and log-mel features of the speech."""

    sample_rate_hz: Literal[8000, 16000, 32000, 48000]
    vad_aggressiveness: Literal[0, 1, 2, 3]
    vad_frame_ms: Literal[10, 20, 30]
    vad_padding_ms: int = Field(ge=0)
    #: hysteresis: speech starts when more than vad_on_percent of the padding window is flagged,
    #: ends when less than vad_off_percent is
    vad_on_percent: int = Field(90, ge=1, le=100)
    vad_off_percent: int = Field(10, ge=0, le=99)
    #: the energy gate's reference level: this percentile of the clip's frame levels
    energy_reference_percentile: float = Field(95.0, ge=0, le=100)
    energy_gate_db: float = Field(gt=0)
    min_speech_s: float = Field(ge=0)
    front_end: Literal["fbank", "melspec"]
    n_mels: int = Field(ge=8)
    win_ms: float = Field(gt=0)
    hop_ms: float = Field(gt=0)
    normalize: bool
    shard_clips: int = Field(ge=1)
    max_failure_fraction: float = Field(ge=0, le=1)


class TrainParams(_Section):
    """The ``train@<method>`` stages' shared settings (each method has its own section too)."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    embed_dim: int = Field(ge=2)
    face_encoder: str
    voice_encoder: str
    face_size_px: int = Field(ge=16)
    voice_frames: int = Field(ge=8)
    eval_trials: int = Field(ge=100)
    #: mirror each training face crop with probability 1/2 (the training loops' augmentation)
    mirror_flip: bool = True
    #: ``memory``: every clip decoded into memory (:func:`pipeline.train.pairs.load_pairs`);
    #: ``stream``: read shard by shard in bounded memory (:mod:`pipeline.train.stream`; batches
    #: depend on ``stream_workers``, the DataLoader processes, 0 = in the training process)
    loader: Literal["memory", "stream"] = "memory"
    stream_workers: int = Field(default=0, ge=0)
    stream_buffer_clips: int = Field(default=1024, ge=1)
    stream_cache_mb: float = Field(default=0.0, ge=0)
    #: torch's (and faiss's) CPU threads per training process, in every stage that trains or
    #: embeds. A param, not a machine setting: the thread count splits float sums, so another
    #: count trains other weights; fixed, it gives the same bytes on any x86-64 machine (with the
    #: kernels :mod:`pipeline.cpu_pin` pins). Raise it on a machine with more cores for speed.
    threads: int = Field(default=2, ge=1)


#: A number of clusters: k-means needs at least two.
ClusterCount = Annotated[int, Field(ge=2)]


# The methods' sections: each is the one definition of its method's params (the method module
# takes it as is; ``pipeline.train.methods.registry`` names the section of each method).


class CidSection(_Section):
    """``cid``: symmetric cross-modal InfoNCE."""

    tau: float = Field(gt=0)


class Wen2021Section(_Section):
    """``wen2021``: Wen et al. 2021. ``published_code``: the released code's loss weighting
    (:mod:`pipeline.train.methods.wen2021`); ``reweight_epochs``: the first (re-weighting) run's
    length; ``warmup_steps`` / ``every_steps``: the re-weighting schedule in training steps of that
    run (paper: 500 / 100 of a 2,400-step run); the schedule's constants (the paper's and the
    released code's values are the defaults in ``params.yaml``): ``hardness_momentum`` of the
    running hardness, ``first_fraction`` of identities switched on at the first update,
    ``step_fraction`` more at each later one up to ``cap``, and ``decay`` of the weights already
    on. The paper's components, each switchable for its ablation (default on):
    ``global_alignment`` (the shared identity classifier's cross-entropies), ``local_alignment``
    (the N-pair term), ``reweighting`` (the re-weighting run; off: every identity weighs 1 and the
    first phase is skipped). Global and re-weighting off is the local-only N-pair method."""

    global_alignment: bool = True
    local_alignment: bool = True
    reweighting: bool = True
    published_code: bool
    reweight_epochs: int = Field(ge=1)
    warmup_steps: int = Field(ge=0)
    every_steps: int = Field(ge=1)
    initial_hardness: float = Field(gt=0)
    hardness_momentum: float = Field(0.9, ge=0, lt=1)
    first_fraction: float = Field(0.5, gt=0, le=1)
    step_fraction: float = Field(0.024, ge=0, le=1)
    cap: float = Field(0.9, gt=0, le=1)
    decay: float = Field(0.99, gt=0, le=1)

    @model_validator(mode="after")
    def _some_alignment(self) -> Wen2021Section:
        if not (self.global_alignment or self.local_alignment):
            raise ValueError("wen2021: global_alignment and local_alignment are both off: no loss")
        return self


class CmpcSection(_Section):
    """``cmpc``: CMPC (IJCAI 2022). ``clusters``: K per granularity (scale with the data: the paper
    uses 500/1000/1500 for ~18k videos, about 0.4/0.8/1.2 x the identity count);
    ``start_epoch`` (0-based, >= 1: epoch 0 would cluster the random initial memory) /
    ``every_epochs``: when the memory is clustered; ``delta`` / ``kappa``: the recalibration
    Gaussian; ``phi_mean``: the concentrations' mean; ``prototypes`` / ``recalibration``: switch the
    parts off (both off = ``cid``; with ``published_code``, 2 x ``cid``); ``multi_granularity``:
    false clusters at one granularity only, the middle K of ``clusters`` (the paper's single-K
    ablation); ``published_code``: the released code's loss and loop
    (:mod:`pipeline.train.methods.cmpc`)."""

    tau: float = Field(gt=0)
    clusters: list[ClusterCount] = Field(min_length=1)
    start_epoch: int = Field(ge=1)
    every_epochs: int = Field(ge=1)
    memory_momentum: float = Field(ge=0, lt=1)
    delta: float
    kappa: float = Field(gt=0)
    phi_mean: float = Field(gt=0)
    kmeans_iters: int = Field(ge=1)
    prototypes: bool
    recalibration: bool
    multi_granularity: bool = True
    published_code: bool

    @property
    def granularities(self) -> list[int]:
        """The K clustered: every K of ``clusters``, or with ``multi_granularity`` off the
        middle one."""
        k = list(self.clusters)
        return k if self.multi_granularity else [k[len(k) // 2]]


class BipseudoSection(_Section):
    """``bipseudo``: bi-pseudo-label self-supervision (JCRD 2023, reconstructed). The paper's
    components, each switchable for its ablation (default on): ``shared_residual`` (the
    cross-modal weighted residual head; off: the encoders' outputs are the embeddings),
    ``pseudo_labels`` (the bi-directional pseudo-label loss), ``pull`` and ``push`` (the two
    auxiliary losses). A term switched off is left out whatever its weight; only ``push`` on (and
    no shared head) is the in-batch contrast of ``cid``."""

    tau: float = Field(gt=0)
    proto_tau: float = Field(gt=0)
    clusters: list[ClusterCount] = Field(min_length=1)
    start_epoch: int = Field(ge=1)
    every_epochs: int = Field(ge=1)
    memory_momentum: float = Field(ge=0, lt=1)
    kmeans_iters: int = Field(ge=1)
    weight_pseudo: float = Field(ge=0)
    weight_pull: float = Field(ge=0)
    weight_push: float = Field(ge=0)
    shared_residual: bool = True
    pseudo_labels: bool = True
    pull: bool = True
    push: bool = True

    @property
    def granularities(self) -> list[int]:
        """The K clustered: every K of ``clusters``."""
        return list(self.clusters)

    @model_validator(mode="after")
    def _some_loss(self) -> BipseudoSection:
        on = [
            (self.pseudo_labels, self.weight_pseudo),
            (self.pull, self.weight_pull),
            (self.push, self.weight_push),
        ]
        if not any(switch and weight > 0 for switch, weight in on):
            raise ValueError("bipseudo: every loss term is off or weighted 0: no loss")
        return self


class TrialsSection(_Section):
    """Stage ``trials``: trial lists per evaluated split, drawn once from ``base.seed``."""

    n_match: int = Field(ge=1)  # 1:N matching trials per split, direction and constraint
    n_verify: int = Field(ge=2)  # verification pairs per split and constraint (half positive)
    candidates: int = Field(ge=2)  # K of the 1:N trials (1:2 uses the first two)
    #: Identities with fewer evaluable clips are left out of a split's trials. 2: every true
    #: candidate is another recording; 1 lets a single-clip identity's true candidate be the
    #: probe's own clip (flagged as weak in the report).
    min_clips_per_identity: int = Field(ge=1)


class LowshotSection(_Section):
    """Stage ``lowshot@<method>``: CMPC's low-shot setting, fine-tuning a trained model with
    identity labels for ``fraction`` of the training identities."""

    methods: list[Literal["cid", "wen2021", "cmpc", "bipseudo"]]
    fraction: float = Field(gt=0, le=1)
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    tau: float = Field(gt=0)


class CeilingLossWeights(_Section):
    gender: float = Field(ge=0)
    nationality: float = Field(ge=0)
    age_years: float = Field(ge=0)
    build: float = Field(ge=0)


class CeilingSection(_Section):
    """Stage ``ceiling``: the media ceiling (synthetic corpus only), attribute-supervised face and
    voice encoders (``train``'s architectures, embed_dim, batch size, crops) whose prediction
    vectors are matched through the oracle's ridge map, fitted on out-of-fold predictions."""

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    loss_weights: CeilingLossWeights
    ridge: float = Field(gt=0)  # the voice-to-face map (the oracle's is 1.0)
    probe_l2: float = Field(gt=0)  # the attribute probes reported in ceiling.json
    folds: int = Field(ge=1)  # cross-fitting folds of the training identities (1: none)


MethodName = Literal["cid", "wen2021", "cmpc", "bipseudo"]


class CompareSection(_Section):
    """Stage ``aggregate``: intervals over seeds and test identities, paired verdicts."""

    reference: MethodName  # every method is compared with it (and with the top method)
    bootstrap: int = Field(ge=100)  # identity resamples per interval


class OracleSection(_Section):
    """Stage ``oracle``: ``ridge``, the L2 penalty of the voice-to-face map fitted on the training
    clips' ground-truth parameters (both sides z-scored)."""

    ridge: float = Field(gt=0)


class Params(_Section):
    base: BaseParams
    data: DataParams
    synth: SynthParams
    manifest: ManifestParams
    face: FaceStageParams
    voice: VoiceStageParams
    methods: list[MethodName] = Field(min_length=1)
    #: Training seeds: every method is trained, fine-tuned and scored once per seed.
    seeds: list[int] = Field(min_length=1)
    train: TrainParams
    cid: CidSection
    wen2021: Wen2021Section
    cmpc: CmpcSection
    bipseudo: BipseudoSection
    lowshot: LowshotSection
    trials: TrialsSection
    oracle: OracleSection
    ceiling: CeilingSection
    compare: CompareSection

    @model_validator(mode="after")
    def _distinct_seeds(self) -> Params:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct, got {self.methods}")
        return self


class ParamsError(ValueError):
    """``params.yaml`` is missing, unreadable or invalid; the message names the file."""


def read_yaml_mapping(path: Path | str, error: type[ValueError], top: str) -> dict[str, Any]:
    """A YAML file (ruamel, YAML 1.2 like DVC) whose top level is a mapping; ``error`` naming the
    file when it is missing, malformed or not a mapping (``top`` says what the mapping holds)."""
    p = Path(path)
    try:
        raw: Any = YAML(typ="safe").load(p.read_text())
    except FileNotFoundError as e:
        raise error(f"{p}: not found") from e
    except Exception as e:  # ruamel raises many types for malformed YAML
        raise error(f"{p}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise error(f"{p}: top level must be a mapping of {top}")
    return raw


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate ``params.yaml`` (with ruamel, YAML 1.2 like DVC)."""
    p = Path(path)
    raw = read_yaml_mapping(p, ParamsError, "sections")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(f"{p}: invalid parameters:\n{e}") from e
